# Area `limits` (limits.pxi, redis.pxi). Edge policy at admission: access rules, deny, rate limits
# (local or in Redis).
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef struct AccessRt

# limits.pxi
cdef const uint8_t* edge_addr(Peer* p, int* family) noexcept nogil
cdef bint edge_net_match(AccessRt* r, const uint8_t* a, int fam) noexcept nogil
cdef bint edge_admit(UConn* uc, Exchange* x, RuleRt* rule) noexcept nogil
cdef const char* edge_limit_name(Exchange* x) noexcept nogil
cdef void edge_on_timer(Exchange* x) noexcept nogil

# redis.pxi
cdef void redis_on_event(uint32_t ev) noexcept nogil
cdef void redis_on_timer() noexcept nogil
cdef void redis_forget(Exchange* x) noexcept nogil
cdef void redis_start() noexcept nogil
