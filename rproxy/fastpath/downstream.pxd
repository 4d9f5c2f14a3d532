# Area `downstream` (downstream.pxi, pipeline.pxi, redirect.pxi, splice.pxi). Backend connections: the
# pools, sending a request, reading its response (spliced when large); pipelining to downstreams;
# internal redirects.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# downstream.pxi
cdef void idle_push(DConn* dc) noexcept nogil
cdef void idle_remove(DConn* dc) noexcept nogil
cdef bint dc_alive(DConn* dc) noexcept nogil
cdef bint dc_alive_now(DConn* dc) noexcept nogil
cdef DConn* idle_pop(DownstreamRt* ds) noexcept nogil
cdef void dc_connect(DConn* dc) noexcept nogil
cdef void dc_teardown(DConn* dc) noexcept nogil
cdef int64_t backoff_ms(DownstreamRt* ds, int fails) noexcept nogil
cdef void dc_recycle(DConn* dc) noexcept nogil
cdef void dc_detach(DConn* dc) noexcept nogil
cdef void dc_abandon(DConn* dc) noexcept nogil
cdef void dc_exchange_failed(DConn* dc, int status, const char* why) noexcept nogil
cdef int dc_send(DConn* dc) noexcept nogil
cdef void dc_on_event(DConn* dc, uint32_t ev) noexcept nogil
cdef void dc_read(DConn* dc) noexcept nogil
cdef void dc_response_done(DConn* dc) noexcept nogil
cdef void dc_on_timer(DConn* dc) noexcept nogil

# pipeline.pxi
cdef DConn* lb_pick_pipelined(RuleRt* r) noexcept nogil
cdef Exchange* pipe_unlink_from(DConn* dc, Exchange* first) noexcept nogil
cdef void pipe_drop(DConn* dc, Exchange* x) noexcept nogil

# splice.pxi
cdef void spl_put(SplicePipe* p) noexcept nogil
cdef void spl_clear() noexcept nogil
