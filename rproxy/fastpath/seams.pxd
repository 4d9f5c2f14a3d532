# The seams of the fast path: one .pxd per area, each declaring the cdef
# functions OTHER areas may call (README "Layout").  Gathered here for the
# check in tests/unit/test_seams.py, which compiles rproxy/_fastpath.pyx with
# this file included from _fastpath.pxd (Cython then checks every
# declaration against its definition); the build itself leaves it out (see
# _fastpath.pxd: declared functions would be exported and lose inlining).
# The areas, in the order _fastpath.pyx includes their .pxi files:
include "errlog.pxd"
include "cfgutil.pxd"
include "states.pxd"
include "metrics.pxd"
include "buffers.pxd"
include "bodybuf.pxd"
include "tls.pxd"
include "timers.pxd"
include "conn.pxd"
include "accesslog.pxd"
include "http.pxd"
include "routing.pxd"
include "balance.pxd"
include "upstream.pxd"
include "h2.pxd"
include "limits.pxd"
include "downstream.pxd"
include "pool.pxd"
include "tunnel.pxd"
include "acme.pxd"
include "edge.pxd"
include "health.pxd"
include "loop.pxd"
include "worker.pxd"
include "compress.pxd"
include "cache.pxd"
include "testhook.pxd"
