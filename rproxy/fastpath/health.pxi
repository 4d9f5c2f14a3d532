# Active health checks (`health-check { path interval timeout rise fall }`):
# each worker probes each checked downstream on its own connection (never a
# pooled one): connect, `GET path`, read the status line.  2xx/3xx is a
# success.  `fall` failures in a row mark the downstream down (the balancer
# skips it, waiting requests get their 502); `rise` successes bring it back.

cdef enum:
    P_WAIT = 0              # until the next interval
    P_CONNECTING = 1
    P_SENT = 2              # request written, reading the status line
    P_HANDSHAKE = 3         # TLS downstream: handshaking before the request

cdef struct Probe:
    Handle h
    DownstreamRt* ds
    Timer timer
    uint8_t state
    int ok_in_row
    int fail_in_row
    uint32_t len
    Tls* tls                # a TLS downstream is checked over TLS
    char buf[256]

cdef Probe* g_probes = NULL
cdef int g_nprobes = 0


cdef void probe_schedule(Probe* pr, int64_t after_ms) noexcept nogil:
    if pr.tls != NULL:
        tls_free(pr.tls)
        pr.tls = NULL
    if pr.h.fd >= 0:
        close(pr.h.fd)
        pr.h.fd = -1
    pr.state = P_WAIT
    timer_arm(&pr.timer, after_ms if after_ms > 0 else 1)


cdef void probe_result(Probe* pr, bint ok, const char* why) noexcept nogil:
    cdef DownstreamRt* ds = pr.ds
    if ok:
        pr.ok_in_row += 1
        pr.fail_in_row = 0
        if ds.hc_down and pr.ok_in_row >= ds.hc_rise:
            ds.hc_down = 0
            rp_elog(ds_errfd(ds), 5, "downstream %s (%s) passed %d health checks: up", ds.name, ds.label,
                    pr.ok_in_row)
            pend_serve()
    else:
        pr.fail_in_row += 1
        pr.ok_in_row = 0
        if not ds.hc_down and pr.fail_in_row >= ds.hc_fall:
            ds.hc_down = 1
            rp_elog(ds_errfd(ds), 3, "downstream %s (%s) failed %d health checks (%s): down", ds.name,
                    ds.label, pr.fail_in_row, why)
            pend_fail_dead()
    probe_schedule(pr, ds.hc_interval_ms)


cdef void probe_start(Probe* pr) noexcept nogil:
    cdef DownstreamRt* ds = pr.ds
    cdef epoll_event ev
    cdef int fd = socket(ds.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        probe_result(pr, False, "socket")
        return
    pr.h.fd = fd
    pr.len = 0
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = pr
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev)
    if connect(fd, <sockaddr*>ds.addr, ds.addrlen) != 0 and errno != EINPROGRESS and errno != EAGAIN:
        probe_result(pr, False, strerror(errno))
        return
    pr.state = P_CONNECTING
    timer_arm(&pr.timer, ds.hc_timeout_ms)


cdef void probe_on_event(Probe* pr, uint32_t ev) noexcept nogil:
    cdef DownstreamRt* ds = pr.ds
    cdef int err = 0
    cdef socklen_t sl = sizeof(int)
    cdef char req[512]
    cdef int n
    cdef ssize_t r
    cdef char* eol
    cdef int code
    cdef Out o
    if pr.state == P_CONNECTING:
        if not (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)):
            return
        getsockopt(pr.h.fd, SOL_SOCKET, SO_ERROR, &err, &sl)
        if err != 0:
            probe_result(pr, False, strerror(err))
            return
        if ds.pp:
            err = pp_send(pr.h.fd, ds.pp, NULL)      # v1 UNKNOWN / v2 LOCAL first (proxyproto.pxi)
            if err != 0:
                probe_result(pr, False, strerror(err))
                return
        if ds.tls_ctx != NULL:
            pr.tls = tls_new(ds.tls_ctx, pr.h.fd, False)
            if pr.tls == NULL:
                probe_result(pr, False, "out of memory")
                return
            if ds.tls_name[0]:
                p_SSL_set_tlsext_host_name(pr.tls.ssl, ds.tls_name)
            pr.state = P_HANDSHAKE
    if pr.state == P_HANDSHAKE:
        r = p_SSL_do_handshake(pr.tls.ssl)
        if r != 1:
            code = p_SSL_get_error(pr.tls.ssl, <int>r)
            if code != SSL_ERROR_WANT_READ and code != SSL_ERROR_WANT_WRITE:
                pr.tls.flags |= TF_FATAL
                tls_error_text(pr.tls, req, 512)
                probe_result(pr, False, req)
            return
        pr.tls.flags &= ~TF_HANDSHAKE
        pr.state = P_CONNECTING
    if pr.state == P_CONNECTING:
        n = snprintf(req, 512, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rproxy-health-check\r\n"
                     "Connection: close\r\n\r\n", ds.hc_path, ds.label)
        # a fresh socket takes a small request whole, or the check fails
        memset(&o, 0, sizeof(Out))
        o.hptr = req
        o.hlen = <uint32_t>n
        if conn_flush(&o, pr.h.fd, pr.tls) != 0:
            probe_result(pr, False, "send failed")
            return
        pr.state = P_SENT
        return
    if pr.state != P_SENT or not (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)):
        return
    while pr.len < sizeof(pr.buf) - 1:
        r = conn_recv(pr.h.fd, pr.tls, pr.buf + pr.len, sizeof(pr.buf) - 1 - pr.len)
        if r > 0:
            pr.len += <uint32_t>r
            continue
        if r < 0 and errno == EAGAIN:
            break
        break                       # EOF or error: judge what we have
    pr.buf[pr.len] = 0
    eol = strstr(pr.buf, "\r\n")
    if eol == NULL:
        if pr.len >= sizeof(pr.buf) - 1 or r == 0 or (r < 0 and errno != EAGAIN):
            probe_result(pr, False, "no status line")
        return
    if pr.len < 12 or memcmp(pr.buf, b"HTTP/1.", 7) != 0:
        probe_result(pr, False, "not HTTP")
        return
    code = (pr.buf[9] - 48) * 100 + (pr.buf[10] - 48) * 10 + (pr.buf[11] - 48)
    if code >= 200 and code < 400:
        probe_result(pr, True, "")
    else:
        probe_result(pr, False, "bad status")


cdef void probe_on_timer(Probe* pr) noexcept nogil:
    if pr.state == P_WAIT:
        if pr.ds.enabled:
            probe_start(pr)
        else:
            probe_schedule(pr, pr.ds.hc_interval_ms)
    else:
        probe_result(pr, False, "timeout")


cdef void probes_stop() noexcept nogil:
    cdef int i
    for i in range(g_nprobes):
        if g_probes[i].ds == NULL:
            continue
        timer_stop(&g_probes[i].timer)
        if g_probes[i].tls != NULL:
            tls_free(g_probes[i].tls)
            g_probes[i].tls = NULL
        if g_probes[i].h.fd >= 0:
            close(g_probes[i].h.fd)
            g_probes[i].h.fd = -1
