# Area `http` (http.pxi). HTTP/1.1 glue: llhttp callbacks, header classification, head re-emission,
# the proxy's own (canned) responses.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef struct Canned
cdef struct Tokens

cdef int header_id(const char* p, uint32_t n) noexcept nogil
cdef bint names_has(NameList* l, const char* name, uint32_t n) noexcept nogil
cdef void http_settings_init() noexcept nogil
cdef void ows_trim(const char** v, uint32_t* n) noexcept nogil
cdef bint host_valid(const char* v, uint32_t n) noexcept nogil
cdef int target_authority(const char* url, uint32_t n, uint32_t* aoff, uint32_t* alen) noexcept nogil
cdef int te_check(const char* v, uint32_t n) noexcept nogil
cdef int upgrade_wanted(const char* v, uint32_t n) noexcept nogil
cdef int request_strict(UConn* uc, Exchange* x) noexcept nogil
cdef const char* response_strict(DConn* dc, Exchange* x) noexcept nogil
cdef void build_request_head(W* w, UConn* uc, Exchange* x, DownstreamRt* ds) noexcept nogil
cdef void build_response_head(W* w, DConn* dc, Exchange* x, bint close_client) noexcept nogil
cdef void canned_init() noexcept nogil
cdef Canned* canned_get(int status) noexcept nogil
cdef void collect_connection_tokens(Tokens* t, const char* base, Header* hs, int nh) noexcept nogil
cdef bint tokens_has(Tokens* t, const char* name, uint32_t n) noexcept nogil
