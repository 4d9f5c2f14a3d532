# The event loop: one epoll set per worker, edge-triggered for connections
# (readiness is remembered in flags, so a paused direction costs no
# epoll_ctl), level-triggered + EPOLLEXCLUSIVE for the shared listeners (one
# worker wakes per incoming connection), a signalfd for signals.

cdef inline void clock_update() noexcept nogil:
    global g_now, g_now_us
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    g_now_us = <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000
    g_now = g_now_us // 1000


cdef Timer g_worker_timer              # drain deadline / accept resume


cdef void timer_fire(Timer* t) noexcept nogil:
    if t.kind == TK_UCONN:
        uc_on_timer(<UConn*>t.owner)
    elif t.kind == TK_DCONN:
        dc_on_timer(<DConn*>t.owner)
    elif t.kind == TK_EXCH:
        x_on_pending_timeout(<Exchange*>t.owner)
    elif t.kind == TK_WORKER:
        worker_on_timer()
    elif t.kind == TK_PROBE:
        probe_on_timer(<Probe*>t.owner)
    elif t.kind == TK_LOGFLUSH:
        accesslog_on_timer()
    elif t.kind == TK_METRICS:
        m_on_timer()
    elif t.kind == TK_LIMIT:
        edge_on_timer(<Exchange*>t.owner)
    elif t.kind == TK_REDIS:
        redis_on_timer()
    elif t.kind == TK_CACHE:
        cache_on_timer(<Exchange*>t.owner)


# ---- listeners -----------------------------------------------------------------------

cdef int g_accept_paused = 0


cdef void listeners_register(int on) noexcept nogil:
    cdef int i
    cdef epoll_event ev
    cdef Listener* l
    for i in range(g_nlisteners):
        l = &g_listeners[i]
        if l.h.fd < 0:
            continue
        if on and not l.registered:
            ev.events = EPOLLIN | EPOLLEXCLUSIVE
            ev.data.ptr = l
            if epoll_ctl(g_epfd, EPOLL_CTL_ADD, l.h.fd, &ev) == 0:
                l.registered = 1
        elif not on and l.registered:
            epoll_ctl(g_epfd, EPOLL_CTL_DEL, l.h.fd, NULL)
            l.registered = 0


cdef void listener_on_event(Listener* l) noexcept nogil:
    global c_accepted, g_accept_paused
    cdef uint8_t ss[128]
    cdef socklen_t sl
    cdef int fd, i, one = 1
    cdef UConn* uc
    cdef epoll_event ev
    for i in range(64):
        if g_stop:
            return
        sl = 128
        fd = accept4(l.h.fd, <sockaddr*>ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC)
        if fd < 0:
            if errno == EAGAIN or errno == EINTR:
                return
            if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                # out of descriptors: stop accepting for a moment instead of spinning
                rp_elog(g_errfd, 2, "accept: %s; pausing accepts for 100 ms", strerror(errno))
                listeners_register(0)
                g_accept_paused = 1
                timer_arm(&g_worker_timer, 100)
                return
            continue                # ECONNABORTED and friends: that client is gone
        c_accepted += 1
        m_accepted(l.srv)
        uc = uc_new(fd, l.srv, ss)
        if uc == NULL:
            close(fd)
            continue
        if l.srv.pp != NULL and pp_accept(uc) != 0:
            uc_close(uc)
            continue
        if l.srv.tls_ctx != NULL and tls_uc_start(uc) != 0:
            uc_close(uc)
            continue
        if (<sockaddr*>ss).sa_family != AF_UNIX:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
        ev.data.ptr = uc
        if epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
            uc_close(uc)
            continue
        timer_arm(&uc.conn.timer, l.srv.read_timeout_ms)


# ---- stopping --------------------------------------------------------------------------

cdef void drain_start(int64_t timeout_ms) noexcept nogil:
    """Graceful stop: accept nothing more, close idle keep-alive clients,
    let the others finish their current exchange (answered with Connection:
    close).  A client accepted but not yet heard from is not idle: its first
    request is on its way, and it gets its answer."""
    global g_stop
    cdef UConn* uc = g_uconns
    cdef UConn* nx
    cdef int i
    if g_stop:
        return
    g_stop = 1
    listeners_register(0)
    for i in range(g_nlisteners):
        # our copies only: the master (and a new generation) keep theirs, and
        # once the last copy closes the kernel refuses new clients at once
        # instead of leaving them in a backlog nobody reads
        if g_listeners[i].h.fd >= 0:
            close(g_listeners[i].h.fd)
            g_listeners[i].h.fd = -1
    while uc != NULL:
        nx = uc.next
        if uc.conn.state == U_H2:
            h2_drain(uc)            # GOAWAY; its streams in flight finish (h2.pxi)
        elif uc.conn.state == U_IDLE and (uc.conn.flags & UF_SERVED) and (uc.conn.rbuf == NULL or uc.conn.rpos == uc.conn.rend) \
                and out_empty(&uc.conn.out):
            uc_close(uc)
        else:
            uc.conn.flags |= UF_CLOSE_AFTER
        uc = nx
    timer_arm(&g_worker_timer, timeout_ms if timeout_ms > 0 else 1)


cdef void worker_on_timer() noexcept nogil:
    global g_stop, g_accept_paused
    if g_stop == 1:
        rp_elog(g_errfd, 4, "shutdown timeout: closing %d connection(s) still busy", g_nuconns)
        g_stop = 2
    elif g_accept_paused:
        g_accept_paused = 0
        listeners_register(1)


cdef int64_t g_shutdown_timeout_ms = 30000


cdef void signals_read() noexcept nogil:
    global g_stop, g_reopen
    cdef signalfd_siginfo si
    while read(g_sigfd, &si, sizeof(si)) == sizeof(si):
        if si.ssi_signo == SIGTERM or si.ssi_signo == SIGINT:
            g_stop = 2
        elif si.ssi_signo == SIGQUIT:
            drain_start(g_shutdown_timeout_ms)
        elif si.ssi_signo == SIGUSR1:
            g_reopen = 1
        elif si.ssi_signo == SIGUSR2:
            stats_dump()
        # SIGHUP: reloads are the master's business; a worker ignores it


cdef void stats_dump() noexcept nogil:
    """SIGUSR2: log the counters that must return to zero when the worker is
    quiet, and check the pool invariants (tests assert on this line)."""
    cdef int i, n
    cdef int bad = 0
    cdef DownstreamRt* ds
    cdef DConn* dc
    for i in range(g_ndownstreams):
        ds = &g_downstreams[i]
        n = 0
        dc = ds.idle_first
        while dc != NULL and n <= ds.nslots:
            if dc.conn.state != D_IDLE:
                bad += 1
            n += 1
            dc = dc.inext
        if n != ds.n_idle or ds.n_idle < 0 or ds.n_active < 0 or ds.n_up < 0 or ds.n_up > ds.nslots:
            bad += 1
    rp_elog(g_errfd, 5, "stats: clients=%d exchanges=%lld buffers=%lld pending=%d requests=%lld "
            "pool_errors=%d temp_files=%lld", g_nuconns, c_x_out, c_bufs_out, g_npending, c_requests, bad,
            c_temp_files)
    for i in range(g_ndownstreams):
        ds = &g_downstreams[i]
        rp_elog(g_errfd, 5, "stats: downstream %s up=%d idle=%d active=%d", ds.name, ds.n_up, ds.n_idle,
                ds.n_active)


cdef void free_dead() noexcept nogil:
    global g_dead
    cdef UConn* uc
    while g_dead != NULL:
        uc = g_dead
        g_dead = uc.next
        free(uc)


cdef void run_ready() noexcept nogil:
    global g_ready
    cdef UConn* uc
    while g_ready != NULL:
        uc = g_ready
        g_ready = uc.rnext
        uc.conn.flags &= ~UF_READY
        if uc.conn.state == U_CLOSED or uc.conn.state != U_IDLE:
            continue
        uc_process(uc)
        if uc.conn.state != U_CLOSED:
            uc_read(uc)


cdef int loop_run() noexcept nogil:
    global g_reopen
    cdef epoll_event evs[MAX_EVENTS]
    cdef int n, i, timeout
    cdef Handle* h
    cdef uint32_t e
    cdef Timer* t
    while True:
        if g_stop == 2:
            return RUN_STOPPED
        if g_reopen:
            g_reopen = 0
            return RUN_REOPEN
        if g_stop == 1 and g_nuconns == 0:
            return RUN_DRAINED
        timeout = timers_next_ms()
        n = epoll_wait(g_epfd, evs, MAX_EVENTS, timeout)
        clock_update()
        if n < 0:
            if errno == EINTR:
                continue
            rp_elog(g_errfd, 0, "epoll_wait: %s", strerror(errno))
            return RUN_ERROR
        for i in range(n):
            h = <Handle*>evs[i].data.ptr
            e = evs[i].events
            if h.kind == K_UCONN:
                if (<UConn*>h).conn.state != U_CLOSED:
                    uc_on_event(<UConn*>h, e)
            elif h.kind == K_DCONN:
                dc_on_event(<DConn*>h, e)
            elif h.kind == K_LISTENER:
                listener_on_event(<Listener*>h)
            elif h.kind == K_SIGNAL:
                signals_read()
            elif h.kind == K_PROBE:
                probe_on_event(<Probe*>h, e)
            elif h.kind == K_CONTROL:
                control_read()
            elif h.kind == K_REDIS:
                redis_on_event(e)
        t = timers_due()
        while t != NULL:
            timer_fire(t)
            t = timers_due()
        run_ready()
        if g_h2_dirty != NULL:
            h2_flush_dirty()        # HTTP/2 output the turn produced, one write per connection (h2.pxi)
        free_dead()
        tunnels_free_dead()


cdef void close_everything() noexcept nogil:
    """Fast stop: every socket closed, every buffer returned."""
    global g_ready
    cdef int i, j
    cdef DownstreamRt* ds
    cdef DConn* dc
    while g_uconns != NULL:
        uc_close(g_uconns)
    g_ready = NULL
    free_dead()
    tunnels_free_dead()
    for i in range(g_ndownstreams):
        ds = &g_downstreams[i]
        for j in range(ds.nslots):
            dc = &ds.conns[j]
            if dc.x != NULL:
                dc_detach(dc)
            dc_teardown(dc)
            timer_stop(&dc.conn.timer)   # (a private slot's, pool.pxi)
    listeners_register(0)
    probes_stop()
    spl_clear()
    timer_stop(&g_worker_timer)
