# Body buffering: one bounded buffer used by both directions (DESIGN.md 8,
# "filters on the body path").
#
# A BodyBuf is a FIFO of body bytes: first a list of pooled Bufs in memory
# (up to mem_max bytes), then, once that is full, an unlinked temp file under
# temp-dir (up to file_max bytes; created with O_TMPFILE, or mkstemp+unlink
# where the file system lacks it, so an abort or a crash never leaves a file
# behind).  Bytes leave it in order: bb_take hands the next piece to an Out,
# either a memory segment itself (no copy) or a Buf filled from the file.
#
# Response side (UConn.rbb): a downstream is read as fast as it sends; what
# the client cannot take at once goes into the buffer, so the downstream
# connection returns to its pool at the end of the response while the client
# drains.  Request side (Exchange.qbb): the whole body is read before a
# downstream connection is taken; it stays in the client's read buffer when
# it fits there, and only what does not fit moves into the BodyBuf.

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_RDWR
        O_TMPFILE
    int open(const char* path, int flags, ...)
    int fallocate(int fd, int mode, long long offset, long long length)

cdef extern from "<stdlib.h>" nogil:
    int mkostemp(char* template, int flags)

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)
    ssize_t pwrite(int fd, const void* buf, size_t count, long long offset)
    int ftruncate(int fd, long long length)
    int unlink(const char* path)

cdef extern from "<errno.h>" nogil:
    int* __errno_location()
    enum:
        ENOSPC
        EDQUOT
        EISDIR
        EOPNOTSUPP
        EINVAL

cdef inline void set_errno(int e) noexcept nogil:
    __errno_location()[0] = e


cdef struct BodyBuf:
    Buf* first              # memory segments, oldest first; all full but the last
    Buf* last
    uint32_t roff           # read offset in first
    uint32_t wlen           # bytes in last
    uint64_t mem            # bytes held in memory
    uint64_t mem_max
    int fd                  # the temp file, -1 until needed
    uint64_t frd            # file bytes [frd, fwr) are pending
    uint64_t fwr
    uint64_t file_max       # 0: memory only
    int err                 # errno of the first failed temp file write (0: none)

cdef char g_temp_dir[512]
cdef int64_t c_temp_files = 0           # temp files open now (stats; tests assert it returns to 0)


cdef BodyBuf* bb_new(uint64_t mem_max, uint64_t file_max) noexcept nogil:
    cdef BodyBuf* bb = <BodyBuf*>calloc(1, sizeof(BodyBuf))
    if bb == NULL:
        return NULL
    bb.fd = -1
    bb.mem_max = mem_max
    bb.file_max = file_max
    return bb


cdef void bb_free(BodyBuf* bb) noexcept nogil:
    global c_temp_files
    cdef Buf* b
    if bb == NULL:
        return
    while bb.first != NULL:
        b = bb.first
        bb.first = b.next
        buf_put(b)
    if bb.fd >= 0:
        close(bb.fd)
        c_temp_files -= 1
    free(bb)


cdef void bb_clear(BodyBuf* bb) noexcept nogil:
    """Forget every byte held (the temp file stays open, emptied)."""
    cdef Buf* b
    while bb.first != NULL:
        b = bb.first
        bb.first = b.next
        buf_put(b)
    bb.last = NULL
    bb.roff = 0
    bb.wlen = 0
    bb.mem = 0
    bb.frd = 0
    bb.fwr = 0


cdef inline uint64_t bb_len(BodyBuf* bb) noexcept nogil:
    if bb == NULL:
        return 0
    return bb.mem + (bb.fwr - bb.frd)


cdef inline uint64_t bb_room(BodyBuf* bb) noexcept nogil:
    """Bytes bb_append would accept now (memory first, then the file; memory
    only while no file bytes are pending, to keep the order)."""
    cdef uint64_t r = 0
    if bb.fwr == bb.frd and bb.mem < bb.mem_max:
        r = bb.mem_max - bb.mem
    if bb.file_max > bb.fwr and bb.err == 0:
        r += bb.file_max - bb.fwr
    return r


cdef int bb_open_file(BodyBuf* bb) noexcept nogil:
    """The unlinked temp file.  0, or -1 with errno set."""
    global c_temp_files
    cdef char path[600]
    cdef int fd = open(g_temp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
    if fd < 0 and (errno == EOPNOTSUPP or errno == EISDIR or errno == EINVAL):
        snprintf(path, 600, "%s/rproxy-body-XXXXXX", g_temp_dir)
        fd = mkostemp(path, O_CLOEXEC)
        if fd >= 0:
            unlink(path)
    if fd < 0:
        return -1
    bb.fd = fd
    c_temp_files += 1
    return 0


cdef int bb_mem_append(BodyBuf* bb, const char* p, uint32_t n) noexcept nogil:
    """Copy into memory segments.  0, or -1 (out of memory)."""
    cdef Buf* b
    cdef uint32_t k
    while n:
        if bb.last == NULL or bb.wlen == bb.last.cap:
            b = buf_get()
            if b == NULL:
                set_errno(ENOMEM)
                return -1
            if bb.last != NULL:
                bb.last.next = b
            else:
                bb.first = b
                bb.roff = 0
            bb.last = b
            bb.wlen = 0
        k = bb.last.cap - bb.wlen
        if k > n:
            k = n
        memcpy(bdata(bb.last) + bb.wlen, p, k)
        bb.wlen += k
        bb.mem += k
        p += k
        n -= k
    return 0


cdef int64_t bb_append(BodyBuf* bb, const char* p, uint32_t n) noexcept nogil:
    """Take up to n bytes (what bb_room allows).  The count taken, or -1 with
    errno set (out of memory, or the temp file could not be written: bb.err
    keeps its errno and no more goes to the file)."""
    cdef uint32_t acc = 0, k
    cdef ssize_t w
    if bb.fwr == bb.frd and bb.mem < bb.mem_max:
        k = <uint32_t>min(<uint64_t>n, bb.mem_max - bb.mem)
        if bb_mem_append(bb, p, k) < 0:
            return -1
        acc = k
    if acc < n and bb.file_max > bb.fwr and bb.err == 0:
        k = <uint32_t>min(<uint64_t>(n - acc), bb.file_max - bb.fwr)
        if bb.fd < 0 and bb_open_file(bb) < 0:
            bb.err = errno
            return -1
        while k:
            w = pwrite(bb.fd, p + acc, k, bb.fwr)
            if w < 0 and errno == EINTR:
                continue
            if w <= 0:
                if w == 0:
                    set_errno(ENOSPC)
                bb.err = errno
                return -1 if acc == 0 else acc
            bb.fwr += <uint64_t>w
            acc += <uint32_t>w
            k -= <uint32_t>w
    return acc


cdef int bb_take(BodyBuf* bb, Out* o) noexcept nogil:
    """Put the next piece into o's (empty) body segment.  1: done; 0: the
    buffer is empty; -1: the temp file could not be read or no memory."""
    cdef Buf* b
    cdef ssize_t n
    cdef uint64_t want
    if bb == NULL:
        return 0
    if bb.mem:
        b = bb.first
        o.bptr = bdata(b) + bb.roff
        o.blen = (bb.wlen if b == bb.last else b.cap) - bb.roff
        o.bbuf = b
        bb.mem -= o.blen
        bb.first = b.next
        b.next = NULL
        bb.roff = 0
        if bb.first == NULL:
            bb.last = NULL
            bb.wlen = 0
        return 1
    if bb.fwr == bb.frd:
        return 0
    b = buf_get()
    if b == NULL:
        return -1
    want = bb.fwr - bb.frd
    if want > b.cap:
        want = b.cap
    while True:
        n = pread(bb.fd, bdata(b), want, bb.frd)
        if n < 0 and errno == EINTR:
            continue
        break
    if n <= 0:
        buf_put(b)
        return -1
    bb.frd += <uint64_t>n
    if bb.frd == bb.fwr:
        bb.frd = 0                  # drained: start over, and give the disk blocks back
        bb.fwr = 0
        ftruncate(bb.fd, 0)
    o.bptr = bdata(b)
    o.blen = <uint32_t>n
    o.bbuf = b
    return 1


cdef extern from "<strings.h>" nogil:
    int strncasecmp(const char* a, const char* b, size_t n)


cdef bint span_is(const char* base, Span s, const char* lit, bint prefix) noexcept nogil:
    """The span equals `lit` (or starts with it), ASCII case-insensitively."""
    cdef size_t n = strlen(lit)
    if s.len < n or (not prefix and s.len != n):
        return False
    return strncasecmp(base + s.off, lit, n) == 0


# ---- response buffering (UConn.rbb) ------------------------------------------------

cdef bint rsp_wanted(DConn* dc, Exchange* x) noexcept nogil:
    """Buffer this response?  Per rule, never for an upgrade or a 101, nor for
    a text/event-stream (each event must reach the client as it comes; the
    buffer never delays bytes, but an event stream should also keep holding
    its downstream connection rather than fill a temp file)."""
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef int i
    if not x.rule.response_buffering or (x.flags & XF_UPGRADE) or x.status == 101:
        return False
    for i in range(x.nresp):
        if span_is(base, x.resp[i].name, "content-type", False) \
                and span_is(base, x.resp[i].value, "text/event-stream", True):
            return False
    return True


cdef inline bint out_borrows(Out* o, DConn* dc) noexcept nogil:
    return o.blen != 0 and o.bbuf == NULL and dc.conn.rbuf != NULL and o.bptr >= bdata(dc.conn.rbuf) \
        and o.bptr < bdata(dc.conn.rbuf) + dc.conn.rbuf.cap


cdef void rsp_buffer_failed(UConn* uc, BodyBuf* bb) noexcept nogil:
    """A temp file write failed: say so once; the response goes on without
    the file (the downstream waits for the client again)."""
    c_errors_inc()
    rp_elog(x_errfd(uc.xhead) if uc.xhead != NULL else uc_errfd(uc), 3,
            "response buffering: temp file in %s: %s; holding the downstream connection instead",
            g_temp_dir, strerror(bb.err if bb.err else errno))
    bb.file_max = bb.fwr
    bb.err = 0


cdef int rsp_queue(DConn* dc, UConn* uc) noexcept nogil:
    """Hand the response bytes [fpos, fend) of dc's buffer to the client:
    borrowed in place as without buffering while the client keeps up, else
    appended to the client's response buffer (as much as it takes; the rest
    waits in dc's buffer).  -1: out of memory (the exchange has failed)."""
    cdef Exchange* x = dc.x
    cdef char* p = bdata(dc.conn.rbuf) + dc.conn.fpos
    cdef uint32_t n = dc.fend - dc.conn.fpos
    cdef int64_t k
    if not (x.flags & XF_RESP_BUFFER) or (uc.conn.out.blen == 0 and bb_len(uc.rbb) == 0):
        if x.cwfd >= 0:
            cache_tee(x, p, n)      # the cache stores what the client is handed (cache.pxi)
        uc.conn.out.bptr = p
        uc.conn.out.blen = n
        dc.conn.fpos = dc.fend
        return 0
    if uc.rbb == NULL:
        uc.rbb = bb_new(uc.srv.response_buffer_size, uc.srv.max_temp_file_size)
        if uc.rbb == NULL:
            dc_exchange_failed(dc, 502, "out of memory")
            return -1
    k = bb_append(uc.rbb, p, n)
    if k < 0 or uc.rbb.err:
        if uc.rbb.err == 0:
            dc_exchange_failed(dc, 502, "out of memory")
            return -1
        rsp_buffer_failed(uc, uc.rbb)
        k = 0 if k < 0 else k
    if x.cwfd >= 0 and k > 0:
        cache_tee(x, p, <uint32_t>k)
    dc.conn.fpos += <uint32_t>k
    return 0


cdef int rsp_hand_on(DConn* dc, UConn* uc) noexcept nogil:
    """Hand the response bytes [fpos, fend) on and write what the client
    takes, until every one is handed on or the client's socket is full: a
    write that empties the response buffer makes room for the bytes that
    waited in dc's buffer, and they must not wait for a read that a full
    dc buffer would refuse.  0: all handed on; 1: the client's socket is
    full; -1: the exchange failed or the client is gone."""
    cdef Exchange* x = dc.x
    cdef int r
    while True:
        if dc.fend > dc.conn.fpos and rsp_queue(dc, uc) < 0:
            return -1
        if x.cwfd >= 0 and dc.phase == R_DONE and dc.conn.fpos == dc.fend:
            cache_commit(x)         # in place before the client has the last byte (it may ask again at once)
        if out_empty(&uc.conn.out):
            return 0
        r = uc_pump(uc)
        if r != 0 or dc.conn.fpos == dc.fend:
            return r


cdef void rsp_absorb(UConn* uc) noexcept nogil:
    """The client's socket is full while its output still borrows dc's read
    buffer: move those bytes into the response buffer, so the downstream
    can be read on."""
    cdef Exchange* x = uc.xhead
    cdef DConn* dc
    if x == NULL or x.dc == NULL or not (x.flags & XF_RESP_BUFFER):
        return
    dc = x.dc
    if dc.x != x or not out_borrows(&uc.conn.out, dc) or bb_len(uc.rbb) != 0:
        return
    if uc.conn.tls != NULL and (uc.conn.tls.flags & TF_WPEND) and not (uc.conn.flags & CN_VIRTUAL):
        return                      # OpenSSL holds that pointer until the record is out
    if uc.rbb == NULL:
        uc.rbb = bb_new(uc.srv.response_buffer_size, uc.srv.max_temp_file_size)
        if uc.rbb == NULL:
            return
    if bb_room(uc.rbb) < uc.conn.out.blen:
        return
    if bb_append(uc.rbb, uc.conn.out.bptr, uc.conn.out.blen) != <int64_t>uc.conn.out.blen:
        bb_clear(uc.rbb)            # the borrowed bytes stay where they are: keep no copy of a part
        if uc.rbb.err:
            rsp_buffer_failed(uc, uc.rbb)
        return
    uc.conn.out.blen = 0
    uc.conn.out.bptr = NULL
    bb_take(uc.rbb, &uc.conn.out)


cdef int uc_pump(UConn* uc) noexcept nogil:
    """uc_send, refilling from the response buffer until the socket is full
    or nothing is left.  0: all out; 1: the socket is full; -1: the client is
    gone (closed)."""
    cdef int r
    while True:
        r = uc_send(uc)
        if r != 0:
            break
        if uc.rbb == NULL or uc.conn.out.blen != 0:
            return 0
        r = bb_take(uc.rbb, &uc.conn.out)
        if r == 0:
            return 0
        if r < 0:
            rp_elog(uc_errfd(uc), 3, "response buffering: reading the temp file back failed: %s",
                    strerror(errno))
            uc_close(uc)
            return -1
    if r > 0:
        rsp_absorb(uc)
    return r


cdef bint rsp_may_read(DConn* dc, UConn* uc) noexcept nogil:
    """May dc be read although the client has output pending?  Only into the
    response buffer, once nothing of dc's buffer is still waiting."""
    if out_empty(&uc.conn.out):
        return True
    if (dc.conn.flags & DF_SPLICE) or not (dc.x.flags & XF_RESP_BUFFER) or dc.phase != R_BODY or out_borrows(&uc.conn.out, dc):
        return False
    return dc.conn.fpos == dc.fend and uc.rbb != NULL and bb_room(uc.rbb) > 0


cdef void rsp_release(UConn* uc) noexcept nogil:
    """The response is all out (or the connection closes): give the buffer back."""
    if uc.rbb != NULL:
        bb_free(uc.rbb)
        uc.rbb = NULL


cdef void rsp_resume(DConn* dc, UConn* uc) noexcept nogil:
    """The client took all its output: hand it what waited in dc's buffer
    (the response buffer was full), finish the response if it is complete,
    else read the downstream on."""
    cdef Exchange* x = dc.x
    if x != NULL and x.cz != NULL:
        dc_read(dc)                 # compressed: the encoder resumes there (compress.pxi)
        return
    if dc.conn.state == D_ACTIVE and x != NULL and x.uc == uc and dc.phase >= R_BODY and dc.phase != R_TUNNEL \
            and dc.fend > dc.conn.fpos:
        if rsp_hand_on(dc, uc) < 0:
            return
        if dc.phase == R_DONE:
            if dc.conn.fpos == dc.fend:
                dc_response_done(dc)
            return
    dc_read(dc)


# ---- request buffering (Exchange.qbb) ---------------------------------------------

cdef const char* CONTINUE_100 = "HTTP/1.1 100 Continue\r\n\r\n"


cdef bint req_buffer_wanted(UConn* uc, Exchange* x) noexcept nogil:
    return x.rule.request_buffering and not x.rule.passthrough and not (x.flags & XF_UPGRADE) \
        and not uc_request_bodyless(uc)


cdef bint x_expects_continue(UConn* uc, Exchange* x) noexcept nogil:
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef int i
    for i in range(x.nreq):
        if span_is(base, x.req[i].name, "expect", False) and span_is(base, x.req[i].value, "100-continue", False):
            return True
    return False


cdef void req_buffer_start(UConn* uc) noexcept nogil:
    """The request is routed and has a body: read all of it first (nginx's
    proxy_request_buffering).  A client waiting for 100 Continue gets it from
    rproxy, and the downstream gets no Expect."""
    cdef Exchange* x = uc.xhead
    uc_move(uc, U_BUFFER)
    timer_arm(&uc.conn.timer, uc_read_timeout(uc))
    if not (x.flags & XF_HTTP10) and x_expects_continue(uc, x):
        x.flags |= XF_SENT_CONTINUE
        if out_empty(&uc.conn.out):
            uc.conn.out.hptr = CONTINUE_100
            uc.conn.out.hlen = <uint32_t>strlen(CONTINUE_100)
            if uc_send(uc) < 0:
                return
    req_buffer_body(uc)


cdef bint req_over_limit(UConn* uc, uint64_t raw) noexcept nogil:
    """client-max-body-size passed while buffering: 413 (True)."""
    cdef char where[48]
    cdef int n
    if uc.srv.client_max_body_size == 0 or raw <= uc.srv.client_max_body_size:
        return False
    n = peer_format(&uc.conn.peer, where, 48)
    rp_elog(uc_errfd(uc), 4, "client %.*s: request body over client-max-body-size (%llu): 413", n, where,
            uc.srv.client_max_body_size)
    uc_respond(uc, 413, False)
    return True


cdef void req_buffer_body(UConn* uc) noexcept nogil:
    """Parse the body bytes read so far (they stay where they are); once the
    message is complete, start the exchange."""
    cdef Exchange* x = uc.xhead
    cdef char* base = bdata(uc.conn.rbuf)
    cdef llhttp_errno_t err
    cdef uint32_t before
    while not (x.flags & XF_BUFFERED) and uc.conn.rpos < uc.conn.rend:
        before = uc.conn.rpos
        err = llhttp_execute(&uc.conn.parser, base + uc.conn.rpos, uc.conn.rend - uc.conn.rpos)
        if err == HPE_OK:
            uc.conn.rpos = uc.conn.rend
        elif err == HPE_PAUSED:
            uc.conn.rpos = <uint32_t>(llhttp_get_error_pos(&uc.conn.parser) - base)
            llhttp_resume(&uc.conn.parser)
            if uc.conn.flags & CN_MSG_DONE:
                uc.conn.flags &= ~CN_MSG_DONE
                x.flags |= XF_BUFFERED
        else:
            rp_elog(uc_errfd(uc), 4, "bad request body: %s", llhttp_get_error_reason(&uc.conn.parser))
            uc_respond(uc, 400, False)
            return
        if uc.conn.rpos != before:
            timer_arm(&uc.conn.timer, uc_read_timeout(uc))   # client-body-timeout: between two reads
        if req_over_limit(uc, x.body_in + (uc.conn.rpos - x.head_end)):
            return
    if x.flags & XF_BUFFERED:
        uc_dispatch(uc)


cdef void req_buffer_failed(UConn* uc, const char* why) noexcept nogil:
    cdef int e = errno
    cdef int status = 507 if e == ENOSPC or e == EDQUOT else 500
    c_errors_inc()
    rp_elog(uc_errfd(uc), 3, "request buffering: %s (temp-dir %s): %s -> %d", why, g_temp_dir,
            strerror(e), status)
    uc_respond(uc, status, False)


cdef bint req_spill(UConn* uc) noexcept nogil:
    """The client's read buffer is full while the body is read ahead: move
    the body bytes parsed so far into the exchange's BodyBuf.  True: there is
    room to read into now.  False: the request was answered (413, 507, 500),
    or the body is larger than the buffer may hold (no client-max-body-size,
    over max-temp-file-size): then it is started now and streams the rest."""
    cdef Exchange* x = uc.xhead
    cdef char* base = bdata(uc.conn.rbuf)
    cdef uint32_t n = uc.conn.rpos - x.head_end
    cdef uint64_t file_max, mem_max = uc.srv.client_body_buffer_size
    if x.qbb == NULL and n:
        file_max = uc.srv.client_max_body_size if uc.srv.client_max_body_size else uc.srv.max_temp_file_size
        if (uc.conn.parser.flags & F_CONTENT_LENGTH) and x.body_in + n + uc.conn.parser.content_length > mem_max:
            mem_max = 0             # known to be larger than the memory buffer: all of it to the file (nginx)
        x.qbb = bb_new(mem_max, file_max)
        if x.qbb == NULL:
            set_errno(ENOMEM)
            req_buffer_failed(uc, "no memory for the body buffer")
            return False
    if n == 0 or bb_room(x.qbb) < n:
        uc_dispatch(uc)             # larger than we buffer: stream the rest
        return False
    if bb_append(x.qbb, base + x.head_end, n) != <int64_t>n:
        if x.qbb.err:
            set_errno(x.qbb.err)
        req_buffer_failed(uc, "writing the temp file failed")
        return False
    x.flags |= XF_BODY_SPILLED      # not replayable from the client's buffer any more
    x.body_in += n
    memmove(base + x.head_end, base + uc.conn.rpos, uc.conn.rend - uc.conn.rpos)
    uc.conn.rend = x.head_end + (uc.conn.rend - uc.conn.rpos)
    uc.conn.rpos = x.head_end
    return uc.conn.rend < uc.conn.rbuf.cap


cdef int bb_reserve(BodyBuf* bb, uint64_t n) noexcept nogil:
    """Room for n more bytes in the temp file, taken now (fallocate), so that
    writing them cannot run out of space halfway.  0 (also where the file
    system cannot reserve), or -1 with bb.err set."""
    if bb.fd < 0 and bb_open_file(bb) < 0:
        bb.err = errno
        return -1
    if fallocate(bb.fd, 0, <long long>bb.fwr, <long long>n) != 0 and errno != EOPNOTSUPP:
        bb.err = errno
        return -1
    return 0


cdef int rsp_splice_spill(DConn* dc) noexcept nogil:
    """A spliced body (splice.pxi) met a client that does not keep up: move
    what the pipe holds into the response buffer (memory, then the temp file,
    its room reserved first: the pipe holds at most what the buffer takes),
    and go on copying, the parser told how much of the body is left.  1:
    done, copy from now on; 0: not possible now (keep waiting, as without
    buffering); -1: failed, the client was closed."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef SplicePipe* p = x.spl
    cdef Buf* b
    cdef ssize_t n
    if uc.rbb == NULL:
        uc.rbb = bb_new(uc.srv.response_buffer_size, uc.srv.max_temp_file_size)
        if uc.rbb == NULL:
            return 0
    if bb_len(uc.rbb) or bb_room(uc.rbb) < p.len or not out_empty(&uc.conn.out):
        return 0
    if p.len > uc.rbb.mem_max and bb_reserve(uc.rbb, p.len - uc.rbb.mem_max) < 0:
        rsp_buffer_failed(uc, uc.rbb)       # no room: the downstream waits for the client
        return 0
    b = buf_get()
    if b == NULL:
        return 0
    while p.len:
        n = read(p.rfd, bdata(b), min(p.len, b.cap))
        if n < 0 and errno == EINTR:
            continue
        if n <= 0 or bb_append(uc.rbb, bdata(b), <uint32_t>n) != n:
            buf_put(b)
            rp_elog(uc_errfd(uc), 3, "response buffering: taking a spliced body over failed: %s",
                    strerror(uc.rbb.err if uc.rbb.err else errno))
            uc_close(uc)
            return -1
        p.len -= <uint32_t>n
    buf_put(b)
    dc.conn.flags &= ~DF_SPLICE
    bb_take(uc.rbb, &uc.conn.out)
    if x.splice_left == 0:
        dc_move_phase(dc, R_DONE)           # the whole body was in the pipe already
        dc_response_done(dc)
        return -1                   # (handled: nothing more to read)
    dc.conn.parser.content_length = x.splice_left   # what llhttp did not see went through the pipe
    return 1
