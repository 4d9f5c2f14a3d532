"""Process titles (`rproxy: master -c FILE`, `rproxy: worker 0 (gen 1)`).

setproctitle's package __init__ imports `logging` (about 1.8 MB across a
master and two workers, measured with benchmarks/memory_footprint.py) only to
report that its C module is missing; the C module itself needs nothing of
it.  So the C module is loaded directly, and the package only as a fallback.
"""
from __future__ import annotations


_set = None


def _load():
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("setproctitle")         # finds, does not execute, the package
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("setproctitle is not installed")
    for base in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = f"{base}/_setproctitle{suffix}"
            loader = importlib.machinery.ExtensionFileLoader("setproctitle._setproctitle", path)
            mspec = importlib.util.spec_from_file_location("setproctitle._setproctitle", path,
                                                           loader=loader)
            try:
                module = importlib.util.module_from_spec(mspec)
            except (ImportError, OSError):
                continue
            return module.setproctitle
    raise ImportError("setproctitle's C module was not found")


def preload() -> None:
    """Load it now (while the install is surely readable)."""
    global _set
    if _set is None:
        try:
            _set = _load()
        except ImportError:
            import setproctitle

            _set = setproctitle.setproctitle


def set_title(title: str) -> None:
    preload()
    _set(title)


__all__ = ["preload", "set_title"]
