# Area `health` (health.pxi). Active health checks of downstreams.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef struct Probe

cdef void probe_schedule(Probe* pr, int64_t after_ms) noexcept nogil
cdef void probe_on_event(Probe* pr, uint32_t ev) noexcept nogil
cdef void probe_on_timer(Probe* pr) noexcept nogil
cdef void probes_stop() noexcept nogil
