# Upstream (client) connections: accept, read, parse, route, forward the
# request, write the response back, keep-alive and pipelining.
#
# Pipelined requests are answered in order by serving them one at a time:
# the parser pauses at the end of each message and the bytes of the next
# request wait in the read buffer until the current response has been
# written out.  Memory stays bounded whatever the client sends.

# ---- exchanges -----------------------------------------------------------------

cdef Exchange* x_new(UConn* uc) noexcept nogil:
    global c_x_out
    cdef Exchange* x = <Exchange*>freelist_pop(&g_free_x)
    if x == NULL:
        x = <Exchange*>malloc(sizeof(Exchange))
        if x == NULL:
            return NULL
    x.next = NULL
    x.prev = NULL
    x.pnext = NULL
    x.uc = uc
    x.dc = NULL
    x.rule = NULL
    timer_init(&x.ptimer, TK_EXCH, x)
    x.flags = 0
    x.hstate = HS_NONE
    x.method = 0
    x.status = 0
    x.err_status = 0
    x.method_sp.off = 0
    x.method_sp.len = 0
    x.url_sp.off = 0
    x.url_sp.len = 0
    x.reason_sp.off = 0
    x.reason_sp.len = 0
    x.host_sp.off = 0
    x.host_sp.len = 0
    x.why = NULL
    x.nreq = 0
    x.nresp = 0
    x.t_start = g_now
    x.body_in = 0
    x.head_end = 0
    x.path_off = 0
    x.path_len = 0
    x.cut_so = -1
    x.cut_eo = -1
    x.spl = NULL
    x.qbb = NULL
    x.splice_left = 0
    x.failed_ds = NULL
    x.cz = NULL
    x.cz_coding = 0
    x.cz_flags = 0
    x.cst = 0
    x.cflags = 0
    x.cfd = -1
    x.cwfd = -1
    x.ckey = 0
    x.ckey_copy = NULL
    x.cx = NULL
    x.edge_wait = 0
    x.edge_limit = NULL
    x.sf_fd = -1                    # edge.pxi / static.pxi
    x.sticky_set = 0
    xlog_init(x)
    c_x_out += 1
    return x


cdef void x_free(Exchange* x) noexcept nogil:
    global c_x_out
    m_request_done(x)
    static_release(x)
    xlog_emit(x)                    # every exchange ends here, whichever way it went
    timer_stop(&x.ptimer)
    comp_free(x)
    cache_free(x)
    if x.edge_wait:
        redis_forget(x)             # limits.pxi / redis.pxi
    if x.flags & XF_PENDING:
        pend_remove(x)
    if x.spl != NULL:
        spl_put(x.spl)
        x.spl = NULL
    if x.qbb != NULL:
        bb_free(x.qbb)
        x.qbb = NULL
    c_x_out -= 1
    if not freelist_push(&g_free_x, x):
        free(x)


cdef void x_drop(UConn* uc) noexcept nogil:
    """End the client's oldest exchange, whatever state it is in: a
    downstream connection still attached cannot be trusted and is closed."""
    cdef Exchange* x = uc.xhead
    if x == NULL:
        return
    if x.dc != NULL:
        if x.dc.phase == R_TUNNEL:
            tunnel_free(x.dc)
        elif x.dc.x != x:
            pipe_drop(x.dc, x)      # in flight behind another client's exchange
        else:
            dc_abandon(x.dc)
    uc_x_end(uc)


cdef inline void uc_x_push(UConn* uc, Exchange* x) noexcept nogil:
    """A new exchange of this connection: the newest (its request is parsed next)."""
    x.unext = NULL
    if uc.xtail != NULL:
        uc.xtail.unext = x
    else:
        uc.xhead = x
    uc.xtail = x


cdef void uc_x_end(UConn* uc) noexcept nogil:
    """The oldest exchange of this connection is over: freed, and the next
    one (if any) becomes the oldest.  It is freed while still the
    connection's, so its log line and messages name its vhost."""
    cdef Exchange* x = uc.xhead
    cdef Exchange* nxt = x.unext
    x_free(x)
    uc.xhead = nxt
    if nxt == NULL:
        uc.xtail = NULL


# ---- pending queue ---------------------------------------------------------------

cdef void pend_add(Exchange* x) noexcept nogil:
    global g_pend_first, g_pend_last, g_npending
    x.flags |= XF_PENDING
    x.next = NULL
    x.prev = g_pend_last
    if g_pend_last != NULL:
        g_pend_last.next = x
    else:
        g_pend_first = x
    g_pend_last = x
    g_npending += 1
    timer_arm(&x.ptimer, x.uc.srv.pending_timeout_ms)
    pool_grow(x.rule)               # every connection is busy: open an extra one if allowed
    pp_grow(x)                      # or a private one for this client (proxy-protocol, pool.pxi)


cdef void pend_remove(Exchange* x) noexcept nogil:
    global g_pend_first, g_pend_last, g_npending, g_pend_changes
    if not (x.flags & XF_PENDING):
        return
    x.flags &= ~XF_PENDING
    if x.prev != NULL:
        x.prev.next = x.next
    else:
        g_pend_first = x.next
    if x.next != NULL:
        x.next.prev = x.prev
    else:
        g_pend_last = x.prev
    x.next = NULL
    x.prev = NULL
    g_npending -= 1
    g_pend_changes += 1
    timer_stop(&x.ptimer)


cdef void pend_serve() noexcept nogil:
    """Hand idle downstream connections to waiting exchanges, oldest first.
    Starting an exchange can fail a connection, and failing one can replay
    requests or answer waiting ones: if the queue changed under the walk, it
    starts again from the head (a nested call only asks for that)."""
    global g_pend_serving, g_pend_changes
    cdef Exchange* x = g_pend_first
    cdef Exchange* nx
    cdef DConn* dc
    cdef uint32_t seen
    if g_pend_serving:
        g_pend_changes += 1
        return
    g_pend_serving = True
    while x != NULL:
        nx = x.next
        dc = lb_pick_for(x)
        if dc != NULL:
            pend_remove(x)
            seen = g_pend_changes
            x_attach(x, dc)
            if g_pend_changes != seen:
                nx = g_pend_first   # nx may be gone: walk again
        x = nx
    g_pend_serving = False


cdef void pend_fail_dead() noexcept nogil:
    """A downstream went down: exchanges waiting only for dead downstreams
    get their 502 now rather than at the pending timeout."""
    cdef Exchange* x = g_pend_first
    cdef Exchange* nx
    while x != NULL:
        nx = x.next
        if not rule_alive(x.rule):
            pend_remove(x)
            uc_reject(x.uc, 502)
        x = nx


cdef void x_on_pending_timeout(Exchange* x) noexcept nogil:
    cdef UConn* uc = x.uc
    rp_elog(x_errfd(x), 5, "pending timeout: no downstream connection free for rule '%s'", x.rule.name)
    m_pend_timeout(x)
    pend_remove(x)
    uc_reject(uc, 503)


# ---- client connections ------------------------------------------------------------

cdef UConn* uc_new(int fd, ServerRt* srv, const uint8_t* ss) noexcept nogil:
    global g_uconns, g_nuconns
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef const sockaddr_in* a4
    cdef const sockaddr_in6* a6
    if uc == NULL:
        return NULL
    uc.conn.h.kind = K_UCONN
    uc.conn.h.fd = fd
    uc.srv = srv
    uc_move(uc, U_IDLE)
    uc.conn.flags = CN_WRITABLE
    llhttp_init(&uc.conn.parser, HTTP_REQUEST, &g_req_settings)
    uc.conn.parser.data = uc
    timer_init(&uc.conn.timer, TK_UCONN, uc)
    uc.conn.peer.family = (<const sockaddr*>ss).sa_family
    if uc.conn.peer.family == AF_INET:
        a4 = <const sockaddr_in*>ss
        memcpy(uc.conn.peer.addr, &a4.sin_addr, 4)
        uc.conn.peer.port = ntohs(a4.sin_port)
    elif uc.conn.peer.family == AF_INET6:
        a6 = <const sockaddr_in6*>ss
        memcpy(uc.conn.peer.addr, &a6.sin6_addr, 16)
        uc.conn.peer.port = ntohs(a6.sin6_port)
    uc.next = g_uconns
    if g_uconns != NULL:
        g_uconns.prev = uc
    g_uconns = uc
    uc.conn.flags |= UF_IN_LIST
    g_nuconns += 1
    m_conn_open(srv)
    return uc


cdef void uc_close(UConn* uc) noexcept nogil:
    """Close now.  The struct is freed at the end of the loop turn, since
    events already returned by epoll may still point at it."""
    global g_uconns, g_nuconns, g_dead
    if uc.conn.state == U_CLOSED:
        return
    while uc.xhead != NULL:
        x_drop(uc)                  # every exchange it owns
    if uc.pp != NULL:
        pp_release(uc)              # its private downstream connections close with it (pool.pxi)
    if uc.conn.flags & CN_VIRTUAL:
        h2_vuc_closed(uc)           # an HTTP/2 stream's connection: the stream learns it (h2.pxi)
    elif uc.h2 != NULL:
        h2_free(uc)                 # an HTTP/2 connection: its streams close with it
    conn_release(&uc.conn)
    rsp_release(uc)
    if uc.conn.flags & UF_IN_LIST:
        if uc.prev != NULL:
            uc.prev.next = uc.next
        else:
            g_uconns = uc.next
        if uc.next != NULL:
            uc.next.prev = uc.prev
        g_nuconns -= 1
        m_conn_closed(uc.srv)
    uc.conn.flags &= UF_READY | CN_VIRTUAL   # still on the ready list: run_ready skips it
    uc_move(uc, U_CLOSED)
    uc.next = g_dead
    g_dead = uc


cdef void uc_close_gracefully(UConn* uc) noexcept nogil:
    """Close after the last response.  If the client may still be sending
    (an unread body, pipelined bytes), shut our side and discard its input for
    a moment first, so a reset does not destroy the response in flight."""
    if uc.conn.flags & CN_VIRTUAL:
        uc_close(uc)                # an HTTP/2 stream: its response is with nghttp2 already
        return
    if (uc.conn.rend > uc.conn.rpos or uc.xhead != NULL) and not (uc.conn.flags & CN_RDHUP):
        x_drop(uc)
        conn_shut_wr(uc.conn.h.fd, uc.conn.tls)
        uc_move(uc, U_LINGER)
        uc.conn.rpos = 0
        uc.conn.rend = 0
        timer_arm(&uc.conn.timer, 2000)
        uc_read(uc)
        return
    uc_close(uc)


cdef inline int64_t uc_read_timeout(UConn* uc) noexcept nogil:
    """A rule's upstream-read-timeout replaces the server's once a request
    is routed to it, and only when it is set (RProxy applied {0,0} when unset)."""
    if uc.xhead != NULL and uc.xhead.rule != NULL and uc.xhead.rule.up_read_ms:
        return uc.xhead.rule.up_read_ms
    return uc.srv.client_body_timeout_ms     # (only request bodies are read under it)


cdef inline int64_t uc_write_timeout(UConn* uc) noexcept nogil:
    if uc.xhead != NULL and uc.xhead.rule != NULL and uc.xhead.rule.up_write_ms:
        return uc.xhead.rule.up_write_ms
    return uc.srv.send_timeout_ms


cdef int uc_send(UConn* uc) noexcept nogil:
    """Write the client's pending output.  0: all out; 1: the socket is full;
    -1: the client is gone (the connection has been closed)."""
    cdef uint32_t moved
    cdef int r = conn_send(&uc.conn, &moved)
    if uc.xhead != NULL:
        uc.xhead.log.bytes_out += moved
    if r == 0:
        return 0
    if r > 0:
        if moved or uc.conn.timer.when == 0:     # send-timeout: the time between two writes that moved bytes
            timer_arm(&uc.conn.timer, uc_write_timeout(uc))
        return 1
    uc_close(uc)
    return -1


cdef void uc_on_drained(UConn* uc) noexcept nogil:
    """The client took all its pending output (after EPOLLOUT): continue
    whatever was waiting for that."""
    cdef Exchange* x = uc.xhead
    if uc.conn.state == U_CLOSING:
        uc_close_gracefully(uc)
        return
    if x != NULL and edge_on_drained(uc):
        return
    if x != NULL:
        if x.dc != NULL:
            rsp_resume(x.dc, uc)   # the downstream was paused for us
        elif x.cfd >= 0:
            cache_pump(uc)         # a hit's body (cache.pxi)
        return
    if uc.conn.state == U_WAIT:
        uc_after_response(uc)


cdef void uc_after_response(UConn* uc) noexcept nogil:
    """A response has been fully written: close, or serve the next request."""
    if (uc.conn.flags & UF_CLOSE_AFTER) or g_stop:
        uc_close_gracefully(uc)
        return
    global g_depth, g_ready
    rsp_release(uc)
    uc.conn.flags |= UF_SERVED
    uc_move(uc, U_IDLE)
    timer_arm(&uc.conn.timer, uc.srv.keepalive_timeout_ms)
    if g_depth > 8:
        # pipelined requests answered back to back would nest calls; finish
        # this one at the end of the loop turn instead
        if not (uc.conn.flags & UF_READY):
            uc.conn.flags |= UF_READY
            uc.rnext = g_ready
            g_ready = uc
        return
    g_depth += 1
    uc_process(uc)
    if uc.conn.state != U_CLOSED:
        uc_read(uc)
    g_depth -= 1


cdef void uc_answer(UConn* uc, const char* resp, uint32_t len, Buf* hb, bint keep) noexcept nogil:
    """Answer the oldest request with a whole response of rproxy's own in
    [resp, resp + len) (hb: the buffer it is in, owned from here on; NULL for
    static bytes).  The exchange ends now; the connection closes after the
    response unless keep (and not stopping)."""
    x_drop(uc)
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    out_release(&uc.conn.out)
    uc.conn.out.hptr = resp
    uc.conn.out.hlen = len
    uc.conn.out.hbuf = hb
    uc_move(uc, U_CLOSING if uc.conn.flags & UF_CLOSE_AFTER else U_WAIT)
    if uc_send(uc) == 0:
        uc_on_drained(uc)


cdef void uc_respond(UConn* uc, int status, bint keep) noexcept nogil:
    """Answer with a response of the proxy's own (4xx/5xx)."""
    cdef Canned* c = canned_get(status)
    cdef Exchange* x = uc.xhead
    if x != NULL and x.cx != NULL and cache_stale_answer(uc, x, status):
        return                      # cache-use-stale: a stale entry instead (cache.pxi)
    if (x != NULL and (x.flags & XF_RESP_STARTED)) or (uc.conn.tls != NULL and (uc.conn.tls.flags & TF_WPEND)
                                                       and not (uc.conn.flags & CN_VIRTUAL)):
        uc_close(uc)                # half a response is out: only closing is honest
        return
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    if uc.conn.flags & UF_CLOSE_AFTER:
        xlog_answer(x, status, c.close_resp)
        uc_answer(uc, c.close_resp, c.close_len, NULL, False)
    else:
        xlog_answer(x, status, c.keep_resp)
        uc_answer(uc, c.keep_resp, c.keep_len, NULL, True)


cdef bint uc_request_bodyless(UConn* uc) noexcept nogil:
    cdef llhttp_t* p = &uc.conn.parser
    if p.flags & (F_CHUNKED | F_TRANSFER_ENCODING):
        return False
    return not (p.flags & F_CONTENT_LENGTH) or p.content_length == 0


cdef void uc_reject(UConn* uc, int status) noexcept nogil:
    """Refuse the request whose head was just parsed.  The connection is kept
    only when the request carried no body (nothing unread to skip)."""
    uc_respond(uc, status, uc_reject_keeps(uc))


cdef bint uc_reject_keeps(UConn* uc) noexcept nogil:
    """Answering the request whose head was just parsed without forwarding
    it: can the connection be kept?  (Steps the parser over an empty body.)"""
    cdef llhttp_errno_t err
    cdef bint keep = False
    cdef Exchange* x = uc.xhead
    if x != NULL and not (x.flags & XF_REQ_DONE) and (x.flags & XF_KEEPALIVE) and uc_request_bodyless(uc):
        # step the parser over the (empty) body to the end of the message
        err = llhttp_execute(&uc.conn.parser, bdata(uc.conn.rbuf) + uc.conn.rpos, 0)
        if err == HPE_PAUSED and (uc.conn.flags & CN_MSG_DONE):
            uc.conn.flags &= ~CN_MSG_DONE
            llhttp_resume(&uc.conn.parser)
            keep = True
    elif x != NULL and (x.flags & XF_REQ_DONE) and (x.flags & XF_KEEPALIVE):
        keep = True
    return keep


cdef void uc_on_event(UConn* uc, uint32_t ev) noexcept nogil:
    cdef int r
    if (uc.conn.flags & UF_PP_WAIT) and (not (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) or pp_read(uc) != 0):
        return                      # PROXY protocol header awaited (proxyproto.pxi): nothing else yet
    if uc.conn.tls != NULL and (uc.conn.tls.flags & TF_HANDSHAKE):
        r = TLS_FAIL if ev & EPOLLERR else tls_uc_handshake(uc)
        if r == TLS_FAIL:
            uc_close(uc)
        elif r == TLS_DONE:
            uc.conn.flags |= CN_READABLE     # the request may be in OpenSSL already: look now
            if uc.conn.tls.flags & TF_ALPN_H2:
                h2_begin(uc)        # ALPN chose h2 (h2.pxi)
                return
            uc_read(uc)
        return
    if uc.conn.tls != NULL and (uc.conn.tls.flags & (TF_RD_WANT_W | TF_WR_WANT_R)):
        ev = tls_translate(uc.conn.tls, ev)
        if ev == 0:
            return
    if uc.conn.state == U_H2:
        h2_on_event(uc, ev)         # an HTTP/2 connection (h2.pxi)
        return
    uc_on_ready(uc, ev)


cdef void uc_on_ready(UConn* uc, uint32_t ev) noexcept nogil:
    """A client connection's readiness, past PROXY protocol and TLS (an
    HTTP/2 stream's connection is woken here by h2.pxi)."""
    cdef int r
    if ev & EPOLLERR:
        uc_close(uc)
        return
    if ev & (EPOLLRDHUP | EPOLLHUP):
        uc.conn.flags |= CN_RDHUP
    if ev & EPOLLOUT:
        uc.conn.flags |= CN_WRITABLE
        if not out_empty(&uc.conn.out):
            r = uc_pump(uc)
            if r > 0 and uc.xhead != NULL and uc.xhead.dc != NULL and uc.xhead.dc.x == uc.xhead \
                    and rsp_may_read(uc.xhead.dc, uc):
                dc_read(uc.xhead.dc)        # room in the response buffer again
            if r != 0:
                return
            uc_on_drained(uc)
            if uc.conn.state == U_CLOSED:
                return
        elif uc.xhead != NULL and uc.xhead.spl != NULL and uc.xhead.spl.len and uc.xhead.dc != NULL:
            dc_read(uc.xhead.dc)            # a spliced body waits in its pipe for this client
            if uc.conn.state == U_CLOSED:
                return
        elif uc.xhead != NULL and uc.xhead.cfd >= 0 and uc.xhead.dc == NULL:
            cache_pump(uc)              # a hit's body waits for room (sendfile, cache.pxi)
            if uc.conn.state == U_CLOSED:
                return
        elif uc.xhead != NULL and uc.xhead.sf_fd >= 0:
            static_pump(uc)             # a static file waits for room (static.pxi)
            if uc.conn.state == U_CLOSED:
                return
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP):
        uc.conn.flags |= CN_READABLE
        uc_read(uc)


cdef bint uc_wants_input(UConn* uc) noexcept nogil:
    cdef uint8_t st = uc.conn.state
    if st == U_IDLE or st == U_HEAD or st == U_LINGER or st == U_BUFFER:
        return True
    if st == U_BODY:
        return uc.xhead.dc != NULL and out_empty(&uc.xhead.dc.conn.out) and uc.conn.rpos == uc.conn.rend
    return False


cdef void uc_shift(UConn* uc, uint32_t d) noexcept nogil:
    """Move the unconsumed tail of the read buffer down by d bytes, keeping the
    recorded spans of a head in progress valid."""
    cdef Exchange* x = uc.xhead
    conn_shift(&uc.conn, d)
    uc.mstart = uc.mstart - d if uc.mstart >= d else 0
    if x != NULL and uc.conn.state == U_HEAD:
        x.method_sp.off -= d
        if x.url_sp.len:
            x.url_sp.off -= d
        headers_shift(x.req, x.nreq, d)


cdef bint uc_make_room(UConn* uc) noexcept nogil:
    """Ensure the read buffer has free space.  False if the connection was
    answered/closed instead (head too large)."""
    if uc.conn.rend < uc.conn.rbuf.cap:
        return True
    if uc.conn.state == U_HEAD:
        if uc.mstart > 0:
            uc_shift(uc, uc.mstart)
            return True
        uc_respond(uc, 431 if uc.xhead.url_sp.len and uc.xhead.nreq else 414, False)
        return False
    if uc.conn.state == U_BUFFER:
        return req_spill(uc)        # bodybuf.pxi
    # everything before rpos is consumed (uc_wants_input checked it)
    if uc.conn.state == U_BODY:
        xlog_keep_request(uc.xhead, uc)
        uc.xhead.flags |= XF_BODY_SPILLED   # the start of this request is about to be overwritten
    if uc.conn.rpos == uc.conn.rend:
        uc.conn.rpos = 0
        uc.conn.fpos = 0
        uc.conn.rend = 0
        uc.mstart = 0
        return True
    uc_shift(uc, uc.conn.rpos)
    return True


cdef void uc_read(UConn* uc) noexcept nogil:
    cdef ssize_t n
    cdef uint32_t room
    if uc.conn.state == U_TUNNEL:
        tun_up(uc)
        return
    while (uc.conn.flags & CN_READABLE) and uc.conn.state != U_CLOSED and uc_wants_input(uc):
        if uc.conn.rbuf == NULL:
            uc.conn.rbuf = buf_get()
            if uc.conn.rbuf == NULL:
                uc_close(uc)
                return
            uc.conn.rpos = 0
            uc.conn.fpos = 0
            uc.conn.rend = 0
            uc.mstart = 0
        if uc.conn.state == U_LINGER:
            uc.conn.rend = 0
            uc.conn.rpos = 0
        if not uc_make_room(uc):
            return
        room = uc.conn.rbuf.cap - uc.conn.rend
        if uc.conn.state == U_BODY and uc.xhead.dc.ds.high_watermark and room > uc.xhead.dc.ds.high_watermark:
            room = uc.xhead.dc.ds.high_watermark    # the downstream's high-watermark bounds the upload in flight
        n = conn_read(&uc.conn, room, uc.conn.state == U_LINGER)     # lingering discards raw bytes
        if n > 0:
            if uc.conn.state == U_LINGER:
                continue
            uc_process(uc)
        elif n == 0:
            uc_on_eof(uc)
            return
        else:
            if errno != EAGAIN:
                uc_close(uc)
                return
            break                   # drained (a TLS connection learns it only here)
    if uc.conn.state != U_CLOSED and uc.conn.state == U_IDLE and uc.conn.rbuf != NULL and uc.conn.rpos == uc.conn.rend \
            and out_empty(&uc.conn.out):
        # idle keep-alive connections hold no buffer
        buf_put(uc.conn.rbuf)
        uc.conn.rbuf = NULL


cdef void uc_on_eof(UConn* uc) noexcept nogil:
    cdef uint8_t st = uc.conn.state
    uc.conn.flags |= CN_RDHUP
    if st == U_IDLE or st == U_LINGER:
        uc_close(uc)
    elif st == U_HEAD or st == U_BODY or st == U_BUFFER:
        # the client gave up in the middle of its request
        uc_close(uc)
    else:
        # half-close after a complete request is legal: answer, then close
        uc.conn.flags |= UF_CLOSE_AFTER


cdef int parse_error_status(UConn* uc, llhttp_errno_t err) noexcept nogil:
    """The status for a request llhttp refused: a limit we stopped it for
    (414/431), 505 for a well-formed but unsupported HTTP version, else 400."""
    cdef const char* reason
    if uc.xhead != NULL and uc.xhead.err_status:
        return uc.xhead.err_status
    if err == HPE_INVALID_VERSION:
        reason = llhttp_get_error_reason(&uc.conn.parser)
        if reason != NULL and strcmp(reason, "Invalid HTTP version") == 0:
            return 505
    return 400


cdef void uc_parse_error(UConn* uc, llhttp_errno_t err) noexcept nogil:
    cdef int status = parse_error_status(uc, err)
    cdef char where[48]
    cdef int n = peer_format(&uc.conn.peer, where, 48)
    c_errors_inc()
    rp_elog(uc_errfd(uc), 4, "client %.*s: bad request (%d): %s", n, where, status,
            llhttp_get_error_reason(&uc.conn.parser))
    uc_respond(uc, status, False)


cdef inline void c_errors_inc() noexcept nogil:
    global c_errors
    c_errors += 1


cdef void uc_process(UConn* uc) noexcept nogil:
    """Parse what the read buffer holds and act on it."""
    cdef llhttp_errno_t err
    cdef char* base
    cdef uint8_t st
    while uc.conn.state != U_CLOSED:
        st = uc.conn.state
        if st == U_IDLE or st == U_HEAD:
            if uc.conn.rbuf == NULL or uc.conn.rpos == uc.conn.rend:
                if st == U_HEAD and uc.conn.rend - uc.mstart > uc.srv.max_header_size:
                    uc_respond(uc, 431, False)
                return
            if st == U_IDLE:
                if uc.srv.http2 and uc.conn.rpos == 0 and uc.conn.tls == NULL \
                        and not (uc.conn.flags & (UF_SERVED | CN_VIRTUAL)) and h2_preface(uc):
                    return          # h2c prior knowledge, or a part of its preface (h2.pxi)
                timer_arm(&uc.conn.timer, uc.srv.read_timeout_ms)
            base = bdata(uc.conn.rbuf)
            err = llhttp_execute(&uc.conn.parser, base + uc.conn.rpos, uc.conn.rend - uc.conn.rpos)
            if err == HPE_OK:
                uc.conn.rpos = uc.conn.rend
                continue
            if err == HPE_PAUSED:
                uc.conn.rpos = <uint32_t>(llhttp_get_error_pos(&uc.conn.parser) - base)
                llhttp_resume(&uc.conn.parser)
                if uc.conn.flags & CN_HEAD_DONE:
                    uc.conn.flags &= ~CN_HEAD_DONE
                    uc.xhead.head_end = uc.conn.rpos
                    if uc.conn.rpos - uc.mstart > uc.srv.max_header_size:
                        uc_respond(uc, 431, False)
                        return
                    uc_on_head(uc)
                continue
            uc_parse_error(uc, err)
            return
        elif st == U_BODY:
            uc_forward_body(uc)
            return
        elif st == U_BUFFER:
            req_buffer_body(uc)     # bodybuf.pxi
            return
        else:
            return


cdef RuleRt* request_admit(UConn* uc, int* status) noexcept nogil:
    """Classify a complete request head and route it: the rule to use, or
    NULL with *status set (400 bad Host or framing, 404 no route, 405
    CONNECT, 413 body too large, 417 Expect, 501 unknown transfer coding,
    505 not HTTP/1.x; x.why says why when it is worth a log line).
    *status 0 with NULL never happens."""
    cdef Exchange* x = uc.xhead
    cdef llhttp_t* p = &uc.conn.parser
    cdef uint8_t m = p.method
    cdef int st
    x.method = m
    if p.http_major != 1:
        x.flags |= XF_REFUSE_CLOSE
        if request_line_has_version(uc, x):
            x.why = "HTTP version not supported"
            status[0] = 505
        else:
            x.why = "no HTTP version in the request line"   # llhttp reads it as HTTP/0.9
            status[0] = 400
        return NULL
    if p.http_minor == 0:
        x.flags |= XF_HTTP10
    if llhttp_should_keep_alive(p):
        x.flags |= XF_KEEPALIVE
    if m == HTTP_HEAD:
        x.flags |= XF_HEAD_REQ
    if m == HTTP_GET or m == HTTP_HEAD or m == HTTP_OPTIONS or m == HTTP_TRACE or m == HTTP_PUT \
            or m == HTTP_DELETE:
        x.flags |= XF_IDEMPOTENT
    if m == HTTP_CONNECT:
        status[0] = 405                 # a reverse proxy is not a CONNECT proxy
        return NULL
    st = request_strict(uc, x)          # Host, framing, header names, Expect (http.pxi)
    if st:
        status[0] = st
        return NULL
    if (p.flags & F_TRANSFER_ENCODING) and not (p.flags & F_CHUNKED):
        # RFC 9112 6.3: a request whose final coding is not chunked has no
        # reliable length.  llhttp only notices after the head (past our pause),
        # so refuse here, before a byte of it is forwarded.
        status[0] = 400
        return NULL
    if p.upgrade:
        if request_upgrade_wanted(uc, x):
            x.flags |= XF_UPGRADE       # forwarded with its Upgrade; tunnel after a 101
        else:
            # only h2c was offered: not an upgrade.  llhttp decides after this
            # pause whether the rest is another protocol: it now parses on as
            # HTTP/1.1 (body, keep-alive) and the request goes on as one.
            p.upgrade = 0
    if uc.srv.client_max_body_size and (p.flags & F_CONTENT_LENGTH) \
            and p.content_length > uc.srv.client_max_body_size:
        status[0] = 413
        return NULL
    return route(uc, x, status)


cdef bint request_line_has_version(UConn* uc, Exchange* x) noexcept nogil:
    """Did the request line carry a version after its target?  (llhttp takes
    `GET /` with none for HTTP/0.9.)"""
    cdef uint32_t e = x.url_sp.off + x.url_sp.len
    return x.url_sp.len > 0 and e < uc.conn.rend and bdata(uc.conn.rbuf)[e] == c' '


cdef bint request_upgrade_wanted(UConn* uc, Exchange* x) noexcept nogil:
    """Does some Upgrade header offer a protocol other than h2c?"""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef int i
    for i in range(x.nreq):
        if header_id(base + x.req[i].name.off, x.req[i].name.len) == H_UPGRADE \
                and upgrade_wanted(base + x.req[i].value.off, x.req[i].value.len):
            return True
    return False


cdef void uc_on_head(UConn* uc) noexcept nogil:
    """A request head is complete in [mstart, rpos): route it and start it."""
    cdef Exchange* x = uc.xhead
    cdef int status = 0
    cdef RuleRt* rule = request_admit(uc, &status)
    cdef char where[48]
    cdef int n
    if g_acme_nhttp and uc.conn.tls == NULL and acme_http_answer(uc, x):
        return                      # an HTTP-01 challenge (acme.pxi), before routing and redirects
    if rule == NULL:
        if x.why != NULL:
            n = peer_format(&uc.conn.peer, where, 48)
            c_errors_inc()
            rp_elog(uc_errfd(uc), 4, "client %.*s: bad request (%d): %s", n, where, status, x.why)
        if status == 505 or status == 405 or status == 413 or (x.flags & XF_REFUSE_CLOSE):
            uc_respond(uc, status, False)
        else:
            uc_reject(uc, status)
        return
    x.rule = rule
    if rule.comp != NULL:
        comp_on_request(uc, x)     # Accept-Encoding, while the request head is at hand
    if rule.edge != NULL and edge_admit(uc, x, rule):
        return                      # refused or held (limits.pxi)
    uc_start(uc, x, rule)


cdef void uc_start(UConn* uc, Exchange* x, RuleRt* rule) noexcept nogil:
    """An admitted request: redirect, or find it a downstream connection."""
    cdef DConn* dc
    if rule.vhost.https_redirect and uc.conn.tls == NULL:
        uc_redirect_https(uc, x, rule.vhost)
        return
    if rule.serve_edge != NULL and edge_on_head(uc, x) == 0:
        return                      # a redirect or static file answered it (edge.pxi)
    if rule.nds == 0:
        rp_elog(x_errfd(x), 3, "rule '%s' has no downstreams", rule.name)
        uc_reject(uc, 503)
        return
    if rule.cache != NULL and cache_on_request(uc, x):
        return                      # answered from the cache (cache.pxi)
    if req_buffer_wanted(uc, x):
        req_buffer_start(uc)        # the body first, then uc_dispatch (bodybuf.pxi)
        return
    uc_dispatch(uc)


cdef void uc_dispatch(UConn* uc) noexcept nogil:
    """Start a routed request: a downstream connection now, or the pending queue."""
    cdef Exchange* x = uc.xhead
    cdef RuleRt* rule = x.rule
    cdef DConn* dc
    if (x.flags & XF_IDEMPOTENT) and not (x.flags & XF_UPGRADE) and not rule.passthrough \
            and uc_request_bodyless(uc):
        x.flags |= XF_PIPE_OK       # may be pipelined where a downstream allows it
    dc = lb_pick_for(x)
    if dc == NULL:
        if not rule_alive(rule):
            rp_elog(x_errfd(x), 3, "rule '%s': every downstream is down: 502", rule.name)
            uc_reject(uc, 502)
            return
        if uc.srv.max_pending > 0 and g_npending >= uc.srv.max_pending:
            rp_elog(x_errfd(x), 4, "max-pending (%d) reached: 503", uc.srv.max_pending)
            m_pend_rejected(x)
            uc_reject(uc, 503)
            return
        uc_move(uc, U_PENDING)
        timer_stop(&uc.conn.timer)
        pend_add(x)
        return
    x_attach(x, dc)


cdef void x_attach(Exchange* x, DConn* dc) noexcept nogil:
    """Give an exchange its downstream connection and start forwarding."""
    cdef UConn* uc = x.uc
    cdef Buf* hb = buf_get()
    cdef W w
    cdef bint joining = dc.x != NULL  # behind requests in flight (pipeline.pxi)
    if hb == NULL:
        if not joining:
            idle_push(dc)
        uc_close(uc)
        return
    x.pnext = NULL
    if joining:
        dc.xlast.pnext = x
        x.flags |= XF_PIPELINED
    else:
        dc_move(dc, D_ACTIVE)
        dc.x = x
        dc.assigned_at = g_now_us
        dc.conn.flags &= (CN_READABLE | CN_WRITABLE | CN_RDHUP)
        dc_move_phase(dc, R_HEAD)
        llhttp_reset(&dc.conn.parser)
    dc.xlast = x
    dc.ninflight += 1
    dc.ds.n_active += 1
    x.dc = dc
    xlog_attach(x, dc)
    dc.nreq += 1
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    build_request_head(&w, uc, x, dc.ds)
    if w.overflow:
        buf_put(hb)
        if joining:
            pipe_unlink_from(dc, x)
        else:
            dc_detach(dc)
            idle_push(dc)
        uc_respond(uc, 431, False)
        return
    dc.conn.out.hptr = bdata(hb)
    dc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    dc.conn.out.hbuf = hb
    uc.conn.fpos = x.head_end            # the client's own head is not forwarded (a replay
                                    # re-sends the body that follows it)
    if x.rule.passthrough and (uc.conn.flags & CN_VIRTUAL):
        h2_refuse(uc, "a passthrough rule (raw tunnel) cannot serve an HTTP/2 stream")
        return
    if x.rule.passthrough:
        # RProxy's passthrough: after the head, bytes flow raw both ways
        x.flags |= XF_RESP_STARTED
        xlog_relay(x)
        tunnel_start(x, dc)
        return
    uc_move(uc, U_BODY)
    if not joining:                 # the oldest's read deadline stands
        timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)
    timer_arm(&uc.conn.timer, uc_read_timeout(uc))
    uc_forward_body(uc)
    if uc.conn.state != U_CLOSED and uc.xhead == x:
        uc_read(uc)


cdef void uc_forward_body(UConn* uc) noexcept nogil:
    """Move request bytes to the downstream until the request is complete,
    the downstream socket is full, or more client bytes are needed."""
    cdef Exchange* x = uc.xhead
    cdef DConn* dc = x.dc
    cdef char* base
    cdef llhttp_errno_t err
    cdef uint32_t n
    while True:
        if not out_empty(&dc.conn.out):
            if dc_send(dc) != 0:
                return
        if x.qbb != NULL and bb_len(x.qbb):
            if bb_take(x.qbb, &dc.conn.out) < 0:    # the buffered part of the body goes first
                req_buffer_failed(uc, "reading the temp file back failed")
                return
            timer_arm(&uc.conn.timer, uc_read_timeout(uc))  # the body moves on: the client is not late
            continue
        base = bdata(uc.conn.rbuf)
        if uc.conn.rpos > uc.conn.fpos:
            n = uc.conn.rpos - uc.conn.fpos
            x.body_in += n
            if uc.srv.client_max_body_size and x.body_in > uc.srv.client_max_body_size:
                uc_respond(uc, 413, False)
                return
            dc.conn.out.bptr = base + uc.conn.fpos
            dc.conn.out.blen = n
            uc.conn.fpos = uc.conn.rpos
            timer_arm(&uc.conn.timer, uc_read_timeout(uc))
            continue
        if x.flags & XF_REQ_DONE:
            uc_move(uc, U_WAIT)
            if out_empty(&uc.conn.out):
                timer_stop(&uc.conn.timer)
            return
        if x.flags & XF_BUFFERED:
            x.flags |= XF_REQ_DONE      # read ahead to its end: all of it is out now
            continue
        err = llhttp_execute(&uc.conn.parser, base + uc.conn.rpos, uc.conn.rend - uc.conn.rpos)
        if err == HPE_OK:
            uc.conn.rpos = uc.conn.rend
        elif err == HPE_PAUSED:
            uc.conn.rpos = <uint32_t>(llhttp_get_error_pos(&uc.conn.parser) - base)
            llhttp_resume(&uc.conn.parser)
            if uc.conn.flags & CN_MSG_DONE:
                uc.conn.flags &= ~CN_MSG_DONE
                x.flags |= XF_REQ_DONE
        else:
            rp_elog(uc_errfd(uc), 4, "bad request body: %s", llhttp_get_error_reason(&uc.conn.parser))
            uc_respond(uc, 400, False)
            return
        if uc.conn.rpos == uc.conn.fpos and not (x.flags & XF_REQ_DONE):
            return                  # wait for more of the body


cdef void uc_on_timer(UConn* uc) noexcept nogil:
    cdef uint8_t st = uc.conn.state
    if st == U_H2:
        h2_on_timer(uc)             # an HTTP/2 connection: idle or stalled (h2.pxi)
        return
    if not out_empty(&uc.conn.out) or (uc.xhead != NULL and uc.xhead.cfd >= 0 and uc.xhead.dc == NULL) \
            or (uc.xhead != NULL and uc.xhead.sf_fd >= 0):      # a cache hit (cache.pxi) or a static file (static.pxi)
        rp_elog(uc_errfd(uc), 5, "client took no response bytes for %lld ms (send-timeout): closing",
                uc_write_timeout(uc))
        uc_close(uc)
    elif st == U_IDLE or st == U_LINGER or st == U_CLOSING or st == U_TUNNEL:
        uc_close(uc)
    elif st == U_HEAD:
        uc_respond(uc, 408, False)
    elif st == U_BODY or st == U_BUFFER:
        rp_elog(uc_errfd(uc), 5, "client sent no request body bytes for %lld ms (client-body-timeout): 408",
                uc_read_timeout(uc))
        uc_respond(uc, 408, False)
