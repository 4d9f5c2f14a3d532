# Tunnels: raw bytes both ways between a client and a downstream, after a
# 101 Switching Protocols (WebSocket and other upgrades) or, for a rule with
# RProxy's `passthrough`, right after the request head.
#
# A tunnel takes its downstream socket OUT of the pool: the socket moves to
# a DConn of its own (heap-allocated, DF_TUNNEL) and the pool slot connects
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
    t.h.kind = K_DCONN
    t.h.fd = slot.h.fd
    t.state = D_ACTIVE
    t.ds = ds
    t.x = slot.x
    t.rbuf = slot.rbuf
    t.rpos = slot.rpos
    t.fpos = slot.fpos
    t.fend = slot.fend
    t.rend = slot.rend
    t.out = slot.out
    t.tls = slot.tls
    t.phase = R_TUNNEL
    # readiness seen by the slot may sit in this loop turn's event batch,
    # addressed to the slot: assume ready, an extra EAGAIN costs nothing
    t.flags = DF_TUNNEL | DF_READABLE | DF_WRITABLE | (slot.flags & DF_RDHUP)
    timer_init(&t.timer, TK_DCONN, t)
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = t
    epoll_ctl(g_epfd, EPOLL_CTL_MOD, t.h.fd, &ev)
    # the slot forgets the socket and reconnects
    slot.h.fd = -1
    slot.tls = NULL
    slot.rbuf = NULL
    memset(&slot.out, 0, sizeof(Out))
    slot.x = NULL
    slot.xlast = NULL
    slot.ninflight = 0
    ds.n_active -= 1
    ds.n_up -= 1
    timer_stop(&slot.timer)
    slot.state = D_DOWN
    slot.flags = 0
    llhttp_init(&slot.parser, HTTP_RESPONSE, &g_resp_settings)
    slot.parser.data = slot
    timer_arm(&slot.timer, 1)
    return t


cdef void tunnel_start(Exchange* x, DConn* dc) noexcept nogil:
    cdef UConn* uc = x.uc
    cdef DConn* t = tunnel_take_socket(dc)
    if t == NULL:
        uc_close(uc)
        return
    xlog_keep_request(x, uc)        # tunnel bytes reuse the client's read buffer
    x.dc = t
    uc.state = U_TUNNEL
    uc.fpos = uc.rpos               # what follows the request is tunnel data
    t.fpos = t.rpos                 # what follows the 101 head is tunnel data
    t.fend = t.rpos
    uc.flags |= UF_READABLE
    timer_arm(&uc.timer, uc.srv.tunnel_timeout_ms)
    tun_down(t)
    if uc.x == x and not (uc.flags & UF_DEAD):
        tun_up(uc)


cdef void tunnel_free(DConn* t) noexcept nogil:
    """Close a tunnel's downstream side; freed at the end of the loop turn."""
    global g_dead_tunnels
    if t.tls != NULL:
        tls_free(t.tls)
        t.tls = NULL
    if t.h.fd >= 0:
        close(t.h.fd)
        t.h.fd = -1
    if t.rbuf != NULL:
        buf_put(t.rbuf)
        t.rbuf = NULL
    out_release(&t.out)
    timer_stop(&t.timer)
    t.state = D_DOWN
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
    cdef DConn* t = uc.x.dc
    if (uc.flags & UF_TUN_UP_EOF) and (t.flags & DF_TUN_DOWN_EOF) \
            and out_empty(&uc.out) and out_empty(&t.out):
        uc_close(uc)


cdef void tun_up(UConn* uc) noexcept nogil:
    """Client -> downstream."""
    cdef Exchange* x = uc.x
    cdef DConn* t = x.dc
    cdef ssize_t n
    cdef int r
    while not (uc.flags & UF_DEAD) and uc.x == x:
        if not out_empty(&t.out):
            r = conn_flush(&t.out, t.h.fd, t.tls)
            if r < 0:
                uc_close(uc)
                return
            if r > 0:
                t.flags &= ~DF_WRITABLE
                return
            timer_arm(&uc.timer, uc.srv.tunnel_timeout_ms)
        if uc.flags & UF_TUN_UP_EOF:
            tun_maybe_done(uc)
            return
        if uc.rbuf != NULL and uc.fpos < uc.rend:
            t.out.bptr = bdata(uc.rbuf) + uc.fpos
            t.out.blen = uc.rend - uc.fpos
            x.body_in += t.out.blen         # the client's tunnel bytes, for the access log
            uc.fpos = uc.rend
            continue
        if not (uc.flags & UF_READABLE):
            return
        if uc.rbuf == NULL:
            uc.rbuf = buf_get()
            if uc.rbuf == NULL:
                uc_close(uc)
                return
        uc.rpos = 0
        uc.fpos = 0
        uc.rend = 0
        n = conn_recv(uc.h.fd, uc.tls, bdata(uc.rbuf), uc.rbuf.cap)
        if n > 0:
            if <uint32_t>n < uc.rbuf.cap and not (uc.flags & UF_RDHUP) and uc.tls == NULL:
                uc.flags &= ~UF_READABLE
            uc.rend = <uint32_t>n
            uc.rpos = uc.rend
        elif n == 0:
            uc.flags &= ~UF_READABLE
            uc.flags |= UF_TUN_UP_EOF
            conn_shut_wr(t.h.fd, t.tls)     # pass the client's half-close on
        elif errno == EINTR:
            continue
        elif errno == EAGAIN:
            uc.flags &= ~UF_READABLE
            return
        else:
            uc_close(uc)
            return


cdef void tun_down(DConn* t) noexcept nogil:
    """Downstream -> client."""
    cdef Exchange* x = t.x
    cdef UConn* uc = x.uc
    cdef ssize_t n
    cdef int r
    while not (uc.flags & UF_DEAD) and uc.x == x:
        if not out_empty(&uc.out):
            r = uc_send(uc)
            if r != 0:
                return
            timer_arm(&uc.timer, uc.srv.tunnel_timeout_ms)
        if t.flags & DF_TUN_DOWN_EOF:
            tun_maybe_done(uc)
            return
        if t.rbuf != NULL and t.fpos < t.rend:
            if x.log.flags & XL_SNIFF:
                xlog_sniff_status(x, bdata(t.rbuf) + t.fpos, t.rend - t.fpos)
            uc.out.bptr = bdata(t.rbuf) + t.fpos
            uc.out.blen = t.rend - t.fpos
            t.fpos = t.rend
            continue
        if not (t.flags & DF_READABLE):
            return
        if t.rbuf == NULL:
            t.rbuf = buf_get()
            if t.rbuf == NULL:
                uc_close(uc)
                return
        t.rpos = 0
        t.fpos = 0
        t.rend = 0
        n = conn_recv(t.h.fd, t.tls, bdata(t.rbuf), t.rbuf.cap)
        if n > 0:
            if <uint32_t>n < t.rbuf.cap and not (t.flags & DF_RDHUP) and t.tls == NULL:
                t.flags &= ~DF_READABLE
            t.rend = <uint32_t>n
            t.rpos = t.rend
        elif n == 0:
            t.flags &= ~DF_READABLE
            t.flags |= DF_TUN_DOWN_EOF
            conn_shut_wr(uc.h.fd, uc.tls)
        elif errno == EINTR:
            continue
        elif errno == EAGAIN:
            t.flags &= ~DF_READABLE
            return
        else:
            uc_close(uc)
            return


cdef void tun_on_event(DConn* t, uint32_t ev) noexcept nogil:
    cdef Exchange* x = t.x
    if x == NULL:
        return
    if ev & EPOLLERR:
        uc_close(x.uc)
        return
    if ev & (EPOLLRDHUP | EPOLLHUP):
        t.flags |= DF_RDHUP
    if ev & EPOLLOUT:
        t.flags |= DF_WRITABLE
        tun_up(x.uc)                # the downstream can take more of the client's bytes
        if t.x != x:
            return
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP):
        t.flags |= DF_READABLE
        tun_down(t)
