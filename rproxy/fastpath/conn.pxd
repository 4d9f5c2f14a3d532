# Area `conn` (conn.pxi). The connection core shared by client and downstream
# connections (Conn, the first member of UConn and DConn): read into its
# buffer, send its output, shift its buffer, release it.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef ssize_t conn_read(Conn* c, uint32_t room, bint raw) noexcept nogil
cdef void conn_release(Conn* c) noexcept nogil
cdef int conn_send(Conn* c, uint32_t* moved) noexcept nogil
cdef void conn_shift(Conn* c, uint32_t d) noexcept nogil
cdef void headers_shift(Header* hs, int n, uint32_t d) noexcept nogil
