# cython: language_level=3
# The declarations of rproxy._fastpath (Cython reads this file before
# _fastpath.pyx): the fast path's types, then one .pxd per area listing the
# cdef functions OTHER areas may call.  The definitions stay in the .pxi
# files _fastpath.pyx includes, in the same single compile unit: a call across
# areas is still a direct C call the compiler can inline.  README "Layout"
# describes the areas; tests/unit/test_seams.py keeps the lists complete.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t

from rproxy.includes.llhttp cimport *
from rproxy.includes.linux cimport *

# the types every area uses: connections, exchanges, buffers, rules
include "fastpath/defs.pxi"

# the areas, in the order _fastpath.pyx includes their .pxi files
include "fastpath/errlog.pxd"
include "fastpath/metrics.pxd"
include "fastpath/buffers.pxd"
include "fastpath/bodybuf.pxd"
include "fastpath/tls.pxd"
include "fastpath/timers.pxd"
include "fastpath/accesslog.pxd"
include "fastpath/http.pxd"
include "fastpath/routing.pxd"
include "fastpath/balance.pxd"
include "fastpath/upstream.pxd"
include "fastpath/limits.pxd"
include "fastpath/downstream.pxd"
include "fastpath/pool.pxd"
include "fastpath/tunnel.pxd"
include "fastpath/acme.pxd"
include "fastpath/edge.pxd"
include "fastpath/health.pxd"
include "fastpath/loop.pxd"
include "fastpath/worker.pxd"
include "fastpath/compress.pxd"
include "fastpath/cache.pxd"
include "fastpath/testhook.pxd"
