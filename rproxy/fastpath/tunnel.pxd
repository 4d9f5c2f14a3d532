# Area `tunnel` (tunnel.pxi, splice.pxi). Raw byte relays both ways (Upgrade, CONNECT-like redirects)
# and splice(2) of large bodies.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

# tunnel.pxi
cdef void tunnel_start(Exchange* x, DConn* dc) noexcept nogil
cdef void tunnel_free(DConn* t) noexcept nogil
cdef void tunnels_free_dead() noexcept nogil
cdef void tun_up(UConn* uc) noexcept nogil
cdef void tun_down(DConn* t) noexcept nogil
cdef void tun_on_event(DConn* t, uint32_t ev) noexcept nogil

# splice.pxi
cdef void pipe_put(Pipe* p) noexcept nogil
cdef void pipes_clear() noexcept nogil
cdef bint dc_splice(DConn* dc) noexcept nogil
