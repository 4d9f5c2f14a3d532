# RProxy's internal redirect (rule `allow-redirect`): a downstream answers
# 377 with `X-Internal-Redirect: host[:port]` and the proxy replays the
# client's request there (adding `X-Redirected-Via: <rule>`), then relays raw
# bytes both ways, as the original did.
#
# Fixed from the original (reference 3.8): without a `redirect-filter` the
# redirect is refused, never an open relay for whoever controls a
# downstream; a target the filter does not match is refused too.  Refused
# redirects reach the client as 401 (the rest of the 377 response, minus
# X-Internal-Redirect), RProxy's answer to a filter mismatch.  Only requests
# still whole in the client's buffer are replayed (the original replayed the
# head and dropped any body); targets must be IP addresses (resolving a name
# would block the loop).

cdef int redirect_target(const char* v, uint32_t n, uint8_t* ss, socklen_t* sl) noexcept nogil:
    """Parse `a.b.c.d[:port]` or `[v6][:port]` (port 80 by default) into a
    sockaddr.  0 on success, -1 if it is not an address."""
    cdef char host[64]
    cdef uint32_t i = 0, hl, port = 80
    cdef const char* colon = NULL
    cdef sockaddr_in* a4 = <sockaddr_in*>ss
    cdef sockaddr_in6* a6 = <sockaddr_in6*>ss
    cdef bint v6 = n > 0 and v[0] == c'['
    memset(ss, 0, 128)
    if v6:
        while i < n and v[i] != c']':
            i += 1
        if i >= n or i - 1 >= 64:
            return -1
        memcpy(host, v + 1, i - 1)
        host[i - 1] = 0
        i += 1
    else:
        while i < n and v[i] != c':':
            i += 1
        if i >= 64:
            return -1
        memcpy(host, v, i)
        host[i] = 0
    if i < n:
        if v[i] != c':' or i + 1 >= n:
            return -1
        port = 0
        i += 1
        while i < n:
            if v[i] < c'0' or v[i] > c'9' or port > 65535:
                return -1
            port = port * 10 + <uint32_t>(v[i] - 48)
            i += 1
        if port == 0 or port > 65535:
            return -1
    if v6:
        if inet_pton(AF_INET6, host, &a6.sin6_addr) != 1:
            return -1
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(<uint16_t>port)
        sl[0] = sizeof(sockaddr_in6)
    else:
        if inet_pton(AF_INET, host, &a4.sin_addr) != 1:
            return -1
        a4.sin_family = AF_INET
        a4.sin_port = htons(<uint16_t>port)
        sl[0] = sizeof(sockaddr_in)
    return 0


cdef Header* resp_header(DConn* dc, Exchange* x, int hid) noexcept nogil:
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef int i
    for i in range(x.nresp):
        if header_id(base + x.resp[i].name.off, x.resp[i].name.len) == hid:
            return &x.resp[i]
    return NULL


cdef bint redirect_allowed(RuleRt* r, const char* v, uint32_t n) noexcept nogil:
    cdef int i
    for i in range(r.redirect_filter.n):
        if glob_match(r.redirect_filter.names[i], r.redirect_filter.lens[i], v, n, False):
            return True
    return False


cdef int redirect_on_377(DConn* dc) noexcept nogil:
    """Called for a 377 on a rule with allow-redirect.  0: handled (the
    exchange went on to the redirect target, or failed); 1: refused, answer
    the client with the 377 turned into a 401 (the caller does that); 2: no
    X-Internal-Redirect header, relay the 377 as it is."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef RuleRt* r = x.rule
    cdef Header* h = resp_header(dc, x, H_X_INTERNAL_REDIRECT)
    cdef const char* v
    cdef uint8_t ss[128]
    cdef socklen_t sl = 0
    if h == NULL:
        return 2
    v = bdata(dc.conn.rbuf) + h.value.off
    if r.redirect_filter.n == 0:
        rp_elog(x_errfd(x), 3, "rule '%s': internal redirect to %.*s refused: no redirect-filter configured",
                r.name, <int>h.value.len, v)
        return 1
    if not redirect_allowed(r, v, h.value.len):
        rp_elog(x_errfd(x), 3, "rule '%s': internal redirect to %.*s refused by redirect-filter",
                r.name, <int>h.value.len, v)
        return 1
    if redirect_target(v, h.value.len, ss, &sl) != 0:
        rp_elog(x_errfd(x), 3, "rule '%s': internal redirect target %.*s is not an address[:port]",
                r.name, <int>h.value.len, v)
        dc_exchange_failed(dc, 502, "bad internal redirect target")
        return 0
    if not (x.flags & XF_REQ_DONE) or (x.flags & XF_BODY_SPILLED):
        dc_exchange_failed(dc, 502, "internal redirect of a request no longer buffered")
        return 0
    redirect_start(dc, ss, sl)
    return 0


cdef void redirect_start(DConn* dc, uint8_t* ss, socklen_t sl) noexcept nogil:
    """Leave the 377 unread (its connection is closed), open an unpooled
    connection to the target and replay the request on it."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef DConn* t
    cdef Buf* hb
    cdef W w
    cdef int fd, one = 1
    cdef epoll_event ev
    cdef DownstreamRt* ds = dc.ds
    dc_detach(dc)
    dc_recycle(dc)
    t = <DConn*>calloc(1, sizeof(DConn))
    hb = buf_get()
    fd = socket((<sockaddr*>ss).sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if t == NULL or hb == NULL or fd < 0:
        if t != NULL:
            free(t)
        if hb != NULL:
            buf_put(hb)
        if fd >= 0:
            close(fd)
        uc_respond(uc, 502, False)
        return
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
    t.conn.h.kind = K_DCONN
    t.conn.h.fd = fd
    t.ds = ds
    t.x = x
    dc_move_phase(t, R_TUNNEL)
    t.conn.flags = 0
    dc_move(t, D_CONNECTING)
    timer_init(&t.conn.timer, TK_DCONN, t)
    x.dc = t
    # the replayed head: the client's, plus where it was redirected from
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    build_request_head(&w, uc, x, ds)
    if not w.overflow:
        w.p -= 2                    # reopen the head before its final CRLF
        w_put(&w, "X-Redirected-Via: ", 18)
        w_str(&w, x.rule.name)
        w_put(&w, "\r\n\r\n", 4)
    if w.overflow:
        # a truncated head must never be sent: the target would read the
        # request's body as the rest of its head
        rp_elog(x_errfd(x), 3, "internal redirect: the replayed request head does not fit a buffer")
        x.dc = NULL
        buf_put(hb)
        tunnel_free(t)
        uc_respond(uc, 502, False)
        return
    t.conn.out.hptr = bdata(hb)
    t.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    t.conn.out.hbuf = hb
    if x.head_end < uc.conn.rpos:        # a buffered body follows the head
        t.conn.out.bptr = bdata(uc.conn.rbuf) + x.head_end
        t.conn.out.blen = uc.conn.rpos - x.head_end
    uc.conn.fpos = uc.conn.rpos
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = t
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev)
    if connect(fd, <sockaddr*>ss, sl) != 0 and errno != EINPROGRESS:
        redirect_failed(t, errno)
        return
    timer_arm(&t.conn.timer, ds.connect_timeout_ms)


cdef void redirect_on_connect(DConn* t, uint32_t ev) noexcept nogil:
    """An event on the redirect target's connection while it connects (the
    tunnel relay, below this, only ever sees connected tunnels)."""
    cdef int err = 0
    cdef socklen_t sl = sizeof(int)
    if t.x == NULL or not (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)):
        return
    getsockopt(t.conn.h.fd, SOL_SOCKET, SO_ERROR, &err, &sl)
    if err != 0:
        redirect_failed(t, err)
    else:
        redirect_connected(t)


cdef void redirect_failed(DConn* t, int err) noexcept nogil:
    cdef Exchange* x = t.x
    rp_elog(x_errfd(x), 3, "internal redirect: connect failed: %s", strerror(err))
    x.dc = NULL
    tunnel_free(t)
    uc_respond(x.uc, 502, False)


cdef void redirect_connected(DConn* t) noexcept nogil:
    """The redirect target accepted: send the replayed request, then relay."""
    cdef Exchange* x = t.x
    cdef UConn* uc = x.uc
    timer_stop(&t.conn.timer)
    dc_move(t, D_ACTIVE)
    t.conn.flags |= CN_READABLE | CN_WRITABLE
    x.flags |= XF_RESP_STARTED      # from now on failures can only close
    xlog_relay(x)                   # the target's status, not the 377, is the client's
    xlog_redirected(x, t)           # and its address: {DS_ADDR}, {DS_SPORT}
    xlog_keep_request(x, uc)        # tunnel bytes reuse the client's read buffer
    uc_move(uc, U_TUNNEL)
    uc.conn.flags |= CN_READABLE
    timer_arm(&uc.conn.timer, uc.srv.tunnel_timeout_ms)
    tun_up(uc)                      # flushes the replayed head first
    if uc.xhead == x and uc.conn.state != U_CLOSED:
        tun_down(t)
