# Zero-copy relay of large response bodies on plain TCP: splice(2) from the
# downstream socket into a pipe, and from the pipe into the client socket.
# The bytes never enter user space and move in pipe-sized (1 MiB) steps, so
# a large body costs a handful of syscalls and no copies in the proxy (with
# response buffering, the default, too, until the client turns out slow;
# then in steps of response-buffer-size).
#
# Used for a Content-Length body of at least g_splice_min bytes (64 KiB:
# there a spliced body already costs 22 % less worker CPU than a copied one,
# README "Benchmarks").  Whatever body
# bytes arrived with the head go the ordinary way; the remainder (llhttp's
# own count of what is left) is spliced.  The pipe belongs to the exchange
# while it holds data; empty pipes return to a per-worker pool.

cdef struct SplicePipe:
    SplicePipe* next
    int rfd
    int wfd
    uint32_t len                    # bytes in the pipe

cdef FreeList g_spl_free = FreeList(NULL, 0, 64)   # (32 churned under 50 busy clients)
cdef int g_spl_size = 1048576
cdef uint64_t g_splice_min = 65536       # measured: 64 KiB bodies cost 22 % less CPU spliced than copied
# TCP_NOTSENT_LOWAT on a client socket a body is spliced to: the kernel
# keeps at most this much unsent data queued for the client, so this worker
# sends the rest itself when the client's window opens (EPOLLOUT) rather
# than queueing a whole send buffer (up to tcp_wmem's 4 MiB) that the
# client's own ACKs then transmit (on loopback: in the client's CPU time,
# which doubled wrk's cost per 1 MiB response; README "Benchmarks").
# With response buffering (the default) a full short queue does not make
# the client slow at once: its socket may stay full for g_splice_grace_ms in
# all during one response.  Past that it loses the mark (the kernel's whole
# send buffer queues the body, as without it), and once that is full too
# the rest of the body moves into the response buffer (rsp_splice_spill):
# a slow client holds the downstream connection at most that much longer
# than before, however it paces its reads.  (Spilling at once under the mark
# made every client 128 KiB behind look slow: 512 us per 1 MiB response in
# the buffer and the temp file, measured.  Per blocked spell rather than in
# all, wrk's 50 clients on one saturated core each waited 20-50 ms: a
# client that keeps a CPU busy is not a slow client.)
cdef int g_splice_lowat = 131072
cdef int64_t g_splice_grace_ms = 100


cdef SplicePipe* spl_get() noexcept nogil:
    cdef SplicePipe* p = <SplicePipe*>freelist_pop(&g_spl_free)
    cdef int fds[2]
    if p != NULL:
        return p
    if pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0:
        return NULL
    fcntl(fds[1], F_SETPIPE_SZ, g_spl_size)    # best effort: a smaller pipe still works
    p = <SplicePipe*>malloc(sizeof(SplicePipe))
    if p == NULL:
        close(fds[0])
        close(fds[1])
        return NULL
    p.rfd = fds[0]
    p.wfd = fds[1]
    p.len = 0
    p.next = NULL
    return p


cdef void spl_put(SplicePipe* p) noexcept nogil:
    if p.len != 0 or not freelist_push(&g_spl_free, p):
        close(p.rfd)                # bytes of an aborted body: never reused
        close(p.wfd)
        free(p)


cdef void spl_clear() noexcept nogil:
    cdef SplicePipe* p = <SplicePipe*>freelist_pop(&g_spl_free)
    while p != NULL:
        close(p.rfd)
        close(p.wfd)
        free(p)
        p = <SplicePipe*>freelist_pop(&g_spl_free)


cdef bint dc_splice(DConn* dc) noexcept nogil:
    """Move the rest of a spliced body.  True when this call handled the
    connection (waiting, done, or failed); False to fall back to copying."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef ssize_t n
    cdef size_t want
    if x.spl == NULL:
        x.spl = spl_get()
        if x.spl == NULL:
            dc.conn.flags &= ~DF_SPLICE
            return False
        x.splice_left = dc.conn.parser.content_length
        if not (x.flags & XF_RESP_BUFFER):
            setsockopt(uc.conn.h.fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &g_splice_lowat, sizeof(int))
        elif x.splice_left > <uint64_t>g_splice_lowat:     # (it cannot hold a smaller body back)
            setsockopt(uc.conn.h.fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &g_splice_lowat, sizeof(int))
            x.flags |= XF_SPL_LOWAT
            x.spl_grace_left = g_splice_grace_ms
    while True:
        while x.spl.len:
            n = splice(x.spl.rfd, NULL, uc.conn.h.fd, NULL, x.spl.len,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (SPLICE_F_MORE if x.splice_left else 0))
            if n > 0:
                x.spl.len -= <uint32_t>n
                x.log.bytes_out += <uint64_t>n
                if x.flags & XF_SPL_GRACE:
                    spl_unblocked(dc, x)
                continue
            if n < 0 and errno == EINTR:
                continue
            if n < 0 and errno == EAGAIN:
                uc.conn.flags &= ~CN_WRITABLE
                timer_arm(&uc.conn.timer, uc_write_timeout(uc))
                if x.flags & XF_SPL_LOWAT:
                    if not (x.flags & XF_SPL_GRACE):
                        x.flags |= XF_SPL_GRACE     # its grace runs (spl_grace_over)
                        x.spl_blocked_at = g_now
                        timer_arm(&dc.conn.timer, x.spl_grace_left if x.spl_grace_left > 0 else 1)
                    return True
                if x.flags & XF_RESP_BUFFER:
                    n = rsp_splice_spill(dc)    # the client is slow: buffer instead (bodybuf.pxi)
                    if n != 0:
                        return n < 0
                return True
            uc_close(uc)
            return True
        if x.splice_left == 0:
            dc_move_phase(dc, R_DONE)
            dc_response_done(dc)
            return True
        if not (dc.conn.flags & CN_READABLE):
            return True
        want = <size_t>(x.splice_left if x.splice_left < <uint64_t>g_spl_size else g_spl_size)
        if uc.srv.high_watermark and want > uc.srv.high_watermark:
            want = uc.srv.high_watermark
        if x.flags & XF_SPL_LOWAT:
            # what the pipe holds must fit the response buffer (memory and
            # temp file) if the client turns out slow: rsp_splice_spill
            if want > uc.srv.response_buffer_size + uc.srv.max_temp_file_size:
                want = <size_t>(uc.srv.response_buffer_size + uc.srv.max_temp_file_size)
        elif (x.flags & XF_RESP_BUFFER) and want > uc.srv.response_buffer_size:
            want = uc.srv.response_buffer_size     # ... once it is slow, its memory buffer
        n = splice(dc.conn.h.fd, NULL, x.spl.wfd, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
        if n > 0:
            x.splice_left -= <uint64_t>n
            x.spl.len += <uint32_t>n
            timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)
        elif n == 0:
            dc_exchange_failed(dc, 502, "downstream closed the connection mid-response")
            return True
        elif errno == EINTR:
            continue
        elif errno == EAGAIN:
            dc.conn.flags &= ~CN_READABLE
            return True
        else:
            dc_exchange_failed(dc, 502, "read failed mid-response")
            return True


cdef void spl_drop_lowat(Exchange* x) noexcept nogil:
    cdef int zero = 0               # the system default (no mark)
    x.flags &= ~(XF_SPL_GRACE | XF_SPL_LOWAT)
    setsockopt(x.uc.conn.h.fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &zero, sizeof(int))


cdef void spl_unblocked(DConn* dc, Exchange* x) noexcept nogil:
    """The client's full socket took bytes again: charge the spell to its grace."""
    x.flags &= ~XF_SPL_GRACE
    x.spl_grace_left -= g_now - x.spl_blocked_at
    timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)
    if x.spl_grace_left <= 0:
        spl_drop_lowat(x)


cdef void spl_grace_over(DConn* dc) noexcept nogil:
    """A buffered body's client kept its socket full for g_splice_grace_ms:
    drop the low-water mark, so the kernel's send buffer queues what it can
    as it would without it, and go on; once that is full too, dc_splice
    moves the rest of the body into the response buffer.  (dc_read, not
    dc_splice: once the body moved to the buffer, copying must go on here,
    as no new readiness of the downstream may come.)"""
    spl_drop_lowat(dc.x)
    timer_arm(&dc.conn.timer, dc.ds.read_timeout_ms)
    dc_read(dc)
