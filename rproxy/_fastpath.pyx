# cython: language_level=3
"""rproxy's fast path: the worker event loop, HTTP/1.1 forwarding, pools.

One extension module made of the includes below (one C translation unit, so
the compiler can inline across them).  Import it through rproxy.fastpath,
which first makes llhttp's C symbols visible to it.
"""
from libc.stdlib cimport malloc, calloc, realloc, free, abort
from libc.string cimport memcpy, memmove, memset, memcmp, strlen, strcmp, strstr, strchr, strerror
from libc.stdio cimport snprintf
from libc.errno cimport (errno, EAGAIN, EINTR, EINPROGRESS, ECONNRESET, EPIPE, ETIMEDOUT, ECONNREFUSED,
                         EMFILE, ENFILE, ENOBUFS, ENOMEM)
from libc.signal cimport SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2

from rproxy.includes.llhttp cimport *
from rproxy.includes.linux cimport *
from rproxy.includes.nghttp2 cimport *

cdef extern from "rp_util.h" nogil:
    void rp_elog(int fd, int level, const char* fmt, ...)

# the types (fastpath/defs.pxi) and each area's seam (fastpath/<area>.pxd) are
# declared in _fastpath.pxd, which Cython reads first
include "fastpath/globals.pxi"
include "fastpath/errlog.pxi"
include "fastpath/cfgutil.pxi"
include "fastpath/states.pxi"
include "fastpath/metrics.pxi"
include "fastpath/buffers.pxi"
include "fastpath/bodybuf.pxi"
include "fastpath/tls.pxi"
include "fastpath/timers.pxi"
include "fastpath/conn.pxi"
include "fastpath/accesslog.pxi"
include "fastpath/http.pxi"
include "fastpath/routing.pxi"
include "fastpath/balance.pxi"
include "fastpath/upstream.pxi"
include "fastpath/h2.pxi"
include "fastpath/limits.pxi"
include "fastpath/proxyproto.pxi"
include "fastpath/redis.pxi"
include "fastpath/downstream.pxi"
include "fastpath/pool.pxi"
include "fastpath/pipeline.pxi"
include "fastpath/tunnel.pxi"
include "fastpath/splice.pxi"
include "fastpath/redirect.pxi"
include "fastpath/acme.pxi"
include "fastpath/edge.pxi"
include "fastpath/static.pxi"
include "fastpath/filecache.pxi"
include "fastpath/health.pxi"
include "fastpath/control.pxi"
include "fastpath/loop.pxi"
include "fastpath/worker.pxi"
include "fastpath/compress.pxi"
include "fastpath/cachepolicy.pxi"
include "fastpath/cache.pxi"
include "fastpath/testhook.pxi"
