"""The hot path executes no Python: every cdef function of the loop's
includes is declared `nogil`, which makes Cython reject any Python object
operation in it at compile time (and the loop runs inside `with nogil:`).
Only worker.pxi (the Python-facing edge, run at start-up), cfgutil.pxi (its
helpers for every area's set-up code) and testhook.pxi
(test and benchmark hooks) may hold the GIL."""
import glob
import os
import re

FASTPATH = os.path.join(os.path.dirname(__file__), "..", "..", "rproxy", "fastpath")
EDGE = {"worker.pxi", "testhook.pxi", "cfgutil.pxi", "defs.pxi", "globals.pxi"}
# Functions that take the GIL on purpose, never per request on plain HTTP:
# the client certificate's X-SSL-* block is computed by rproxy.tls once per
# TLS handshake that presented a certificate.
ONCE_PER_CONNECTION = {"tls_run_header_fn"}
# Start-up only (Python values to C tables) in an area of the loop:
# accesslog.pxi's format compiler.
START_UP = {"_alog_compile", "_alog_free"}
CDEF_FUNC = re.compile(r"^cdef\s+(?:inline\s+)?[\w\s\*]+?\b(\w+)\s*\((.*?)\)\s*([^:]*):", re.S | re.M)


def test_every_hot_path_function_is_nogil():
    offenders = []
    files = sorted(glob.glob(os.path.join(FASTPATH, "*.pxi")))
    assert files, "no fast-path sources found"
    for path in files:
        if os.path.basename(path) in EDGE:
            continue
        text = open(path).read()
        for m in CDEF_FUNC.finditer(text):
            name, tail = m.group(1), m.group(3)
            if "nogil" not in tail and name not in ONCE_PER_CONNECTION | START_UP:
                offenders.append(f"{os.path.basename(path)}: {name}")
    assert offenders == []


def test_the_loop_runs_without_the_gil():
    text = open(os.path.join(FASTPATH, "worker.pxi")).read()
    assert re.search(r"with nogil:\s*\n\s*rc = loop_run\(\)", text)
