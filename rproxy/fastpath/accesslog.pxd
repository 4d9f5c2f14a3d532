# Area `accesslog` (accesslog.pxi). Access log records (XLog) filled during an exchange and rendered
# at its end; the worker's error-log helpers.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef struct LogSink

cdef void xlog_init(Exchange* x) noexcept nogil
cdef void xlog_attach(Exchange* x, DConn* dc) noexcept nogil
cdef void xlog_answer(Exchange* x, int status, const char* resp) noexcept nogil
cdef void xlog_done(Exchange* x) noexcept nogil
cdef void xlog_failed(Exchange* x, int status) noexcept nogil
cdef void xlog_relay(Exchange* x) noexcept nogil
cdef void xlog_redirected(Exchange* x, DConn* t) noexcept nogil
cdef void xlog_sniff_status(Exchange* x, const char* p, uint32_t n) noexcept nogil
cdef void xlog_response_head(Exchange* x, DConn* dc) noexcept nogil
cdef void xlog_copy_response_headers(Exchange* x, DConn* dc, AccessLog* al) noexcept nogil
cdef void xlog_keep_request(Exchange* x, UConn* uc) noexcept nogil
cdef void xlog_emit(Exchange* x) noexcept nogil
cdef int xlog_status(Exchange* x) noexcept nogil
cdef uint64_t xlog_bytes_sent(Exchange* x, UConn* uc) noexcept nogil
cdef void alog_line(AccessLog* al, Exchange* x, UConn* uc) noexcept nogil
cdef uint64_t xlog_bytes_received(Exchange* x, UConn* uc) noexcept nogil
cdef void accesslog_flush_all() noexcept nogil
cdef void accesslog_on_timer() noexcept nogil
cdef void peer_from_sockaddr(Peer* p, const uint8_t* ss) noexcept nogil
cdef AccessLog* _alog_compile(LogSink* sink, items) except NULL
cdef void _alog_free(AccessLog* al) noexcept
