# Automatic HTTPS in the loop (rproxy/acme/ does the protocol elsewhere):
#   - certificate swaps: a vhost's (or listener's) SSL_CTX replaced between
#     events; handshakes already running keep the context they hold (every
#     SSL holds a reference to its own);
#   - HTTP-01: GET /.well-known/acme-challenge/TOKEN on a plain listener is
#     answered from a small table before routing (and before https-redirect);
#   - TLS-ALPN-01 (RFC 8737): a handshake whose ALPN offers acme-tls/1 for a
#     name with a pending challenge gets the challenge certificate.
# The tables are filled by control records (control.pxi) that the worker's
# state-dir watcher thread (rproxy/acme/watch.py) writes; an empty table
# costs one branch per request head and per ALPN callback.

cdef enum:
    ACME_SLOTS = 32
    ACME_KEYAUTH_MAX = 128
    ACME_NAME_MAX = 112

cdef struct AcmeHttp:
    char keyauth[ACME_KEYAUTH_MAX]  # TOKEN.THUMBPRINT: the body of the answer
    uint32_t len
    uint32_t toklen

cdef struct AcmeTls:
    char name[ACME_NAME_MAX]        # lower-case server name
    uint32_t len
    void* ctx                       # SSL_CTX* with the challenge certificate

cdef AcmeHttp g_acme_http[ACME_SLOTS]
cdef int g_acme_nhttp = 0
cdef AcmeTls g_acme_tls[ACME_SLOTS]
cdef int g_acme_ntls = 0
cdef int64_t c_acme_http_answers = 0
cdef int64_t c_acme_tls_answers = 0

cdef const char* c_acme_prefix = "/.well-known/acme-challenge/"


cdef void acme_http_set(bint add, const uint8_t* data, uint32_t n) noexcept nogil:
    """Add (or remove) one key authorization: the token is the part before the dot."""
    global g_acme_nhttp
    cdef uint32_t tok = 0
    cdef int i
    if n == 0 or n > ACME_KEYAUTH_MAX:
        return
    while tok < n and data[tok] != c'.':
        tok += 1
    for i in range(g_acme_nhttp):
        if g_acme_http[i].toklen == tok and memcmp(g_acme_http[i].keyauth, data, tok) == 0:
            if add:
                memcpy(g_acme_http[i].keyauth, data, n)
                g_acme_http[i].len = n
            else:
                g_acme_nhttp -= 1
                g_acme_http[i] = g_acme_http[g_acme_nhttp]
            return
    if add and g_acme_nhttp < ACME_SLOTS:
        memcpy(g_acme_http[g_acme_nhttp].keyauth, data, n)
        g_acme_http[g_acme_nhttp].len = n
        g_acme_http[g_acme_nhttp].toklen = tok
        g_acme_nhttp += 1


cdef void acme_tls_set(bint add, const uint8_t* data, uint32_t n) noexcept nogil:
    """Add (or remove) a challenge context: data = [SSL_CTX*][name]."""
    global g_acme_ntls
    cdef void* ctx
    cdef uint32_t nl
    cdef int i
    if n < sizeof(void*) or n - sizeof(void*) >= ACME_NAME_MAX:
        return
    memcpy(&ctx, data, sizeof(void*))
    nl = n - <uint32_t>sizeof(void*)
    for i in range(g_acme_ntls):
        if g_acme_tls[i].len == nl and memcmp(g_acme_tls[i].name, data + sizeof(void*), nl) == 0:
            if add:
                g_acme_tls[i].ctx = ctx
            else:
                g_acme_ntls -= 1
                g_acme_tls[i] = g_acme_tls[g_acme_ntls]
            return
    if add and g_acme_ntls < ACME_SLOTS:
        memcpy(g_acme_tls[g_acme_ntls].name, data + sizeof(void*), nl)
        g_acme_tls[g_acme_ntls].len = nl
        g_acme_tls[g_acme_ntls].ctx = ctx
        g_acme_ntls += 1


cdef void acme_set_ctx(uint32_t index, void* ctx) noexcept nogil:
    """A renewed certificate: new handshakes of vhost (server << 16 | vhost),
    or of the listener itself (vhost 0xFFFF), use `ctx`."""
    cdef uint32_t si = index >> 16
    cdef uint32_t vi = index & 0xFFFF
    cdef ServerRt* s
    if ctx == NULL or si >= <uint32_t>g_nservers:
        return
    s = &g_servers[si]
    if vi == 0xFFFF:
        s.tls_ctx = ctx
    elif vi < <uint32_t>s.nvhosts:
        s.vhosts[vi].tls_ctx = ctx


cdef bint acme_alpn_offered(const unsigned char* inp, unsigned int inlen) noexcept nogil:
    cdef unsigned int i = 0, n
    while i < inlen:
        n = inp[i]
        if i + 1 + n > inlen:
            return False
        if n == 10 and memcmp(inp + i + 1, b"acme-tls/1", 10) == 0:
            return True
        i += 1 + n
    return False


cdef int acme_alpn(void* ssl, const unsigned char** out, unsigned char* outlen,
                   const unsigned char* inp, unsigned int inlen) noexcept nogil:
    """-1: not an ACME handshake (normal ALPN goes on); else the callback's
    answer: the challenge certificate and acme-tls/1, or a fatal alert
    (RFC 8737: acme-tls/1 is never answered with a normal certificate)."""
    global c_acme_tls_answers
    cdef const char* name
    cdef char low[256]
    cdef uint32_t n
    cdef int i
    cdef unsigned int k = 0
    if not acme_alpn_offered(inp, inlen):
        return -1
    name = p_SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)
    if name == NULL or g_acme_ntls == 0:
        return SSL_TLSEXT_ERR_ALERT_FATAL
    n = host_normalise(name, <uint32_t>strlen(name), low, 255)
    for i in range(g_acme_ntls):
        if g_acme_tls[i].len == n and memcmp(g_acme_tls[i].name, low, n) == 0:
            p_SSL_set_SSL_CTX(ssl, g_acme_tls[i].ctx)
            while k < inlen:
                if inp[k] == 10 and memcmp(inp + k + 1, b"acme-tls/1", 10) == 0:
                    out[0] = inp + k + 1
                    outlen[0] = 10
                    break
                k += 1 + inp[k]
            c_acme_tls_answers += 1
            return SSL_TLSEXT_ERR_OK
    return SSL_TLSEXT_ERR_ALERT_FATAL


cdef bint acme_http_answer(UConn* uc, Exchange* x) noexcept nogil:
    """GET /.well-known/acme-challenge/TOKEN with a pending token: answered
    here (200, the key authorization).  False: not ours, routing goes on."""
    global c_acme_http_answers
    cdef const char* url = bdata(uc.conn.rbuf) + x.url_sp.off
    cdef uint32_t plen = 28         # strlen(c_acme_prefix)
    cdef uint32_t tlen
    cdef AcmeHttp* e = NULL
    cdef int i
    cdef Buf* hb
    cdef W w
    cdef bint keep
    if uc.conn.parser.method != 1 or x.url_sp.len <= plen or memcmp(url, c_acme_prefix, plen) != 0:
        return False                # 1 = HTTP_GET
    tlen = x.url_sp.len - plen
    for i in range(g_acme_nhttp):
        if g_acme_http[i].toklen == tlen and memcmp(g_acme_http[i].keyauth, url + plen, tlen) == 0:
            e = &g_acme_http[i]
            break
    if e == NULL:
        return False
    keep = uc_reject_keeps(uc)
    hb = buf_get()
    if hb == NULL:
        uc_close(uc)
        return True
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_str(&w, "HTTP/1.1 200 OK\r\nServer: rproxy\r\nContent-Type: application/octet-stream\r\n"
              "Content-Length: ")
    w_uint(&w, e.len)
    w_put(&w, "\r\n", 2)
    if not keep or g_stop:
        w_str(&w, "Connection: close\r\n")
    w_put(&w, "\r\n", 2)
    w_put(&w, e.keyauth, e.len)
    c_acme_http_answers += 1
    uc_answer(uc, bdata(hb), <uint32_t>(w.p - bdata(hb)), hb, keep)
    return True


# ---- the Python-facing edge -------------------------------------------------------------

def acme_ctx_record(int server, int vhost, uintptr_t ctx):
    """A CTL_TLS_CTX control record: vhost (-1: the listener) takes `ctx`."""
    cdef ControlRecord rec
    memset(&rec, 0, sizeof(rec))
    rec.type = CTL_TLS_CTX
    rec.index = (<uint32_t>server << 16) | (<uint32_t>vhost & 0xFFFF)
    memcpy(rec.addr, &ctx, sizeof(uintptr_t))
    return (<char*>&rec)[:sizeof(rec)]


def acme_http_record(bint add, bytes keyauth):
    """A CTL_ACME_HTTP record: answer (or stop answering) TOKEN.THUMBPRINT."""
    cdef ControlRecord rec
    if len(keyauth) > ACME_KEYAUTH_MAX:
        raise ValueError("key authorization too long")
    memset(&rec, 0, sizeof(rec))
    rec.type = CTL_ACME_HTTP
    rec.index = 1 if add else 0
    rec.addrlen = len(keyauth)
    memcpy(rec.addr, <const char*>keyauth, len(keyauth))
    return (<char*>&rec)[:sizeof(rec)]


def acme_tls_record(bint add, bytes name, uintptr_t ctx):
    """A CTL_ACME_TLS record: the TLS-ALPN-01 challenge context of `name`."""
    cdef ControlRecord rec
    if len(name) >= ACME_NAME_MAX or len(name) + sizeof(void*) > 128:
        raise ValueError("name too long")
    memset(&rec, 0, sizeof(rec))
    rec.type = CTL_ACME_TLS
    rec.index = 1 if add else 0
    rec.addrlen = <uint32_t>(sizeof(void*) + len(name))
    memcpy(rec.addr, &ctx, sizeof(void*))
    memcpy(rec.addr + sizeof(void*), <const char*>name, len(name))
    return (<char*>&rec)[:sizeof(rec)]


def acme_stats():
    return {"acme_http_answers": c_acme_http_answers, "acme_tls_answers": c_acme_tls_answers,
            "acme_http_pending": g_acme_nhttp, "acme_tls_pending": g_acme_ntls}
