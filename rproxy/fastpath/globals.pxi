# Per-worker state.  One worker process runs one loop, so the loop's state is
# plain C globals: no lookups, no indirection on the hot path.

cdef int g_epfd = -1
cdef int g_sigfd = -1
cdef Handle g_sig_handle
cdef int64_t g_now = 0              # ms, CLOCK_MONOTONIC, read once per loop turn
cdef int64_t g_now_us = 0           # the same instant in microseconds
cdef int g_stop = 0                 # 0 running, 1 draining (graceful), 2 stop now
cdef int g_reopen = 0               # SIGUSR1 seen: hand back to Python
cdef uint32_t g_pid = 0

# buffers
cdef uint32_t g_buf_size = 32768
cdef FreeList g_free_bufs = FreeList(NULL, 0, 256)

# exchanges
cdef FreeList g_free_x = FreeList(NULL, 0, 1024)

# timers (binary min-heap of Timer*)
cdef Timer** g_heap = NULL
cdef int g_heap_len = 0
cdef int g_heap_cap = 0

# client connections (all of them, for drain and stop)
cdef UConn* g_uconns = NULL
cdef int g_nuconns = 0
cdef UConn* g_dead = NULL           # closed this turn, freed at its end
cdef UConn* g_ready = NULL          # to continue at the end of this turn (bounds recursion)
cdef int g_depth = 0

# pending queue (exchanges waiting for a downstream connection)
cdef Exchange* g_pend_first = NULL
cdef Exchange* g_pend_last = NULL
cdef int g_npending = 0
cdef bint g_pend_serving = False    # pend_serve is on the stack
cdef uint32_t g_pend_changes = 0    # exchanges taken off the queue (or a nested serve), ever

# runtime tables built by Worker from the Config
cdef ServerRt* g_servers = NULL
cdef int g_nservers = 0
cdef DownstreamRt* g_downstreams = NULL
cdef int g_ndownstreams = 0
cdef Listener* g_listeners = NULL
cdef int g_nlisteners = 0

# error log
cdef int g_errfd = 2                # the worker's error log (levels: rp_util.h)

# counters (tests assert these return to zero; `Worker.stats()`)
cdef int64_t c_bufs_out = 0         # buffers taken from the pool and not yet returned
cdef int64_t c_x_out = 0            # exchanges in use
cdef int64_t c_requests = 0
cdef int64_t c_accepted = 0
cdef int64_t c_ds_connects = 0
cdef int64_t c_errors = 0

# client request headers the proxy owns (configured x509-extension names);
# X-SSL-* is recognised by prefix
cdef NameList g_owned

cdef llhttp_settings_t g_req_settings
cdef llhttp_settings_t g_resp_settings
