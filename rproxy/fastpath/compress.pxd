# Area `compress` (compress.pxi). On-the-fly response compression (gzip, brotli, zstd).
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void comp_on_request(UConn* uc, Exchange* x) noexcept nogil
cdef void comp_on_response_head(DConn* dc, Exchange* x, bint* close_client) noexcept nogil
cdef bint comp_header(W* w, Exchange* x, const char* base, Header* h, int hid) noexcept nogil
cdef void comp_head_extra(W* w, Exchange* x) noexcept nogil
cdef bint comp_pending(DConn* dc, Exchange* x) noexcept nogil
cdef int comp_drive(DConn* dc) noexcept nogil
cdef bint comp_resume(DConn* dc) noexcept nogil
cdef void comp_free(Exchange* x) noexcept nogil
