# Area `loop` (loop.pxi, control.pxi). The event loop (epoll, signals, draining) and the control pipe
# from the worker's Python threads.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# loop.pxi
cdef void clock_update() noexcept nogil
cdef void listeners_register(int on) noexcept nogil
cdef void drain_start(int64_t timeout_ms) noexcept nogil
cdef int loop_run() noexcept nogil
cdef void close_everything() noexcept nogil

# control.pxi
cdef void resolve_request(DownstreamRt* ds) noexcept nogil
cdef void run_ready() noexcept nogil
