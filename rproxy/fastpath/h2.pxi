# HTTP/2 toward clients, on libnghttp2 driven sans-I/O from the loop.
#
# An HTTP/2 connection is a UConn in state U_H2 whose `h2` points at an
# H2Sess: what its socket (or TLS) reads goes to nghttp2_session_mem_recv,
# what nghttp2_session_mem_send produces goes to its Out and conn_send.
#
# Each stream is presented to the HTTP/1.1 machinery as a VIRTUAL client
# connection: a UConn with no socket (fd -1, CN_VIRTUAL), never in epoll,
# not counted as a connection, whose input and output are the stream's:
#   - its request arrives as an HTTP/1.1 request head built from the HEADERS
#     (request line from :method/:path, Host from :authority, cookies joined)
#     and a body (as given with a content-length, else chunked, trailers as
#     the chunked trailer section), queued in H2Stream.iq; conn_read copies
#     from there (-1/EAGAIN while empty, 0 once the request is all taken),
#     and only then is the stream's window given back (backpressure);
#   - its response is what the HTTP/1.1 code writes: conn_send parses those
#     bytes with an llhttp response parser, submits the head as HEADERS and
#     queues the body in H2Stream.oq, bounded by the server's high-watermark
#     (full: conn_send answers "socket full", as a real socket does); the
#     data source hands oq to nghttp2 as the client's window allows.
# So routing, rules, header policy, X-Forwarded-*, pending queue, balancing,
# replays, limits, cache, compression, static files and the access log
# serve streams unchanged.  A virtual connection is woken (uc_on_ready) only
# from the stream's wake list, run after mem_recv / mem_send returned:
# never from inside an nghttp2 callback.  Output produced by virtual
# connections during a loop turn is written once at its end (h2_flush_dirty).

cdef enum:
    # H2Stream.flags
    SF_CHUNKED = 0x01       # the request body is framed as chunks for the virtual connection
    SF_IN_EOF = 0x02        # the whole request is in iq
    SF_HEAD = 0x04          # a HEAD request: its response has no body
    SF_BIG = 0x08           # the request head is over max-header-size: 431
    SF_RSP_HEAD = 0x10      # the final response head was submitted
    SF_RSP_DONE = 0x20      # the response is complete (oq holds its last bytes)
    SF_DEFERRED = 0x40      # the data source said DEFERRED: resume when bytes come
    SF_OUT_FULL = 0x80      # conn_send found oq full: wake the connection once there is room
    SF_CLOSED = 0x100       # nghttp2 closed the stream
    SF_HAS_CL = 0x200       # the client gave a content-length
    SF_TRAILERS = 0x400     # the request's trailers are being received
    SF_QUEUED = 0x800       # on the session's wake list
    SF_RSP_TRAILERS = 0x1000  # the response has trailers (sent after the last DATA)
    SF_RST_AFTER = 0x2000   # the rest of the request is not wanted: RST_STREAM NO_ERROR once the response is out
    SF_EOF_SENT = 0x4000    # the response's END_STREAM went out

cdef enum:
    W_IN = 1                # request bytes (or its end) arrived
    W_OUT = 2               # room in oq again
    W_CLOSE = 4             # nghttp2 closed the stream

cdef enum:
    H2_WINDOW = 65535       # each stream's receive window (the protocol's default)


cdef struct ByteQ:
    # a bounded byte queue: [p + off, p + off + len), grown on demand
    char* p
    uint32_t off
    uint32_t len
    uint32_t cap


cdef struct H2Sess


cdef struct H2Stream:
    H2Stream* wnext         # the session's wake list
    H2Stream* next          # the session's streams
    H2Stream* prev
    H2Sess* s
    UConn* vuc              # its virtual connection (NULL before the head is complete, and once closed)
    int32_t id
    uint32_t flags          # SF_*
    uint8_t wake            # W_*
    uint8_t hstate          # response head parse state (HS_*)
    uint16_t nf             # response fields recorded in rh
    ByteQ iq                # request bytes for the virtual connection
    ByteQ oq                # response body bytes for nghttp2
    uint32_t iq_limit
    uint32_t oq_limit
    uint32_t unconsumed     # DATA bytes received whose window was not given back yet
    uint32_t head_left      # request head bytes still in iq (they open no window)
    uint32_t hsize          # request head bytes so far (max-header-size)
    Buf* sc                 # scratch: request header lines (front), pseudo values (back); then response fields
    uint32_t sc_len
    uint32_t sc_back
    uint32_t m_off          # :method, :path, :authority in sc
    uint32_t m_len
    uint32_t p_off
    uint32_t p_len
    uint32_t a_off
    uint32_t a_len
    ByteQ cookie            # cookie crumbs joined with "; "
    llhttp_t rp             # the response parser
    Header rh[HDR_CAP]      # response fields (spans in sc), then the trailers


cdef struct H2Sess:
    H2Sess* dnext           # the dirty list (output to write at the end of the loop turn)
    UConn* uc
    nghttp2_session* ng
    H2Stream* streams
    H2Stream* whead         # streams to wake after nghttp2 returned
    H2Stream* wtail
    uint32_t nstreams
    uint8_t dirty
    uint8_t in_send
    uint8_t dead
    uint8_t goaway          # GOAWAY sent: close once the streams in flight are done
    uint8_t idle            # the timer runs the keepalive-timeout (no stream open), else the read-timeout
    int64_t ctl_t0          # control frame flood: the current second
    uint32_t ctl_n
    int64_t rst_t0          # rapid reset: the current second
    uint32_t rst_n
    const uint8_t* pend     # mem_send output not yet copied out (valid until the next mem_send)
    size_t pend_len


cdef nghttp2_session_callbacks* g_h2_cbs = NULL
cdef H2Sess* g_h2_dirty = NULL
cdef llhttp_settings_t g_h2_rsp_settings
cdef const char* H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# ---- byte queues ---------------------------------------------------------------------------

cdef int bq_append(ByteQ* q, const char* p, uint32_t n, uint32_t limit) noexcept nogil:
    """Append n bytes; -1 when that would pass limit (or out of memory)."""
    cdef uint32_t cap
    cdef char* np
    if n == 0:
        return 0
    if q.len + n > limit:
        return -1
    if q.off + q.len + n > q.cap:
        if q.off:
            memmove(q.p, q.p + q.off, q.len)
            q.off = 0
        if q.len + n > q.cap:
            cap = q.cap * 2 if q.cap else 4096
            while cap < q.len + n:
                cap *= 2
            np = <char*>realloc(q.p, cap)
            if np == NULL:
                return -1
            q.p = np
            q.cap = cap
    memcpy(q.p + q.off + q.len, p, n)
    q.len += n
    return 0


cdef inline void bq_take(ByteQ* q, char* dst, uint32_t n) noexcept nogil:
    memcpy(dst, q.p + q.off, n)
    q.off += n
    q.len -= n
    if q.len == 0:
        q.off = 0


cdef inline void bq_free(ByteQ* q) noexcept nogil:
    if q.p != NULL:
        free(q.p)
    q.p = NULL
    q.off = 0
    q.len = 0
    q.cap = 0


# ---- sessions ------------------------------------------------------------------------------

cdef void h2_log(H2Sess* s, int level, const char* what, int32_t sid, const char* detail) noexcept nogil:
    cdef char where[48]
    cdef int n = peer_format(&s.uc.conn.peer, where, 48)
    c_errors_inc()
    rp_elog(uc_errfd(s.uc), level, "HTTP/2 client %.*s: %s (stream %d): %s", n, where, what, sid, detail)


cdef void h2_init_callbacks() noexcept nogil:
    global g_h2_cbs
    if g_h2_cbs != NULL:
        return
    if nghttp2_session_callbacks_new(&g_h2_cbs) != 0:
        g_h2_cbs = NULL
        return
    nghttp2_session_callbacks_set_on_begin_headers_callback(g_h2_cbs, h2_on_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback(g_h2_cbs, h2_on_header)
    nghttp2_session_callbacks_set_on_invalid_header_callback(g_h2_cbs, h2_on_invalid_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_h2_cbs, h2_on_frame_recv)
    nghttp2_session_callbacks_set_on_frame_send_callback(g_h2_cbs, h2_on_frame_send)
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(g_h2_cbs, h2_on_invalid_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_h2_cbs, h2_on_data_chunk)
    nghttp2_session_callbacks_set_on_stream_close_callback(g_h2_cbs, h2_on_stream_close)
    llhttp_settings_init(&g_h2_rsp_settings)
    g_h2_rsp_settings.on_header_field = h2_rsp_on_field
    g_h2_rsp_settings.on_header_value = h2_rsp_on_value
    g_h2_rsp_settings.on_headers_complete = h2_rsp_on_headers_complete
    g_h2_rsp_settings.on_body = h2_rsp_on_body
    g_h2_rsp_settings.on_message_complete = h2_rsp_on_message_complete


cdef int h2_start(UConn* uc) noexcept nogil:
    """Make a client connection an HTTP/2 connection: its session, our
    SETTINGS.  0, or -1 (out of memory: the caller closes)."""
    cdef H2Sess* s
    cdef nghttp2_option* opt
    cdef nghttp2_settings_entry iv[3]
    cdef ServerRt* srv = uc.srv
    cdef int rc
    cdef uint64_t win
    h2_init_callbacks()
    if g_h2_cbs == NULL:
        return -1
    s = <H2Sess*>calloc(1, sizeof(H2Sess))
    if s == NULL:
        return -1
    if nghttp2_option_new(&opt) != 0:
        free(s)
        return -1
    nghttp2_option_set_no_auto_window_update(opt, 1)     # windows open as the bytes are taken
    nghttp2_option_set_max_outbound_ack(opt, 1000)        # SETTINGS/PING ACKs it does not read: a flood
    nghttp2_option_set_max_settings(opt, 32)
    # rapid reset (CVE-2023-44487): counted per second in h2_on_frame_recv (GOAWAY
    # ENHANCE_YOUR_CALM); nghttp2's own token bucket, twice as loose, stays as a backstop
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * <uint64_t>srv.h2_max_resets, 2 * <uint64_t>srv.h2_max_resets)
    nghttp2_option_set_max_continuations(opt, srv.h2_max_cont)   # CONTINUATION flood (CVE-2024-27316)
    rc = nghttp2_session_server_new2(&s.ng, g_h2_cbs, s, opt)
    nghttp2_option_del(opt)
    if rc != 0:
        free(s)
        return -1
    s.uc = uc
    iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
    iv[0].value = srv.h2_max_streams
    iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
    iv[1].value = srv.max_header_size
    iv[2].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
    iv[2].value = 0
    nghttp2_submit_settings(s.ng, NGHTTP2_FLAG_NONE, iv, 3)
    # the connection window covers every stream's (each is bounded by its own)
    win = <uint64_t>srv.h2_max_streams * H2_WINDOW
    nghttp2_session_set_local_window_size(s.ng, NGHTTP2_FLAG_NONE, 0, <int32_t>(win if win < 0x7fffffff else 0x7fffffff))
    uc.h2 = s
    uc_move(uc, U_H2)
    s.idle = 1
    timer_arm(&uc.conn.timer, srv.keepalive_timeout_ms)
    return 0


cdef void h2_begin(UConn* uc) noexcept nogil:
    """ALPN chose h2: start, and read what came with the handshake."""
    if h2_start(uc) != 0:
        uc_close(uc)
        return
    h2_on_event(uc, EPOLLIN | EPOLLOUT)


cdef bint h2_preface(UConn* uc) noexcept nogil:
    """A plain listener with http2 on, first bytes of a connection: the h2c
    connection preface starts HTTP/2 (prior knowledge).  True: it did, or a
    part of the preface arrived and the rest is awaited; False: HTTP/1.1."""
    cdef uint32_t n = uc.conn.rend - uc.conn.rpos
    cdef uint32_t m = n if n < 24 else 24
    if memcmp(bdata(uc.conn.rbuf) + uc.conn.rpos, H2_PREFACE, m) != 0:
        return False
    if n < 24:
        return True
    if h2_start(uc) != 0:
        uc_close(uc)
        return True
    h2_on_event(uc, EPOLLOUT)
    return True


cdef void h2_free(UConn* uc) noexcept nogil:
    """The connection closes: every stream's virtual connection with it."""
    global g_h2_dirty
    cdef H2Sess* s = <H2Sess*>uc.h2
    cdef H2Stream* st
    cdef UConn* v
    cdef H2Sess** pp
    if s == NULL:
        return
    s.dead = 1
    st = s.streams
    while st != NULL:
        if st.vuc != NULL:
            v = st.vuc
            st.vuc = NULL
            v.h2 = NULL
            uc_close(v)
        st = st.next
    while s.streams != NULL:
        st = s.streams
        s.streams = st.next
        h2_stream_release(st)
    if s.dirty:
        pp = &g_h2_dirty
        while pp[0] != NULL:
            if pp[0] == s:
                pp[0] = s.dnext
                break
            pp = &pp[0].dnext
    nghttp2_session_del(s.ng)
    uc.h2 = NULL
    free(s)


cdef void h2_stream_release(H2Stream* st) noexcept nogil:
    bq_free(&st.iq)
    bq_free(&st.oq)
    bq_free(&st.cookie)
    if st.sc != NULL:
        buf_put(st.sc)
        st.sc = NULL
    free(st)


cdef void h2_stream_free(H2Sess* s, H2Stream* st) noexcept nogil:
    if st.prev != NULL:
        st.prev.next = st.next
    else:
        s.streams = st.next
    if st.next != NULL:
        st.next.prev = st.prev
    s.nstreams -= 1
    h2_stream_release(st)


cdef inline void h2_dirty(H2Sess* s) noexcept nogil:
    global g_h2_dirty
    if not s.dirty and not s.dead:
        s.dirty = 1
        s.dnext = g_h2_dirty
        g_h2_dirty = s


cdef inline void h2_wake(H2Stream* st, uint8_t w) noexcept nogil:
    cdef H2Sess* s = st.s
    st.wake |= w
    if st.flags & SF_QUEUED:
        return
    st.flags |= SF_QUEUED
    st.wnext = NULL
    if s.wtail != NULL:
        s.wtail.wnext = st
    else:
        s.whead = st
    s.wtail = st


cdef void h2_run_wakes(H2Sess* s) noexcept nogil:
    """Wake the virtual connections whose stream changed: after nghttp2
    returned, never inside its callbacks."""
    cdef H2Stream* st
    cdef UConn* v
    cdef uint8_t w
    while s.whead != NULL and not s.dead:
        st = s.whead
        s.whead = st.wnext
        if s.whead == NULL:
            s.wtail = NULL
        st.flags &= ~SF_QUEUED
        w = st.wake
        st.wake = 0
        if w & W_CLOSE:
            v = st.vuc
            if v != NULL:
                st.vuc = NULL
                v.h2 = NULL
                uc_close(v)         # a reset mid-response: the downstream connection is closed
            if s.dead:
                return
            h2_stream_free(s, st)
            continue
        if st.vuc != NULL and (w & W_IN):
            uc_on_ready(st.vuc, EPOLLIN)
        if st.vuc != NULL and (w & W_OUT) and not s.dead:
            uc_on_ready(st.vuc, EPOLLOUT)


# ---- the connection's socket ------------------------------------------------------------

cdef void h2_on_event(UConn* uc, uint32_t ev) noexcept nogil:
    if ev & EPOLLERR:
        uc_close(uc)
        return
    if ev & (EPOLLRDHUP | EPOLLHUP):
        uc.conn.flags |= CN_RDHUP
    if ev & EPOLLOUT:
        uc.conn.flags |= CN_WRITABLE
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP):
        uc.conn.flags |= CN_READABLE
    h2_pump(uc)


cdef void h2_pump(UConn* uc) noexcept nogil:
    """Read what the client sent into nghttp2, wake the streams it
    concerned, write what nghttp2 has to say."""
    cdef H2Sess* s = <H2Sess*>uc.h2
    cdef ssize_t n, r
    while uc.conn.state == U_H2 and not s.dead:
        if uc.conn.rbuf == NULL:
            if not (uc.conn.flags & CN_READABLE):
                break
            uc.conn.rbuf = buf_get()
            if uc.conn.rbuf == NULL:
                uc_close(uc)
                return
            uc.conn.rpos = 0
            uc.conn.rend = 0
        if uc.conn.rpos == uc.conn.rend:
            if not (uc.conn.flags & CN_READABLE):
                break
            uc.conn.rpos = 0
            uc.conn.rend = 0
            n = conn_read(&uc.conn, uc.conn.rbuf.cap, False)
            if n == 0:
                uc_close(uc)        # the client closed: its streams go with it
                return
            if n < 0:
                if errno != EAGAIN:
                    uc_close(uc)
                    return
                break
        r = nghttp2_session_mem_recv(s.ng, <const uint8_t*>bdata(uc.conn.rbuf) + uc.conn.rpos,
                                     uc.conn.rend - uc.conn.rpos)
        if r < 0:
            h2_log(s, 4, "connection error", 0, nghttp2_strerror(<int>r))
            # a flood nghttp2 detected itself (ACKs the client does not read): ENHANCE_YOUR_CALM
            nghttp2_session_terminate_session(s.ng, NGHTTP2_ENHANCE_YOUR_CALM if r == NGHTTP2_ERR_FLOODED
                                              else NGHTTP2_PROTOCOL_ERROR)
            uc.conn.rpos = uc.conn.rend
            h2_send(s)
            if uc.conn.state == U_H2:
                uc_close(uc)
            return
        uc.conn.rpos = uc.conn.rend
        h2_run_wakes(s)
    if uc.conn.state != U_H2 or s.dead:
        return
    if uc.conn.rbuf != NULL and uc.conn.rpos == uc.conn.rend:
        buf_put(uc.conn.rbuf)       # an idle HTTP/2 connection holds no read buffer
        uc.conn.rbuf = NULL
    h2_send(s)


cdef void h2_send(H2Sess* s) noexcept nogil:
    """Write what nghttp2 has to send (frames copied into buffers of the
    pool, one write per buffer), then decide on the connection's timer or
    its end."""
    cdef UConn* uc = s.uc
    cdef Buf* hb
    cdef uint32_t filled, k, moved
    cdef ssize_t n
    cdef int r
    if s.in_send or s.dead:
        return
    if g_stop and not s.goaway:
        # stopping (a connection that became HTTP/2 after drain_start): say so
        s.goaway = 1
        nghttp2_submit_goaway(s.ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s.ng),
                              NGHTTP2_NO_ERROR, NULL, 0)
    s.in_send = 1
    while True:
        if not out_empty(&uc.conn.out):
            r = conn_send(&uc.conn, &moved)
            if r < 0:
                s.in_send = 0
                uc_close(uc)
                return
            if r > 0:
                timer_arm(&uc.conn.timer, uc.srv.send_timeout_ms)
                break
        hb = buf_get()
        if hb == NULL:
            s.in_send = 0
            uc_close(uc)
            return
        filled = 0
        while filled < hb.cap:
            if s.pend_len == 0:
                n = nghttp2_session_mem_send(s.ng, &s.pend)
                if n < 0:
                    buf_put(hb)
                    h2_log(s, 4, "send failed", 0, nghttp2_strerror(<int>n))
                    s.in_send = 0
                    uc_close(uc)
                    return
                if n == 0:
                    break
                s.pend_len = <size_t>n
            k = hb.cap - filled
            if k > s.pend_len:
                k = <uint32_t>s.pend_len
            memcpy(bdata(hb) + filled, s.pend, k)
            filled += k
            s.pend += k
            s.pend_len -= k
        if filled == 0:
            buf_put(hb)
            if s.whead == NULL:
                break               # nothing to send, nobody to wake
            h2_run_wakes(s)         # the data sources made room: their connections may have more
            if s.dead or uc.conn.state != U_H2:
                s.in_send = 0
                return
            continue
        uc.conn.out.hptr = bdata(hb)
        uc.conn.out.hlen = filled
        uc.conn.out.hbuf = hb
        h2_run_wakes(s)
        if s.dead or uc.conn.state != U_H2:
            s.in_send = 0
            return
    s.in_send = 0
    if not out_empty(&uc.conn.out):
        return                      # the send-timeout runs
    if not nghttp2_session_want_read(s.ng) and not nghttp2_session_want_write(s.ng):
        uc_close(uc)                # GOAWAY both ways: the session is over
        return
    if s.nstreams == 0:
        if s.goaway or g_stop:
            uc_close(uc)            # draining: the last stream is done
            return
        timer_arm(&uc.conn.timer, uc.srv.keepalive_timeout_ms)    # idle: keepalive-timeout, then GOAWAY
        s.idle = 1
    elif s.idle or uc.conn.timer.when == 0:
        # streams open: their connections have their own timers; this one
        # only catches a request head never completed (h2_on_timer)
        timer_arm(&uc.conn.timer, uc.srv.read_timeout_ms)
        s.idle = 0


cdef void h2_flush_dirty() noexcept nogil:
    """The end of a loop turn: write what the streams produced, one session at a time."""
    global g_h2_dirty
    cdef H2Sess* s
    cdef int rounds = 0
    while g_h2_dirty != NULL and rounds < 4096:
        s = g_h2_dirty
        g_h2_dirty = s.dnext
        s.dirty = 0
        h2_send(s)
        run_ready()
        rounds += 1


cdef void h2_on_timer(UConn* uc) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>uc.h2
    if s == NULL:
        uc_close(uc)
        return
    if not out_empty(&uc.conn.out):
        rp_elog(uc_errfd(uc), 5, "HTTP/2 client took no bytes for %lld ms (send-timeout): closing",
                uc.srv.send_timeout_ms)
        uc_close(uc)
        return
    cdef H2Stream* st = s.streams
    cdef int32_t sid = 0
    if s.nstreams == 0:
        # idle for keepalive-timeout: say so, then close
        nghttp2_submit_goaway(s.ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s.ng),
                              NGHTTP2_NO_ERROR, NULL, 0)
        s.goaway = 1
        h2_send(s)
        if uc.conn.state == U_H2:
            uc_close(uc)
        return
    while st != NULL:
        if st.vuc == NULL and not (st.flags & (SF_RSP_HEAD | SF_CLOSED)):
            sid = st.id             # its HEADERS never completed
        st = st.next
    if sid:
        h2_log(s, 5, "request head not completed in read-timeout", sid, "closing")
        nghttp2_session_terminate_session(s.ng, NGHTTP2_PROTOCOL_ERROR)
        h2_send(s)
        if uc.conn.state == U_H2:
            uc_close(uc)
        return
    timer_arm(&uc.conn.timer, uc.srv.read_timeout_ms)


cdef void h2_drain(UConn* uc) noexcept nogil:
    """Graceful stop or reload: GOAWAY with the last stream id; the streams
    in flight finish, then the connection closes."""
    cdef H2Sess* s = <H2Sess*>uc.h2
    if s == NULL or s.goaway:
        return
    s.goaway = 1
    nghttp2_submit_goaway(s.ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s.ng),
                          NGHTTP2_NO_ERROR, NULL, 0)
    h2_send(s)


# ---- nghttp2 callbacks: the request --------------------------------------------------------

cdef inline H2Stream* h2_stream_of(H2Sess* s, int32_t sid) noexcept nogil:
    return <H2Stream*>nghttp2_session_get_stream_user_data(s.ng, sid)


cdef int h2_on_begin_headers(nghttp2_session* ng, const nghttp2_frame* frame, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st
    if frame.hd.type != NGHTTP2_HEADERS:
        return 0
    if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
        st = <H2Stream*>calloc(1, sizeof(H2Stream))
        if st == NULL:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        st.sc = buf_get()
        if st.sc == NULL:
            free(st)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        st.s = s
        st.id = frame.hd.stream_id
        st.sc_back = st.sc.cap
        st.iq_limit = s.uc.srv.max_header_size + 2 * H2_WINDOW + 4096
        st.oq_limit = s.uc.srv.high_watermark if s.uc.srv.high_watermark else 65536
        st.next = s.streams
        if s.streams != NULL:
            s.streams.prev = st
        s.streams = st
        s.nstreams += 1
        nghttp2_session_set_stream_user_data(ng, st.id, st)
        return 0
    st = h2_stream_of(s, frame.hd.stream_id)
    if st != NULL and frame.headers.cat == NGHTTP2_HCAT_HEADERS:
        st.flags |= SF_TRAILERS     # the request's trailers
        if (st.flags & SF_CHUNKED) and bq_append(&st.iq, "0\r\n", 3, st.iq_limit) < 0:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    return 0


cdef inline bint h2_name_is(const uint8_t* name, size_t n, const char* lit, size_t k) noexcept nogil:
    return n == k and memcmp(name, lit, k) == 0


cdef int h2_sc_back(H2Stream* st, const uint8_t* v, size_t n, uint32_t* off, uint32_t* ln) noexcept nogil:
    if st.sc_back < st.sc_len + n:
        return -1
    st.sc_back -= <uint32_t>n
    memcpy(bdata(st.sc) + st.sc_back, v, n)
    off[0] = st.sc_back
    ln[0] = <uint32_t>n
    return 0


cdef int h2_sc_line(H2Stream* st, const uint8_t* name, size_t nl, const uint8_t* value, size_t vl) noexcept nogil:
    cdef char* p
    if st.sc_len + nl + vl + 4 > st.sc_back:
        return -1
    p = bdata(st.sc) + st.sc_len
    memcpy(p, name, nl)
    p[nl] = c':'
    p[nl + 1] = c' '
    memcpy(p + nl + 2, value, vl)
    p[nl + 2 + vl] = c'\r'
    p[nl + 3 + vl] = c'\n'
    st.sc_len += <uint32_t>(nl + vl + 4)
    return 0


cdef int h2_on_header(nghttp2_session* ng, const nghttp2_frame* frame, const uint8_t* name, size_t nl,
                      const uint8_t* value, size_t vl, uint8_t flags, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st = h2_stream_of(s, frame.hd.stream_id)
    cdef int r = 0
    if st == NULL or frame.hd.type != NGHTTP2_HEADERS:
        return 0
    if st.flags & SF_TRAILERS:
        if st.flags & SF_CHUNKED:   # (with a content-length there is no place for them in HTTP/1.1)
            if bq_append(&st.iq, <const char*>name, <uint32_t>nl, st.iq_limit) < 0 \
                    or bq_append(&st.iq, ": ", 2, st.iq_limit) < 0 \
                    or bq_append(&st.iq, <const char*>value, <uint32_t>vl, st.iq_limit) < 0 \
                    or bq_append(&st.iq, "\r\n", 2, st.iq_limit) < 0:
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_ENHANCE_YOUR_CALM)
        return 0
    if st.flags & SF_BIG:
        return 0
    st.hsize += <uint32_t>(nl + vl + 4)
    if st.hsize > s.uc.srv.max_header_size:
        st.flags |= SF_BIG
        return 0
    if nl > 0 and name[0] == c':':
        if h2_name_is(name, nl, ":method", 7):
            r = h2_sc_back(st, value, vl, &st.m_off, &st.m_len)
            if vl == 4 and memcmp(value, b"HEAD", 4) == 0:
                st.flags |= SF_HEAD
        elif h2_name_is(name, nl, ":path", 5):
            r = h2_sc_back(st, value, vl, &st.p_off, &st.p_len)
        elif h2_name_is(name, nl, ":authority", 10):
            r = h2_sc_back(st, value, vl, &st.a_off, &st.a_len)
        # :scheme says nothing the connection does not (X-Forwarded-Proto comes from TLS)
    elif h2_name_is(name, nl, "cookie", 6):
        if st.cookie.len and bq_append(&st.cookie, "; ", 2, 1 << 24) < 0:
            r = -1
        elif bq_append(&st.cookie, <const char*>value, <uint32_t>vl, 1 << 24) < 0:
            r = -1
    elif h2_name_is(name, nl, "host", 4) and st.a_len:
        pass                        # :authority wins (RFC 9113 8.3.1)
    else:
        if h2_name_is(name, nl, "content-length", 14):
            st.flags |= SF_HAS_CL
        r = h2_sc_line(st, name, nl, value, vl)
    if r < 0:
        st.flags |= SF_BIG
    return 0


cdef int h2_on_invalid_header(nghttp2_session* ng, const nghttp2_frame* frame, const uint8_t* name, size_t nl,
                              const uint8_t* value, size_t vl, uint8_t flags, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef char what[96]
    snprintf(what, 96, "invalid header field name '%.*s': PROTOCOL_ERROR", <int>(nl if nl < 40 else 40), <const char*>name)
    h2_log(s, 4, "bad request", frame.hd.stream_id, what)
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_PROTOCOL_ERROR)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef void h2_answer(H2Sess* s, H2Stream* st, const char* status) noexcept nogil:
    """A response of rproxy's own, headers only (the request never reached
    the HTTP/1.1 code)."""
    cdef nghttp2_nv nv[1]
    nv[0].name = <uint8_t*>":status"
    nv[0].namelen = 7
    nv[0].value = <uint8_t*>status
    nv[0].valuelen = strlen(status)
    nv[0].flags = NGHTTP2_NV_FLAG_NONE
    st.flags |= SF_RSP_HEAD | SF_RSP_DONE
    nghttp2_submit_response(s.ng, st.id, nv, 1, NULL)


cdef int h2_request_head_done(H2Sess* s, H2Stream* st, bint end) noexcept nogil:
    """The request's HEADERS are complete: its HTTP/1.1 head goes to a new
    virtual connection."""
    cdef char* b = bdata(st.sc)
    cdef uint32_t lim = st.iq_limit
    cdef int r = 0
    cdef UConn* v
    if st.flags & SF_BIG:
        h2_log(s, 4, "bad request", st.id, "request head over max-header-size: 431")
        h2_answer(s, st, "431")
        return 0
    if end:
        st.flags |= SF_IN_EOF
    r |= bq_append(&st.iq, b + st.m_off, st.m_len, lim)
    r |= bq_append(&st.iq, " ", 1, lim)
    if st.p_len:
        r |= bq_append(&st.iq, b + st.p_off, st.p_len, lim)
    else:
        r |= bq_append(&st.iq, b + st.a_off, st.a_len, lim)     # CONNECT (refused with 405)
    r |= bq_append(&st.iq, " HTTP/1.1\r\n", 11, lim)
    if st.a_len:
        r |= bq_append(&st.iq, "Host: ", 6, lim)
        r |= bq_append(&st.iq, b + st.a_off, st.a_len, lim)
        r |= bq_append(&st.iq, "\r\n", 2, lim)
    r |= bq_append(&st.iq, b, st.sc_len, lim)
    if st.cookie.len:
        r |= bq_append(&st.iq, "Cookie: ", 8, lim)
        r |= bq_append(&st.iq, st.cookie.p + st.cookie.off, st.cookie.len, lim)
        r |= bq_append(&st.iq, "\r\n", 2, lim)
        bq_free(&st.cookie)
    if not end and not (st.flags & SF_HAS_CL):
        st.flags |= SF_CHUNKED
        r |= bq_append(&st.iq, "Transfer-Encoding: chunked\r\n", 28, lim)
    r |= bq_append(&st.iq, "\r\n", 2, lim)
    buf_put(st.sc)
    st.sc = NULL
    st.head_left = st.iq.len
    if r != 0:
        h2_log(s, 4, "bad request", st.id, "request head too large: 431")
        h2_answer(s, st, "431")
        return 0
    v = h2_vuc_new(s, st)
    if v == NULL:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    st.vuc = v
    m_h2_stream(s.uc.srv)
    h2_wake(st, W_IN)
    return 0


cdef int h2_on_frame_recv(nghttp2_session* ng, const nghttp2_frame* frame, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st
    cdef uint8_t t = frame.hd.type
    cdef char what[96]
    # control frame floods: SETTINGS, PING, PRIORITY, empty DATA (CVE-2019-9512/9515/9518)
    if ((t == NGHTTP2_SETTINGS or t == NGHTTP2_PING) and not (frame.hd.flags & NGHTTP2_FLAG_ACK)) \
            or t == NGHTTP2_PRIORITY \
            or (t == NGHTTP2_DATA and frame.hd.length == 0 and not (frame.hd.flags & NGHTTP2_FLAG_END_STREAM)):
        if g_now - s.ctl_t0 >= 1000:
            s.ctl_t0 = g_now
            s.ctl_n = 0
        s.ctl_n += 1
        if s.ctl_n > s.uc.srv.h2_max_ctl:
            snprintf(what, 96, "more than %u control frames in a second: ENHANCE_YOUR_CALM", s.uc.srv.h2_max_ctl)
            h2_log(s, 4, "flood", 0, what)
            nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM)
            return 0
    if t == NGHTTP2_RST_STREAM:
        if g_now - s.rst_t0 >= 1000:
            s.rst_t0 = g_now
            s.rst_n = 0
        s.rst_n += 1
        if s.rst_n > s.uc.srv.h2_max_resets:
            snprintf(what, 96, "more than %u stream resets in a second (rapid reset): ENHANCE_YOUR_CALM",
                     s.uc.srv.h2_max_resets)
            h2_log(s, 4, "flood", 0, what)
            nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM)
        return 0
    if t != NGHTTP2_HEADERS and t != NGHTTP2_DATA:
        return 0
    st = h2_stream_of(s, frame.hd.stream_id)
    if st == NULL:
        return 0
    if t == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
        return h2_request_head_done(s, st, (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0)
    if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
        if st.flags & SF_CHUNKED:
            if st.flags & SF_TRAILERS:
                bq_append(&st.iq, "\r\n", 2, st.iq_limit + 64)
            else:
                bq_append(&st.iq, "0\r\n\r\n", 5, st.iq_limit + 64)
        st.flags |= SF_IN_EOF
        if st.vuc != NULL:
            h2_wake(st, W_IN)
    return 0


cdef int h2_on_data_chunk(nghttp2_session* ng, uint8_t flags, int32_t sid, const uint8_t* data, size_t n,
                          void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st = h2_stream_of(s, sid)
    cdef char hx[16]
    cdef int k
    if st == NULL or st.vuc == NULL or (st.flags & SF_IN_EOF):
        nghttp2_session_consume(ng, sid, n)     # nobody reads it: give the window back
        return 0
    if st.flags & SF_CHUNKED:
        k = snprintf(hx, 16, "%zx\r\n", n)
        if bq_append(&st.iq, hx, <uint32_t>k, st.iq_limit) < 0 \
                or bq_append(&st.iq, <const char*>data, <uint32_t>n, st.iq_limit) < 0 \
                or bq_append(&st.iq, "\r\n", 2, st.iq_limit) < 0:
            h2_log(s, 4, "request body", sid, "too many small DATA frames: ENHANCE_YOUR_CALM")
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_ENHANCE_YOUR_CALM)
            nghttp2_session_consume(ng, sid, n)
            return 0
    elif bq_append(&st.iq, <const char*>data, <uint32_t>n, st.iq_limit) < 0:
        h2_log(s, 4, "request body", sid, "more than the window: FLOW_CONTROL")
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_ENHANCE_YOUR_CALM)
        nghttp2_session_consume(ng, sid, n)
        return 0
    st.unconsumed += <uint32_t>n
    h2_wake(st, W_IN)
    return 0


cdef int h2_on_stream_close(nghttp2_session* ng, int32_t sid, uint32_t error_code, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st = h2_stream_of(s, sid)
    if st == NULL:
        return 0
    st.flags |= SF_CLOSED
    h2_wake(st, W_CLOSE)
    return 0


cdef int h2_on_frame_send(nghttp2_session* ng, const nghttp2_frame* frame, void* ud) noexcept nogil:
    cdef H2Sess* s = <H2Sess*>ud
    cdef H2Stream* st
    if (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) and frame.hd.stream_id \
            and (frame.hd.type == NGHTTP2_DATA or frame.hd.type == NGHTTP2_HEADERS):
        st = h2_stream_of(s, frame.hd.stream_id)
        if st != NULL:
            st.flags |= SF_EOF_SENT
        if st != NULL and (st.flags & SF_RST_AFTER) and not (st.flags & SF_IN_EOF):
            st.flags &= ~SF_RST_AFTER
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_NO_ERROR)   # RFC 9113 8.1
        return 0
    if frame.hd.type == NGHTTP2_GOAWAY and frame.goaway.error_code != NGHTTP2_NO_ERROR:
        h2_log(s, 4, "GOAWAY sent", frame.goaway.last_stream_id, nghttp2_http2_strerror(frame.goaway.error_code))
    elif frame.hd.type == NGHTTP2_RST_STREAM and frame.rst_stream.error_code != NGHTTP2_NO_ERROR \
            and frame.rst_stream.error_code != NGHTTP2_CANCEL and frame.rst_stream.error_code != NGHTTP2_REFUSED_STREAM:
        h2_log(s, 5, "RST_STREAM sent", frame.hd.stream_id, nghttp2_http2_strerror(frame.rst_stream.error_code))
    return 0


cdef int h2_on_invalid_frame_recv(nghttp2_session* ng, const nghttp2_frame* frame, int err,
                                  void* ud) noexcept nogil:
    h2_log(<H2Sess*>ud, 4, "invalid frame", frame.hd.stream_id, nghttp2_strerror(err))
    return 0


# ---- the virtual connection of a stream ------------------------------------------------------

cdef UConn* h2_vuc_new(H2Sess* s, H2Stream* st) noexcept nogil:
    """A stream's client connection: the parent's server, peer, PROXY and TLS
    facts; no socket, not in the connection list, not counted."""
    cdef UConn* p = s.uc
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    if uc == NULL:
        return NULL
    uc.conn.h.kind = K_UCONN
    uc.conn.h.fd = -1
    uc.srv = p.srv
    uc.conn.state = U_IDLE
    uc.conn.flags = CN_WRITABLE | CN_VIRTUAL
    llhttp_init(&uc.conn.parser, HTTP_REQUEST, &g_req_settings)
    uc.conn.parser.data = uc
    timer_init(&uc.conn.timer, TK_UCONN, uc)
    uc.conn.peer = p.conn.peer
    if p.pp != NULL and p.pp.dst.family != 0:      # what a PROXY header in named (proxyproto.pxi)
        if pp_client(uc) == NULL:
            free(uc)
            return NULL
        uc.pp.dst = p.pp.dst
    uc.conn.tls = p.conn.tls        # borrowed (X-SSL-*, SNI/421, https): never freed through this one
    uc.h2 = st
    llhttp_init(&st.rp, HTTP_RESPONSE, &g_h2_rsp_settings)
    st.rp.data = st
    return uc


cdef ssize_t h2_vread(UConn* uc, uint32_t room) noexcept nogil:
    """conn_read of a virtual connection: the stream's request bytes; the
    window opens by what was taken."""
    global errno
    cdef H2Stream* st = <H2Stream*>uc.h2
    cdef uint32_t n, give, body
    if st == NULL:
        return 0
    n = st.iq.len if st.iq.len < room else room
    if n == 0:
        uc.conn.flags &= ~CN_READABLE
        if st.flags & SF_IN_EOF:
            return 0
        errno = EAGAIN
        return -1
    bq_take(&st.iq, bdata(uc.conn.rbuf) + uc.conn.rend, n)
    uc.conn.rend += n
    if st.iq.len == 0 and not (st.flags & SF_IN_EOF):
        uc.conn.flags &= ~CN_READABLE
    body = n
    if st.head_left:
        give = n if n < st.head_left else st.head_left
        st.head_left -= give
        body -= give
    if st.unconsumed and not st.s.dead and (body or st.iq.len == 0):
        # the window opens by the body bytes taken (chunk framing counted
        # as body: a few bytes per DATA frame), all of it once iq is empty
        give = st.unconsumed if (st.iq.len == 0 or body > st.unconsumed) else body
        st.unconsumed -= give
        nghttp2_session_consume(st.s.ng, st.id, give)
        h2_dirty(st.s)
    return n


cdef int h2_vsend(UConn* uc) noexcept nogil:
    """conn_send of a virtual connection: parse the HTTP/1.1 response bytes
    in its Out; the head becomes HEADERS, the body goes to oq.  0: all
    taken; 1: oq is full; -1: the stream is gone or the response is not
    expressible (errno EPIPE)."""
    global errno
    cdef H2Stream* st = <H2Stream*>uc.h2
    cdef Out* o = &uc.conn.out
    cdef const char* p
    cdef uint32_t n, room
    cdef llhttp_errno_t err
    cdef bint before
    if st == NULL or st.s.dead or (st.flags & SF_CLOSED):
        errno = EPIPE
        return -1
    before = st.oq.len == 0
    while not out_empty(o):
        if o.hlen:
            p = o.hptr
            n = o.hlen
        else:
            p = o.bptr
            n = o.blen
        if st.flags & SF_RSP_DONE:
            out_advance(o, n)       # nothing follows a response on a stream
            continue
        room = st.oq_limit - st.oq.len if st.oq.len < st.oq_limit else 0
        if n > room:
            n = room
        if n == 0:
            st.flags |= SF_OUT_FULL
            break
        err = llhttp_execute(&st.rp, p, n)
        if err == HPE_PAUSED:
            n = <uint32_t>(llhttp_get_error_pos(&st.rp) - p)
        elif err != HPE_OK:
            h2_log(st.s, 3, "response", st.id, llhttp_get_error_reason(&st.rp))
            errno = EPIPE
            return -1
        out_advance(o, n)
        if st.flags & SF_CLOSED:
            errno = EPIPE
            return -1
    if (st.flags & SF_DEFERRED) and (st.oq.len or (st.flags & SF_RSP_DONE)):
        st.flags &= ~SF_DEFERRED
        nghttp2_session_resume_data(st.s.ng, st.id)
    if st.oq.len or before or (st.flags & (SF_RSP_HEAD | SF_RSP_DONE)):
        h2_dirty(st.s)
    return 1 if not out_empty(o) else 0


cdef void h2_vuc_closed(UConn* uc) noexcept nogil:
    """A stream's virtual connection closes (uc_close): a response cut short
    resets the stream; the rest of an unread request is refused."""
    cdef H2Stream* st = <H2Stream*>uc.h2
    cdef H2Sess* s
    uc.conn.tls = NULL              # the parent's
    if st == NULL:
        return
    uc.h2 = NULL
    st.vuc = NULL
    s = st.s
    if s.dead or (st.flags & SF_CLOSED):
        return
    if (st.flags & SF_RSP_HEAD) and not (st.flags & SF_RSP_DONE) and llhttp_message_needs_eof(&st.rp):
        llhttp_finish(&st.rp)       # a close-delimited body ends here
    if not (st.flags & SF_RSP_DONE):
        nghttp2_submit_rst_stream(s.ng, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_INTERNAL_ERROR)
    elif not (st.flags & SF_IN_EOF):
        if st.flags & SF_EOF_SENT:
            nghttp2_submit_rst_stream(s.ng, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_NO_ERROR)
        else:
            st.flags |= SF_RST_AFTER    # after the response's last frame (h2_on_frame_send), not ahead of it
    if st.unconsumed:
        nghttp2_session_consume(s.ng, st.id, st.unconsumed)
        st.unconsumed = 0
    bq_free(&st.iq)
    if (st.flags & SF_DEFERRED) and (st.flags & SF_RSP_DONE):
        st.flags &= ~SF_DEFERRED
        nghttp2_session_resume_data(s.ng, st.id)
    h2_dirty(s)


cdef void h2_refuse(UConn* uc, const char* why) noexcept nogil:
    """The HTTP/1.1 code reached something HTTP/2 cannot carry: 502 and a log line."""
    cdef H2Stream* st = <H2Stream*>uc.h2
    if st != NULL:
        h2_log(st.s, 3, "not served over HTTP/2", st.id, why)
    uc_respond(uc, 502, False)


# ---- the response, parsed from the HTTP/1.1 bytes --------------------------------------------

cdef int h2_rsp_append(H2Stream* st, Span* sp, const char* at, size_t n, bint lower) noexcept nogil:
    cdef char* d
    cdef size_t i
    if st.sc == NULL:
        st.sc = buf_get()
        if st.sc == NULL:
            return -1
        st.sc_len = 0
    if st.sc_len + n > st.sc.cap:
        return -1
    d = bdata(st.sc) + st.sc_len
    memcpy(d, at, n)
    if lower:
        for i in range(n):
            if d[i] >= c'A' and d[i] <= c'Z':
                d[i] = <char>(d[i] + 32)
    if sp.len == 0:
        sp.off = st.sc_len
    sp.len += <uint32_t>n
    st.sc_len += <uint32_t>n
    return 0


cdef int h2_rsp_on_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef H2Stream* st = <H2Stream*>p.data
    if st.hstate != HS_FIELD:
        if st.nf >= HDR_CAP:
            return HPE_USER
        st.rh[st.nf].name.len = 0
        st.rh[st.nf].value.len = 0
        st.nf += 1
        st.hstate = HS_FIELD
    return HPE_USER if h2_rsp_append(st, &st.rh[st.nf - 1].name, at, n, True) < 0 else 0


cdef int h2_rsp_on_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef H2Stream* st = <H2Stream*>p.data
    st.hstate = HS_VALUE
    return HPE_USER if h2_rsp_append(st, &st.rh[st.nf - 1].value, at, n, False) < 0 else 0


cdef size_t h2_build_nv(H2Stream* st, nghttp2_nv* nv, size_t first) noexcept nogil:
    """The recorded fields as nghttp2 name/value pairs, without the
    connection-specific ones (RFC 9113 8.2.2)."""
    cdef size_t k = first
    cdef int i, hid
    cdef char* b = bdata(st.sc) if st.sc != NULL else NULL
    for i in range(st.nf):
        hid = header_id(b + st.rh[i].name.off, st.rh[i].name.len)
        if hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION \
                or hid == H_TRANSFER_ENCODING or hid == H_UPGRADE or st.rh[i].name.len == 0:
            continue
        nv[k].name = <uint8_t*>(b + st.rh[i].name.off)
        nv[k].namelen = st.rh[i].name.len
        nv[k].value = <uint8_t*>(b + st.rh[i].value.off)
        nv[k].valuelen = st.rh[i].value.len
        nv[k].flags = NGHTTP2_NV_FLAG_NONE
        k += 1
    return k


cdef int h2_rsp_on_headers_complete(llhttp_t* p) noexcept nogil:
    cdef H2Stream* st = <H2Stream*>p.data
    cdef H2Sess* s = st.s
    cdef nghttp2_nv nv[HDR_CAP + 1]
    cdef char status[4]
    cdef size_t k
    cdef nghttp2_data_provider prd
    cdef int code = p.status_code
    cdef bint nobody
    st.hstate = HS_NONE
    if code == 101 or code < 100 or code > 999:
        h2_log(s, 3, "not served over HTTP/2", st.id, "101 Switching Protocols (or a bad status) cannot go over HTTP/2")
        nghttp2_submit_rst_stream(s.ng, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_INTERNAL_ERROR)
        st.flags |= SF_CLOSED
        return HPE_USER
    status[0] = <char>(48 + code // 100)
    status[1] = <char>(48 + code // 10 % 10)
    status[2] = <char>(48 + code % 10)
    status[3] = 0
    nv[0].name = <uint8_t*>":status"
    nv[0].namelen = 7
    nv[0].value = <uint8_t*>status
    nv[0].valuelen = 3
    nv[0].flags = NGHTTP2_NV_FLAG_NONE
    k = h2_build_nv(st, nv, 1)
    st.nf = 0
    st.sc_len = 0
    if code < 200:
        nghttp2_submit_headers(s.ng, NGHTTP2_FLAG_NONE, st.id, NULL, nv, k, NULL)   # interim
        return 0
    nobody = (st.flags & SF_HEAD) or code == 204 or code == 304
    st.flags |= SF_RSP_HEAD
    if nobody:
        st.flags |= SF_RSP_DONE
        nghttp2_submit_response(s.ng, st.id, nv, k, NULL)
        return 1                    # no body (llhttp must be told for HEAD)
    prd.source.ptr = st
    prd.read_callback = h2_data_read
    nghttp2_submit_response(s.ng, st.id, nv, k, &prd)
    return 0


cdef int h2_rsp_on_body(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef H2Stream* st = <H2Stream*>p.data
    # conn_send fed no more bytes than oq has room for: the body fits
    return HPE_USER if bq_append(&st.oq, at, <uint32_t>n, 0xffffffff) < 0 else 0


cdef int h2_rsp_on_message_complete(llhttp_t* p) noexcept nogil:
    cdef H2Stream* st = <H2Stream*>p.data
    if not (st.flags & SF_RSP_HEAD):
        st.nf = 0                   # an interim response: the final one follows
        st.sc_len = 0
        return 0
    if st.nf:
        st.flags |= SF_RSP_TRAILERS     # chunked trailers: sent after the last DATA
    st.flags |= SF_RSP_DONE
    return HPE_PAUSED               # nothing after it is read


cdef ssize_t h2_data_read(nghttp2_session* ng, int32_t sid, uint8_t* buf, size_t length, uint32_t* data_flags,
                          nghttp2_data_source* source, void* ud) noexcept nogil:
    """nghttp2 may send `length` bytes of this stream's body now."""
    cdef H2Stream* st = <H2Stream*>source.ptr
    cdef nghttp2_nv nv[HDR_CAP]
    cdef size_t k
    cdef uint32_t n = st.oq.len if st.oq.len < length else <uint32_t>length
    if n:
        bq_take(&st.oq, <char*>buf, n)
        if st.flags & SF_OUT_FULL:
            st.flags &= ~SF_OUT_FULL
            h2_wake(st, W_OUT)      # the virtual connection may write again
    if st.oq.len == 0 and (st.flags & SF_RSP_DONE):
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
        if st.flags & SF_RSP_TRAILERS:
            k = h2_build_nv(st, nv, 0)
            if k and nghttp2_submit_trailer(ng, sid, nv, k) == 0:
                data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        return n
    if n == 0:
        st.flags |= SF_DEFERRED
        return NGHTTP2_ERR_DEFERRED
    return n

