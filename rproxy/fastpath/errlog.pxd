# Area `errlog` (errlog.pxi). Which error log a message goes to; a peer's address as text. Below every
# other area.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef int ds_errfd(DownstreamRt* ds) noexcept nogil
cdef int x_errfd(Exchange* x) noexcept nogil
cdef int uc_errfd(UConn* uc) noexcept nogil
cdef int peer_format(Peer* p, char* out, int cap) noexcept nogil
