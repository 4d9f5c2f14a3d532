# Area `routing` (routing.pxi). Listener -> vhost -> rule.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef bint glob_match(const char* pat, uint32_t plen, const char* s, uint32_t slen, bint nocase) noexcept nogil
cdef uint32_t host_normalise(const char* v, uint32_t n, char* out, uint32_t cap) noexcept nogil
cdef void path_span(const char* url, uint32_t n, uint32_t* off, uint32_t* plen) noexcept nogil
cdef RuleRt* route(UConn* uc, Exchange* x, int* status) noexcept nogil
