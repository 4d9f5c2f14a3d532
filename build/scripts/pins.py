#!/usr/bin/python3
"""Facts the packaging needs, read from the project's own single sources.

    pins.py version        the version (rproxy/_version.py, the one place it lives)
    pins.py build-requires the pinned build requirements ([build-system] in pyproject.toml)

No copy of either is kept under build/: a version bump or a new Cython pin
reaches both packages without touching the packaging.
"""
import os
import re
import sys
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def version() -> str:
    with open(os.path.join(ROOT, "rproxy", "_version.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        sys.exit("pins.py: no __version__ in rproxy/_version.py")
    # Debian and RPM both accept [0-9A-Za-z.+~]; a PEP 440 local or dev
    # version would need translating, so refuse it loudly rather than guess.
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+~]*", m.group(1)):
        sys.exit(f"pins.py: version {m.group(1)!r} is not usable as a package version")
    return m.group(1)


def build_requires() -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        reqs = tomllib.load(f)["build-system"]["requires"]
    for r in reqs:
        if "==" not in r:
            sys.exit(f"pins.py: build requirement {r!r} is not pinned; the packages build offline from pins")
    return reqs


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "version":
        print(version())
    elif what == "build-requires":
        print("\n".join(build_requires()))
    else:
        sys.exit(__doc__)
