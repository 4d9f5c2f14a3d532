# HTTP/1.1 glue: llhttp callbacks (cdef, recording spans into the read
# buffer), header classification, and the re-emission of request and response
# heads with the minimum of edits.
#
# Both parsers pause (return HPE_PAUSED) at the end of a head and at the end
# of a message, so llhttp_get_error_pos() tells exactly where the head ends and
# where the message ends; bytes between are body framing and are forwarded
# verbatim (chunk sizes, extensions and trailers included).

# ---- header names ----------------------------------------------------------

cdef int header_id(const char* p, uint32_t n) noexcept nogil:
    if n == 0:
        return H_OTHER
    cdef char c = p[0] | 0x20
    if n == 2:
        if c == c't' and (p[1] | 0x20) == c'e':
            return H_TE
    elif n == 3:
        if c == c'v' and strncasecmp(p, "via", 3) == 0:
            return H_VIA
    elif n == 4:
        if c == c'h' and strncasecmp(p, "host", 4) == 0:
            return H_HOST
    elif n == 6:
        if c == c'e' and strncasecmp(p, "expect", 6) == 0:
            return H_EXPECT
    elif n == 7:
        if c == c'u' and strncasecmp(p, "upgrade", 7) == 0:
            return H_UPGRADE
        if c == c't' and strncasecmp(p, "trailer", 7) == 0:
            return H_TRAILER
    elif n == 9:
        if c == c'x' and strncasecmp(p, "x-real-ip", 9) == 0:
            return H_X_REAL_IP
        if c == c'f' and strncasecmp(p, "forwarded", 9) == 0:
            return H_FORWARDED
    elif n == 10:
        if c == c'c' and strncasecmp(p, "connection", 10) == 0:
            return H_CONNECTION
        if c == c'k' and strncasecmp(p, "keep-alive", 10) == 0:
            return H_KEEP_ALIVE
    elif n == 14:
        if c == c'c' and strncasecmp(p, "content-length", 14) == 0:
            return H_CONTENT_LENGTH
    elif n == 15:
        if c == c'x' and strncasecmp(p, "x-forwarded-for", 15) == 0:
            return H_X_FORWARDED_FOR
    elif n == 16:
        if c == c'p' and strncasecmp(p, "proxy-connection", 16) == 0:
            return H_PROXY_CONNECTION
        if c == c'x' and strncasecmp(p, "x-forwarded-host", 16) == 0:
            return H_X_FORWARDED_HOST
        if c == c'x' and strncasecmp(p, "x-forwarded-port", 16) == 0:
            return H_X_FORWARDED_PORT
    elif n == 17:
        if c == c't' and strncasecmp(p, "transfer-encoding", 17) == 0:
            return H_TRANSFER_ENCODING
        if c == c'x' and strncasecmp(p, "x-forwarded-proto", 17) == 0:
            return H_X_FORWARDED_PROTO
    elif n == 19:
        if c == c'x' and strncasecmp(p, "x-internal-redirect", 19) == 0:
            return H_X_INTERNAL_REDIRECT
    if n > 6 and c == c'x' and strncasecmp(p, "x-ssl-", 6) == 0:
        return H_X_SSL
    return H_OTHER


cdef bint names_has(NameList* l, const char* name, uint32_t n) noexcept nogil:
    cdef int i
    for i in range(l.n):
        if l.lens[i] == n and strncasecmp(l.names[i], name, n) == 0:
            return True
    return False


cdef struct Tokens:
    # names listed in Connection headers: hop-by-hop, never forwarded
    int n
    const char* p[MAX_CONN_TOKENS]
    uint32_t len[MAX_CONN_TOKENS]


cdef inline bint _ows(char c) noexcept nogil:
    return c == c' ' or c == c'\t'


cdef void tokens_add_list(Tokens* t, const char* v, uint32_t n) noexcept nogil:
    """Split a Connection value into tokens; close / keep-alive / upgrade are
    connection options, not header names, but listing them is harmless."""
    cdef uint32_t i = 0, s, e
    while i < n:
        while i < n and (_ows(v[i]) or v[i] == c','):
            i += 1
        s = i
        while i < n and v[i] != c',':
            i += 1
        e = i
        while e > s and _ows(v[e - 1]):
            e -= 1
        if e > s and t.n < MAX_CONN_TOKENS:
            t.p[t.n] = v + s
            t.len[t.n] = e - s
            t.n += 1


cdef inline bint tokens_has(Tokens* t, const char* name, uint32_t n) noexcept nogil:
    cdef int i
    for i in range(t.n):
        if t.len[i] == n and strncasecmp(t.p[i], name, n) == 0:
            return True
    return False


cdef void collect_connection_tokens(Tokens* t, const char* base, Header* hs, int nh) noexcept nogil:
    cdef int i
    t.n = 0
    for i in range(nh):
        if header_id(base + hs[i].name.off, hs[i].name.len) == H_CONNECTION:
            tokens_add_list(t, base + hs[i].value.off, hs[i].value.len)


# ---- request parser callbacks (parser.data = UConn*) -----------------------

cdef int req_on_message_begin(llhttp_t* p) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    if uc.x == NULL:
        uc.x = x_new(uc)
        if uc.x == NULL:
            return -1
    uc.state = U_HEAD
    uc.mstart = uc.rpos
    uc.x.t_start = g_now
    return 0


cdef inline uint32_t _uoff(UConn* uc, const char* at) noexcept nogil:
    return <uint32_t>(at - bdata(uc.rbuf))


cdef int req_on_method(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.x
    if x.method_sp.len == 0:
        x.method_sp.off = _uoff(uc, at)
        uc.mstart = x.method_sp.off
    x.method_sp.len += <uint32_t>n
    return 0


cdef int req_on_url(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.x
    if x.url_sp.len == 0:
        x.url_sp.off = _uoff(uc, at)
    x.url_sp.len += <uint32_t>n
    if x.url_sp.len > uc.srv.max_request_line:
        x.err_status = 414
        return HPE_USER
    return 0


cdef int req_on_header_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.x
    cdef Header* h
    if uc.state != U_HEAD:
        return 0                    # a trailer field: forwarded with the body bytes, never a header
    if x.hstate != HS_FIELD:
        if x.nreq >= uc.srv.max_headers:
            x.err_status = 431
            return HPE_USER
        h = &x.req[x.nreq]
        x.nreq += 1
        h.name.off = _uoff(uc, at)
        h.name.len = <uint32_t>n
        h.value.off = h.name.off
        h.value.len = 0
        x.hstate = HS_FIELD
    else:
        x.req[x.nreq - 1].name.len += <uint32_t>n
    return 0


cdef int req_on_header_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.x
    cdef Header* h
    if uc.state != U_HEAD:
        return 0                    # a trailer value (see req_on_header_field)
    h = &x.req[x.nreq - 1]
    if x.hstate != HS_VALUE:
        h.value.off = _uoff(uc, at)
        h.value.len = <uint32_t>n
        x.hstate = HS_VALUE
    else:
        h.value.len += <uint32_t>n
    return 0


cdef int req_on_headers_complete(llhttp_t* p) noexcept nogil:
    (<UConn*>p.data).flags |= UF_HEAD_DONE
    return HPE_PAUSED


cdef int req_on_message_complete(llhttp_t* p) noexcept nogil:
    (<UConn*>p.data).flags |= UF_MSG_DONE
    return HPE_PAUSED


# ---- response parser callbacks (parser.data = DConn*) ----------------------

cdef inline uint32_t _doff(DConn* dc, const char* at) noexcept nogil:
    return <uint32_t>(at - bdata(dc.rbuf))


cdef int resp_on_message_begin(llhttp_t* p) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    if x == NULL:
        return -1           # bytes from a downstream with no request: never accepted
    x.nresp = 0
    x.hstate = HS_NONE
    x.reason_sp.off = 0
    x.reason_sp.len = 0
    dc.phase = R_HEAD
    return 0


cdef int resp_on_status(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    if x.reason_sp.len == 0:
        x.reason_sp.off = _doff(dc, at)
    x.reason_sp.len += <uint32_t>n
    return 0


cdef int resp_on_header_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    cdef Header* h
    if dc.phase != R_HEAD:
        return 0                    # a trailer field: relayed with the body bytes, never a header
    if x.hstate != HS_FIELD:
        if x.nresp >= HDR_CAP:
            return HPE_USER
        h = &x.resp[x.nresp]
        x.nresp += 1
        h.name.off = _doff(dc, at)
        h.name.len = <uint32_t>n
        h.value.off = h.name.off
        h.value.len = 0
        x.hstate = HS_FIELD
    else:
        x.resp[x.nresp - 1].name.len += <uint32_t>n
    return 0


cdef int resp_on_header_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    cdef Header* h
    if dc.phase != R_HEAD:
        return 0                    # a trailer value (see resp_on_header_field)
    h = &x.resp[x.nresp - 1]
    if x.hstate != HS_VALUE:
        h.value.off = _doff(dc, at)
        h.value.len = <uint32_t>n
        x.hstate = HS_VALUE
    else:
        h.value.len += <uint32_t>n
    return 0


cdef int resp_on_headers_complete(llhttp_t* p) noexcept nogil:
    (<DConn*>p.data).flags |= DF_HEAD_DONE
    return HPE_PAUSED


cdef int resp_on_body(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    # Only used to strip chunk framing for HTTP/1.0 clients: the data is
    # moved down, in place, to the forwardable end.
    cdef DConn* dc = <DConn*>p.data
    if dc.flags & DF_DECHUNK:
        memmove(bdata(dc.rbuf) + dc.fend, at, n)
        dc.fend += <uint32_t>n
    return 0


cdef int resp_on_message_complete(llhttp_t* p) noexcept nogil:
    (<DConn*>p.data).flags |= DF_MSG_DONE
    return HPE_PAUSED


cdef void http_settings_init() noexcept nogil:
    llhttp_settings_init(&g_req_settings)
    g_req_settings.on_message_begin = req_on_message_begin
    g_req_settings.on_method = req_on_method
    g_req_settings.on_url = req_on_url
    g_req_settings.on_header_field = req_on_header_field
    g_req_settings.on_header_value = req_on_header_value
    g_req_settings.on_headers_complete = req_on_headers_complete
    g_req_settings.on_message_complete = req_on_message_complete
    llhttp_settings_init(&g_resp_settings)
    g_resp_settings.on_message_begin = resp_on_message_begin
    g_resp_settings.on_status = resp_on_status
    g_resp_settings.on_header_field = resp_on_header_field
    g_resp_settings.on_header_value = resp_on_header_value
    g_resp_settings.on_headers_complete = resp_on_headers_complete
    g_resp_settings.on_body = resp_on_body
    g_resp_settings.on_message_complete = resp_on_message_complete


# ---- addresses ---------------------------------------------------------------

cdef int peer_format(Peer* p, char* out, int cap) noexcept nogil:
    """The client's address as text (no port), for X-Forwarded-For and logs."""
    if p.family == AF_INET:
        if inet_ntop(AF_INET, p.addr, out, cap) != NULL:
            return <int>strlen(out)
    elif p.family == AF_INET6:
        if inet_ntop(AF_INET6, p.addr, out, cap) != NULL:
            return <int>strlen(out)
    elif p.family == AF_UNIX:
        memcpy(out, b"unix:", 5)
        return 5
    out[0] = c'-'
    return 1


# ---- re-emitting heads -------------------------------------------------------

cdef void w_quoted_host(W* w, const char* v, uint32_t n) noexcept nogil:
    """A Host value as an RFC 7239 quoted-string (it may hold ':port')."""
    cdef uint32_t i
    w_put(w, "\"", 1)
    for i in range(n):
        if v[i] == c'"' or v[i] == c'\\':
            w_put(w, "\\", 1)
        w_put(w, v + i, 1)
    w_put(w, "\"", 1)


cdef void w_replacement(W* w, RuleRt* r, const char* path, Exchange* x) noexcept nogil:
    """replace-path with \\N: group N of the uri-rmatch (empty if it did not take part)."""
    cdef uint32_t i = 0
    cdef int g
    while i < r.replace_len:
        if r.replace[i] == c'\\' and i + 1 < r.replace_len and r.replace[i + 1] >= c'0' \
                and r.replace[i + 1] <= c'9':
            g = r.replace[i + 1] - 48
            if x.grp[2 * g] >= 0:
                w_put(w, path + x.grp[2 * g], <size_t>(x.grp[2 * g + 1] - x.grp[2 * g]))
            i += 2
        else:
            w_put(w, r.replace + i, 1)
            i += 1


cdef void build_request_head(W* w, UConn* uc, Exchange* x, DownstreamRt* ds) noexcept nogil:
    """The head sent to the downstream: the client's request line and
    headers, minus hop-by-hop and proxy-owned headers, plus the rule's
    X-Forwarded-* policy; HTTP/1.1 and origin-form whatever the client used."""
    cdef const char* base = bdata(uc.rbuf)
    cdef const char* url = base + x.url_sp.off
    cdef Tokens toks
    cdef int i, hid, nxff = 0
    cdef int xff_idx[16]
    cdef Header* host = NULL
    cdef uint32_t hp = x.rule.hp
    cdef Header* h
    cdef char ip[64]
    cdef int iplen
    cdef uint32_t qoff
    collect_connection_tokens(&toks, base, x.req, x.nreq)
    w_put(w, base + x.method_sp.off, x.method_sp.len)
    w_put(w, " ", 1)
    if x.cut_so >= 0:
        # the rule rewrites the path: keep what precedes and follows the cut
        w_put(w, url + x.path_off, <uint32_t>x.cut_so)
        if x.rule.replace_refs:
            w_replacement(w, x.rule, url + x.path_off, x)
        else:
            w_put(w, x.rule.replace, x.rule.replace_len)
        w_put(w, url + x.path_off + x.cut_eo, x.path_len - <uint32_t>x.cut_eo)
    else:
        w_put(w, url + x.path_off, x.path_len)
    if x.path_len == 0 and x.cut_so < 0:
        w_put(w, "/", 1)
    qoff = x.path_off + x.path_len
    w_put(w, url + qoff, x.url_sp.len - qoff)       # ?query as sent
    w_put(w, " HTTP/1.1\r\n", 11)
    for i in range(x.nreq):
        h = &x.req[i]
        hid = header_id(base + h.name.off, h.name.len)
        if hid == H_OTHER:
            if (toks.n and tokens_has(&toks, base + h.name.off, h.name.len)) \
                    or (g_owned.n and names_has(&g_owned, base + h.name.off, h.name.len)):
                continue
        elif hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION or hid == H_TE \
                or hid == H_X_SSL:
            continue
        elif hid == H_UPGRADE:
            if not (x.flags & XF_UPGRADE):
                continue
        elif hid == H_X_FORWARDED_FOR:
            if hp & HP_XFF:
                if not (hp & HP_XFF_REPLACE) and nxff < 16:
                    xff_idx[nxff] = i
                    nxff += 1
                continue
        elif hid == H_HOST:
            host = h
        elif hid == H_X_REAL_IP:
            if hp & HP_X_REAL_IP:
                continue
        elif hid == H_X_FORWARDED_PROTO:
            if hp & HP_X_FORWARDED_PROTO:
                continue
        elif hid == H_X_FORWARDED_HOST:
            if hp & HP_X_FORWARDED_HOST:
                continue
        elif hid == H_X_FORWARDED_PORT:
            if hp & HP_X_FORWARDED_PORT:
                continue
        w_put(w, base + h.name.off, h.name.len)
        w_put(w, ": ", 2)
        w_put(w, base + h.value.off, h.value.len)
        w_put(w, "\r\n", 2)
    iplen = peer_format(&uc.peer, ip, 64)
    if hp & HP_XFF:
        # appended: earlier hops first, this client last (RFC 7239 order)
        w_put(w, "X-Forwarded-For: ", 17)
        for i in range(nxff):
            h = &x.req[xff_idx[i]]
            w_put(w, base + h.value.off, h.value.len)
            w_put(w, ", ", 2)
        w_put(w, ip, iplen)
        w_put(w, "\r\n", 2)
    if hp & HP_X_REAL_IP:
        w_put(w, "X-Real-IP: ", 11)
        w_put(w, ip, iplen)
        w_put(w, "\r\n", 2)
    if hp & HP_X_FORWARDED_PROTO:
        w_str(w, "X-Forwarded-Proto: https\r\n" if uc.tls != NULL else "X-Forwarded-Proto: http\r\n")
    if (hp & HP_X_FORWARDED_HOST) and host != NULL:
        w_put(w, "X-Forwarded-Host: ", 18)
        w_put(w, base + host.value.off, host.value.len)
        w_put(w, "\r\n", 2)
    if hp & HP_X_FORWARDED_PORT:
        w_put(w, "X-Forwarded-Port: ", 18)
        w_uint(w, uc.srv.port)
        w_put(w, "\r\n", 2)
    if hp & HP_FORWARDED:
        # a new element after any the client sent (RFC 7239 section 4)
        w_put(w, "Forwarded: for=", 15)
        if uc.peer.family == AF_INET6:
            w_put(w, "\"[", 2)
            w_put(w, ip, iplen)
            w_put(w, "]\"", 2)
        elif uc.peer.family == AF_INET:
            w_put(w, ip, iplen)
        else:
            w_put(w, "unknown", 7)
        w_str(w, ";proto=https" if uc.tls != NULL else ";proto=http")
        if host != NULL:
            w_put(w, ";host=", 6)
            w_quoted_host(w, base + host.value.off, host.value.len)
        w_put(w, "\r\n", 2)
    if hp & HP_VIA:
        w_str(w, "Via: 1.0 rproxy\r\n" if x.flags & XF_HTTP10 else "Via: 1.1 rproxy\r\n")
    if x.rule.xssl and uc.tls != NULL:
        tls_put_headers(w, uc.tls, x.rule.xssl)
    if host == NULL:
        # HTTP/1.0 clients may omit Host; the downstream speaks HTTP/1.1
        w_put(w, "Host: ", 6)
        w_str(w, ds.label)
        w_put(w, "\r\n", 2)
    if x.flags & XF_UPGRADE:
        w_put(w, "Connection: upgrade\r\n", 21)
    w_put(w, "\r\n", 2)


cdef void build_response_head(W* w, DConn* dc, Exchange* x, bint close_client) noexcept nogil:
    """The head sent to the client: HTTP/1.1, the downstream's status and
    reason, its headers minus hop-by-hop ones and the vhost's strip-headers."""
    cdef const char* base = bdata(dc.rbuf)
    cdef Tokens toks
    cdef int i, hid
    cdef Header* h
    cdef NameList* strip = &x.rule.vhost.strip
    cdef char code[4]
    cdef uint16_t st = x.status
    collect_connection_tokens(&toks, base, x.resp, x.nresp)
    code[0] = <char>(48 + (st // 100) % 10)
    code[1] = <char>(48 + (st // 10) % 10)
    code[2] = <char>(48 + st % 10)
    code[3] = c' '
    w_put(w, "HTTP/1.1 ", 9)
    w_put(w, code, 4)
    if x.flags & XF_REDIRECT_REFUSED:
        w_put(w, "Unauthorized", 12)
    else:
        w_put(w, base + x.reason_sp.off, x.reason_sp.len)
    w_put(w, "\r\n", 2)
    for i in range(x.nresp):
        h = &x.resp[i]
        hid = header_id(base + h.name.off, h.name.len)
        if hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION or hid == H_TE:
            continue
        if hid == H_UPGRADE and st != 101:
            continue
        if hid == H_TRANSFER_ENCODING and (dc.flags & DF_DECHUNK):
            continue
        if hid == H_TRAILER and (dc.flags & DF_DECHUNK):
            continue
        if hid == H_X_INTERNAL_REDIRECT and (x.flags & XF_REDIRECT_REFUSED):
            continue
        if hid == H_OTHER and toks.n and tokens_has(&toks, base + h.name.off, h.name.len):
            continue
        if strip.n and names_has(strip, base + h.name.off, h.name.len):
            continue
        w_put(w, base + h.name.off, h.name.len)
        w_put(w, ": ", 2)
        w_put(w, base + h.value.off, h.value.len)
        w_put(w, "\r\n", 2)
    if st == 101:
        w_put(w, "Connection: upgrade\r\n", 21)
    elif close_client:
        w_put(w, "Connection: close\r\n", 19)
    elif x.flags & XF_HTTP10:
        w_put(w, "Connection: keep-alive\r\n", 24)
    w_put(w, "\r\n", 2)


# ---- responses the proxy writes itself --------------------------------------

cdef struct Canned:
    int status
    char* close_resp
    uint32_t close_len
    char* keep_resp
    uint32_t keep_len

cdef Canned g_canned[16]
cdef int g_ncanned = 0


cdef void canned_add(int status, const char* reason) noexcept nogil:
    global g_ncanned
    cdef Canned* c = &g_canned[g_ncanned]
    cdef char body[128]
    cdef int blen = snprintf(body, 128, "%d %s\n", status, reason)
    c.status = status
    c.close_resp = <char*>malloc(512)
    c.keep_resp = <char*>malloc(512)
    c.close_len = <uint32_t>snprintf(
        c.close_resp, 512,
        "HTTP/1.1 %d %s\r\nServer: rproxy\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        "Connection: close\r\n\r\n%s", status, reason, blen, body)
    c.keep_len = <uint32_t>snprintf(
        c.keep_resp, 512,
        "HTTP/1.1 %d %s\r\nServer: rproxy\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
        status, reason, blen, body)
    g_ncanned += 1


cdef void canned_init() noexcept nogil:
    if g_ncanned:
        return
    canned_add(400, "Bad Request")
    canned_add(404, "Not Found")
    canned_add(405, "Method Not Allowed")
    canned_add(408, "Request Timeout")
    canned_add(413, "Content Too Large")
    canned_add(414, "URI Too Long")
    canned_add(421, "Misdirected Request")
    canned_add(431, "Request Header Fields Too Large")
    canned_add(500, "Internal Server Error")
    canned_add(501, "Not Implemented")
    canned_add(502, "Bad Gateway")
    canned_add(503, "Service Unavailable")
    canned_add(504, "Gateway Timeout")
    canned_add(505, "HTTP Version Not Supported")


cdef Canned* canned_get(int status) noexcept nogil:
    cdef int i
    for i in range(g_ncanned):
        if g_canned[i].status == status:
            return &g_canned[i]
    return &g_canned[8]     # 500
