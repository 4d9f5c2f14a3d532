# The Redis store of rate limits (`store = redis`, issue 19): budgets shared
# by several nodes.
#
# Each worker keeps one connection to Redis, non-blocking, in its own loop:
# requests that need a decision are written as EVALSHA of one GCRA script
# (SCRIPT LOAD is sent first on every new connection), pipelined, and the
# replies come back in order: a FIFO of the waiting exchanges matches them.
# A waiting exchange is held as a delayed one is (U_PENDING, its timer armed
# to `timeout`).  When Redis is down, slow (no answer within `timeout`) or
# answers an error, `fail = open` admits the request (counted as admitted)
# and `fail = closed` answers 503, each with a log line (once per outage for
# a connection that is down).  A lost connection is reconnected with backoff
# (100 ms doubling to 5 s).  The script reads Redis's own clock (TIME), so
# nodes need not agree on time.

cdef enum:
    RS_DOWN = 0
    RS_CONNECTING = 1
    RS_UP = 2
    RD_BUF = 65536
    RD_FIFO = 8192

cdef struct RedisRt:
    Handle h
    int state
    uint8_t addr[128]
    uint32_t addrlen
    int family
    int64_t timeout_ms
    uint8_t fail_closed
    uint8_t logged_down
    Timer timer
    int64_t backoff_ms
    char sha[41]
    char* script
    uint32_t script_len
    char* wbuf
    uint32_t wlen
    char* rbuf
    uint32_t rlen
    Exchange** fifo
    uint32_t fhead
    uint32_t fcount

cdef RedisRt* g_redis = NULL


cdef void redis_down(const char* why) noexcept nogil:
    """The connection is gone: every waiting exchange gets the fail policy,
    a reconnect is scheduled."""
    cdef RedisRt* r = g_redis
    cdef Exchange* x
    if r.h.fd >= 0:
        epoll_ctl(g_epfd, EPOLL_CTL_DEL, r.h.fd, NULL)
        close(r.h.fd)
        r.h.fd = -1
    if not r.logged_down:
        rp_elog(g_errfd, 3, "redis: %s; rate limits with store = redis fail %s until it is back", why,
                "closed (503)" if r.fail_closed else "open")
        r.logged_down = 1
    r.state = RS_DOWN
    r.wlen = 0
    r.rlen = 0
    while r.fcount:
        x = r.fifo[r.fhead]
        r.fhead = (r.fhead + 1) % RD_FIFO
        r.fcount -= 1
        if x != NULL:
            edge_redis_failed(x)
    timer_arm(&r.timer, r.backoff_ms)
    r.backoff_ms = min(r.backoff_ms * 2, 5000)


cdef void redis_connect() noexcept nogil:
    cdef RedisRt* r = g_redis
    cdef int fd = socket(r.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    cdef int one = 1
    cdef epoll_event ev
    cdef int n
    if fd < 0:
        redis_down("socket() failed")
        return
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
    r.h.fd = fd
    if connect(fd, <sockaddr*>r.addr, r.addrlen) != 0 and errno != EINPROGRESS:
        redis_down(strerror(errno))
        return
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.ptr = r
    if epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
        redis_down("epoll_ctl failed")
        return
    r.state = RS_CONNECTING
    # SCRIPT LOAD first: its reply (the script's SHA1) is matched by a NULL entry
    n = snprintf(r.wbuf, RD_BUF, "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%u\r\n", r.script_len)
    memcpy(r.wbuf + n, r.script, r.script_len)
    memcpy(r.wbuf + n + r.script_len, b"\r\n", 2)
    r.wlen = n + r.script_len + 2
    r.fifo[r.fhead] = NULL
    r.fcount = 1


cdef void redis_flush() noexcept nogil:
    cdef RedisRt* r = g_redis
    cdef ssize_t n
    if r.state != RS_UP or r.wlen == 0:
        return
    n = send(r.h.fd, r.wbuf, r.wlen, MSG_NOSIGNAL)
    if n < 0:
        if errno != EAGAIN and errno != EINTR:
            redis_down(strerror(errno))
        return
    if <uint32_t>n < r.wlen:
        memmove(r.wbuf, r.wbuf + n, r.wlen - <uint32_t>n)
    r.wlen -= <uint32_t>n


cdef int redis_line(RedisRt* r, uint32_t at, uint32_t* eol) noexcept nogil:
    cdef uint32_t i = at
    while i + 1 < r.rlen:
        if r.rbuf[i] == c'\r' and r.rbuf[i + 1] == c'\n':
            eol[0] = i
            return 1
        i += 1
    return 0


cdef long long redis_int(const char* p, uint32_t n) noexcept nogil:
    cdef long long v = 0
    cdef uint32_t i = 0
    cdef bint neg = n > 0 and p[0] == c'-'
    if neg:
        i = 1
    while i < n:
        v = v * 10 + (p[i] - 48)
        i += 1
    return -v if neg else v


cdef void redis_replies() noexcept nogil:
    """Consume the complete replies in rbuf, in order."""
    cdef RedisRt* r = g_redis
    cdef uint32_t at = 0, eol, need
    cdef long long blen
    cdef char t
    cdef Exchange* x
    cdef int kind                       # 0 integer, 1 error, 2 other
    cdef long long val
    while at < r.rlen:
        if not redis_line(r, at, &eol):
            break
        t = r.rbuf[at]
        val = 0
        if t == c':':
            kind = 0
            val = redis_int(r.rbuf + at + 1, eol - at - 1)
            need = eol + 2
        elif t == c'-':
            kind = 1
            rp_elog(g_errfd, 3, "redis: %.*s", <int>(eol - at - 1), r.rbuf + at + 1)
            need = eol + 2
        elif t == c'+':
            kind = 2
            need = eol + 2
        elif t == c'$':
            kind = 2
            blen = redis_int(r.rbuf + at + 1, eol - at - 1)
            need = eol + 2 + (<uint32_t>blen + 2 if blen >= 0 else 0)
            if need > r.rlen:
                break
        else:
            redis_down("protocol error")
            return
        at = need
        if r.fcount == 0:
            redis_down("reply without a request")
            return
        x = r.fifo[r.fhead]
        r.fhead = (r.fhead + 1) % RD_FIFO
        r.fcount -= 1
        if x == NULL:
            continue                    # SCRIPT LOAD, or a request that timed out / went away
        if kind == 0:
            edge_redis_answer(x, val)
        else:
            edge_redis_failed(x)
        if g_redis.state != RS_UP:
            return                      # redis_down ran meanwhile: rbuf is gone
    if at:
        memmove(r.rbuf, r.rbuf + at, r.rlen - at)
        r.rlen -= at


cdef void redis_on_event(uint32_t ev) noexcept nogil:
    cdef RedisRt* r = g_redis
    cdef int err = 0
    cdef socklen_t sl = sizeof(int)
    cdef ssize_t n
    if r.state == RS_CONNECTING:
        if ev & (EPOLLERR | EPOLLHUP):
            getsockopt(r.h.fd, SOL_SOCKET, SO_ERROR, &err, &sl)
            if err == 0:
                err = ECONNREFUSED
            redis_down(strerror(err))
            return
        if ev & EPOLLOUT:
            r.state = RS_UP
            r.backoff_ms = 100
            if r.logged_down:
                rp_elog(g_errfd, 5, "redis: connected again")
                r.logged_down = 0
        else:
            return
    if ev & EPOLLOUT:
        redis_flush()
        if r.state != RS_UP:
            return
    if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        while True:
            if r.rlen >= RD_BUF:
                redis_down("reply too large")
                return
            n = recv(r.h.fd, r.rbuf + r.rlen, RD_BUF - r.rlen, 0)
            if n > 0:
                r.rlen += <uint32_t>n
                redis_replies()
                if r.state != RS_UP:
                    return
                continue
            if n == 0:
                redis_down("connection closed by redis")
                return
            if errno == EAGAIN or errno == EINTR:
                return
            redis_down(strerror(errno))
            return


cdef void redis_on_timer() noexcept nogil:
    if g_redis.state == RS_DOWN and not g_stop:
        redis_connect()


cdef int redis_ask(Exchange* x, LimitRt* L, uint64_t h) noexcept nogil:
    """Queue the GCRA decision for x; 0 queued, -1 not possible (down, full)."""
    cdef RedisRt* r = g_redis
    cdef char key[112]
    cdef char a1[24]
    cdef char a2[24]
    cdef int kl, l1, l2, n
    if r == NULL or r.state == RS_DOWN or r.fcount >= RD_FIFO or r.wlen + 512 > RD_BUF:
        return -1
    kl = snprintf(key, 112, "rl:%s:%016llx", L.name, <unsigned long long>h)
    l1 = snprintf(a1, 24, "%lld", <long long>L.T)
    l2 = snprintf(a2, 24, "%lld", <long long>L.tol)
    n = snprintf(r.wbuf + r.wlen, RD_BUF - r.wlen,
                 "*6\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
                 r.sha, kl, key, l1, a1, l2, a2)
    r.wlen += <uint32_t>n
    r.fifo[(r.fhead + r.fcount) % RD_FIFO] = x
    r.fcount += 1
    redis_flush()
    return 0 if g_redis.state != RS_DOWN else -1


cdef void redis_forget(Exchange* x) noexcept nogil:
    """x no longer waits (timed out, or its client went away)."""
    cdef RedisRt* r = g_redis
    cdef uint32_t i
    if r == NULL:
        return
    for i in range(r.fcount):
        if r.fifo[(r.fhead + i) % RD_FIFO] == x:
            r.fifo[(r.fhead + i) % RD_FIFO] = NULL


cdef void redis_start() noexcept nogil:
    if g_redis != NULL:
        timer_init(&g_redis.timer, TK_REDIS, NULL)
        redis_connect()


def _redis_attach(int family, bytes sockaddr, timeout, bint fail_closed, str sha, str script):
    """The Redis server of store = redis limits (connected when the loop starts)."""
    global g_redis
    cdef RedisRt* r = <RedisRt*>calloc(1, sizeof(RedisRt))
    cdef bytes sb = script.encode()
    if r == NULL:
        raise MemoryError()
    r.h.kind = K_REDIS
    r.h.fd = -1
    r.family = family
    memcpy(r.addr, <const char*>sockaddr, min(len(sockaddr), 128))
    r.addrlen = len(sockaddr)
    r.timeout_ms = max(1, int(timeout * 1000))
    r.fail_closed = fail_closed
    r.backoff_ms = 100
    _copy_cstr(r.sha, 41, sha.encode())
    r.script = _dup(sb)
    r.script_len = len(sb)
    r.wbuf = <char*>malloc(RD_BUF)
    r.rbuf = <char*>malloc(RD_BUF)
    r.fifo = <Exchange**>calloc(RD_FIFO, sizeof(Exchange*))
    if r.wbuf == NULL or r.rbuf == NULL or r.fifo == NULL:
        raise MemoryError()
    g_redis = r
