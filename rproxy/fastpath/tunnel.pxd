# Area `tunnel` (tunnel.pxi). Raw byte relays both ways: Upgrade (101) and internal redirects once
# connected.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void tunnel_start(Exchange* x, DConn* dc) noexcept nogil
cdef void tunnel_free(DConn* t) noexcept nogil
cdef void tunnels_free_dead() noexcept nogil
cdef void tun_up(UConn* uc) noexcept nogil
cdef void tun_down(DConn* t) noexcept nogil
cdef void tun_on_event(DConn* t, uint32_t ev) noexcept nogil
