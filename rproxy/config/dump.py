"""The model as stable JSON: sorted keys, tuples as lists, positions left out
(they are not part of a model's meaning), notes as rendered text.

Paths under `base` (a directory) are written as `$DIR/...`, so an expected
model stored in the repository does not depend on where the checkout lives.

    python -m rproxy.config.dump FILE      # print FILE's model
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Optional

from .model import Note


def to_data(obj: Any, base: Optional[str] = None) -> Any:
    def path(s: str) -> str:
        if base:
            return s.replace(base.rstrip(os.sep) + os.sep, "$DIR/")
        return s

    def walk(x):
        if isinstance(x, Note):
            return path(str(x))
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            out = {}
            for f in dataclasses.fields(x):
                if f.name == "pos":
                    continue
                out[f.name] = walk(getattr(x, f.name))
            return out
        if isinstance(x, (tuple, list)):
            return [walk(i) for i in x]
        if isinstance(x, str):
            return path(x)
        return x

    return walk(obj)


def to_json(obj: Any, base: Optional[str] = None) -> str:
    return json.dumps(to_data(obj, base), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    from . import ConfigErrors, load

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m rproxy.config.dump FILE\n")
        return 2
    try:
        cfg = load(args[0])
    except ConfigErrors as e:
        sys.stderr.write(e.render() + "\n")
        return 1
    sys.stdout.write(to_json(cfg, os.path.dirname(os.path.abspath(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
