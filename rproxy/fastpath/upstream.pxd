# Area `upstream` (upstream.pxi, proxyproto.pxi). Client connections: accept, read a request, route
# it, hand it to a downstream, relay the response, keep-alive; PROXY protocol in.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# upstream.pxi
cdef Exchange* x_new(UConn* uc) noexcept nogil
cdef void x_free(Exchange* x) noexcept nogil
cdef void x_drop(UConn* uc) noexcept nogil
cdef void pend_add(Exchange* x) noexcept nogil
cdef void pend_serve() noexcept nogil
cdef void pend_fail_dead() noexcept nogil
cdef void x_on_pending_timeout(Exchange* x) noexcept nogil
cdef UConn* uc_new(int fd, ServerRt* srv, const uint8_t* ss) noexcept nogil
cdef void uc_close(UConn* uc) noexcept nogil
cdef int64_t uc_read_timeout(UConn* uc) noexcept nogil
cdef int64_t uc_write_timeout(UConn* uc) noexcept nogil
cdef int uc_send(UConn* uc) noexcept nogil
cdef void uc_on_drained(UConn* uc) noexcept nogil
cdef void uc_after_response(UConn* uc) noexcept nogil
cdef void uc_respond(UConn* uc, int status, bint keep) noexcept nogil
cdef bint uc_request_bodyless(UConn* uc) noexcept nogil
cdef void uc_reject(UConn* uc, int status) noexcept nogil
cdef bint uc_reject_keeps(UConn* uc) noexcept nogil
cdef void uc_on_event(UConn* uc, uint32_t ev) noexcept nogil
cdef void uc_read(UConn* uc) noexcept nogil
cdef int parse_error_status(UConn* uc, llhttp_errno_t err) noexcept nogil
cdef void c_errors_inc() noexcept nogil
cdef void uc_process(UConn* uc) noexcept nogil
cdef RuleRt* request_admit(UConn* uc, int* status) noexcept nogil
cdef void uc_start(UConn* uc, Exchange* x, RuleRt* rule) noexcept nogil
cdef void uc_dispatch(UConn* uc) noexcept nogil
cdef void x_attach(Exchange* x, DConn* dc) noexcept nogil
cdef void uc_forward_body(UConn* uc) noexcept nogil
cdef void uc_on_timer(UConn* uc) noexcept nogil

# proxyproto.pxi
cdef int pp_accept(UConn* uc) noexcept nogil
cdef void uc_x_end(UConn* uc) noexcept nogil
cdef int pp_send(int fd, int version, UConn* uc) noexcept nogil
cdef PPClient* pp_client(UConn* uc) noexcept nogil
cdef void uc_x_push(UConn* uc, Exchange* x) noexcept nogil
cdef void uc_answer(UConn* uc, const char* resp, uint32_t len, Buf* hb, bint keep) noexcept nogil
cdef void uc_on_ready(UConn* uc, uint32_t ev) noexcept nogil
