# Area `edge` (edge.pxi, static.pxi, filecache.pxi). Serving at the edge: header rules, redirects,
# static files, the open-file cache.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# edge.pxi
cdef bint edge_req_skip(RuleRt* r, const char* name, uint32_t n) noexcept nogil
cdef bint edge_resp_skip(RuleRt* r, const char* name, uint32_t n, uint64_t* seen) noexcept nogil
cdef void edge_req_extra(W* w, UConn* uc, Exchange* x) noexcept nogil
cdef void edge_resp_extra(W* w, RuleRt* r, Exchange* x, bint tls, uint64_t seen) noexcept nogil
cdef int edge_on_head(UConn* uc, Exchange* x) noexcept nogil
cdef bint edge_on_drained(UConn* uc) noexcept nogil
cdef void uc_redirect_https(UConn* uc, Exchange* x, VhostRt* v) noexcept nogil
cdef DConn* sticky_pick(Exchange* x, int* wait) noexcept nogil

# static.pxi
cdef void static_pump(UConn* uc) noexcept nogil
cdef void static_release(Exchange* x) noexcept nogil
cdef int sticky_from_cookie(UConn* uc, Exchange* x) noexcept nogil
cdef int sticky_ip_pick(UConn* uc, RuleRt* r) noexcept nogil
