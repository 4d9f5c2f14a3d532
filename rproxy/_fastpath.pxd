# cython: language_level=3
# The declarations of rproxy._fastpath, which Cython reads before
# _fastpath.pyx: the fast path's types (defs.pxi), used by every area.
#
# The areas' seams (fastpath/<area>.pxd: the cdef functions OTHER areas may
# call) are gathered by fastpath/seams.pxd, which is NOT included here:
# Cython exports every cdef function a module's .pxd declares through
# __pyx_capi__, and a function whose address is taken loses the compiler's
# called-once inlining (measured: 55 more functions left out of line, request
# head parsing 10% slower in benchmarks/test_micro.py).  The build stays one C
# unit with direct, inlinable calls; tests/unit/test_seams.py compiles the
# module once more with seams.pxd included, so Cython checks every
# declaration against its definition, and checks that every cross-area use
# is declared.  README "Layout" describes the areas.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t

from rproxy.includes.llhttp cimport *
from rproxy.includes.linux cimport *

# the types every area uses: connections, exchanges, buffers, rules
include "fastpath/defs.pxi"
