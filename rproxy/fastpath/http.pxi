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
        if c == c'h' and strncasecmp(p, "http2-settings", 14) == 0:
            return H_HTTP2_SETTINGS
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


# ---- request parser callbacks (parser.data = UConn*; the exchange is its newest, uc.xtail) --

cdef int req_on_message_begin(llhttp_t* p) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.xtail
    if x == NULL:
        x = x_new(uc)
        if x == NULL:
            return -1
        uc_x_push(uc, x)
    uc_move(uc, U_HEAD)
    uc.mstart = uc.conn.rpos
    x.t_start = g_now
    return 0


cdef inline uint32_t conn_off(Conn* c, const char* at) noexcept nogil:
    """Offset of a parser callback's pointer in the connection's read buffer."""
    return <uint32_t>(at - bdata(c.rbuf))


cdef inline void span_grow(Span* sp, Conn* c, const char* at, size_t n) noexcept nogil:
    """A span the parser may hand over in pieces: the first piece sets its start."""
    if sp.len == 0:
        sp.off = conn_off(c, at)
    sp.len += <uint32_t>n


cdef int header_on_field(Conn* c, Exchange* x, Header* hs, uint16_t* nh, uint32_t cap, const char* at,
                         size_t n) noexcept nogil:
    """A header name, or a piece of one: a new slot of hs after a value, else
    the last name grows.  HPE_USER when the head has more than cap headers."""
    cdef Header* h
    if x.hstate != HS_FIELD:
        if nh[0] >= cap:
            return HPE_USER
        h = &hs[nh[0]]
        nh[0] += 1
        h.name.off = conn_off(c, at)
        h.name.len = <uint32_t>n
        h.value.off = h.name.off
        h.value.len = 0
        x.hstate = HS_FIELD
    else:
        hs[nh[0] - 1].name.len += <uint32_t>n
    return 0


cdef void header_on_value(Conn* c, Exchange* x, Header* h, const char* at, size_t n) noexcept nogil:
    """A header value, or a piece of one, of the last header slot h."""
    if x.hstate != HS_VALUE:
        h.value.off = conn_off(c, at)
        h.value.len = <uint32_t>n
        x.hstate = HS_VALUE
    else:
        h.value.len += <uint32_t>n


# Both parsers pause at the end of a head and of a message: parser.data is a
# UConn* or a DConn*, and both start with their Conn.

cdef int conn_on_headers_complete(llhttp_t* p) noexcept nogil:
    (<Conn*>p.data).flags |= CN_HEAD_DONE
    return HPE_PAUSED


cdef int conn_on_message_complete(llhttp_t* p) noexcept nogil:
    (<Conn*>p.data).flags |= CN_MSG_DONE
    return HPE_PAUSED


cdef int req_on_method(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.xtail
    if x.method_sp.len == 0:
        uc.mstart = conn_off(&uc.conn, at)
    span_grow(&x.method_sp, &uc.conn, at, n)
    return 0


cdef int req_on_url(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.xtail
    span_grow(&x.url_sp, &uc.conn, at, n)
    if x.url_sp.len > uc.srv.max_request_line:
        x.err_status = 414
        return HPE_USER
    return 0


cdef int req_on_header_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.xtail
    if uc.conn.state != U_HEAD:
        return 0                    # a trailer field: forwarded with the body bytes, never a header
    if header_on_field(&uc.conn, x, x.req, &x.nreq, uc.srv.max_headers, at, n) != 0:
        x.err_status = 431
        return HPE_USER
    return 0


cdef int req_on_header_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef UConn* uc = <UConn*>p.data
    cdef Exchange* x = uc.xtail
    if uc.conn.state != U_HEAD:
        return 0                    # a trailer value (see req_on_header_field)
    header_on_value(&uc.conn, x, &x.req[x.nreq - 1], at, n)
    return 0


# ---- response parser callbacks (parser.data = DConn*) ----------------------

cdef int resp_on_message_begin(llhttp_t* p) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    if x == NULL:
        return -1           # bytes from a downstream with no request: never accepted
    x.nresp = 0
    x.hstate = HS_NONE
    x.reason_sp.off = 0
    x.reason_sp.len = 0
    dc_move_phase(dc, R_HEAD)
    return 0


cdef int resp_on_status(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    span_grow(&dc.x.reason_sp, &dc.conn, at, n)
    return 0


cdef int resp_on_header_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    if dc.phase != R_HEAD:
        return 0                    # a trailer field: relayed with the body bytes, never a header
    return header_on_field(&dc.conn, x, x.resp, &x.nresp, HDR_CAP, at, n)


cdef int resp_on_header_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef DConn* dc = <DConn*>p.data
    cdef Exchange* x = dc.x
    if dc.phase != R_HEAD:
        return 0                    # a trailer value (see resp_on_header_field)
    header_on_value(&dc.conn, x, &x.resp[x.nresp - 1], at, n)
    return 0


cdef int resp_on_body(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    # Strips chunk framing for HTTP/1.0 clients and the compression stage:
    # the data is moved down, in place, to the forwardable end.  An entry
    # being stored (uncompressed) takes the body here, unframed.
    cdef DConn* dc = <DConn*>p.data
    if dc.x != NULL and dc.x.cwfd >= 0 and dc.x.cz == NULL:
        cache_tee(dc.x, at, <uint32_t>n)    # (cache.pxi)
    if dc.conn.flags & DF_DECHUNK:
        memmove(bdata(dc.conn.rbuf) + dc.fend, at, n)
        dc.fend += <uint32_t>n
    return 0


cdef void http_settings_init() noexcept nogil:
    llhttp_settings_init(&g_req_settings)
    g_req_settings.on_message_begin = req_on_message_begin
    g_req_settings.on_method = req_on_method
    g_req_settings.on_url = req_on_url
    g_req_settings.on_header_field = req_on_header_field
    g_req_settings.on_header_value = req_on_header_value
    g_req_settings.on_headers_complete = conn_on_headers_complete
    g_req_settings.on_message_complete = conn_on_message_complete
    llhttp_settings_init(&g_resp_settings)
    g_resp_settings.on_message_begin = resp_on_message_begin
    g_resp_settings.on_status = resp_on_status
    g_resp_settings.on_header_field = resp_on_header_field
    g_resp_settings.on_header_value = resp_on_header_value
    g_resp_settings.on_headers_complete = conn_on_headers_complete
    g_resp_settings.on_body = resp_on_body
    g_resp_settings.on_message_complete = conn_on_message_complete


# ---- strictness: Host, framing and header names ---------------------------------
#
# What a request (or a response) must look like before a byte of it is
# forwarded, beyond what llhttp's strict mode already refuses.  Every check is
# a walk over bytes with one lookup in g_cc, a 256-entry class table.

from libc.string cimport memchr

cdef enum:
    CC_TCHAR = 0x01         # RFC 9110 token character
    CC_REG = 0x02           # RFC 3986 reg-name: unreserved / sub-delims, except ',' (a list separator)
    CC_HEX = 0x04
    CC_DIGIT = 0x08
    CC_V6 = 0x10            # may appear inside [ ] of an IPv6 literal
    CC_OWS = 0x20           # SP / HTAB

cdef uint8_t g_cc[256]


cdef void _cc_set(const char* chars, uint8_t bit) noexcept nogil:
    cdef const uint8_t* p = <const uint8_t*>chars
    while p[0]:
        g_cc[p[0]] |= bit
        p += 1


cdef void strict_tables_init() noexcept nogil:
    cdef const char* alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    memset(g_cc, 0, 256)
    _cc_set(alnum, CC_TCHAR | CC_REG)
    _cc_set("!#$%&'*+-.^_`|~", CC_TCHAR)
    _cc_set("-._~!$&'()*+;=", CC_REG)
    _cc_set("0123456789abcdefABCDEF", CC_HEX | CC_V6)
    _cc_set("0123456789", CC_DIGIT)
    _cc_set(":.", CC_V6)
    _cc_set(" \t", CC_OWS)


strict_tables_init()        # once, at import: the table is read-only afterwards


cdef inline void ows_trim(const char** v, uint32_t* n) noexcept nogil:
    while n[0] and (g_cc[<uint8_t>v[0][0]] & CC_OWS):
        v[0] += 1
        n[0] -= 1
    while n[0] and (g_cc[<uint8_t>v[0][n[0] - 1]] & CC_OWS):
        n[0] -= 1


cdef bint host_valid(const char* v, uint32_t n) noexcept nogil:
    """RFC 3986 `host [ ":" port ]`: a reg-name (unreserved, sub-delims but
    ',', %XX; an IPv4 address is one), or an IPv6 address in brackets; the
    port all digits, at most 65535.  No userinfo, no path, no blanks, no
    byte above 0x7f; the host part at most 255 bytes and never empty."""
    cdef uint32_t i = 0, digits = 0, port = 0
    cdef char a6[48]
    cdef uint8_t addr[16]
    cdef uint8_t c
    if n == 0:
        return False
    if v[0] == c'[':
        i = 1
        while i < n and (g_cc[<uint8_t>v[i]] & CC_V6):
            i += 1
        if i >= n or v[i] != c']' or i - 1 < 2 or i - 1 > 45:
            return False
        memcpy(a6, v + 1, i - 1)
        a6[i - 1] = 0
        if inet_pton(AF_INET6, a6, addr) != 1:
            return False
        i += 1
    else:
        while i < n:
            c = <uint8_t>v[i]
            if g_cc[c] & CC_REG:
                i += 1
            elif c == c'%' and i + 2 < n and (g_cc[<uint8_t>v[i + 1]] & CC_HEX) \
                    and (g_cc[<uint8_t>v[i + 2]] & CC_HEX):
                i += 3
            else:
                break
        if i == 0:
            return False
    if i > 255:
        return False
    if i == n:
        return True
    if v[i] != c':':
        return False
    i += 1
    while i < n:
        if not (g_cc[<uint8_t>v[i]] & CC_DIGIT) or digits == 5:
            return False
        port = port * 10 + <uint32_t>(v[i] - 48)
        digits += 1
        i += 1
    return port <= 65535


cdef int target_authority(const char* url, uint32_t n, uint32_t* aoff, uint32_t* alen) noexcept nogil:
    """The authority of an absolute-form request target.  0: origin-form or
    `*` (no authority); 1: absolute-form, the authority at url[*aoff, +*alen);
    -1: neither (another scheme, no `//`), refused."""
    cdef uint32_t i, s
    if n == 0 or url[0] == c'/' or (n == 1 and url[0] == c'*'):
        return 0
    if n >= 7 and strncasecmp(url, "http://", 7) == 0:
        i = 7
    elif n >= 8 and strncasecmp(url, "https://", 8) == 0:
        i = 8
    else:
        return -1
    s = i
    while i < n and url[i] != c'/' and url[i] != c'?' and url[i] != c'#':
        i += 1
    aoff[0] = s
    alen[0] = i - s
    return 1


cdef int te_check(const char* v, uint32_t n) noexcept nogil:
    """A Transfer-Encoding value: 0 when it is a list of known codings, each
    a bare token, with `chunked` once and last; 400 when malformed (an empty
    element, a parameter, `identity`, chunked missing, repeated or not last);
    501 when well-formed around a coding rproxy does not know."""
    cdef uint32_t i = 0, s, k
    cdef bint last_chunked = False, unknown = False
    cdef int nchunked = 0
    cdef const char* t
    while True:
        while i < n and (g_cc[<uint8_t>v[i]] & CC_OWS):
            i += 1
        s = i
        while i < n and (g_cc[<uint8_t>v[i]] & CC_TCHAR):
            i += 1
        if i == s:
            return 400                  # empty element, or not a token
        t = v + s
        k = i - s
        while i < n and (g_cc[<uint8_t>v[i]] & CC_OWS):
            i += 1
        if i < n and v[i] != c',':
            return 400                  # a parameter (;) or stray bytes
        last_chunked = False
        if k == 7 and strncasecmp(t, "chunked", 7) == 0:
            nchunked += 1
            last_chunked = True
        elif k == 8 and strncasecmp(t, "identity", 8) == 0:
            return 400                  # not a transfer coding since RFC 7230
        elif not ((k == 4 and strncasecmp(t, "gzip", 4) == 0)
                  or (k == 6 and strncasecmp(t, "x-gzip", 6) == 0)
                  or (k == 7 and strncasecmp(t, "deflate", 7) == 0)
                  or (k == 8 and strncasecmp(t, "compress", 8) == 0)
                  or (k == 10 and strncasecmp(t, "x-compress", 10) == 0)):
            unknown = True
        if i == n:
            break
        i += 1                          # past the ','
    if nchunked != 1 or not last_chunked:
        return 400
    return 501 if unknown else 0


cdef inline bint _is_h2c(const char* t, uint32_t k) noexcept nogil:
    return k == 3 and strncasecmp(t, "h2c", 3) == 0


cdef int upgrade_wanted(const char* v, uint32_t n) noexcept nogil:
    """Protocols an Upgrade value offers other than h2c (HTTP/2 is never
    spoken to a downstream: h2c is removed and the request goes on as HTTP/1.1)."""
    cdef uint32_t i = 0, s, e
    cdef int k = 0
    while i < n:
        while i < n and (v[i] == c',' or (g_cc[<uint8_t>v[i]] & CC_OWS)):
            i += 1
        s = i
        while i < n and v[i] != c',':
            i += 1
        e = i
        while e > s and (g_cc[<uint8_t>v[e - 1]] & CC_OWS):
            e -= 1
        if e > s and not _is_h2c(v + s, e - s):
            k += 1
    return k


cdef void w_upgrade_without_h2c(W* w, const char* v, uint32_t n) noexcept nogil:
    cdef uint32_t i = 0, s, e
    cdef bint first = True
    while i < n:
        while i < n and (v[i] == c',' or (g_cc[<uint8_t>v[i]] & CC_OWS)):
            i += 1
        s = i
        while i < n and v[i] != c',':
            i += 1
        e = i
        while e > s and (g_cc[<uint8_t>v[e - 1]] & CC_OWS):
            e -= 1
        if e > s and not _is_h2c(v + s, e - s):
            if not first:
                w_put(w, ", ", 2)
            w_put(w, v + s, e - s)
            first = False


cdef bint underscore_alias(const char* p, uint32_t n) noexcept nogil:
    """A name with `_` that reads as a header the proxy owns or acts on once
    `_` is taken for `-` (as CGI-style downstreams do: X_SSL_Subject,
    X_Forwarded_For, Transfer_Encoding)."""
    cdef char buf[256]
    cdef uint32_t i
    if n > 256:
        return True                     # no header the proxy knows is that long: refuse to guess
    for i in range(n):
        buf[i] = c'-' if p[i] == c'_' else p[i]
    return header_id(buf, n) != H_OTHER or (g_owned.n and names_has(&g_owned, buf, n))


cdef int request_strict(UConn* uc, Exchange* x) noexcept nogil:
    """Admission checks on a complete request head, before routing: 0, or
    the status to refuse it with (reason in x.why).  Records the effective
    host in x.host_sp: the absolute-form authority (RFC 9112 3.2.2: it
    replaces Host), else the Host value."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef const char* url = base + x.url_sp.off
    cdef Header* h
    cdef Header* host = NULL
    cdef Header* te = NULL
    cdef Header* expect = NULL
    cdef int i, hid, nhost = 0, nte = 0, nexpect = 0, r
    cdef const char* v
    cdef uint32_t n, aoff = 0, alen = 0
    cdef bint reject_us = uc.srv.underscores == US_REJECT
    for i in range(x.nreq):
        h = &x.req[i]
        hid = header_id(base + h.name.off, h.name.len)
        if hid == H_HOST:
            nhost += 1
            host = h
        elif hid == H_TRANSFER_ENCODING:
            nte += 1
            te = h
        elif hid == H_EXPECT:
            nexpect += 1
            expect = h
        if reject_us and memchr(base + h.name.off, c'_', h.name.len) != NULL:
            x.why = "header name with an underscore (underscores-in-headers = reject)"
            return 400
    if nhost > 1:
        x.why = "more than one Host"
        return 400
    if nhost == 0 and not (x.flags & XF_HTTP10):
        x.why = "no Host"               # RFC 9112 3.2: required in HTTP/1.1
        return 400
    if host != NULL:
        v = base + host.value.off
        n = host.value.len
        ows_trim(&v, &n)
        if not host_valid(v, n):
            x.why = "invalid Host"
            return 400
        x.host_sp.off = <uint32_t>(v - base)
        x.host_sp.len = n
    r = target_authority(url, x.url_sp.len, &aoff, &alen)
    if r < 0:
        x.why = "request target is neither a path nor an http(s) absolute URI"
        return 400
    if r > 0:
        if not host_valid(url + aoff, alen):
            x.why = "invalid authority in the request target"
            return 400
        x.host_sp.off = x.url_sp.off + aoff
        x.host_sp.len = alen
    if nte:
        x.flags |= XF_REFUSE_CLOSE      # whatever follows, its body cannot be skipped reliably
        if x.flags & XF_HTTP10:
            x.why = "Transfer-Encoding in an HTTP/1.0 request"
            return 400
        if nte > 1:
            x.why = "more than one Transfer-Encoding"
            return 400
        r = te_check(base + te.value.off, te.value.len)
        if r:
            x.why = "unknown transfer coding" if r == 501 else "malformed Transfer-Encoding"
            return r
        x.flags &= ~XF_REFUSE_CLOSE
    if nexpect:
        v = base + expect.value.off
        n = expect.value.len
        ows_trim(&v, &n)
        if nexpect > 1 or n != 12 or strncasecmp(v, "100-continue", 12) != 0:
            x.why = "unsupported Expect"
            return 417
    return 0


cdef const char* response_strict(DConn* dc, Exchange* x) noexcept nogil:
    """The same framing rules for a downstream's response head: NULL, or
    why it is refused (the client then gets 502)."""
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef Header* te = NULL
    cdef int i, nte = 0, r
    for i in range(x.nresp):
        if header_id(base + x.resp[i].name.off, x.resp[i].name.len) == H_TRANSFER_ENCODING:
            nte += 1
            te = &x.resp[i]
    if nte == 0:
        return NULL
    if dc.conn.parser.http_major == 1 and dc.conn.parser.http_minor == 0:
        return "Transfer-Encoding in an HTTP/1.0 response"
    if nte > 1:
        return "more than one Transfer-Encoding in the response"
    r = te_check(base + te.value.off, te.value.len)
    if r == 501:
        return "unknown transfer coding in the response"
    if r:
        return "malformed Transfer-Encoding in the response"
    return NULL


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


cdef void w_request_line(W* w, const char* base, Exchange* x) noexcept nogil:
    """The request line sent downstream: the client's method, the path as
    the rule rewrites it, the query as sent, HTTP/1.1 (origin-form always)."""
    cdef const char* url = base + x.url_sp.off
    cdef uint32_t qoff
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


cdef bint w_client_headers(W* w, UConn* uc, Exchange* x, int* xff_idx, int* nxff) noexcept nogil:
    """The client's headers that go on, minus hop-by-hop and proxy-owned
    ones; Host is the effective host (x.host_sp: an absolute-form authority
    replaces the client's Host), names with `_` follow underscores-in-headers,
    h2c is taken out of Upgrade.  The client's X-Forwarded-For headers the
    policy appends to are noted in xff_idx (at most 16), not written.  True
    when a Host header was written."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef Tokens toks
    cdef int i, hid
    cdef bint host = False
    cdef uint8_t us = uc.srv.underscores
    cdef uint32_t hp = x.rule.hp
    cdef Header* h
    collect_connection_tokens(&toks, base, x.req, x.nreq)
    for i in range(x.nreq):
        h = &x.req[i]
        if x.rule.serve_edge != NULL and edge_req_skip(x.rule, base + h.name.off, h.name.len):
            continue                # request-headers set / remove (edge.pxi)
        hid = header_id(base + h.name.off, h.name.len)
        if hid == H_OTHER:
            if (toks.n and tokens_has(&toks, base + h.name.off, h.name.len)) \
                    or (g_owned.n and names_has(&g_owned, base + h.name.off, h.name.len)):
                continue
            if memchr(base + h.name.off, c'_', h.name.len) != NULL \
                    and (us != US_ALLOW or underscore_alias(base + h.name.off, h.name.len)):
                continue
        elif hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION or hid == H_TE \
                or hid == H_X_SSL or hid == H_HTTP2_SETTINGS:
            continue
        elif hid == H_UPGRADE:
            if (x.flags & XF_UPGRADE) and upgrade_wanted(base + h.value.off, h.value.len):
                w_put(w, "Upgrade: ", 9)
                w_upgrade_without_h2c(w, base + h.value.off, h.value.len)
                w_put(w, "\r\n", 2)
            continue
        elif hid == H_X_FORWARDED_FOR:
            if hp & HP_XFF:
                if not (hp & HP_XFF_REPLACE) and nxff[0] < 16:
                    xff_idx[nxff[0]] = i
                    nxff[0] += 1
                continue
        elif hid == H_HOST:
            if not host:
                w_put(w, "Host: ", 6)
                if x.host_sp.len:
                    w_put(w, base + x.host_sp.off, x.host_sp.len)
                else:
                    w_put(w, base + h.value.off, h.value.len)
                w_put(w, "\r\n", 2)
            host = True
            continue
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
        elif hid == H_EXPECT:
            if x.flags & XF_SENT_CONTINUE:
                continue            # rproxy answered it and read the body (request buffering)
        w_put(w, base + h.name.off, h.name.len)
        w_put(w, ": ", 2)
        w_put(w, base + h.value.off, h.value.len)
        w_put(w, "\r\n", 2)
    return host


cdef void w_forwarding_headers(W* w, UConn* uc, Exchange* x, const int* xff_idx, int nxff) noexcept nogil:
    """The headers the rule's policy adds (X-Forwarded-*, X-Real-IP,
    Forwarded, Via, X-SSL-*): this client last after the hops it named."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef uint32_t hp = x.rule.hp
    cdef Header* h
    cdef char ip[64]
    cdef int i
    cdef int iplen = peer_format(&uc.conn.peer, ip, 64)
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
        w_str(w, "X-Forwarded-Proto: https\r\n" if uc.conn.tls != NULL else "X-Forwarded-Proto: http\r\n")
    if (hp & HP_X_FORWARDED_HOST) and x.host_sp.len:
        w_put(w, "X-Forwarded-Host: ", 18)
        w_put(w, base + x.host_sp.off, x.host_sp.len)
        w_put(w, "\r\n", 2)
    if hp & HP_X_FORWARDED_PORT:
        w_put(w, "X-Forwarded-Port: ", 18)
        w_uint(w, uc.srv.port)
        w_put(w, "\r\n", 2)
    if hp & HP_FORWARDED:
        # a new element after any the client sent (RFC 7239 section 4)
        w_put(w, "Forwarded: for=", 15)
        if uc.conn.peer.family == AF_INET6:
            w_put(w, "\"[", 2)
            w_put(w, ip, iplen)
            w_put(w, "]\"", 2)
        elif uc.conn.peer.family == AF_INET:
            w_put(w, ip, iplen)
        else:
            w_put(w, "unknown", 7)
        w_str(w, ";proto=https" if uc.conn.tls != NULL else ";proto=http")
        if x.host_sp.len:
            w_put(w, ";host=", 6)
            w_quoted_host(w, base + x.host_sp.off, x.host_sp.len)
        w_put(w, "\r\n", 2)
    if hp & HP_VIA:
        w_str(w, "Via: 1.0 rproxy\r\n" if x.flags & XF_HTTP10 else "Via: 1.1 rproxy\r\n")
    if x.rule.xssl and uc.conn.tls != NULL:
        tls_put_headers(w, uc.conn.tls, x.rule.xssl)


cdef void build_request_head(W* w, UConn* uc, Exchange* x, DownstreamRt* ds) noexcept nogil:
    """The head sent to the downstream: the request line, the client's
    headers that go on, the rule's forwarding headers, then what the
    downstream needs whatever the client sent (Host, Connection: upgrade)
    and the edge rule's additions."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef int xff_idx[16]
    cdef int nxff = 0
    cdef bint host
    w_request_line(w, base, x)
    host = w_client_headers(w, uc, x, xff_idx, &nxff)
    w_forwarding_headers(w, uc, x, xff_idx, nxff)
    if not host:
        # HTTP/1.0 clients may omit Host; the downstream speaks HTTP/1.1
        w_put(w, "Host: ", 6)
        if x.host_sp.len:
            w_put(w, base + x.host_sp.off, x.host_sp.len)     # from an absolute-form target
        else:
            w_str(w, ds.label)
        w_put(w, "\r\n", 2)
    if x.flags & XF_UPGRADE:
        w_put(w, "Connection: upgrade\r\n", 21)
    if x.rule.serve_edge != NULL:
        edge_req_extra(w, uc, x)    # request-headers set / add (edge.pxi)
    if x.cx != NULL:
        cache_req_extra(w, x)       # a stale entry's validators (cache.pxi)
    w_put(w, "\r\n", 2)


cdef void build_response_head(W* w, DConn* dc, Exchange* x, bint close_client) noexcept nogil:
    """The head sent to the client: HTTP/1.1, the downstream's status and
    reason, its headers minus hop-by-hop ones and the vhost's strip-headers."""
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef Tokens toks
    cdef int i, hid
    cdef Header* h
    cdef NameList* strip = &x.rule.vhost.strip
    cdef char code[4]
    cdef uint16_t st = x.status
    cdef uint64_t seen = 0          # security headers the downstream sent itself (edge.pxi)
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
        if hid == H_TRANSFER_ENCODING and (dc.conn.flags & DF_DECHUNK):
            continue
        if hid == H_TRAILER and (dc.conn.flags & DF_DECHUNK):
            continue
        if hid == H_X_INTERNAL_REDIRECT and (x.flags & XF_REDIRECT_REFUSED):
            continue
        if hid == H_OTHER and toks.n and tokens_has(&toks, base + h.name.off, h.name.len):
            continue
        if strip.n and names_has(strip, base + h.name.off, h.name.len):
            continue
        if x.cz_flags and comp_header(w, x, base, h, hid):
            continue
        if x.rule.serve_edge != NULL and edge_resp_skip(x.rule, base + h.name.off, h.name.len, &seen):
            continue                # response-headers set / remove (edge.pxi)
        w_put(w, base + h.name.off, h.name.len)
        w_put(w, ": ", 2)
        w_put(w, base + h.value.off, h.value.len)
        w_put(w, "\r\n", 2)
    if x.cz_flags:
        comp_head_extra(w, x)
    if x.cst:
        cache_head_extra(w, x)
    if x.rule.serve_edge != NULL and st >= 200:
        edge_resp_extra(w, x.rule, x, x.uc.conn.tls != NULL, seen)
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

cdef enum:
    CANNED_CAP = 32

cdef Canned g_canned[CANNED_CAP]
cdef int g_ncanned = 0


cdef void canned_add(int status, const char* reason) noexcept nogil:
    global g_ncanned
    cdef Canned* c
    if g_ncanned >= CANNED_CAP:
        abort()                     # a start-up table: more entries need a larger CANNED_CAP
    c = &g_canned[g_ncanned]
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
    canned_add(417, "Expectation Failed")     # appended: canned_get's fallback is entry 8 (500)
    canned_add(507, "Insufficient Storage")     # a request body's temp file found the disk full


cdef Canned* canned_get(int status) noexcept nogil:
    cdef int i
    for i in range(g_ncanned):
        if g_canned[i].status == status:
            return &g_canned[i]
    return &g_canned[8]     # 500
