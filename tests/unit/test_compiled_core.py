"""The installed package must carry the compiled fast path, not a fallback."""
import importlib.machinery
import os



def test_fastpath_is_a_compiled_extension():
    import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols, then the core)
    from rproxy import _fastpath

    path = _fastpath.__file__
    assert any(path.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES), path
    assert os.path.dirname(path) == os.path.dirname(rproxy.__file__)


def test_fastpath_worker_is_usable():
    from rproxy.fastpath import Worker, sizes

    assert Worker is not None
    s = sizes()
    # an idle client connection must stay well under the 1 KiB budget
    assert s["UConn"] < 512, s
