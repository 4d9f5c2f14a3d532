"""Parse a configuration in a short-lived child process.

The parser (Lark, the grammar, the directive table) costs several MB once
imported, and CPython does not give that memory back; the master parses a
configuration only at start-up and on reload, so it does so in a forked
child that sends the result (a Config, or its errors rendered) back through
a pipe and exits.  The master, and the workers forked from it, never hold
the parser.

The child runs with the master's credentials of the moment: after the
privilege drop, a reload's child reads the configuration and imports the
parser as the dropped user.  Where that user cannot read the install (a
Python under /root, say), the master imports the parser before it drops
privileges instead (startup.preload_modules asks importable_as first), and
from then on `load` parses in-process, as before.
"""
from __future__ import annotations

import os
import pickle
import sys

from . import errors
from .errors import ConfigError, ConfigErrors
from .model import Config


class RenderedError(ConfigError):
    """A ConfigError rendered in the child (the source line it quotes is not
    kept in this process)."""

    def __init__(self, message, pos, hint, text):
        super().__init__(message, pos, hint)
        self.text = text

    def render(self) -> str:
        return self.text


def _parse(path: str):
    """(result, the files read with their text): the master remembers the
    files as an in-process parse would (metrics/watch.py watches them,
    errors quote their lines)."""
    result = _parse_result(path)
    return result, dict(errors._SOURCES)


def _parse_result(path: str):
    try:
        from .loader import load

        return ("ok", load(path))
    except ConfigErrors as e:
        return ("errors", [(x.message, x.pos, x.hint, x.render()) for x in e.errors])
    except OSError as e:
        return ("oserror", e.errno, e.strerror or str(e), e.filename)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        return ("exception", f"{type(e).__name__}: {e}")


def _unpack(result) -> Config:
    kind = result[0]
    if kind == "ok":
        return result[1]
    if kind == "errors":
        raise ConfigErrors([RenderedError(*x) for x in result[1]])
    if kind == "oserror":
        raise OSError(result[1], result[2], result[3])
    raise ConfigErrors([ConfigError(f"cannot parse the configuration: {result[1]}")])


def importable_as(drop, path: str, also=()) -> bool:
    """Whether a child that has called `drop()` (the privilege drop) can
    still import the parser and parse `path` (its errors do not matter here,
    a missing module does), and import the modules named in `also`."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            drop()
            import importlib

            for name in also:
                importlib.import_module(name)
            result = _parse_result(path)
            if result[0] == "exception" and ("ImportError" in result[1] or "ModuleNotFound" in result[1]):
                code = 3
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) == 0
        except InterruptedError:
            continue


def load(path: str) -> Config:
    """What config.load(path) returns or raises, parsed in a child.  Where
    the parser is already imported (tests, `rproxy -t`), in this process."""
    if "rproxy.config.loader" in sys.modules:
        from .loader import load as load_here

        return load_here(path)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        from .loader import load as load_here

        return load_here(path)
    if pid == 0:                    # the child: parse, send, exit without cleanup
        code = 0
        try:
            os.close(r)
            data = pickle.dumps(_parse(path), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(r, 1 << 16)
            except InterruptedError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    if not chunks:
        raise ConfigErrors([ConfigError("cannot parse the configuration: the parser process died")])
    result, sources = pickle.loads(b"".join(chunks))
    for name, text in sources.items():
        errors.remember_source(name, text)
    return _unpack(result)
