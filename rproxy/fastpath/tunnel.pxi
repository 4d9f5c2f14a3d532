# Tunnels: raw bytes both ways between a client and a downstream, after a
# 101 Switching Protocols (WebSocket and other upgrades) or, for a rule with
# RProxy's `passthrough`, right after the request head.
#
# A tunnel takes its downstream socket OUT of the pool: the socket moves to
# a DConn of its own (heap-allocated, phase R_TUNNEL) and the pool slot connects
# afresh at once, so long-lived tunnels never eat the pool.  Each direction
# ends on EOF (propagated as a half-close); the tunnel closes when both have
# ended, on an error, or after the server's tunnel idle timeout.

cdef DConn* g_dead_tunnels = NULL


cdef DConn* tunnel_take_socket(DConn* slot) noexcept nogil:
    """Move the socket, buffers and exchange of a pooled connection to a new
    tunnel connection; the pool slot reconnects.  NULL if out of memory."""
    cdef DConn* t = <DConn*>calloc(1, sizeof(DConn))
    cdef DownstreamRt* ds = slot.ds
    cdef epoll_event ev
    if t == NULL:
        return NULL
    t.conn.h.kind = K_DCONN
    t.conn.h.fd = slot.conn.h.fd
    dc_move(t, D_ACTIVE)
    t.ds = ds
    t.x = slot.x
    t.conn.rbuf = slot.conn.rbuf
    t.conn.rpos = slot.conn.rpos
    t.conn.fpos = slot.conn.fpos
    t.fend = slot.fend
    t.conn.rend = slot.conn.rend
    t.conn.out = slot.conn.out
    t.conn.tls = slot.conn.tls
    dc_move_phase(t, R_TUNNEL)
    # readiness seen by the slot may sit in this loop turn's event batch,
    # addressed to the slot: assume ready, an extra EAGAIN costs nothing
    t.conn.flags = CN_READABLE | CN_WRITABLE | (slot.conn.flags & CN_RDHUP)
    timer_init(&t.conn.timer, TK_DCONN, t)
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = t
    epoll_ctl(g_epfd, EPOLL_CTL_MOD, t.conn.h.fd, &ev)
    # the slot forgets the socket and reconnects
    slot.conn.h.fd = -1
    slot.conn.tls = NULL
    slot.conn.rbuf = NULL
    memset(&slot.conn.out, 0, sizeof(Out))
    slot.x = NULL
    slot.xlast = NULL
    slot.ninflight = 0
    ds.n_active -= 1
    ds.n_up -= 1
    timer_stop(&slot.conn.timer)
    dc_move(slot, D_DOWN)
    slot.conn.flags = 0
    llhttp_init(&slot.conn.parser, HTTP_RESPONSE, &g_resp_settings)
    slot.conn.parser.data = slot
    if slot.owner != NULL:
        pp_unlink(slot)             # a private slot: the tunnel stays its client's, the slot is free
    timer_arm(&slot.conn.timer, 1)
    return t


cdef void tunnel_start(Exchange* x, DConn* dc) noexcept nogil:
    cdef UConn* uc = x.uc
    cdef DConn* t = tunnel_take_socket(dc)
    if t == NULL:
        uc_close(uc)
        return
    xlog_keep_request(x, uc)        # tunnel bytes reuse the client's read buffer
    x.dc = t
    uc_move(uc, U_TUNNEL)
    uc.conn.fpos = uc.conn.rpos               # what follows the request is tunnel data
    t.conn.fpos = t.conn.rpos                 # what follows the 101 head is tunnel data
    t.fend = t.conn.rpos
    uc.conn.flags |= CN_READABLE
    timer_arm(&uc.conn.timer, uc.srv.tunnel_timeout_ms)
    tun_down(t)
    if uc.xhead == x and uc.conn.state != U_CLOSED:
        tun_up(uc)


cdef void tunnel_free(DConn* t) noexcept nogil:
    """Close a tunnel's downstream side; freed at the end of the loop turn."""
    global g_dead_tunnels
    conn_release(&t.conn)
    dc_move(t, D_DOWN)
    t.x = NULL
    t.inext = g_dead_tunnels
    g_dead_tunnels = t


cdef void tunnels_free_dead() noexcept nogil:
    global g_dead_tunnels
    cdef DConn* t
    while g_dead_tunnels != NULL:
        t = g_dead_tunnels
        g_dead_tunnels = t.inext
        free(t)


cdef void tun_maybe_done(UConn* uc) noexcept nogil:
    """Both directions ended and everything was delivered: close."""
    cdef DConn* t = uc.xhead.dc
    if (uc.conn.flags & CN_TUN_EOF) and (t.conn.flags & CN_TUN_EOF) \
            and out_empty(&uc.conn.out) and out_empty(&t.conn.out):
        uc_close(uc)


cdef void tun_relay(Exchange* x, Conn* src, Conn* dst) noexcept nogil:
    """One direction of a tunnel: src's bytes out through dst, until src has
    nothing more to give for now, dst is full, or the tunnel ends.  The
    client side's output goes through uc_send (its byte count is logged)."""
    cdef UConn* uc = x.uc
    cdef bint to_client = dst == &uc.conn
    cdef uint32_t moved
    cdef ssize_t n
    cdef int r
    while uc.conn.state != U_CLOSED and uc.xhead == x:
        if not out_empty(&dst.out):
            if to_client:
                r = uc_send(uc)
            else:
                r = conn_send(dst, &moved)
                if r < 0:
                    uc_close(uc)
            if r != 0:
                return
            timer_arm(&uc.conn.timer, uc.srv.tunnel_timeout_ms)
        if src.flags & CN_TUN_EOF:
            tun_maybe_done(uc)
            return
        if src.rbuf != NULL and src.fpos < src.rend:
            if to_client:
                if x.log.flags & XL_SNIFF:
                    xlog_sniff_status(x, bdata(src.rbuf) + src.fpos, src.rend - src.fpos)
            else:
                x.body_in += src.rend - src.fpos    # the client's tunnel bytes, for the access log
            dst.out.bptr = bdata(src.rbuf) + src.fpos
            dst.out.blen = src.rend - src.fpos
            src.fpos = src.rend
            continue
        if not (src.flags & CN_READABLE):
            return
        if src.rbuf == NULL:
            src.rbuf = buf_get()
            if src.rbuf == NULL:
                uc_close(uc)
                return
        src.rpos = 0
        src.fpos = 0
        src.rend = 0
        n = conn_read(src, src.rbuf.cap, False)
        if n > 0:
            src.rpos = src.rend
        elif n == 0:
            src.flags |= CN_TUN_EOF
            conn_shut_wr(dst.h.fd, dst.tls)     # pass the half-close on
        elif errno != EAGAIN:
            uc_close(uc)
            return


cdef inline void tun_up(UConn* uc) noexcept nogil:
    """Client -> downstream."""
    tun_relay(uc.xhead, &uc.conn, &uc.xhead.dc.conn)


cdef inline void tun_down(DConn* t) noexcept nogil:
    """Downstream -> client."""
    tun_relay(t.x, &t.conn, &t.x.uc.conn)


cdef void tun_on_event(DConn* t, uint32_t ev) noexcept nogil:
    cdef Exchange* x = t.x
    if x == NULL:
        return
    if ev & EPOLLERR:
        uc_close(x.uc)
        return
    if ev & (EPOLLRDHUP | EPOLLHUP):
        t.conn.flags |= CN_RDHUP
    if ev & EPOLLOUT:
        t.conn.flags |= CN_WRITABLE
        tun_up(x.uc)                # the downstream can take more of the client's bytes
        if t.x != x:
            return
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP):
        t.conn.flags |= CN_READABLE
        tun_down(t)
