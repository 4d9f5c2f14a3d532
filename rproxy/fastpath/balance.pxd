# Area `balance` (balance.pxi). Load balancing: picking an idle pooled connection for a rule; rule
# health.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef uint64_t rand64() noexcept nogil
cdef int lb_choose(RuleRt* r) noexcept nogil
cdef int rule_rr_setup(RuleRt* r) noexcept nogil
cdef bint rule_alive(RuleRt* r) noexcept nogil
cdef bint all_ejected(RuleRt* r) noexcept nogil
cdef DConn* lb_pick(RuleRt* r) noexcept nogil
cdef DConn* lb_pick_for(Exchange* x) noexcept nogil
cdef void rtt_sample(DownstreamRt* d, double ms) noexcept nogil
