# Downstream (backend) connections: the per-worker persistent pools, the
# response side of an exchange, reconnects with backoff.
#
# Each downstream keeps `connections` sockets established.  An idle one sits
# in its downstream's idle list (FIFO, so every pooled connection stays warm);
# the balancer takes one for an exchange, and the reuse checklist in
# dc_response_done decides whether it goes back.  A connection is never
# reconnected synchronously: reconnects go through its timer, so events still
# queued for the old socket in the same loop turn find it D_DOWN and are
# ignored.

# ---- idle list ----------------------------------------------------------------------

cdef void idle_push(DConn* dc) noexcept nogil:
    cdef DownstreamRt* ds = dc.ds
    dc_move(dc, D_IDLE)
    dc.idle_since = g_now
    if dc.owner != NULL:
        pp_idle(dc)                 # private: it waits for its own client only (pool.pxi)
        return
    dc.inext = NULL
    dc.iprev = ds.idle_last
    if ds.idle_last != NULL:
        ds.idle_last.inext = dc
    else:
        ds.idle_first = dc
    ds.idle_last = dc
    ds.n_idle += 1
    timer_arm(&dc.conn.timer, pool_idle_ms(dc))


cdef void idle_remove(DConn* dc) noexcept nogil:
    """Take a connection off its idle list.  It stops being D_IDLE at once
    (D_ACTIVE: in use, or about to be recycled), so nothing can unlink it
    twice."""
    cdef DownstreamRt* ds = dc.ds
    dc_move(dc, D_ACTIVE)
    if dc.owner != NULL:
        return                      # private: on no idle list
    if dc.iprev != NULL:
        dc.iprev.inext = dc.inext
    else:
        ds.idle_first = dc.inext
    if dc.inext != NULL:
        dc.inext.iprev = dc.iprev
    else:
        ds.idle_last = dc.iprev
    dc.iprev = NULL
    dc.inext = NULL
    ds.n_idle -= 1


cdef bint dc_alive(DConn* dc) noexcept nogil:
    """The liveness check before reuse.  A close by the downstream normally
    arrives as an event and the connection is recycled before anyone picks
    it; a connection idle for over 250 ms is also peeked at, since that is
    where a downstream's keep-alive timeout strikes (a hot connection is
    not: under load the syscall would cost every request)."""
    if dc.ds.max_age_ms and g_now - dc.connected_at >= dc.ds.max_age_ms:
        return False                # aged out while idle: replace rather than use
    if g_now - dc.idle_since < 250:
        return not (dc.conn.flags & CN_RDHUP)
    return dc_alive_now(dc)


cdef bint dc_alive_now(DConn* dc) noexcept nogil:
    """Not closed by its downstream, checked with a peek whatever its age
    (a replay's candidates: the request's last chance)."""
    return not (dc.conn.flags & CN_RDHUP) and conn_peek(dc.conn.h.fd, dc.conn.tls) < 0 and errno == EAGAIN


cdef DConn* idle_pop(DownstreamRt* ds) noexcept nogil:
    cdef DConn* dc = ds.idle_first
    if dc != NULL:
        idle_remove(dc)
        timer_stop(&dc.conn.timer)
    return dc


# ---- connecting ------------------------------------------------------------------------

cdef void dc_connect(DConn* dc) noexcept nogil:
    global c_ds_connects
    cdef DownstreamRt* ds = dc.ds
    cdef int one = 1
    cdef epoll_event ev
    cdef int fd = socket(ds.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        dc_failed(dc, errno)
        return
    if ds.family != AF_UNIX:
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
    dc.conn.h.fd = fd
    dc.conn.flags = 0
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = dc
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev)
    c_ds_connects += 1
    dc_move(dc, D_CONNECTING)
    if connect(fd, <sockaddr*>ds.addr, ds.addrlen) == 0:
        dc_connected(dc)
    elif errno == EINPROGRESS or errno == EAGAIN:
        timer_arm(&dc.conn.timer, ds.connect_timeout_ms)
    else:
        dc_failed(dc, errno)


cdef void dc_connected(DConn* dc) noexcept nogil:
    cdef DownstreamRt* ds = dc.ds
    cdef int r
    cdef uint8_t ss[128]
    cdef socklen_t sl = 128
    cdef int err
    if dc.owner != NULL and dc.conn.tls == NULL:
        err = pp_send(dc.conn.h.fd, ds.pp, dc.owner)    # the PROXY header first, before TLS (proxyproto.pxi)
        if err != 0:
            dc_failed(dc, err)
            return
    if ds.tls_ctx != NULL and dc.conn.tls == NULL:
        r = tls_dc_start(dc)        # comes back here once the handshake is done
        if r == TLS_DONE:
            dc_connected(dc)
        elif r < 0:
            dc_failed(dc, -r)
        return
    dc.fails = 0
    ds.pp_fails = 0
    ds.pp_retry_at = 0
    dc.nreq = 0
    dc.connected_at = g_now
    dc.local_port = 0
    if ds.family != AF_UNIX and getsockname(dc.conn.h.fd, <sockaddr*>ss, &sl) == 0:
        dc.local_port = ntohs((<sockaddr_in*>ss).sin_port)
    peer_from_sockaddr(&dc.conn.peer, ds.addr)       # what it connected to, whatever re-resolving does later
    cdef int i
    ds.n_up += 1
    if ds.down_logged:
        ds.down_logged = 0
        rp_elog(ds_errfd(ds), 5, "downstream %s (%s) is up", ds.name, ds.label)
        # it is back: the rest of the pool need not wait out its backoff
        for i in range(ds.nconns):
            if ds.conns[i].conn.state == D_DOWN and &ds.conns[i] != dc:
                ds.conns[i].fails = 0
                timer_arm(&ds.conns[i].conn.timer, 1)
    if llhttp_get_errno(&dc.conn.parser) != HPE_OK:
        llhttp_init(&dc.conn.parser, HTTP_RESPONSE, &g_resp_settings)
        dc.conn.parser.data = dc
    idle_push(dc)
    pend_serve()


cdef void dc_teardown(DConn* dc) noexcept nogil:
    """Close the socket and forget the connection's state (not its exchange:
    callers detach that first).  Requests still in flight behind it on a
    pipelined connection are sent again elsewhere (pipeline.pxi)."""
    cdef DownstreamRt* ds = dc.ds
    cdef Exchange* rest = pipe_unlink_from(dc, dc.x)
    if dc.conn.state == D_IDLE:
        idle_remove(dc)
    if dc.conn.state == D_IDLE or dc.conn.state == D_ACTIVE:
        ds.n_up -= 1
    if dc.conn.tls != NULL:
        tls_dc_release(dc)          # keeps the session for the next connection
    conn_release(&dc.conn)
    dc_move(dc, D_DOWN)
    dc.conn.flags = 0
    llhttp_init(&dc.conn.parser, HTTP_RESPONSE, &g_resp_settings)
    dc.conn.parser.data = dc
    if dc.owner != NULL:
        pp_unlink(dc)               # a private connection's slot is free again (pool.pxi)
    if rest != NULL:
        pipe_replay_list(rest, ds, NULL)


cdef int64_t backoff_ms(DownstreamRt* ds, int fails) noexcept nogil:
    """retry x 2^(fails-1), at most 5 s, then +-25 % jitter so the
    connections of every worker do not knock on a dead downstream in step.
    (The first connection back up reconnects the rest at once.)"""
    cdef int64_t d = ds.retry_ms if ds.retry_ms > 0 else 1
    cdef int i
    for i in range(1, fails):
        d *= 2
        if d >= 5000:
            d = 5000
            break
    cdef int64_t j = d // 4
    if j > 0:
        d = d - j + <int64_t>(rand64() % <uint64_t>(2 * j + 1))
    return d if d > 0 else 1


cdef void dc_failed(DConn* dc, int err) noexcept nogil:
    """A connect failed or a connection broke: close, then reconnect after
    the backoff delay."""
    cdef DownstreamRt* ds = dc.ds
    m_ds_failed(dc)
    if ds.pp:
        pp_failed(dc, err)          # private: never reconnected for nobody (pool.pxi)
        return
    dc_teardown(dc)
    if dc.extra:
        rp_elog(ds_errfd(ds), 6, "downstream %s (%s): extra connection failed (%s)", ds.name, ds.label,
                strerror(err))
        return                      # an extra slot is not retried: the pool shrinks back
    dc.fails += 1
    if ds.hostname:
        resolve_request(ds)         # the name may point elsewhere now
    if ds.n_up == 0 and not ds.down_logged:
        ds.down_logged = 1
        rp_elog(ds_errfd(ds), 3, "downstream %s (%s) is down: %s", ds.name, ds.label, strerror(err))
        pend_fail_dead()
    elif rp_elog_wants(ds_errfd(ds), 7):
        rp_elog(ds_errfd(ds), 7, "downstream %s (%s): connection failed (%s), %d in a row", ds.name,
                ds.label, strerror(err), dc.fails)
    timer_arm(&dc.conn.timer, backoff_ms(ds, dc.fails))


cdef void dc_recycle(DConn* dc) noexcept nogil:
    """Close an orderly connection that cannot be reused and open a fresh one
    at once (next timer run); an extra one stays closed (pool.pxi)."""
    dc_teardown(dc)
    if not dc.extra:
        timer_arm(&dc.conn.timer, 1)


# ---- exchange side ---------------------------------------------------------------------

cdef void dc_detach(DConn* dc) noexcept nogil:
    """Unlink a connection from its exchange (the oldest one in flight).
    Response bytes the client has not taken yet still live in our read
    buffer: the client's output takes that buffer over.  When more requests
    are in flight behind it (pipelining), the connection stays theirs."""
    cdef Exchange* x = dc.x
    cdef UConn* uc
    cdef Buf* rest = NULL
    cdef bint lost = False
    if x == NULL:
        return
    uc = x.uc
    if dc.conn.rbuf != NULL and uc.conn.out.blen and uc.conn.out.bbuf == NULL \
            and uc.conn.out.bptr >= bdata(dc.conn.rbuf) and uc.conn.out.bptr < bdata(dc.conn.rbuf) + dc.conn.rbuf.cap:
        if x.pnext != NULL and dc.conn.rpos < dc.conn.rend:
            # bytes past this response belong to the next one: they stay ours
            rest = buf_get()
            if rest != NULL:
                memcpy(bdata(rest), bdata(dc.conn.rbuf) + dc.conn.rpos, dc.conn.rend - dc.conn.rpos)
            else:
                lost = True
        uc.conn.out.bbuf = dc.conn.rbuf
        dc.conn.rbuf = rest
        if rest != NULL:
            dc.conn.rend -= dc.conn.rpos
            dc.conn.rpos = 0
            dc.conn.fpos = 0
            dc.fend = 0
            dc.hstart = 0
    x.dc = NULL
    dc.ds.n_active -= 1
    dc.ninflight -= 1
    dc.x = x.pnext
    x.pnext = NULL
    if dc.x != NULL and lost:       # out of memory: the next response's start is gone
        dc.conn.flags |= DF_NO_REUSE
        pipe_replay_list(pipe_unlink_from(dc, dc.x), dc.ds, NULL)
    if dc.x != NULL:
        return
    dc.xlast = NULL
    out_release(&dc.conn.out)            # request bytes not sent: borrowed from the client, or our head
    if dc.conn.rbuf != NULL:
        buf_put(dc.conn.rbuf)
        dc.conn.rbuf = NULL
    timer_stop(&dc.conn.timer)


cdef void dc_abandon(DConn* dc) noexcept nogil:
    """The client side went away mid-exchange: this connection may carry the
    rest of a response we will never read, so it is closed, not reused."""
    dc_detach(dc)
    dc_recycle(dc)


cdef void ds_exchange_failed(DownstreamRt* ds) noexcept nogil:
    """Passive health: after max-fails failed exchanges in a row the
    downstream is ejected (not picked) for fail-timeout (5 s), doubling up
    to 12 times that (60 s) while it keeps failing; its first success clears
    the count."""
    cdef int64_t ms
    ds.fails_in_row += 1
    if ds.max_fails > 0 and ds.fails_in_row >= ds.max_fails and ds.eject_until <= g_now:
        ms = ds.fail_timeout_ms
        for _ in range(min(ds.ejections, 4)):
            ms *= 2
        if ms > 12 * ds.fail_timeout_ms:
            ms = 12 * ds.fail_timeout_ms
        ds.ejections += 1
        m_ejection(ds)
        ds.eject_until = g_now + ms
        rp_elog(ds_errfd(ds), 3, "downstream %s (%s) ejected for %lld ms after %d failures in a row",
                ds.name, ds.label, ms, ds.fails_in_row)


cdef bint x_try_replay(Exchange* x, DConn* dc, const char* why) noexcept nogil:
    """The connection failed before any response byte.  Send the request
    again, once, on another connection when that is safe: nothing reached
    the downstream, or the request is idempotent (the usual case: a pooled
    connection the downstream had just closed).  The whole request must
    still be in the client's buffer."""
    cdef UConn* uc = x.uc
    cdef DConn* dc2
    if x.flags & (XF_RETRIED | XF_BODY_SPILLED | XF_RESP_STARTED) or (dc.conn.flags & DF_GOT_BYTES):
        return False
    if not (x.flags & XF_REQ_DONE):
        return False
    if (x.flags & XF_REQ_SENT_ANY) and not (x.flags & XF_IDEMPOTENT):
        return False
    rp_elog(ds_errfd(dc.ds), 6, "downstream %s (%s): %s; retrying the request on another connection",
            dc.ds.name, dc.ds.label, why)
    x.flags |= XF_RETRIED
    m_replay(dc.ds)
    if dc.nreq <= 1:
        x.flags |= XF_FAILED_FRESH
    x.flags &= ~XF_REQ_SENT_ANY
    x.body_in = 0
    x.failed_ds = dc.ds
    x.failed_at = g_now
    dc_detach(dc)
    dc_recycle(dc)                  # reconnect at once: the replay may want it
    dc2 = lb_pick_for(x)
    if dc2 != NULL:
        x_attach(x, dc2)
    elif rule_alive(x.rule):
        uc_move(uc, U_PENDING)
        timer_stop(&uc.conn.timer)
        pend_add(x)
    else:
        uc_respond(uc, 502, (x.flags & XF_KEEPALIVE) != 0)
    return True


cdef void dc_exchange_failed(DConn* dc, int status, const char* why) noexcept nogil:
    """The downstream broke, timed out or sent garbage mid-exchange."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef DownstreamRt* ds = dc.ds
    ds_exchange_failed(ds)
    if status == 502 and x_try_replay(x, dc, why):
        return
    c_errors_inc()
    rp_elog(x_errfd(x), 3, "downstream %s (%s): %s -> %d", ds.name, ds.label, why, status)
    dc_detach(dc)
    if status == 502:
        dc_failed(dc, ECONNRESET)
    else:
        dc_recycle(dc)
    if x.flags & XF_RESP_STARTED:
        xlog_failed(x, status)
        uc_close(uc)
    else:
        uc_respond(uc, status, (x.flags & XF_REQ_DONE) != 0 and (x.flags & XF_KEEPALIVE) != 0)


cdef int dc_send(DConn* dc) noexcept nogil:
    """Write pending request bytes.  0: all out; 1: socket full; -1: failed
    (the exchange has been answered with 502, or, pipelined, sent elsewhere)."""
    cdef uint32_t moved
    cdef int r = conn_send(&dc.conn, &moved)
    if moved:
        dc.xlast.flags |= XF_REQ_SENT_ANY
    if r == 0:
        return 0
    if r > 0:
        timer_arm(&dc.conn.timer, dc.ds.write_timeout_ms)
        return 1
    if dc.xlast != dc.x:
        # a request pipelined behind others could not be written: the
        # downstream is closing.  The oldest's response may be readable all
        # the same: read on, to the end; the requests behind it go elsewhere.
        dc.conn.flags |= DF_NO_REUSE | CN_RDHUP | CN_READABLE
        pipe_replay_list(pipe_unlink_from(dc, dc.x.pnext), dc.ds, NULL)
        dc_read(dc)
        return -1
    dc_exchange_failed(dc, 502, "write failed")
    return -1


cdef void dc_on_event(DConn* dc, uint32_t ev) noexcept nogil:
    cdef int err = 0
    cdef socklen_t sl = sizeof(int)
    cdef uint8_t ss[128]
    cdef socklen_t al = 128
    cdef Exchange* x
    cdef UConn* uc
    if dc.conn.state == D_DOWN:
        return                      # stale event for a socket already closed
    if dc.conn.tls != NULL:
        if dc.conn.tls.flags & TF_HANDSHAKE:
            err = tls_dc_handshake(dc)
            if err == TLS_DONE:
                dc_connected(dc)
            elif err < 0:
                dc_failed(dc, -err)
            return
        ev = tls_translate(dc.conn.tls, ev)
    if dc.phase == R_TUNNEL:
        if dc.conn.state == D_CONNECTING:
            redirect_on_connect(dc, ev)     # an internal redirect's connection (redirect.pxi)
        else:
            tun_on_event(dc, ev)
        return
    if dc.conn.state == D_CONNECTING:
        if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
            getsockopt(dc.conn.h.fd, SOL_SOCKET, SO_ERROR, &err, &sl)
            if err == 0 and getpeername(dc.conn.h.fd, <sockaddr*>ss, &al) == 0:
                dc.conn.flags |= CN_WRITABLE
                dc_connected(dc)
            elif err != 0:
                dc_failed(dc, err)
        return
    if ev & EPOLLOUT:
        dc.conn.flags |= CN_WRITABLE
        if dc.conn.state == D_ACTIVE and not out_empty(&dc.conn.out):
            x = dc.xlast            # the request being written (the newest in flight)
            uc = x.uc
            if dc_send(dc) != 0:
                return
            uc_forward_body(uc)
            if uc.conn.state == U_CLOSED or uc.xhead != x:
                return
            uc_read(uc)
            if x.dc != dc:
                return
    if ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        dc.conn.flags |= CN_RDHUP
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        dc.conn.flags |= CN_READABLE
        dc_read(dc)


cdef void dc_read(DConn* dc) noexcept nogil:
    cdef ssize_t n
    cdef uint32_t room
    cdef Exchange* x
    cdef UConn* uc
    if dc.phase == R_TUNNEL:
        tun_down(dc)
        return
    if dc.conn.state == D_ACTIVE and dc.phase != R_HEAD and dc.x != NULL and dc.x.cz != NULL \
            and comp_pending(dc, dc.x) and out_empty(&dc.x.uc.conn.out):
        if comp_resume(dc):         # input the client's last output held back
            return
    if (dc.conn.flags & DF_SPLICE) and dc.phase == R_BODY and dc.conn.rpos == dc.conn.rend and dc.conn.fpos == dc.fend \
            and out_empty(&dc.x.uc.conn.out):
        if dc_splice(dc):
            return
    if dc.conn.state == D_ACTIVE and dc.phase == R_HEAD and dc.conn.rbuf != NULL and dc.conn.rpos < dc.conn.rend \
            and dc.x != NULL and out_empty(&dc.x.uc.conn.out):
        dc_process(dc)              # read with the previous response (pipelining)
    while dc.conn.flags & CN_READABLE:
        if dc.conn.state == D_IDLE:
            # an idle pooled connection became readable: the downstream
            # closed it (or broke protocol by talking out of turn)
            n = conn_peek(dc.conn.h.fd, dc.conn.tls)
            if n < 0 and errno == EAGAIN:
                dc.conn.flags &= ~CN_READABLE
                return
            if n > 0:
                rp_elog(ds_errfd(dc.ds), 4, "downstream %s sent bytes on an idle connection; closing it",
                        dc.ds.name)
            if dc.nreq == 0 and g_now - dc.connected_at < 100:
                # accepted, then dropped at once: a broken downstream (backoff)
                dc_failed(dc, ECONNRESET if n != 0 else EPIPE)
            else:
                dc_recycle(dc)      # its idle timeout: normal, reconnect now
            return
        if dc.conn.state != D_ACTIVE:
            return
        x = dc.x
        uc = x.uc
        if not rsp_may_read(dc, uc):
            return                  # backpressure: the client has not taken the last bytes
        if (dc.conn.flags & DF_SPLICE) and dc.phase == R_BODY and dc.conn.rpos == dc.conn.rend and dc.conn.fpos == dc.fend:
            if dc_splice(dc):
                return
        if dc.conn.rbuf == NULL:
            dc.conn.rbuf = buf_get()
            if dc.conn.rbuf == NULL:
                dc_exchange_failed(dc, 502, "out of memory")
                return
            dc.conn.rpos = 0
            dc.conn.fpos = 0
            dc.fend = 0
            dc.conn.rend = 0
            dc.hstart = 0
        elif dc.conn.rpos == dc.conn.rend and dc.conn.fpos == dc.fend:
            if dc.conn.flags & DF_HEAD_PARTIAL:
                # everything read is parsed, but the head is not complete:
                # its recorded spans point at [hstart, rend), which the next
                # read must extend, not overwrite
                if dc.hstart > 0:
                    dc_shift(dc, dc.hstart)
            else:
                dc.conn.rpos = 0
                dc.conn.fpos = 0
                dc.fend = 0
                dc.conn.rend = 0
                dc.hstart = 0
        room = dc.conn.rbuf.cap - dc.conn.rend
        if room == 0:
            if dc.phase == R_HEAD and dc.hstart > 0:
                dc_shift(dc, dc.hstart)
                room = dc.conn.rbuf.cap - dc.conn.rend
            else:
                dc_exchange_failed(dc, 502, "response head too large")
                return
        if dc.phase == R_BODY and uc.srv.high_watermark and room > uc.srv.high_watermark:
            room = uc.srv.high_watermark    # the server's high-watermark bounds the response in flight
        n = conn_read(&dc.conn, room, False)
        if n > 0:
            dc.conn.flags |= DF_GOT_BYTES
            timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)
            dc_process(dc)
        else:
            if n == 0 or errno != EAGAIN:
                dc_on_eof(dc)
            return


cdef void dc_shift(DConn* dc, uint32_t d) noexcept nogil:
    """Drop the first d bytes of the read buffer (all before the head in
    progress, if any), keeping that head's recorded spans on their bytes."""
    cdef Exchange* x = dc.x
    conn_shift(&dc.conn, d)
    dc.fend = dc.fend - d if dc.fend >= d else 0
    dc.hstart = 0
    if not (dc.conn.flags & DF_HEAD_PARTIAL):
        # no head in progress: the spans recorded belong to a head already
        # re-emitted and point at bytes the move discards
        x.nresp = 0
        x.reason_sp.off = 0
        x.reason_sp.len = 0
        return
    if x.reason_sp.len:
        x.reason_sp.off -= d
    headers_shift(x.resp, x.nresp, d)


cdef void dc_on_eof(DConn* dc) noexcept nogil:
    cdef Exchange* x = dc.x
    if dc.phase == R_BODY and (dc.conn.flags & DF_EOF_BODY):
        dc_move_phase(dc, R_DONE)           # a close-delimited body ends here
        if x.cz != NULL:
            comp_resume(dc)         # the encoder's end
            return
        dc_response_done(dc)
        return
    if dc.conn.flags & DF_GOT_BYTES:
        dc_exchange_failed(dc, 502, "downstream closed the connection mid-response")
    else:
        dc_exchange_failed(dc, 502, "downstream closed the connection before responding")


cdef void dc_process(DConn* dc) noexcept nogil:
    """Parse response bytes, re-emit the head, hand the body to the client."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef char* base = bdata(dc.conn.rbuf)
    cdef llhttp_errno_t err
    cdef int r
    while dc.phase != R_DONE:
        if dc.phase == R_HEAD and dc.conn.rpos == dc.conn.rend:
            break
        if dc.phase == R_HEAD and not (dc.conn.flags & DF_HEAD_PARTIAL):
            dc.hstart = dc.conn.rpos     # a new head starts here (a partial one keeps its start)
        err = llhttp_execute(&dc.conn.parser, base + dc.conn.rpos, dc.conn.rend - dc.conn.rpos)
        if err == HPE_OK:
            dc.conn.rpos = dc.conn.rend
            if dc.phase == R_HEAD:
                dc.conn.flags |= DF_HEAD_PARTIAL
            if dc.phase == R_BODY and not (dc.conn.flags & DF_DECHUNK):
                dc.fend = dc.conn.rpos
            break
        if err == HPE_PAUSED:
            dc.conn.rpos = <uint32_t>(llhttp_get_error_pos(&dc.conn.parser) - base)
            llhttp_resume(&dc.conn.parser)
            dc.conn.flags &= ~DF_HEAD_PARTIAL
            if dc.conn.flags & CN_HEAD_DONE:
                dc.conn.flags &= ~CN_HEAD_DONE
                r = dc_on_response_head(dc)
                if r < 0:
                    return
                if r == 1:
                    tunnel_start(x, dc)     # 101: the rest is raw bytes
                    return
                continue
            if dc.conn.flags & CN_MSG_DONE:
                dc.conn.flags &= ~CN_MSG_DONE
                if dc.phase == R_BODY and not (dc.conn.flags & DF_DECHUNK):
                    dc.fend = dc.conn.rpos
                if x.status >= 100 and x.status < 200 and x.status != 101:
                    dc_move_phase(dc, R_HEAD)   # an interim response; the final one follows
                    continue
                dc_move_phase(dc, R_DONE)
            continue
        dc_exchange_failed(dc, 502, llhttp_get_error_reason(&dc.conn.parser))
        return
    if x.cz != NULL:
        r = comp_drive(dc)          # the compression stage takes the body (compress.pxi)
        if r <= 0:
            return
        if x.cwfd >= 0 and dc.phase == R_DONE and dc.conn.fpos == dc.fend:
            cache_commit(x)
        if not out_empty(&uc.conn.out) and uc_pump(uc) < 0:
            return                  # client gone: uc_close abandoned this connection
    elif rsp_hand_on(dc, uc) < 0:
        return                      # (bodybuf.pxi: in place, or into the response buffer)
    if dc.phase == R_DONE and dc.conn.fpos == dc.fend:   # (else the response buffer is full: rsp_resume)
        dc_response_done(dc)


cdef int client_head_queue(UConn* uc, DConn* dc, Exchange* x, bint close_client) noexcept nogil:
    """Build the client's response head from the downstream's and queue it
    as the client's output, after an interim (1xx) head queued and not yet
    sent (replacing that one would also leak its buffer).  0: queued;
    -1: out of memory; -2: the head does not fit a buffer."""
    cdef Buf* hb = buf_get()
    cdef W w
    if hb == NULL:
        return -1
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    if uc.conn.out.hlen:
        w_put(&w, uc.conn.out.hptr, uc.conn.out.hlen)
        out_release(&uc.conn.out)
    build_response_head(&w, dc, x, close_client)
    if w.overflow:
        buf_put(hb)
        return -2
    uc.conn.out.hptr = bdata(hb)
    uc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    uc.conn.out.hbuf = hb
    return 0


cdef int dc_on_switching_protocols(DConn* dc, Exchange* x, UConn* uc) noexcept nogil:
    """A 101: relay its head; the caller starts the tunnel (1), or the
    exchange failed (-1)."""
    cdef int r
    if not (x.flags & XF_UPGRADE):
        dc_exchange_failed(dc, 502, "101 Switching Protocols to a request that asked for none")
        return -1
    r = client_head_queue(uc, dc, x, False)
    if r != 0:
        dc_exchange_failed(dc, 502, "out of memory" if r == -1 else "response head too large")
        return -1
    x.flags |= XF_RESP_STARTED
    xlog_response_head(x, dc)
    return 1


cdef void dc_on_interim_head(DConn* dc, Exchange* x, UConn* uc) noexcept nogil:
    """A 1xx other than 101: relayed when the client can take it (interim
    heads are optional: one that cannot go out now is dropped); the final
    head follows."""
    dc.conn.fpos = dc.conn.rpos
    dc.fend = dc.conn.rpos
    if x.flags & XF_HTTP10:
        return                      # HTTP/1.0 clients do not expect interim responses
    if x.status == 100 and (x.flags & XF_SENT_CONTINUE):
        return                      # rproxy sent the client its 100 already (request buffering)
    if not out_empty(&uc.conn.out):
        return
    client_head_queue(uc, dc, x, False)


cdef void dc_response_framing(DConn* dc, Exchange* x, UConn* uc, llhttp_t* p) noexcept nogil:
    """How the final response's body is read and relayed: no body (HEAD),
    close-delimited, through the response buffer, dechunked for an HTTP/1.0
    client, or spliced."""
    if x.flags & XF_HEAD_REQ:
        p.flags |= F_SKIPBODY       # the response to HEAD has no body whatever it declares
    if llhttp_message_needs_eof(p):
        dc.conn.flags |= DF_EOF_BODY | DF_NO_REUSE
    if rsp_wanted(dc, x):
        x.flags |= XF_RESP_BUFFER   # a slow client drains a buffer, not the connection (bodybuf.pxi)
    if (p.flags & F_CHUNKED) and (x.flags & XF_HTTP10) and not (x.flags & XF_HEAD_REQ):
        dc.conn.flags |= DF_DECHUNK      # HTTP/1.0 cannot read chunked: strip it, end by closing
    elif (p.flags & F_CONTENT_LENGTH) and p.content_length >= g_splice_min and g_splice_min \
            and (not (x.flags & XF_RESP_BUFFER) or uc.srv.response_buffer_size >= 4096) \
            and not (x.flags & XF_HEAD_REQ) and x.status >= 200 and x.status != 204 and x.status != 304 \
            and dc.conn.tls == NULL and uc.conn.tls == NULL \
            and not (uc.conn.flags & CN_VIRTUAL):      # TLS bytes must pass through OpenSSL, h2 through nghttp2
        dc.conn.flags |= DF_SPLICE


cdef bint response_closes_client(DConn* dc, Exchange* x, UConn* uc) noexcept nogil:
    """Must the client connection close after this response?"""
    # an Upgrade request answered without 101 leaves the client's parser at the
    # upgrade point: that connection cannot carry another request
    return (not (x.flags & XF_KEEPALIVE)) or (uc.conn.flags & UF_CLOSE_AFTER) or g_stop \
        or (dc.conn.flags & (DF_EOF_BODY | DF_DECHUNK)) or not (x.flags & XF_REQ_DONE) \
        or (x.flags & XF_UPGRADE)


cdef void dc_response_head_sent(DConn* dc, Exchange* x, llhttp_t* p) noexcept nogil:
    """The final head is queued for the client: the body follows it."""
    x.flags |= XF_RESP_STARTED
    dc.conn.fpos = dc.conn.rpos
    dc.fend = dc.conn.rpos
    dc_move_phase(dc, R_BODY)
    xlog_response_head(x, dc)
    if not (x.flags & XF_PIPELINED):
        rtt_sample(dc.ds, (g_now_us - dc.assigned_at) / 1000.0)
    if x.pnext != NULL and ((dc.conn.flags & DF_EOF_BODY) or not llhttp_should_keep_alive(p)):
        # this response ends the connection: the requests behind it will get
        # no answer here and go elsewhere now
        dc.conn.flags |= DF_NO_REUSE
        pipe_replay_list(pipe_unlink_from(dc, x.pnext), dc.ds, NULL)


cdef int dc_on_response_head(DConn* dc) noexcept nogil:
    """The response head is complete in [hstart, rpos): build the client's.
    0: go on with the body (or the next head, after an interim one); 1: a
    101, start the tunnel; -1: this exchange is over on this connection."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef llhttp_t* p = &dc.conn.parser
    cdef bint close_client
    cdef int r
    cdef const char* why = response_strict(dc, x)     # framing rules (http.pxi)
    x.status = <uint16_t>p.status_code
    if why != NULL:
        dc_exchange_failed(dc, 502, why)
        return -1
    if x.status == 101:
        return dc_on_switching_protocols(dc, x, uc)
    if x.status >= 100 and x.status < 200:
        dc_on_interim_head(dc, x, uc)
        return 0
    if x.status == 377 and x.rule.allow_redirect:
        r = redirect_on_377(dc)
        if r == 0:
            return -1               # replayed elsewhere, or answered: this connection is done
        if r == 1:
            x.flags |= XF_REDIRECT_REFUSED
            x.status = 401
    dc_response_framing(dc, x, uc, p)
    close_client = response_closes_client(dc, x, uc)
    if x.rule.comp != NULL:
        comp_on_response_head(dc, x, &close_client)
    if x.cst:
        cache_on_response_head(dc, x)
    if close_client:
        uc.conn.flags |= UF_CLOSE_AFTER
    r = client_head_queue(uc, dc, x, close_client)
    if r != 0:
        dc_exchange_failed(dc, 502, "out of memory" if r == -1 else "response head too large")
        return -1
    if x.cx != NULL:
        cache_on_head_built(uc, x)  # a 304 we merged: the stored head instead (cache.pxi)
    dc_response_head_sent(dc, x, p)
    return 0


cdef void dc_response_done(DConn* dc) noexcept nogil:
    """The response is complete.  Decide the downstream connection's fate
    (the reuse checklist), then the client's."""
    global c_requests
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef DownstreamRt* ds = dc.ds
    cdef bint reuse = True
    c_requests += 1
    if dc.conn.flags & DF_NO_REUSE:
        reuse = False               # close-delimited, or told not to
    elif not llhttp_should_keep_alive(&dc.conn.parser):
        reuse = False               # the downstream said Connection: close
    elif not (x.flags & XF_REQ_DONE) or (x.pnext == NULL and not out_empty(&dc.conn.out)):
        reuse = False               # it answered before taking the whole request
    elif x.pnext != NULL:
        pipe_response_done(dc)      # requests in flight behind this one: the connection is theirs
        return
    elif dc.conn.rpos != dc.conn.rend:
        reuse = False               # bytes beyond the response: never let them leak
        rp_elog(ds_errfd(ds), 4, "downstream %s sent %u bytes after its response; closing the connection",
                ds.name, dc.conn.rend - dc.conn.rpos)
    elif ds.max_requests and dc.nreq >= ds.max_requests:
        reuse = False
    elif ds.max_age_ms and g_now - dc.connected_at >= ds.max_age_ms:
        reuse = False
    elif g_stop:
        reuse = False
    if not (x.flags & XF_REQ_DONE):
        uc.conn.flags |= UF_CLOSE_AFTER  # the rest of the request body was never read
    ds.fails_in_row = 0
    ds.ejections = 0
    if x.cwfd >= 0:
        cache_commit(x)
    dc_detach(dc)
    if not cache_keeps_x(x):        # (a 304 we merged: the stored body follows, cache.pxi)
        xlog_done(x)
        uc_x_end(uc)
    uc_move(uc, U_WAIT)
    if reuse:
        idle_push(dc)
        pend_serve()
    else:
        dc_recycle(dc)
    if uc.conn.state == U_CLOSED:
        return
    if uc.xhead != NULL:
        cache_pump(uc)
    elif out_empty(&uc.conn.out):
        uc_after_response(uc)
    # else: uc_on_drained continues once the client has taken the rest


cdef void dc_on_timer(DConn* dc) noexcept nogil:
    cdef Exchange* x
    cdef uint8_t st = dc.conn.state
    if dc.phase == R_TUNNEL:
        if st == D_CONNECTING:
            redirect_failed(dc, ETIMEDOUT)
        return
    if st == D_DOWN:
        if dc.ds.pp:
            pp_slot_timer(dc)       # a private slot freed: serve waiting requests (pool.pxi)
        elif dc.ds.enabled:
            dc_connect(dc)
    elif st == D_CONNECTING:
        dc_failed(dc, ETIMEDOUT)
    elif st == D_IDLE:
        dc_recycle(dc)              # refresh before the downstream's own idle timeout bites
                                    # (an extra connection idle that long is closed: pool.pxi)
    elif st == D_ACTIVE:
        x = dc.x
        if x.flags & XF_SPL_GRACE:
            spl_grace_over(dc)      # a spliced body's client stayed blocked (splice.pxi)
            return
        if not out_empty(&x.uc.conn.out):
            timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)   # the client is slow, not the downstream
            return
        if not (dc.xlast.flags & XF_REQ_DONE) and out_empty(&dc.conn.out):
            timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)   # still waiting for the client's body
            return
        if not out_empty(&dc.conn.out):
            dc_exchange_failed(dc, 504, "write timeout")
        else:
            dc_exchange_failed(dc, 504, "read timeout")
