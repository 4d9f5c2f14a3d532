# Area `cache` (cache.pxi, cachepolicy.pxi). The response cache and its RFC 9111 rules.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# cache.pxi
cdef bint cache_on_request(UConn* uc, Exchange* x) noexcept nogil
cdef void cache_pump(UConn* uc) noexcept nogil
cdef void cache_head_extra(W* w, Exchange* x) noexcept nogil
cdef void cache_on_response_head(DConn* dc, Exchange* x) noexcept nogil
cdef void cache_tee(Exchange* x, const char* p, uint32_t n) noexcept nogil
cdef void cache_commit(Exchange* x) noexcept nogil
cdef void cache_free(Exchange* x) noexcept nogil
cdef bint cache_keeps_x(Exchange* x) noexcept nogil
cdef void cache_on_head_built(UConn* uc, Exchange* x) noexcept nogil
cdef void cache_req_extra(W* w, Exchange* x) noexcept nogil
cdef void cache_on_timer(Exchange* x) noexcept nogil
cdef bint cache_stale_answer(UConn* uc, Exchange* x, int status) noexcept nogil
cdef bint cache_stale_instead(DConn* dc, Exchange* x) noexcept nogil
cdef void cache_commit_when_complete(DConn* dc, Exchange* x) noexcept nogil
