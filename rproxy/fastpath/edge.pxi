# Serving and shaping at the edge (issue 20): per-rule actions that run in
# the fast path without Python.
#
#   - header rules: `request-headers { set add remove }` and
#     `response-headers { set add remove }` of the vhost and the rule, merged at
#     config time into one op list per direction (the rule's after the vhost's);
#   - security headers: `security-headers` turned into "add unless the
#     downstream sent it" ops (HSTS only over TLS);
#   - redirect rules: `redirect = "...$path..."` + `status`, answered here;
#   - sticky sessions: `sticky = cookie` (an opaque HMAC token per downstream,
#     computed at config time) or `sticky = ip-hash` (rendezvous hashing).
#
# build_request_head / build_response_head call edge_*_skip for each header
# they copy and edge_*_extra before the final CRLF; everything else is here.

cdef extern from "<time.h>" nogil:
    cdef struct tm:
        pass
    tm* gmtime_r(const time_t* t, tm* out)
    time_t time(time_t* t)
    size_t strftime(char* s, size_t max, const char* fmt, const tm* t)


cdef enum:
    HOP_SET = 0             # replace every header of that name
    HOP_ADD = 1             # add one more
    HOP_REMOVE = 2          # drop every header of that name
    HOP_DEFAULT = 3         # add unless the message already has one (security headers)

cdef enum:
    SF_ANSWERED = -2        # Exchange.sf_fd: answered by edge.pxi / static.pxi, no file in flight

cdef enum:
    STICKY_OFF = 0
    STICKY_COOKIE = 1
    STICKY_IP_HASH = 2

cdef struct HdrOp:
    uint8_t op
    uint8_t tls_only        # HSTS: only on TLS connections
    uint8_t has_vars        # the value holds $variables (request side only)
    char* name
    uint32_t nlen
    char* value
    uint32_t vlen

cdef struct HdrOps:
    int n                   # at most 64 (a bit per op when scanning a message)
    HdrOp* ops

cdef struct OpenFileCache     # filecache.pxi

cdef struct EdgeRule:
    HdrOps req
    HdrOps resp
    # redirect
    char* redirect          # template, NULL = not a redirect rule
    uint32_t redirect_len
    uint16_t redirect_status
    # static files (static.pxi)
    int rootfd              # O_PATH directory fd of `root`, -1 = no root
    char** index
    uint32_t* index_len
    int nindex
    uint8_t autoindex
    # sticky
    uint8_t sticky
    char* cookie            # cookie name
    uint32_t cookie_len
    char** tokens           # per rule downstream (same order as RuleRt.dss): the cookie value
    uint32_t token_len
    OpenFileCache* ofc      # static files: this worker's open files of `root` (NULL = off)


# ---- header rules ---------------------------------------------------------------

cdef bint edge_req_skip(RuleRt* r, const char* name, uint32_t n) noexcept nogil:
    """Is this client request header replaced (set) or removed by a rule?"""
    cdef HdrOps* o = &r.serve_edge.req
    cdef int i
    for i in range(o.n):
        if (o.ops[i].op == HOP_SET or o.ops[i].op == HOP_REMOVE) and o.ops[i].nlen == n \
                and strncasecmp(o.ops[i].name, name, n) == 0:
            return True
    return False


cdef bint edge_resp_skip(RuleRt* r, const char* name, uint32_t n, uint64_t* seen) noexcept nogil:
    """Is this response header replaced or removed?  Records in *seen the
    HOP_DEFAULT ops it satisfies (the downstream's own header is kept)."""
    cdef HdrOps* o = &r.serve_edge.resp
    cdef int i
    for i in range(o.n):
        if o.ops[i].nlen == n and strncasecmp(o.ops[i].name, name, n) == 0:
            if o.ops[i].op == HOP_SET or o.ops[i].op == HOP_REMOVE:
                return True
            if o.ops[i].op == HOP_DEFAULT:
                seen[0] |= (<uint64_t>1) << i
    return False


cdef void w_expand(W* w, const char* t, uint32_t n, UConn* uc, Exchange* x, bint refs) noexcept nogil:
    """A template with $scheme $host $path $query $request_uri (and, for a
    redirect of a uri-rmatch rule, \\1..\\9).  $path is the path after a
    uri-prefix (the whole path for other matches); $query is `?` and the
    query, or nothing."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef const char* url = base + x.url_sp.off
    cdef const char* path = url + x.path_off
    cdef uint32_t i = 0, qoff = x.path_off + x.path_len, skip
    cdef int g
    while i < n:
        if t[i] == c'$':
            if n - i >= 12 and memcmp(t + i + 1, b"request_uri", 11) == 0:
                w_put(w, path, x.url_sp.len - x.path_off)
                i += 12
                continue
            if n - i >= 7 and memcmp(t + i + 1, b"scheme", 6) == 0:
                w_str(w, "https" if uc.conn.tls != NULL else "http")
                i += 7
                continue
            if n - i >= 5 and memcmp(t + i + 1, b"host", 4) == 0:
                w_put(w, base + x.host_sp.off, x.host_sp.len)
                i += 5
                continue
            if n - i >= 5 and memcmp(t + i + 1, b"path", 4) == 0:
                skip = 1 if x.path_len and path[0] == c'/' else 0
                if x.rule.match == M_PREFIX and x.rule.plen <= x.path_len:
                    skip = x.rule.plen
                w_put(w, path + skip, x.path_len - skip)
                i += 5
                continue
            if n - i >= 6 and memcmp(t + i + 1, b"query", 5) == 0:
                w_put(w, url + qoff, x.url_sp.len - qoff)
                i += 6
                continue
        elif refs and t[i] == c'\\' and i + 1 < n and t[i + 1] >= c'1' and t[i + 1] <= c'9':
            g = t[i + 1] - 48
            if x.grp[2 * g] >= 0:
                w_put(w, path + x.grp[2 * g], <size_t>(x.grp[2 * g + 1] - x.grp[2 * g]))
            i += 2
            continue
        w_put(w, t + i, 1)
        i += 1


cdef void edge_req_extra(W* w, UConn* uc, Exchange* x) noexcept nogil:
    """The request headers the rules set or add."""
    cdef HdrOps* o = &x.rule.serve_edge.req
    cdef HdrOp* op
    cdef int i
    for i in range(o.n):
        op = &o.ops[i]
        if op.op == HOP_REMOVE:
            continue
        w_put(w, op.name, op.nlen)
        w_put(w, ": ", 2)
        if op.has_vars:
            w_expand(w, op.value, op.vlen, uc, x, False)
        else:
            w_put(w, op.value, op.vlen)
        w_put(w, "\r\n", 2)


cdef void edge_resp_extra(W* w, RuleRt* r, Exchange* x, bint tls, uint64_t seen) noexcept nogil:
    """The response headers the rules set or add, security headers the
    message does not have, and the sticky cookie."""
    cdef HdrOps* o = &r.serve_edge.resp
    cdef HdrOp* op
    cdef int i
    for i in range(o.n):
        op = &o.ops[i]
        if op.op == HOP_REMOVE or (op.tls_only and not tls):
            continue
        if op.op == HOP_DEFAULT and (seen & ((<uint64_t>1) << i)):
            continue
        w_put(w, op.name, op.nlen)
        w_put(w, ": ", 2)
        w_put(w, op.value, op.vlen)
        w_put(w, "\r\n", 2)
    if x != NULL and x.sticky_set and x.dc != NULL:
        sticky_put_cookie(w, r, x.dc.ds, tls)


# ---- redirect rules ---------------------------------------------------------------

cdef const char* redirect_reason(int st) noexcept nogil:
    if st == 301:
        return "Moved Permanently"
    if st == 302:
        return "Found"
    if st == 303:
        return "See Other"
    if st == 307:
        return "Temporary Redirect"
    return "Permanent Redirect"


cdef void edge_answer(UConn* uc, Exchange* x, Buf* hb, W* w, int status, bint keep) noexcept nogil:
    """Send a complete response of ours built in hb (up to w.p)."""
    if w.overflow:
        buf_put(hb)
        uc_respond(uc, 414 if status < 400 else 500, False)
        return
    x.status = <uint16_t>status
    x.flags |= XF_RESP_STARTED
    if x.sf_fd < 0:
        x.sf_fd = SF_ANSWERED       # ours, without a file: edge_on_drained ends it
    xlog_done(x)
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    out_release(&uc.conn.out)
    uc.conn.out.hptr = bdata(hb)
    uc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    uc.conn.out.hbuf = hb
    uc_move(uc, U_WAIT)
    x.log.bytes_out = 0
    if uc_send(uc) == 0:
        if x.sf_fd >= 0:
            static_pump(uc)         # the file follows its head (static.pxi)
            return
        x_drop(uc)
        uc_on_drained(uc)
    # else: the rest goes out on EPOLLOUT (edge_on_drained goes on)


cdef char g_date[40]                # "Date: ...\r\n" of the current second (RFC 9110 6.6.1)
cdef uint32_t g_date_len = 0
cdef time_t g_date_at = 0


cdef void w_status_line(W* w, int status, const char* reason) noexcept nogil:
    """Status line, Server and Date: rproxy is the origin of these responses."""
    global g_date_len, g_date_at
    cdef time_t now = time(NULL)
    cdef tm t
    if now != g_date_at:
        gmtime_r(&now, &t)
        g_date_len = <uint32_t>strftime(g_date, 40, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &t)
        g_date_at = now
    w_put(w, "HTTP/1.1 ", 9)
    w_uint(w, <uint64_t>status)
    w_put(w, " ", 1)
    w_str(w, reason)
    w_put(w, "\r\nServer: rproxy\r\n", 18)
    w_put(w, g_date, g_date_len)


cdef void w_end_head(W* w, UConn* uc, Exchange* x, bint keep) noexcept nogil:
    if x.rule.serve_edge != NULL:
        edge_resp_extra(w, x.rule, NULL, uc.conn.tls != NULL, 0)
    if not keep or g_stop:
        w_put(w, "Connection: close\r\n", 19)
    elif x.flags & XF_HTTP10:
        w_put(w, "Connection: keep-alive\r\n", 24)
    w_put(w, "\r\n", 2)


cdef void edge_redirect(UConn* uc, Exchange* x) noexcept nogil:
    cdef EdgeRule* e = x.rule.serve_edge
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb = buf_get()
    cdef W w
    cdef const char* reason = redirect_reason(e.redirect_status)
    cdef int blen
    if hb == NULL:
        uc_close(uc)
        return
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_status_line(&w, e.redirect_status, reason)
    if x.rule.match == M_REGEX:
        redirect_groups(uc, x)
    w_put(&w, "Location: ", 10)
    w_expand(&w, e.redirect, e.redirect_len, uc, x, x.rule.match == M_REGEX)
    w_put(&w, "\r\nContent-Type: text/plain\r\nContent-Length: ", 44)
    blen = 5 + <int>strlen(reason)
    w_uint(&w, <uint64_t>blen)
    w_put(&w, "\r\n", 2)
    w_end_head(&w, uc, x, keep)
    if not (x.flags & XF_HEAD_REQ):
        w_uint(&w, e.redirect_status)
        w_put(&w, " ", 1)
        w_str(&w, reason)
        w_put(&w, "\n", 1)
    edge_answer(uc, x, hb, &w, e.redirect_status, keep)


cdef void redirect_groups(UConn* uc, Exchange* x) noexcept nogil:
    """The uri-rmatch groups of the path, for \\1..\\9 (the regex of a
    redirect rule is compiled with captures: set_edge)."""
    cdef regmatch_t m[10]
    cdef const char* path = bdata(uc.conn.rbuf) + x.url_sp.off + x.path_off
    cdef int i
    m[0].rm_so = 0
    m[0].rm_eo = <regoff_t>x.path_len
    if regexec(x.rule.regex, path, 10, m, REG_STARTEND) != 0:
        for i in range(20):
            x.grp[i] = -1
        return
    for i in range(10):
        x.grp[2 * i] = m[i].rm_so if i <= x.rule.nsub else -1
        x.grp[2 * i + 1] = m[i].rm_eo if i <= x.rule.nsub else -1


cdef int edge_on_head(UConn* uc, Exchange* x) noexcept nogil:
    """Hook in uc_on_head once the rule is known: 0 when the edge answered
    (redirect, static file, or an error of those), 1 to go on forwarding."""
    cdef EdgeRule* e = x.rule.serve_edge
    if e.redirect != NULL:
        edge_redirect(uc, x)
        return 0
    if e.rootfd >= 0:
        return static_serve(uc, x)
    return 1


cdef bint edge_on_drained(UConn* uc) noexcept nogil:
    """Hook in uc_on_drained: a response of ours (static file, redirect) is
    in progress on this connection.  True when it handled the event."""
    cdef Exchange* x = uc.xhead
    if x == NULL or x.dc != NULL:
        return False
    if x.sf_fd >= 0:
        static_pump(uc)
        return True
    if x.sf_fd != SF_ANSWERED:
        return False                # not a response of ours: the usual flow
    x_drop(uc)                  # a redirect, an error or a listing is all out
    uc_on_drained(uc)
    return True


# ---- https-redirect (a vhost's `https-redirect`; was in tls.pxi, which must not call up) ----

cdef void uc_redirect_https(UConn* uc, Exchange* x, VhostRt* v) noexcept nogil:
    """https-redirect: a plain-HTTP request gets 301 to the same host and
    target over https (the port left out when it is 443)."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef const char* url = base + x.url_sp.off
    cdef char host[256]
    cdef uint32_t hlen = 0
    cdef Buf* hb
    cdef W w
    cdef bint keep
    if x.host_sp.len:               # the absolute-form authority, else Host (request_strict)
        hlen = host_normalise(base + x.host_sp.off, x.host_sp.len, host, 256)
    elif strchr(v.name, c'*') == NULL:
        hlen = <uint32_t>strlen(v.name)      # HTTP/1.0 without Host: the vhost's own name
        memcpy(host, v.name, hlen)
    if hlen == 0:
        uc_reject(uc, 400)
        return
    keep = uc_reject_keeps(uc)
    hb = buf_get()
    if hb == NULL:
        uc_close(uc)
        return
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_str(&w, "HTTP/1.1 301 Moved Permanently\r\nServer: rproxy\r\nLocation: https://")
    w_put(&w, host, hlen)
    if v.https_redirect_port != 443:
        w_put(&w, ":", 1)
        w_uint(&w, v.https_redirect_port)
    w_put(&w, url + x.path_off, x.url_sp.len - x.path_off)
    if x.path_len == 0:
        pass                        # "http://h" has no path; "https://h" + "" is still valid
    w_str(&w, "\r\nContent-Length: 0\r\n")
    if not keep or g_stop:
        w_str(&w, "Connection: close\r\n")
    w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(hb)
        uc_respond(uc, 414, False)
        return
    uc_answer(uc, bdata(hb), <uint32_t>(w.p - bdata(hb)), hb, keep)


# ---- sticky sessions -----------------------------------------------------------------

cdef void sticky_put_cookie(W* w, RuleRt* r, DownstreamRt* d, bint tls) noexcept nogil:
    cdef EdgeRule* e = r.serve_edge
    cdef int i
    for i in range(r.nds):
        if r.dss[i] == d:
            w_put(w, "Set-Cookie: ", 12)
            w_put(w, e.cookie, e.cookie_len)
            w_put(w, "=", 1)
            w_put(w, e.tokens[i], e.token_len)
            w_str(w, "; Path=/; HttpOnly; SameSite=Lax; Secure\r\n" if tls else "; Path=/; HttpOnly; SameSite=Lax\r\n")
            return


cdef int sticky_from_cookie(UConn* uc, Exchange* x) noexcept nogil:
    """The index (in rule.dss) the request's sticky cookie names, -1 if
    none or not a valid token (a tampered cookie names nothing)."""
    cdef EdgeRule* e = x.rule.serve_edge
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef const char* v
    cdef uint32_t n, i, s, ve
    cdef int h, k
    for h in range(x.nreq):
        if x.req[h].name.len != 6 or strncasecmp(base + x.req[h].name.off, "cookie", 6) != 0:
            continue
        v = base + x.req[h].value.off
        n = x.req[h].value.len
        i = 0
        while i < n:
            while i < n and (v[i] == c' ' or v[i] == c';' or v[i] == c'\t'):
                i += 1
            s = i
            while i < n and v[i] != c';':
                i += 1
            ve = i
            while ve > s and (v[ve - 1] == c' ' or v[ve - 1] == c'\t'):
                ve -= 1
            if ve - s == e.cookie_len + 1 + e.token_len and memcmp(v + s, e.cookie, e.cookie_len) == 0 \
                    and v[s + e.cookie_len] == c'=':
                for k in range(x.rule.nds):
                    if memcmp(v + s + e.cookie_len + 1, e.tokens[k], e.token_len) == 0:
                        return k
    return -1


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef int sticky_ip_pick(UConn* uc, RuleRt* r) noexcept nogil:
    """Rendezvous hashing of the client address over the rule's downstreams
    that are up (enabled, not down, not ejected): a client keeps its
    downstream while it is up; only its clients move when one goes."""
    cdef uint64_t a = 1469598103934665603ULL, score, best_score = 0
    cdef int i, best = -1
    cdef DownstreamRt* d
    cdef int alen = 4 if uc.conn.peer.family == AF_INET else 16
    for i in range(alen):
        a = (a ^ uc.conn.peer.addr[i]) * 1099511628211ULL
    for i in range(r.nds):
        d = r.dss[i]
        if not sticky_alive(d):
            continue
        score = mix64(a ^ mix64(<uint64_t>(d.index + 1)))
        if best < 0 or score > best_score:
            best = i
            best_score = score
    return best


cdef bint sticky_alive(DownstreamRt* d) noexcept nogil:
    return d.enabled and not d.hc_down and (d.n_up > 0 or not d.down_logged) and d.eject_until <= g_now


cdef DConn* sticky_pick(Exchange* x, int* wait) noexcept nogil:
    """The connection for a sticky rule (asked by balance.pxi's lb_pick_for):
    the chosen downstream's, when it is up (NULL with *wait = 1: wait for one
    of its connections).  *wait = 0: no sticky choice, the caller balances
    (and the cookie is set on the response)."""
    cdef RuleRt* r = x.rule
    cdef int k
    cdef DConn* dc
    wait[0] = 0
    if r.serve_edge.sticky == STICKY_COOKIE:
        k = sticky_from_cookie(x.uc, x)
    else:
        k = sticky_ip_pick(x.uc, r)
    if k < 0 or not sticky_alive(r.dss[k]) or r.dss[k].n_up == 0:
        # none named, or it is down (or has no connection up right now): balance
        if r.serve_edge.sticky == STICKY_COOKIE:
            x.sticky_set = 1
        return NULL
    x.sticky_set = 0
    while r.dss[k].n_idle > 0:
        dc = idle_pop(r.dss[k])
        if dc_alive(dc):
            return dc
        dc_recycle(dc)
    wait[0] = 1
    return NULL

