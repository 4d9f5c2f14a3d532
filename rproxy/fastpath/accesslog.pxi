# Access logs: one line per exchange, rendered by ops compiled once from the
# format (accesslog.py parses it, accesslog_add() turns the items into
# LogOp's), buffered per worker and per output, written in few syscalls.
#
# Where an exchange touches this file (every path ends in x_free):
#   x_new            xlog_init           start time, request id
#   x_attach         xlog_attach         the downstream connection used
#   uc_send, splice  log.bytes_out       bytes written to the client
#   uc_respond       xlog_answer         a response of rproxy's own (status, length)
#   dc_on_response_head  xlog_response_head  final head queued: time, {DS_HDR} copies
#   dc_response_done xlog_done           complete: what is still queued will go out
#   dc_exchange_failed  xlog_failed      the downstream failed after its head was queued
#   passthrough, redirect_connected  xlog_relay  raw bytes from here: tun_down reads the
#                                        status they begin with (xlog_sniff_status)
#   redirect_connected  xlog_redirected  the redirect target's address and local port
#   uc_make_room / tunnel_start / redirect_connected  xlog_keep_request  copy the request head before its
#                                        buffer is reused (a large body, a tunnel)
#   x_free           xlog_emit           render and append the line
#
# Rule for new code: anything that answers a client on rproxy's behalf calls
# xlog_answer before dropping the exchange, and anything that overwrites the
# client's read buffer while an exchange is alive calls xlog_keep_request
# first.  TLS facts come from xlog_tls_facts (tls.pxi's tls_log_facts).

from libc.errno cimport ECONNREFUSED, ENOTCONN, ENOENT, EIO, EDESTADDRREQ

cdef extern from "rp_util.h" nogil:
    void rp_elog_set(int fd, int level, int facility, const char* sock)
    void rp_elog_clear()
    int rp_elog_wants(int fd, int level)
    unsigned long rp_elog_dropped
    int rp_syslog_header(char* out, int pri, time_t now, int pid)
    int rp_syslog_reconnect(int fd, const char* path)
    int rp_syslog_send(int fd, const char* path, const char* msg, size_t n)

cdef extern from "<time.h>" nogil:
    struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
        long tm_gmtoff
    tm* localtime_r(const time_t* t, tm* out)

cdef extern from "<sys/socket.h>" nogil:
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int sockfd, mmsghdr* msgvec, unsigned int vlen, int flags)

cdef extern from "<string.h>" nogil:
    void* memchr(const void* s, int c, size_t n)


cdef enum:
    # ops; LOG_OPS below maps the token names of accesslog.TOKENS onto them
    LOP_TEXT = 0
    LOP_SRC
    LOP_US_SPORT
    LOP_PROXY
    LOP_DS_SPORT
    LOP_TS
    LOP_UA
    LOP_METH
    LOP_URI
    LOP_PROTO
    LOP_STATUS
    LOP_REF
    LOP_HOST
    LOP_US_HDR
    LOP_DS_HDR
    LOP_RULE
    LOP_VHOST
    LOP_QUERY
    LOP_REQUEST_URI
    LOP_REQUEST
    LOP_BYTES_SENT
    LOP_BODY_BYTES_SENT
    LOP_BYTES_RECEIVED
    LOP_REQUEST_TIME
    LOP_DS_TIME
    LOP_DS_HEADER_TIME
    LOP_DS_ADDR
    LOP_TLS_PROTO
    LOP_TLS_CIPHER
    LOP_REQUEST_ID
    LOP_TS_ISO
    LOP_MSEC
    LOP_CACHE
    LOP_RATE_LIMIT

LOG_OPS = {
    "SRC": LOP_SRC, "US_SPORT": LOP_US_SPORT, "PROXY": LOP_PROXY, "DS_SPORT": LOP_DS_SPORT,
    "TS": LOP_TS, "UA": LOP_UA, "METH": LOP_METH, "URI": LOP_URI, "PROTO": LOP_PROTO,
    "STATUS": LOP_STATUS, "REF": LOP_REF, "HOST": LOP_HOST, "US_HDR": LOP_US_HDR,
    "DS_HDR": LOP_DS_HDR, "RULE": LOP_RULE, "VHOST": LOP_VHOST, "QUERY": LOP_QUERY,
    "REQUEST_URI": LOP_REQUEST_URI, "REQUEST": LOP_REQUEST, "BYTES_SENT": LOP_BYTES_SENT,
    "BODY_BYTES_SENT": LOP_BODY_BYTES_SENT, "BYTES_RECEIVED": LOP_BYTES_RECEIVED,
    "REQUEST_TIME": LOP_REQUEST_TIME, "DS_TIME": LOP_DS_TIME, "DS_HEADER_TIME": LOP_DS_HEADER_TIME,
    "DS_ADDR": LOP_DS_ADDR, "TLS_PROTO": LOP_TLS_PROTO, "TLS_CIPHER": LOP_TLS_CIPHER,
    "REQUEST_ID": LOP_REQUEST_ID, "TS_ISO": LOP_TS_ISO, "MSEC": LOP_MSEC, "CACHE": LOP_CACHE,
    "RATE_LIMIT": LOP_RATE_LIMIT,
}
# ops that read the request head (it must be copied if its buffer is reused)
_REQUEST_OPS = {LOP_UA, LOP_METH, LOP_URI, LOP_REF, LOP_HOST, LOP_US_HDR, LOP_QUERY, LOP_REQUEST_URI,
                LOP_REQUEST}
_CLOCK_OPS = {LOP_TS, LOP_TS_ISO, LOP_MSEC}

cdef enum:
    XL_ANSWERED = 0x01      # rproxy answered with a response of its own
    XL_RESP_HEAD = 0x02     # a downstream's final response head was queued (body_base is set)
    XL_DONE = 0x04          # the response is complete: what is still queued goes out too
    XL_REQ_LOST = 0x08      # the request head could not be kept (out of memory)
    XL_DS_FAILED = 0x10     # the downstream failed before any response byte reached the client
    XL_RELAY = 0x20         # a raw relay (passthrough, internal redirect): the status is
    XL_SNIFF = 0x40         # read from the first bytes relayed to the client (pending)
    XL_SNIFFED = 0x80       # ... and log.status holds it

cdef enum:
    AN_REQUEST = 0x01       # AccessLog.needs: request head bytes
    AN_CLOCK = 0x02         # the wall clock

cdef enum:
    SINK_FILE = 0           # a regular file: the whole buffer in one write(2)
    SINK_STREAM = 1         # pipe, terminal, ...: writes of whole lines, at most PIPE_BUF each
    SINK_SYSLOG = 2         # a datagram socket: one datagram per line

cdef enum:
    LOG_LINE_MAX = 16384    # longer lines are cut, and end with "..."
    LOG_PIPE_BUF = 4096     # POSIX: writes up to this size to a pipe never interleave
    SYSLOG_BATCH = 64       # datagrams per sendmmsg(2)


cdef struct LogOp:
    uint8_t code
    int16_t slot            # {DS_HDR}: index of its copied value
    uint32_t len
    char* arg               # literal text, or a header name

cdef struct LogSink:
    int fd
    uint8_t kind
    int pri                 # syslog: facility | LOG_INFO
    char* buf
    uint32_t len
    uint32_t cap
    uint32_t flush_at       # write once this much is gathered (0: after every line)
    uint64_t lines          # lines written
    uint64_t lost           # lines that could not be written
    int64_t reported_at     # ms, last error-log line about a loss
    char name[256]          # the output, for messages
    char sock[108]          # syslog socket path, to reconnect

cdef struct AccessLog:
    LogOp* ops
    int nops
    LogSink* sink
    uint32_t needs          # AN_*
    int ndshdr              # {DS_HDR} ops (their values are copied at the response head)
    char** dshdr
    uint32_t* dshdr_len

cdef LogSink** g_sinks = NULL
cdef int g_nsinks = 0
cdef AccessLog** g_alogs = NULL
cdef int g_nalogs = 0
cdef Timer g_log_timer                  # flushes every sink; armed while one holds lines
cdef int64_t g_log_flush_ms = 200
cdef uint64_t g_reqid_prefix = 0        # random per worker: request ids unique across workers
cdef uint64_t g_reqid_seq = 0
cdef uint8_t g_log_esc[256]             # bytes written as \xHH
cdef const char* g_hex = "0123456789abcdef"
cdef const char* g_month = "JanFebMarAprMayJunJulAugSepOctNovDec"

# per-second caches of the formatted wall clock
cdef time_t g_clf_sec = -1
cdef char g_clf[40]
cdef int g_clf_len = 0
cdef time_t g_iso_sec = -1
cdef char g_iso[40]                     # date and time, then g_iso_tz after the milliseconds
cdef char g_iso_tz[8]


# ---- exchange hooks ------------------------------------------------------------

cdef inline AccessLog* xlog_target(Exchange* x) noexcept nogil:
    """The access log of an exchange: its vhost's (set to the server's when
    the vhost has none), or the server's for a request no vhost took."""
    if x.rule != NULL:
        return x.rule.vhost.alog
    if x.uc == NULL or x.uc.srv == NULL:
        return NULL                 # probes and benchmarks: no server
    return x.uc.srv.alog


cdef inline void xlog_init(Exchange* x) noexcept nogil:
    global g_reqid_seq
    memset(&x.log, 0, sizeof(XLog))
    x.log.t_start_us = g_now_us
    g_reqid_seq += 1
    x.log.seq = g_reqid_seq


cdef inline void xlog_attach(Exchange* x, DConn* dc) noexcept nogil:
    x.log.ds = dc.ds
    x.log.ds_sport = dc.local_port
    x.log.ds_peer = dc.conn.peer
    x.log.t_ds_us = g_now_us
    x.log.t_ds_head_us = 0


cdef void xlog_answer(Exchange* x, int status, const char* resp) noexcept nogil:
    """rproxy answers `x` with `resp` (a canned response, NUL-terminated)."""
    cdef const char* body
    if x == NULL:
        return
    x.log.flags |= XL_ANSWERED
    x.log.status = <uint16_t>status
    x.log.canned_len = <uint16_t>strlen(resp)
    body = strstr(resp, "\r\n\r\n")
    x.log.canned_body = <uint16_t>(strlen(body + 4) if body != NULL else 0)


cdef inline void xlog_done(Exchange* x) noexcept nogil:
    x.log.flags |= XL_DONE


cdef inline void xlog_failed(Exchange* x, int status) noexcept nogil:
    """The downstream failed (502, 504) after its response head was queued:
    the client connection is closed.  If none of that head reached the
    client, the line says why with `status` instead of a status the client
    never saw."""
    if x.log.bytes_out == 0 and not (x.log.flags & (XL_ANSWERED | XL_SNIFFED)):
        x.log.flags |= XL_DS_FAILED
        x.log.status = <uint16_t>status


cdef inline void xlog_relay(Exchange* x) noexcept nogil:
    """From now on the downstream's bytes go to the client raw (passthrough
    rule, internal redirect): the status is the one they start with."""
    x.log.flags |= XL_RELAY | XL_SNIFF
    x.log.flags &= ~XL_SNIFFED


cdef void xlog_redirected(Exchange* x, DConn* t) noexcept nogil:
    """An internal redirect's connection is up: the downstream address the
    client's answer comes from is now the target's ({PROXY} stays the
    configured downstream that redirected)."""
    cdef uint8_t ss[128]
    cdef socklen_t sl = 128
    if getpeername(t.conn.h.fd, <sockaddr*>ss, &sl) == 0:
        peer_from_sockaddr(&x.log.ds_peer, ss)
    sl = 128
    x.log.ds_sport = 0
    if getsockname(t.conn.h.fd, <sockaddr*>ss, &sl) == 0 and (<sockaddr*>ss).sa_family != AF_UNIX:
        x.log.ds_sport = ntohs((<sockaddr_in*>ss).sin_port)


cdef void xlog_sniff_status(Exchange* x, const char* p, uint32_t n) noexcept nogil:
    """The first bytes a raw relay sends the client: `HTTP/1.x NNN`."""
    x.log.flags &= ~XL_SNIFF
    if n >= 12 and memcmp(p, b"HTTP/1.", 7) == 0 and p[8] == c' ' \
            and c'1' <= p[9] <= c'5' and c'0' <= p[10] <= c'9' and c'0' <= p[11] <= c'9':
        x.log.status = <uint16_t>((p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48))
        x.log.flags |= XL_SNIFFED


cdef void xlog_response_head(Exchange* x, DConn* dc) noexcept nogil:
    """The downstream's final response head is parsed and the client's is
    queued: note when, where the body starts in the byte count, and copy the
    {DS_HDR} values (the response buffer is reused as the body streams)."""
    cdef UConn* uc = x.uc
    cdef AccessLog* al
    x.log.t_ds_head_us = g_now_us
    x.log.flags |= XL_RESP_HEAD
    x.log.body_base = x.log.bytes_out + uc.conn.out.hlen + uc.conn.out.blen
    al = xlog_target(x)
    if al != NULL and al.ndshdr and x.log.resp_copy == NULL:
        xlog_copy_response_headers(x, dc, al)


cdef void xlog_copy_response_headers(Exchange* x, DConn* dc, AccessLog* al) noexcept nogil:
    """resp_copy = ndshdr (offset, length) pairs (length 0xffffffff: absent),
    then the values."""
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef int i, k
    cdef int found[64]
    cdef uint32_t total = 0
    cdef uint32_t* idx
    cdef char* data
    cdef int n = al.ndshdr if al.ndshdr < 64 else 64
    for k in range(n):
        found[k] = -1
        for i in range(x.nresp):
            if x.resp[i].name.len == al.dshdr_len[k] \
                    and strncasecmp(base + x.resp[i].name.off, al.dshdr[k], al.dshdr_len[k]) == 0:
                found[k] = i
                total += x.resp[i].value.len
                break
    x.log.resp_copy = <char*>malloc(8 * n + total)
    if x.log.resp_copy == NULL:
        return                      # {DS_HDR} prints "-"
    idx = <uint32_t*>x.log.resp_copy
    data = x.log.resp_copy + 8 * n
    total = 0
    for k in range(n):
        if found[k] < 0:
            idx[2 * k] = 0
            idx[2 * k + 1] = <uint32_t>0xffffffff
            continue
        i = found[k]
        memcpy(data + total, base + x.resp[i].value.off, x.resp[i].value.len)
        idx[2 * k] = 8 * n + total
        idx[2 * k + 1] = x.resp[i].value.len
        total += x.resp[i].value.len


cdef void xlog_keep_request(Exchange* x, UConn* uc) noexcept nogil:
    """The client's read buffer is about to be reused while `x` is alive:
    copy its request head if the access log will read it."""
    cdef AccessLog* al
    cdef uint32_t lo, n
    if x == NULL or x.log.req_copy != NULL or (x.log.flags & XL_REQ_LOST) or uc.conn.rbuf == NULL \
            or x.head_end == 0:
        return
    al = xlog_target(x)
    if al == NULL or not (al.needs & AN_REQUEST):
        return
    lo = x.method_sp.off
    n = x.head_end - lo
    x.log.req_copy = <char*>malloc(n if n else 1)
    if x.log.req_copy == NULL:
        x.log.flags |= XL_REQ_LOST
        return
    memcpy(x.log.req_copy, bdata(uc.conn.rbuf) + lo, n)
    x.log.req_copy_off = lo
    x.log.req_copy_len = n


cdef void xlog_emit(Exchange* x) noexcept nogil:
    """The exchange ends (x_free): write its line, free its copies."""
    cdef AccessLog* al = xlog_target(x)
    if al != NULL:
        alog_line(al, x, x.uc)
    if x.log.req_copy != NULL:
        free(x.log.req_copy)
        x.log.req_copy = NULL
    if x.log.resp_copy != NULL:
        free(x.log.resp_copy)
        x.log.resp_copy = NULL


cdef inline int xlog_tls_facts(UConn* uc, const char** proto, const char** cipher) noexcept nogil:
    """TLS protocol and cipher of the client connection: 0 when there are
    none (plain TCP).  tls.pxi reads them off the connection's TLS state."""
    if uc.conn.tls == NULL:
        return 0
    return tls_log_facts(uc, proto, cipher)


# ---- rendering ---------------------------------------------------------------------

cdef inline const char* xreq(Exchange* x, UConn* uc, uint32_t off, uint32_t n) noexcept nogil:
    """The n request head bytes at client-buffer offset `off`, wherever they
    are now; NULL if they are gone or the span is not wholly inside what holds
    them (the copy, or the bytes read into the client's buffer)."""
    cdef uint32_t rel
    if x.log.req_copy != NULL:
        if off < x.log.req_copy_off:
            return NULL
        rel = off - x.log.req_copy_off
        if rel > x.log.req_copy_len or n > x.log.req_copy_len - rel:
            return NULL
        return x.log.req_copy + rel
    if (x.log.flags & XL_REQ_LOST) or uc.conn.rbuf == NULL or off > uc.conn.rend or n > uc.conn.rend - off:
        return NULL
    return bdata(uc.conn.rbuf) + off


cdef inline void w_dash(W* w) noexcept nogil:
    w_put(w, "-", 1)


cdef void w_esc(W* w, const char* s, uint32_t n) noexcept nogil:
    """Bytes a client or downstream chose: `"`, `\\`, control bytes, DEL and
    non-ASCII bytes become \\xHH; nothing can end or fake a line."""
    cdef uint32_t i = 0, j
    cdef uint8_t c
    cdef char hx[4]
    hx[0] = c'\\'
    hx[1] = c'x'
    while i < n:
        j = i
        while j < n and not g_log_esc[<uint8_t>s[j]]:
            j += 1
        if j > i:
            w_put(w, s + i, j - i)
        if j < n:
            c = <uint8_t>s[j]
            hx[2] = g_hex[c >> 4]
            hx[3] = g_hex[c & 15]
            w_put(w, hx, 4)
            j += 1
        i = j


cdef inline void w_esc_or_dash(W* w, const char* s, uint32_t n) noexcept nogil:
    if s == NULL or n == 0:
        w_dash(w)
    else:
        w_esc(w, s, n)


cdef void w_ms(W* w, int64_t us) noexcept nogil:
    """Microseconds as milliseconds with 3 decimals: 12.345."""
    cdef char frac[4]
    if us < 0:
        us = 0
    w_uint(w, <uint64_t>(us // 1000))
    frac[0] = c'.'
    frac[1] = <char>(48 + (us // 100) % 10)
    frac[2] = <char>(48 + (us // 10) % 10)
    frac[3] = <char>(48 + us % 10)
    w_put(w, frac, 4)


cdef void w_hex64(W* w, uint64_t v) noexcept nogil:
    cdef char out[16]
    cdef int i
    for i in range(16):
        out[15 - i] = g_hex[v & 15]
        v >>= 4
    w_put(w, out, 16)


cdef inline void put2(char* p, int v) noexcept nogil:
    p[0] = <char>(48 + (v // 10) % 10)
    p[1] = <char>(48 + v % 10)


cdef int fmt_tz(char* p, long gmtoff) noexcept nogil:
    """+hhmm, as strftime's %z."""
    cdef long m
    p[0] = c'+' if gmtoff >= 0 else c'-'
    m = (gmtoff if gmtoff >= 0 else -gmtoff) // 60
    put2(p + 1, <int>(m // 60))
    put2(p + 3, <int>(m % 60))
    return 5


cdef void w_ts_clf(W* w, int64_t rt_us) noexcept nogil:
    """20/Aug/2013:04:02:42 -0400, local time (formatted once per second)."""
    global g_clf_sec, g_clf_len
    cdef time_t sec = <time_t>(rt_us // 1000000)
    cdef tm t
    cdef char* p
    if sec != g_clf_sec:
        localtime_r(&sec, &t)
        p = g_clf
        put2(p, t.tm_mday)
        p[2] = c'/'
        memcpy(p + 3, g_month + 3 * (t.tm_mon % 12), 3)
        p[6] = c'/'
        put2(p + 7, (t.tm_year + 1900) // 100)
        put2(p + 9, (t.tm_year + 1900) % 100)
        p[11] = c':'
        put2(p + 12, t.tm_hour)
        p[14] = c':'
        put2(p + 15, t.tm_min)
        p[17] = c':'
        put2(p + 18, t.tm_sec)
        p[20] = c' '
        g_clf_len = 21 + fmt_tz(p + 21, t.tm_gmtoff)
        g_clf_sec = sec
    w_put(w, g_clf, g_clf_len)


cdef void w_ts_iso(W* w, int64_t rt_us) noexcept nogil:
    """2026-11-23T12:00:00.123+0100, local time."""
    global g_iso_sec
    cdef time_t sec = <time_t>(rt_us // 1000000)
    cdef tm t
    cdef char* p = g_iso
    cdef char ms[4]
    cdef int v
    if sec != g_iso_sec:
        localtime_r(&sec, &t)
        put2(p, (t.tm_year + 1900) // 100)
        put2(p + 2, (t.tm_year + 1900) % 100)
        p[4] = c'-'
        put2(p + 5, t.tm_mon + 1)
        p[7] = c'-'
        put2(p + 8, t.tm_mday)
        p[10] = c'T'
        put2(p + 11, t.tm_hour)
        p[13] = c':'
        put2(p + 14, t.tm_min)
        p[16] = c':'
        put2(p + 17, t.tm_sec)
        fmt_tz(g_iso_tz, t.tm_gmtoff)
        g_iso_sec = sec
    w_put(w, g_iso, 19)
    v = <int>((rt_us // 1000) % 1000)
    ms[0] = c'.'
    ms[1] = <char>(48 + v // 100)
    ms[2] = <char>(48 + (v // 10) % 10)
    ms[3] = <char>(48 + v % 10)
    w_put(w, ms, 4)
    w_put(w, g_iso_tz, 5)


cdef void w_peer(W* w, Peer* p, bint with_port) noexcept nogil:
    cdef char ip[64]
    if p.family == AF_INET6 and with_port:
        w_put(w, "[", 1)
    if p.family == AF_INET or p.family == AF_INET6:
        if inet_ntop(p.family, p.addr, ip, 64) == NULL:
            w_dash(w)
            return
        w_put(w, ip, strlen(ip))
    else:
        w_dash(w)
        return
    if with_port:
        w_put(w, "]:" if p.family == AF_INET6 else ":", 2 if p.family == AF_INET6 else 1)
        w_uint(w, p.port)


cdef void w_request_header(W* w, Exchange* x, UConn* uc, const char* name, uint32_t nlen) noexcept nogil:
    cdef int i
    cdef const char* p
    for i in range(x.nreq):
        if x.req[i].name.len != nlen:
            continue
        p = xreq(x, uc, x.req[i].name.off, nlen)
        if p != NULL and strncasecmp(p, name, nlen) == 0:
            w_esc_or_dash(w, xreq(x, uc, x.req[i].value.off, x.req[i].value.len), x.req[i].value.len)
            return
    w_dash(w)


cdef void w_response_header(W* w, Exchange* x, int slot) noexcept nogil:
    cdef uint32_t* idx = <uint32_t*>x.log.resp_copy
    if idx == NULL or slot < 0 or idx[2 * slot + 1] == <uint32_t>0xffffffff:
        w_dash(w)
        return
    w_esc_or_dash(w, x.log.resp_copy + idx[2 * slot], idx[2 * slot + 1])


cdef inline int xlog_status(Exchange* x) noexcept nogil:
    """The status the client was sent: rproxy's own response, else the
    downstream's once some of it went out (for a raw relay, the status line
    its bytes began with; 0 if they began with none).  With no response
    delivered at all: the downstream's failure (502, 504) when that is why,
    499 (nginx's "client closed request") when the client went away first,
    444 when rproxy closed the connection itself (fast stop, shutdown
    timeout)."""
    if x.log.flags & (XL_ANSWERED | XL_DS_FAILED):
        return x.log.status
    if (x.flags & XF_RESP_STARTED) and (x.log.bytes_out or (x.log.flags & XL_DONE)):
        if x.log.flags & XL_RELAY:
            return x.log.status if x.log.flags & XL_SNIFFED else 0
        return x.status
    return 444 if g_stop == 2 else 499


cdef inline uint64_t xlog_bytes_sent(Exchange* x, UConn* uc) noexcept nogil:
    if x.log.flags & XL_ANSWERED:
        return x.log.bytes_out + x.log.canned_len
    if x.log.flags & XL_DONE:
        return x.log.bytes_out + uc.conn.out.hlen + uc.conn.out.blen + bb_len(uc.rbb)   # (queued counts as sent)
    return x.log.bytes_out


cdef void alog_line(AccessLog* al, Exchange* x, UConn* uc) noexcept nogil:
    """Render the line of `x` straight into its sink's buffer: start it
    (alog_begin), render each compiled item of the format (alog_op), end it
    (alog_end)."""
    cdef W w
    cdef int i
    cdef int64_t rt_us = 0
    cdef char* start = alog_begin(al, &w, &rt_us)
    for i in range(al.nops):
        if w.overflow:
            break
        alog_op(&w, &al.ops[i], x, uc, rt_us)
    alog_end(al.sink, &w, start)


cdef inline char* alog_begin(AccessLog* al, W* w, int64_t* rt_us) noexcept nogil:
    """Room for a whole line in the sink, the writer set on it, the wall
    clock read when the format (or syslog's header) needs it.  Returns where
    the line starts."""
    cdef LogSink* s = al.sink
    cdef timespec ts
    cdef char* start
    if s.cap - s.len < LOG_LINE_MAX + 96:
        sink_flush(s)
    start = s.buf + s.len
    w.p = start
    w.end = start + LOG_LINE_MAX - 4       # room for "..." and the newline
    w.overflow = 0
    if (al.needs & AN_CLOCK) or s.kind == SINK_SYSLOG:
        clock_gettime(CLOCK_REALTIME, &ts)
        rt_us[0] = <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000
    if s.kind == SINK_SYSLOG:
        w.p += rp_syslog_header(w.p, s.pri, ts.tv_sec, <int>g_pid)
    return start


cdef inline void alog_end(LogSink* s, W* w, char* start) noexcept nogil:
    """Close the line ("..." where it was cut, then the newline) and count it
    in the sink."""
    if w.overflow:
        w.end += 4
        w_put(w, "...", 3)
    w.p[0] = c'\n'
    w.p += 1
    s.len += <uint32_t>(w.p - start)
    sink_added(s)


cdef inline void alog_op(W* w, LogOp* op, Exchange* x, UConn* uc, int64_t rt_us) noexcept nogil:
    """One item of the format, by kind: literal text first (the most common),
    then addresses, times, the request, the outcome, byte counts, TLS."""
    cdef uint8_t c = op.code
    if c == LOP_TEXT:
        w_put(w, op.arg, op.len)
    elif c == LOP_SRC or c == LOP_US_SPORT or c == LOP_PROXY or c == LOP_DS_SPORT or c == LOP_DS_ADDR:
        w_op_address(w, c, x, uc)
    elif c == LOP_TS:
        w_ts_clf(w, rt_us - (g_now_us - x.log.t_start_us))
    elif c == LOP_TS_ISO:
        w_ts_iso(w, rt_us - (g_now_us - x.log.t_start_us))
    elif c == LOP_MSEC:
        w_ms(w, rt_us // 1000)              # milliseconds as seconds with 3 decimals
    elif c == LOP_UA or c == LOP_REF or c == LOP_HOST or c == LOP_US_HDR:
        w_request_header(w, x, uc, op.arg, op.len)
    elif c == LOP_DS_HDR:
        w_response_header(w, x, op.slot)
    elif c == LOP_METH:
        w_esc_or_dash(w, xreq(x, uc, x.method_sp.off, x.method_sp.len), x.method_sp.len)
    elif c == LOP_URI or c == LOP_QUERY or c == LOP_REQUEST_URI:
        w_op_uri(w, c, x, uc)
    elif c == LOP_PROTO:
        w_proto(w, x, uc)
    elif c == LOP_REQUEST:
        w_op_request_line(w, x, uc)
    elif c == LOP_STATUS or c == LOP_RULE or c == LOP_CACHE or c == LOP_RATE_LIMIT or c == LOP_VHOST:
        w_op_outcome(w, c, x)
    elif (c == LOP_BYTES_SENT or c == LOP_BODY_BYTES_SENT or c == LOP_BYTES_RECEIVED or c == LOP_REQUEST_TIME
          or c == LOP_DS_TIME or c == LOP_DS_HEADER_TIME):
        w_op_counts(w, c, x, uc)
    elif c == LOP_TLS_PROTO or c == LOP_TLS_CIPHER:
        w_op_tls(w, c, uc)
    elif c == LOP_REQUEST_ID:
        w_hex64(w, g_reqid_prefix)
        w_hex64(w, x.log.seq)


cdef void w_op_address(W* w, uint8_t c, Exchange* x, UConn* uc) noexcept nogil:
    """{SRC} {US_SPORT}: the client's; {PROXY} {DS_SPORT} {DS_ADDR}: the downstream's."""
    if c == LOP_SRC:
        if uc.conn.peer.family == AF_UNIX:
            w_put(w, "unix:", 5)
        else:
            w_peer(w, &uc.conn.peer, False)
    elif c == LOP_US_SPORT:
        if uc.conn.peer.family == AF_INET or uc.conn.peer.family == AF_INET6:
            w_uint(w, uc.conn.peer.port)
        else:
            w_dash(w)
    elif c == LOP_PROXY:
        if x.log.ds != NULL:
            w_put(w, x.log.ds.label, strlen(x.log.ds.label))
        else:
            w_dash(w)
    elif c == LOP_DS_SPORT:
        if x.log.ds != NULL and x.log.ds_sport:
            w_uint(w, x.log.ds_sport)
        else:
            w_dash(w)
    elif x.log.ds == NULL:                  # LOP_DS_ADDR
        w_dash(w)
    elif x.log.ds_peer.family == AF_INET or x.log.ds_peer.family == AF_INET6:
        w_peer(w, &x.log.ds_peer, True)
    else:
        w_put(w, x.log.ds.label, strlen(x.log.ds.label))     # unix:/path


cdef void w_op_uri(W* w, uint8_t c, Exchange* x, UConn* uc) noexcept nogil:
    """{REQUEST_URI}: the target as sent; {URI}: its path; {QUERY}: its query."""
    cdef const char* u = xreq(x, uc, x.url_sp.off, x.url_sp.len) if x.url_sp.len else NULL
    cdef uint32_t off, plen, q
    if u == NULL:
        w_dash(w)
        return
    if c == LOP_REQUEST_URI:
        w_esc(w, u, x.url_sp.len)
        return
    path_span(u, x.url_sp.len, &off, &plen)
    if c == LOP_URI:
        w_esc_or_dash(w, u + off, plen)
        return
    q = off + plen
    if q < x.url_sp.len and u[q] == c'?':
        q += 1
        plen = q
        while plen < x.url_sp.len and u[plen] != c'#':
            plen += 1
        w_esc_or_dash(w, u + q, plen - q)
    else:
        w_dash(w)


cdef void w_op_request_line(W* w, Exchange* x, UConn* uc) noexcept nogil:
    """{REQUEST}: method, target and protocol, or the bytes received when the
    head never completed."""
    cdef const char* p = xreq(x, uc, x.method_sp.off, x.method_sp.len)
    cdef const char* u
    if p == NULL or x.method_sp.len == 0:
        w_dash(w)
    elif not x.head_end and x.log.req_copy == NULL:
        w_request_line_as_received(w, x, uc, p)
    else:
        w_esc(w, p, x.method_sp.len)
        u = xreq(x, uc, x.url_sp.off, x.url_sp.len) if x.url_sp.len else NULL
        if u != NULL:
            w_put(w, " ", 1)
            w_esc(w, u, x.url_sp.len)
        if x.head_end:
            w_put(w, " ", 1)
            w_proto(w, x, uc)


cdef void w_op_outcome(W* w, uint8_t c, Exchange* x) noexcept nogil:
    """{STATUS} {RULE} {VHOST} {CACHE} {RATE_LIMIT}: what became of the request."""
    cdef int st
    if c == LOP_STATUS:
        st = xlog_status(x)
        if st:
            w_uint(w, <uint64_t>st)
        else:
            w_dash(w)
    elif c == LOP_RULE:
        if x.rule != NULL:
            w_put(w, x.rule.name, strlen(x.rule.name))
        else:
            w_dash(w)
    elif c == LOP_CACHE:
        if x.cst == 1:                      # CS_* (cache.pxi)
            w_put(w, "MISS", 4)
        elif x.cst == 2:
            w_put(w, "HIT", 3)
        elif x.cst == 3:
            w_put(w, "EXPIRED", 7)
        elif x.cst == 4:
            w_put(w, "BYPASS", 6)
        else:
            w_dash(w)
    elif c == LOP_RATE_LIMIT:
        if edge_limit_name(x) != NULL:
            w_put(w, edge_limit_name(x), strlen(edge_limit_name(x)))
        else:
            w_dash(w)
    elif x.rule != NULL:                    # LOP_VHOST
        w_esc(w, x.rule.vhost.name, <uint32_t>strlen(x.rule.vhost.name))
    else:
        w_dash(w)


cdef void w_op_counts(W* w, uint8_t c, Exchange* x, UConn* uc) noexcept nogil:
    """Byte counts ({BYTES_SENT} {BODY_BYTES_SENT} {BYTES_RECEIVED}) and
    durations ({REQUEST_TIME} {DS_TIME} {DS_HEADER_TIME})."""
    cdef uint64_t total
    if c == LOP_BYTES_SENT:
        w_uint(w, xlog_bytes_sent(x, uc))
    elif c == LOP_BODY_BYTES_SENT:
        total = xlog_bytes_sent(x, uc)
        if x.log.flags & XL_ANSWERED:
            w_uint(w, x.log.canned_body)
        elif x.log.flags & XL_RESP_HEAD:
            w_uint(w, total - x.log.body_base if total > x.log.body_base else 0)
        elif x.flags & XF_RESP_STARTED:
            w_uint(w, total)                # passthrough: all of it is the downstream's
        else:
            w_put(w, "0", 1)
    elif c == LOP_BYTES_RECEIVED:
        w_uint(w, xlog_bytes_received(x, uc))
    elif c == LOP_REQUEST_TIME:
        w_ms(w, g_now_us - x.log.t_start_us)
    elif c == LOP_DS_TIME:
        if x.log.t_ds_us:
            w_ms(w, g_now_us - x.log.t_ds_us)
        else:
            w_dash(w)
    elif x.log.t_ds_us and x.log.t_ds_head_us:     # LOP_DS_HEADER_TIME
        w_ms(w, x.log.t_ds_head_us - x.log.t_ds_us)
    else:
        w_dash(w)


cdef void w_op_tls(W* w, uint8_t c, UConn* uc) noexcept nogil:
    """{TLS_PROTO} {TLS_CIPHER} of the client connection."""
    cdef const char* proto
    cdef const char* cipher
    cdef const char* p
    if xlog_tls_facts(uc, &proto, &cipher):
        p = proto if c == LOP_TLS_PROTO else cipher
        w_esc_or_dash(w, p, <uint32_t>strlen(p) if p != NULL else 0)
    else:
        w_dash(w)


cdef void w_request_line_as_received(W* w, Exchange* x, UConn* uc, const char* p) noexcept nogil:
    """A request line llhttp refused or never finished (400, 414, 408...):
    its bytes as they arrived, up to the line end, at most 1 KiB."""
    cdef uint32_t n = uc.conn.rend - x.method_sp.off if uc.conn.rend > x.method_sp.off else 0
    cdef uint32_t i = 0
    if n > 1024:
        n = 1024
    while i < n and p[i] != c'\r' and p[i] != c'\n':
        i += 1
    w_esc(w, p, i)


cdef void w_proto(W* w, Exchange* x, UConn* uc) noexcept nogil:
    cdef char v[8]
    if not x.head_end:
        w_dash(w)
        return
    if uc.conn.flags & CN_VIRTUAL:
        w_put(w, b"HTTP/2.0", 8)        # a stream of an HTTP/2 connection (h2.pxi)
        return
    memcpy(v, b"HTTP/1.1", 8)
    v[5] = <char>(48 + uc.conn.parser.http_major % 10)
    v[7] = <char>(48 + uc.conn.parser.http_minor % 10)
    w_put(w, v, 8)


cdef uint64_t xlog_bytes_received(Exchange* x, UConn* uc) noexcept nogil:
    """Request head (or what arrived of it) and body bytes."""
    cdef uint64_t head = 0
    if x.head_end:
        head = x.head_end - x.method_sp.off
    elif x.method_sp.len and uc.conn.rbuf != NULL and uc.conn.rend > x.method_sp.off:
        head = uc.conn.rend - x.method_sp.off          # a head cut short: what arrived
    return head + x.body_in


# ---- sinks ------------------------------------------------------------------------

cdef inline void sink_added(LogSink* s) noexcept nogil:
    """A line was appended: write now, or make sure the timer will."""
    if s.len > s.flush_at:
        sink_flush(s)
    elif g_log_timer.idx < 0:
        timer_arm(&g_log_timer, g_log_flush_ms)


cdef uint64_t count_lines(const char* p, size_t n) noexcept nogil:
    cdef uint64_t k = 0
    cdef const char* e = p + n
    cdef const char* nl
    while p < e:
        nl = <const char*>memchr(p, c'\n', <size_t>(e - p))
        if nl == NULL:
            break
        k += 1
        p = nl + 1
    return k


cdef void sink_lost(LogSink* s, const char* p, size_t n, int err) noexcept nogil:
    """Lines that cannot be written are counted, and said in the error log
    (at most every 10 s per output)."""
    cdef const char* why = "socket full"
    s.lost += count_lines(p, n)
    if s.reported_at == 0 or g_now - s.reported_at >= 10000:
        s.reported_at = g_now
        if err:
            why = strerror(err)
        rp_elog(g_errfd, 3, "access log %s: %s; %llu line(s) lost so far", <const char*>s.name, why,
                <unsigned long long>s.lost)


cdef int sink_write(LogSink* s, const char* p, size_t n) noexcept nogil:
    """write(2) all of it, or count what is lost; 0 or -1."""
    cdef ssize_t r
    while n:
        r = write(s.fd, p, n)
        if r > 0:
            p += r
            n -= <size_t>r
        elif r < 0 and errno == EINTR:
            continue
        else:
            sink_lost(s, p, n, errno if r < 0 else EIO)
            return -1
    return 0


cdef void sink_send_syslog(LogSink* s) noexcept nogil:
    """One datagram per line, SYSLOG_BATCH at a time."""
    cdef mmsghdr msgs[SYSLOG_BATCH]
    cdef iovec iov[SYSLOG_BATCH]
    cdef char* p = s.buf
    cdef char* e = s.buf + s.len
    cdef char* nl
    cdef int k, sent, i, reconnected = 0
    while p < e:
        k = 0
        while p < e and k < SYSLOG_BATCH:
            nl = <char*>memchr(p, c'\n', <size_t>(e - p))
            if nl == NULL:
                nl = e
            iov[k].iov_base = p
            iov[k].iov_len = <size_t>(nl - p)
            memset(&msgs[k], 0, sizeof(mmsghdr))
            msgs[k].msg_hdr.msg_iov = &iov[k]
            msgs[k].msg_hdr.msg_iovlen = 1
            k += 1
            p = nl + 1 if nl < e else e
        i = 0
        while i < k:
            sent = sendmmsg(s.fd, &msgs[i], <unsigned int>(k - i), MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent > 0:
                i += sent
                continue
            if sent < 0 and errno == EINTR:
                continue
            if sent < 0 and not reconnected and (errno == ECONNREFUSED or errno == ENOTCONN
                                                 or errno == ENOENT or errno == EDESTADDRREQ):
                reconnected = 1         # the syslog daemon restarted: its socket is new
                if rp_syslog_reconnect(s.fd, s.sock) == 0:
                    continue
            # full (the daemon is behind) or gone: never block the loop for it
            sink_lost(s, <const char*>iov[i].iov_base, <size_t>(e - <char*>iov[i].iov_base),
                      errno if sent < 0 and errno != EAGAIN else 0)
            return
        s.lines += <uint64_t>k


cdef void sink_flush(LogSink* s) noexcept nogil:
    cdef char* p
    cdef char* e
    cdef char* cut
    cdef uint64_t n
    if s.len == 0:
        return
    if s.kind == SINK_SYSLOG:
        sink_send_syslog(s)
    elif s.kind == SINK_FILE:
        # O_APPEND and one write(2) of whole lines: workers sharing the file
        # never interleave inside a line
        n = count_lines(s.buf, s.len)
        if sink_write(s, s.buf, s.len) == 0:
            s.lines += n
    else:
        # pipes and terminals: only writes up to PIPE_BUF are atomic
        p = s.buf
        e = s.buf + s.len
        while p < e:
            cut = p + LOG_PIPE_BUF if e - p > LOG_PIPE_BUF else e
            if cut < e:
                while cut > p and (cut - 1)[0] != c'\n':
                    cut -= 1
                if cut == p:            # one line longer than PIPE_BUF: it goes alone
                    cut = <char*>memchr(p, c'\n', <size_t>(e - p))
                    cut = cut + 1 if cut != NULL else e
            n = count_lines(p, <size_t>(cut - p))
            if sink_write(s, p, <size_t>(cut - p)) != 0:
                break
            s.lines += n
            p = cut
    s.len = 0


cdef void accesslog_flush_all() noexcept nogil:
    cdef int i
    timer_stop(&g_log_timer)
    for i in range(g_nsinks):
        sink_flush(g_sinks[i])


cdef void accesslog_on_timer() noexcept nogil:
    accesslog_flush_all()


# ---- set-up (Python, once per worker) ------------------------------------------------

cdef _log_init_tables():
    cdef int c
    for c in range(256):
        g_log_esc[c] = 1 if (c < 0x20 or c >= 0x7f or c == 0x22 or c == 0x5c) else 0
    timer_init(&g_log_timer, TK_LOGFLUSH, NULL)


_log_init_tables()


def errorlog_output(int fd, int level, int facility=-1, str sock=""):
    """Error lines written to descriptor `fd` keep levels up to `level` (0
    emerg .. 7 debug); facility >= 0 (the syslog code, shifted) makes them
    syslog datagrams on that connected socket."""
    cdef bytes b = sock.encode()
    rp_elog_set(fd, level, facility, b)


def errorlog_dropped():
    """Syslog error lines dropped because the socket was full."""
    return rp_elog_dropped


def accesslog_sink(int fd, str kind, str name, *, int buffer_size=65536, int pri=0, str sock=""):
    """An output of access log lines: kind "file", "stream" or "syslog".
    Returns its index."""
    global g_sinks, g_nsinks
    cdef LogSink* s
    cdef LogSink** grown = <LogSink**>realloc(g_sinks, sizeof(LogSink*) * (g_nsinks + 1))
    if grown == NULL:
        raise MemoryError()
    g_sinks = grown
    s = <LogSink*>calloc(1, sizeof(LogSink))
    if s == NULL:
        raise MemoryError()
    s.fd = fd
    s.kind = {"file": SINK_FILE, "stream": SINK_STREAM, "syslog": SINK_SYSLOG}[kind]
    s.pri = pri
    s.flush_at = max(buffer_size, 0)
    s.cap = s.flush_at + LOG_LINE_MAX + 96
    s.buf = <char*>malloc(s.cap)
    if s.buf == NULL:
        free(s)
        raise MemoryError()
    _copy_cstr(s.name, 256, name.encode())
    _copy_cstr(s.sock, 108, sock.encode())
    g_sinks[g_nsinks] = s
    g_nsinks += 1
    return g_nsinks - 1


cdef AccessLog* _alog_compile(LogSink* sink, items) except NULL:
    """The op list of a parsed format, writing to `sink` (once, at start-up)."""
    cdef AccessLog* al
    cdef LogOp* op
    cdef bytes b
    items = list(items)
    al = <AccessLog*>calloc(1, sizeof(AccessLog))
    if al == NULL:
        raise MemoryError()
    al.sink = sink
    al.nops = len(items)
    al.ops = <LogOp*>calloc(max(al.nops, 1), sizeof(LogOp))
    dshdr = [it.text for it in items if it.token == "DS_HDR"][:64]
    al.ndshdr = len(dshdr)
    al.dshdr = <char**>calloc(max(al.ndshdr, 1), sizeof(char*))
    al.dshdr_len = <uint32_t*>calloc(max(al.ndshdr, 1), sizeof(uint32_t))
    if al.ops == NULL or al.dshdr == NULL or al.dshdr_len == NULL:
        raise MemoryError()
    for k, name in enumerate(dshdr):
        b = name.encode()
        al.dshdr[k] = _dup(b)
        al.dshdr_len[k] = len(b)
    for i, it in enumerate(items):
        op = &al.ops[i]
        op.slot = -1
        if it.token is None:
            op.code = LOP_TEXT
            b = it.text.encode()
        else:
            op.code = LOG_OPS[it.token]
            b = {"UA": b"User-Agent", "REF": b"Referer", "HOST": b"Host"}.get(it.token, it.text.encode())
            if it.token == "DS_HDR":
                op.slot = dshdr.index(it.text) if it.text in dshdr else -1
            if op.code in _REQUEST_OPS:
                al.needs |= AN_REQUEST
            if op.code in _CLOCK_OPS:
                al.needs |= AN_CLOCK
        op.arg = _dup(b)
        op.len = len(b)
    return al


cdef void _alog_free(AccessLog* al) noexcept:
    cdef int i
    for i in range(al.nops):
        free(al.ops[i].arg)
    for i in range(al.ndshdr):
        free(al.dshdr[i])
    free(al.ops)
    free(al.dshdr)
    free(al.dshdr_len)
    free(al)


def accesslog_add(int sink, items):
    """Compile a parsed format (accesslog.parse_format: items with .token,
    None for literal text, and .text) into ops writing to `sink`.  Returns
    the access log's index."""
    global g_alogs, g_nalogs
    cdef AccessLog** grown = <AccessLog**>realloc(g_alogs, sizeof(AccessLog*) * (g_nalogs + 1))
    if grown == NULL:
        raise MemoryError()
    g_alogs = grown
    g_alogs[g_nalogs] = _alog_compile(g_sinks[sink], items)
    g_nalogs += 1
    return g_nalogs - 1


def accesslog_route(*, servers=(), vhosts=(), downstreams=()):
    """Who logs where.  servers: (server, access log index or -1, error fd or
    0); vhosts: (server, vhost, access log or -1, error fd or 0), where -1 /
    0 mean "its server's"; downstreams: (index, error fd or 0)."""
    for si, al, fd in servers:
        g_servers[si].alog = g_alogs[al] if al >= 0 else NULL
        g_servers[si].errfd = fd
    for si, vi, al, fd in vhosts:
        g_servers[si].vhosts[vi].alog = g_alogs[al] if al >= 0 else g_servers[si].alog
        g_servers[si].vhosts[vi].errfd = fd if fd > 0 else g_servers[si].errfd
    for di, fd in downstreams:
        g_downstreams[di].errfd = fd


def accesslog_start(double flush_interval=0.2, unsigned long long id_prefix=0):
    global g_log_flush_ms, g_reqid_prefix
    g_log_flush_ms = max(1, <int64_t>(flush_interval * 1000))
    g_reqid_prefix = id_prefix


def accesslog_flush():
    """Write every gathered line now."""
    accesslog_flush_all()


def accesslog_stats():
    """[(output, lines written, lines lost)] per output."""
    return [(g_sinks[i].name.decode("utf-8", "replace"), g_sinks[i].lines, g_sinks[i].lost)
            for i in range(g_nsinks)]


def log_escape(bytes data):
    """The access log's escaping of a value (for tests)."""
    cdef char out[4096]
    cdef W w
    if len(data) > 1000:
        raise ValueError("at most 1000 bytes")
    w.p = out
    w.end = out + 4096
    w.overflow = 0
    w_esc(&w, data, len(data))
    return out[:w.p - out]


cdef void peer_from_sockaddr(Peer* p, const uint8_t* ss) noexcept nogil:
    """A downstream's address as connected, for {DS_ADDR}."""
    cdef const sockaddr_in* a4
    cdef const sockaddr_in6* a6
    p.family = <uint8_t>(<const sockaddr*>ss).sa_family
    p.port = 0
    if p.family == AF_INET:
        a4 = <const sockaddr_in*>ss
        memcpy(p.addr, &a4.sin_addr, 4)
        p.port = ntohs(a4.sin_port)
    elif p.family == AF_INET6:
        a6 = <const sockaddr_in6*>ss
        memcpy(p.addr, &a6.sin6_addr, 16)
        p.port = ntohs(a6.sin6_port)
