# Area `pool` (pool.pxi). Pool growth beyond `connections` and back.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef int64_t pool_idle_ms(DConn* dc) noexcept nogil
cdef void pool_grow(RuleRt* r) noexcept nogil
cdef DConn* pp_pick(Exchange* x) noexcept nogil
cdef void pp_failed(DConn* dc, int err) noexcept nogil
cdef void pp_idle(DConn* dc) noexcept nogil
cdef void pp_slot_timer(DConn* dc) noexcept nogil
cdef void pp_unlink(DConn* dc) noexcept nogil
cdef void pp_grow(Exchange* x) noexcept nogil
cdef void pp_release(UConn* uc) noexcept nogil
