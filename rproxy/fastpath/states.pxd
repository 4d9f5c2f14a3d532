# Area `states` (states.pxi). The state machines as data: the allowed moves
# of a client connection, a downstream connection and a response, and the
# one function per machine that moves it (checked in the sanitizer build).
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void uc_move(UConn* uc, uint8_t after) noexcept nogil
cdef void dc_move(DConn* dc, uint8_t after) noexcept nogil
cdef void dc_move_phase(DConn* dc, uint8_t after) noexcept nogil
