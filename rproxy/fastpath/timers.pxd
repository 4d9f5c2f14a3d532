# Area `timers` (timers.pxi). The loop's timer heap: arm, stop, re-arm.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void timer_init(Timer* t, uint8_t kind, void* owner) noexcept nogil
cdef void timer_arm(Timer* t, int64_t after_ms) noexcept nogil
cdef void timer_stop(Timer* t) noexcept nogil
cdef int timers_next_ms() noexcept nogil
cdef Timer* timers_due() noexcept nogil
