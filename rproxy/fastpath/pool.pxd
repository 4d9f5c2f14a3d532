# Area `pool` (pool.pxi). Pool growth beyond `connections` and back.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef int64_t pool_idle_ms(DConn* dc) noexcept nogil
cdef void pool_grow(RuleRt* r) noexcept nogil
