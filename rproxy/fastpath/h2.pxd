# Area `h2` (h2.pxi). HTTP/2 toward clients on libnghttp2: the connection's session, and each stream
# as a virtual client connection the HTTP/1.1 code serves unchanged.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void h2_begin(UConn* uc) noexcept nogil
cdef bint h2_preface(UConn* uc) noexcept nogil
cdef void h2_free(UConn* uc) noexcept nogil
cdef void h2_on_event(UConn* uc, uint32_t ev) noexcept nogil
cdef void h2_flush_dirty() noexcept nogil
cdef void h2_on_timer(UConn* uc) noexcept nogil
cdef void h2_drain(UConn* uc) noexcept nogil
cdef ssize_t h2_vread(UConn* uc, uint32_t room) noexcept nogil
cdef int h2_vsend(UConn* uc) noexcept nogil
cdef void h2_vuc_closed(UConn* uc) noexcept nogil
cdef void h2_refuse(UConn* uc, const char* why) noexcept nogil
