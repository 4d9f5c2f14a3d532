# TLS in the loop: client connections (termination, SNI, client
# certificates, X-SSL-* headers) and downstream connections (TLS to the
# backend), driven by OpenSSL from the edge-triggered loop with no Python per
# request.
#
# The OpenSSL objects are pyOpenSSL's: rproxy/tls.py builds the SSL_CTXs
# with pyOpenSSL (in the master, before the fork) and hands their addresses
# here, together with the addresses of the few libssl functions the loop
# calls (from pyOpenSSL's cffi binding: cryptography's bundled OpenSSL,
# whose symbols are not exported, so function pointers are the only way in).
# Each is called through a typed C pointer: one indirect call, no Python.
#
# Every read and write of a client or downstream socket goes through
# conn_recv / conn_flush: the plain syscall when the connection has no TLS
# state (one NULL test), SSL_read / SSL_write otherwise.  OpenSSL's wants
# are mapped onto the loop's edge-triggered readiness flags:
#   - SSL_read can need the socket writable and SSL_write readable (TLS 1.3
#     key updates, tickets): remembered in TF_RD_WANT_W / TF_WR_WANT_R and
#     turned back into the event the caller waits for (tls_translate);
#   - a short SSL_read says nothing about the socket (OpenSSL reads one
#     record at a time and may hold decrypted bytes), so READABLE is only
#     cleared on WANT_READ, never on a short read as for plain sockets.
# splice(2) is never used on a TLS connection (the bytes must be encrypted).

from libc.stdint cimport uintptr_t
from libc.errno cimport EPROTO

# libssl ABI constants (tests/unit/test_tls_binding.py checks them against
# the binding's own values)
cdef enum:
    SSL_ERROR_SSL = 1
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_WANT_WRITE = 3
    SSL_ERROR_SYSCALL = 5
    SSL_ERROR_ZERO_RETURN = 6
    SSL_TLSEXT_ERR_OK = 0
    SSL_TLSEXT_ERR_ALERT_FATAL = 2
    SSL_TLSEXT_ERR_NOACK = 3
    TLSEXT_NAMETYPE_host_name = 0
    X509_V_OK = 0
    X509_V_ERR_UNABLE_TO_GET_CRL = 3
    X509_V_ERR_CERT_CHAIN_TOO_LONG = 22

cdef enum:
    # Tls.flags
    TF_HANDSHAKE = 0x01     # handshake in progress: no HTTP yet
    TF_RD_WANT_W = 0x02     # the last SSL_read needs the socket writable
    TF_WR_WANT_R = 0x04     # the last SSL_write needs the socket readable
    TF_WPEND = 0x08         # a record is half-written inside OpenSSL: the pending output must not change
    TF_FATAL = 0x10         # a TLS error happened: no close_notify (OpenSSL forbids SSL_shutdown then)
    TF_SHUT = 0x20          # close_notify sent
    TF_RESUMED = 0x40       # the handshake resumed a session
    TF_ALPN_H2 = 0x80       # ALPN chose h2: HTTP/2 after the handshake (h2.pxi)

cdef enum:
    # bits of RuleRt.xssl: which X-SSL-* headers a rule sends (bits 8.. are
    # x509-extension slots, numbered per worker)
    XSSL_SUBJECT = 0
    XSSL_ISSUER = 1
    XSSL_NOTBEFORE = 2
    XSSL_NOTAFTER = 3
    XSSL_SERIAL = 4
    XSSL_SHA1 = 5
    XSSL_CIPHER = 6
    XSSL_CERTIFICATE = 7
    XSSL_FIRST_EXTENSION = 8

cdef enum:
    TLS_SCRATCH = 16384     # one TLS record of plaintext

cdef enum:
    # What a handshake step tells its caller (the TLS layer never calls up
    # into the connection code: upstream.pxi and downstream.pxi act on it).
    # A downstream handshake fails with -errno instead.
    TLS_AGAIN = 0           # in progress: wait for the next event
    TLS_DONE = 1            # complete: go on with the connection
    TLS_FAIL = -1           # failed, logged: close the connection


cdef struct Tls:
    void* ssl
    uint16_t flags
    VhostRt* vhost          # client side: the vhost SNI chose (requests must stay on it)
    const char* cipher      # OpenSSL's static name of the negotiated cipher
    char* hdrs              # client certificate headers: records [bit][len lo][len hi][line]
    uint32_t hdrs_len


# ---- libssl entry points (set once by tls_bind) -----------------------------------

ctypedef void* (*fp_p_p)(void*) noexcept nogil
ctypedef void (*fp_v_p)(void*) noexcept nogil
ctypedef int (*fp_i_p)(void*) noexcept nogil
ctypedef int (*fp_i_pi)(void*, int) noexcept nogil
ctypedef int (*fp_i_pvi)(void*, void*, int) noexcept nogil
ctypedef const char* (*fp_s_p)(void*) noexcept nogil
ctypedef const char* (*fp_s_pi)(void*, int) noexcept nogil
ctypedef void* (*fp_p_pp)(void*, void*) noexcept nogil
ctypedef void (*fp_v_pip)(void*, int, void*) noexcept nogil
ctypedef void (*fp_v_ps)(void*, const char*) noexcept nogil
ctypedef long (*fp_l_p)(void*) noexcept nogil
ctypedef const char* (*fp_s_l)(long) noexcept nogil
ctypedef unsigned long (*fp_ul_v)() noexcept nogil
ctypedef const char* (*fp_s_ul)(unsigned long) noexcept nogil
ctypedef void (*fp_v_v)() noexcept nogil
ctypedef void (*fp_v_pi)(void*, int) noexcept nogil
ctypedef void (*fp_v_pp)(void*, void*) noexcept nogil
ctypedef int (*fp_i_pp)(void*, void*) noexcept nogil

cdef fp_p_p p_SSL_new = NULL
cdef fp_v_p p_SSL_free = NULL
cdef fp_i_pi p_SSL_set_fd = NULL
cdef fp_v_p p_SSL_set_accept_state = NULL
cdef fp_v_p p_SSL_set_connect_state = NULL
cdef fp_i_p p_SSL_do_handshake = NULL
cdef fp_i_pvi p_SSL_read = NULL
cdef fp_i_pvi p_SSL_write = NULL
cdef fp_i_pi p_SSL_get_error = NULL
cdef fp_i_p p_SSL_shutdown = NULL
cdef fp_s_pi p_SSL_get_servername = NULL
cdef fp_p_pp p_SSL_set_SSL_CTX = NULL
cdef fp_v_pip p_SSL_set_verify = NULL
cdef fp_i_p p_SSL_CTX_get_verify_mode = NULL
cdef fp_v_ps p_SSL_set_tlsext_host_name = NULL
cdef fp_i_p p_SSL_session_reused = NULL
cdef fp_p_p p_SSL_get_peer_certificate = NULL
cdef fp_v_p p_X509_free = NULL
cdef fp_p_p p_SSL_get_current_cipher = NULL
cdef fp_s_p p_SSL_CIPHER_get_name = NULL
cdef fp_s_p p_SSL_get_version = NULL
cdef fp_l_p p_SSL_get_verify_result = NULL
cdef fp_s_l p_X509_verify_cert_error_string = NULL
cdef fp_ul_v p_ERR_get_error = NULL
cdef fp_s_ul p_ERR_reason_error_string = NULL
cdef fp_v_v p_ERR_clear_error = NULL
cdef fp_i_p p_X509_STORE_CTX_get_error_depth = NULL
cdef fp_i_p p_X509_STORE_CTX_get_error = NULL
cdef fp_v_pi p_X509_STORE_CTX_set_error = NULL
cdef fp_v_pp p_SSL_CTX_set_cert_store = NULL
cdef fp_i_pp p_SSL_set_session = NULL
cdef fp_p_p p_SSL_get1_session = NULL
cdef fp_v_p p_SSL_SESSION_free = NULL

cdef UConn* g_tls_cur = NULL        # the client connection whose handshake is running (callbacks)
cdef char g_tls_scratch[TLS_SCRATCH]
cdef void** g_tls_slots = NULL      # contexts whose certificate store a CRL reload may replace
cdef int g_tls_nslots = 0

# counters (Worker stats, tests)
cdef int64_t c_tls_handshakes = 0
cdef int64_t c_tls_resumed = 0
cdef int64_t c_tls_failed = 0
cdef int64_t c_tls_out = 0          # Tls states allocated and not yet freed


# ---- per-connection state ------------------------------------------------------------

cdef Tls* tls_new(void* ctx, int fd, bint server) noexcept nogil:
    global c_tls_out
    cdef Tls* t = <Tls*>calloc(1, sizeof(Tls))
    if t == NULL:
        return NULL
    t.ssl = p_SSL_new(ctx)
    if t.ssl == NULL or p_SSL_set_fd(t.ssl, fd) != 1:
        if t.ssl != NULL:
            p_SSL_free(t.ssl)
        p_ERR_clear_error()
        free(t)
        return NULL
    if server:
        p_SSL_set_accept_state(t.ssl)
    else:
        p_SSL_set_connect_state(t.ssl)
    t.flags = TF_HANDSHAKE
    c_tls_out += 1
    return t


cdef void tls_close_notify(Tls* t) noexcept nogil:
    """Send close_notify once, if the session is in a state that allows it.
    Best effort on a non-blocking socket: a full socket just loses it."""
    if t.flags & (TF_HANDSHAKE | TF_FATAL | TF_SHUT):
        return
    t.flags |= TF_SHUT
    p_SSL_shutdown(t.ssl)
    p_ERR_clear_error()


cdef void tls_free(Tls* t) noexcept nogil:
    """Before close(fd): say goodbye, free the SSL (and its buffers)."""
    global c_tls_out
    tls_close_notify(t)
    p_SSL_free(t.ssl)
    if t.hdrs != NULL:
        free(t.hdrs)
    free(t)
    c_tls_out -= 1


cdef int tls_error_text(Tls* t, char* out, int cap) noexcept nogil:
    """Why the last TLS call failed, for a log line; clears OpenSSL's queue
    (the next call on this thread must start with it empty)."""
    cdef unsigned long e = p_ERR_get_error()
    cdef const char* reason = NULL
    cdef long vr = X509_V_OK
    cdef int n
    if e != 0:
        reason = p_ERR_reason_error_string(e)
    if t != NULL:
        vr = p_SSL_get_verify_result(t.ssl)
    if vr != X509_V_OK:
        if reason == NULL:
            reason = "certificate verify failed"
        n = snprintf(out, cap, "%s (certificate: %s)", reason, p_X509_verify_cert_error_string(vr))
    elif reason != NULL:
        n = snprintf(out, cap, "%s", reason)
    elif errno != 0:
        n = snprintf(out, cap, "%s", strerror(errno))
    else:
        n = snprintf(out, cap, "connection closed")
    p_ERR_clear_error()
    return n


# ---- I/O -----------------------------------------------------------------------------

cdef ssize_t tls_recv(Tls* t, char* buf, size_t n) noexcept nogil:
    """recv() semantics: >0 bytes, 0 end of stream, -1 with errno (EAGAIN:
    wait for the event tls_translate will deliver)."""
    global errno
    cdef int r, e
    if n > 0x7fffffff:
        n = 0x7fffffff
    r = p_SSL_read(t.ssl, buf, <int>n)
    if r > 0:
        return r
    e = p_SSL_get_error(t.ssl, r)
    if e == SSL_ERROR_WANT_READ:
        errno = EAGAIN
        return -1
    if e == SSL_ERROR_WANT_WRITE:
        t.flags |= TF_RD_WANT_W
        errno = EAGAIN
        return -1
    if e == SSL_ERROR_ZERO_RETURN:
        return 0                    # close_notify, or an EOF (SSL_OP_IGNORE_UNEXPECTED_EOF)
    t.flags |= TF_FATAL
    p_ERR_clear_error()
    if e != SSL_ERROR_SYSCALL or errno == 0 or errno == EAGAIN:
        errno = EPROTO
    return -1


cdef int tls_flush(Out* o, Tls* t) noexcept nogil:
    """out_flush() for a TLS connection.  A small head and the start of the
    body go out as one record (copied into a scratch buffer, as writev would
    gather them); after a WANT_*, the same bytes are offered again (OpenSSL
    requires it, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them move), which
    holds because nothing changes a connection's pending output before it
    has drained."""
    global errno
    cdef const char* p
    cdef uint32_t len, k
    cdef int r, e
    while o.hlen or o.blen:
        if o.hlen and o.blen and o.hlen < TLS_SCRATCH:
            k = o.blen if o.blen < TLS_SCRATCH - o.hlen else TLS_SCRATCH - o.hlen
            memcpy(g_tls_scratch, o.hptr, o.hlen)
            memcpy(g_tls_scratch + o.hlen, o.bptr, k)
            p = g_tls_scratch
            len = o.hlen + k
        elif o.hlen:
            p = o.hptr
            len = o.hlen
        else:
            p = o.bptr
            len = o.blen
        if len > 0x40000000:
            len = 0x40000000
        r = p_SSL_write(t.ssl, <void*>p, <int>len)
        if r <= 0:
            e = p_SSL_get_error(t.ssl, r)
            if e == SSL_ERROR_WANT_WRITE:
                t.flags |= TF_WPEND
                return 1
            if e == SSL_ERROR_WANT_READ:
                t.flags |= TF_WPEND | TF_WR_WANT_R
                return 1
            t.flags |= TF_FATAL
            p_ERR_clear_error()
            if e != SSL_ERROR_SYSCALL or errno == 0 or errno == EAGAIN:
                errno = EPIPE
            return -1
        t.flags &= ~TF_WPEND
        out_advance(o, <size_t>r)
    return 0


cdef inline ssize_t conn_recv(int fd, Tls* t, char* buf, size_t n) noexcept nogil:
    if t == NULL:
        return recv(fd, buf, n, 0)
    return tls_recv(t, buf, n)


cdef inline int conn_flush(Out* o, int fd, Tls* t) noexcept nogil:
    if t == NULL:
        return out_flush(o, fd)
    return tls_flush(o, t)


cdef inline void conn_shut_wr(int fd, Tls* t) noexcept nogil:
    """Half-close our sending side (a tunnel passing an EOF on)."""
    if t != NULL:
        tls_close_notify(t)
    shutdown(fd, SHUT_WR)


cdef ssize_t conn_peek(int fd, Tls* t) noexcept nogil:
    """Has an idle connection anything to say?  -1/EAGAIN: no; 0: it closed;
    >0: it sent bytes out of turn.  For TLS the records are processed: a
    TLS 1.3 server sends its session tickets after the handshake, and those
    are not an answer to anything (a raw MSG_PEEK would take them for one)."""
    global errno
    cdef char c
    cdef int r, e
    if t == NULL:
        return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT)
    r = p_SSL_read(t.ssl, &c, 1)
    if r > 0:
        return 1
    e = p_SSL_get_error(t.ssl, r)
    if e == SSL_ERROR_WANT_READ or e == SSL_ERROR_WANT_WRITE:
        errno = EAGAIN
        return -1
    if e == SSL_ERROR_ZERO_RETURN:
        return 0
    t.flags |= TF_FATAL
    p_ERR_clear_error()
    errno = ECONNRESET
    return -1


cdef inline uint32_t tls_translate(Tls* t, uint32_t ev) noexcept nogil:
    """Deliver the event an SSL call was waiting for: readiness to write
    wakes a read that needed it, and the other way round."""
    if (t.flags & TF_RD_WANT_W) and (ev & EPOLLOUT):
        t.flags &= ~TF_RD_WANT_W
        ev |= EPOLLIN
    if (t.flags & TF_WR_WANT_R) and (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)):
        t.flags &= ~TF_WR_WANT_R
        ev |= EPOLLOUT
    return ev


cdef int tls_handshake_step(Conn* c) noexcept nogil:
    """Drive a connection's TLS handshake on (client or downstream side).
    1: done (counted); 0: it waits for readiness (the CN_ flag it waits on
    is cleared); <0: it failed, as minus OpenSSL's error code."""
    global c_tls_handshakes, c_tls_resumed
    cdef Tls* t = c.tls
    cdef int r = p_SSL_do_handshake(t.ssl)
    cdef int e
    if r == 1:
        t.flags &= ~TF_HANDSHAKE
        c_tls_handshakes += 1
        if p_SSL_session_reused(t.ssl):
            t.flags |= TF_RESUMED
            c_tls_resumed += 1
        t.cipher = p_SSL_CIPHER_get_name(p_SSL_get_current_cipher(t.ssl))
        return 1
    e = p_SSL_get_error(t.ssl, r)
    if e == SSL_ERROR_WANT_READ:
        c.flags &= ~CN_READABLE
        return 0
    if e == SSL_ERROR_WANT_WRITE:
        c.flags &= ~CN_WRITABLE
        return 0
    return -e


# ---- client side: handshake ------------------------------------------------------------

cdef int tls_uc_start(UConn* uc) noexcept nogil:
    """A connection accepted on a TLS listener: the handshake comes first."""
    uc.conn.tls = tls_new(uc.srv.tls_ctx, uc.conn.h.fd, True)
    return 0 if uc.conn.tls != NULL else -1


cdef int tls_uc_handshake(UConn* uc) noexcept nogil:
    """One step of a client handshake: TLS_AGAIN, TLS_DONE (the request may
    have come with the last flight and OpenSSL may hold it already: the
    caller reads at once) or TLS_FAIL (the caller closes)."""
    global g_tls_cur
    cdef int r
    g_tls_cur = uc                  # the SNI and verify callbacks' connection
    r = tls_handshake_step(&uc.conn)
    g_tls_cur = NULL
    if r == 1:
        m_tls_done(uc.srv, (uc.conn.tls.flags & TF_RESUMED) != 0)
        if uc.srv.tls_hdr_fn != NULL:
            tls_client_cert_headers(uc)
        return TLS_DONE
    if r == 0:
        return TLS_AGAIN
    tls_uc_failed(uc, -r)
    return TLS_FAIL


cdef int tls_log_facts(UConn* uc, const char** proto, const char** cipher) noexcept nogil:
    """{TLS_PROTO} and {TLS_CIPHER} of a client connection (accesslog.pxi):
    OpenSSL's static names, e.g. TLSv1.3 and TLS_AES_256_GCM_SHA384; 0
    before the handshake completed."""
    cdef Tls* t = uc.conn.tls
    if t == NULL or t.ssl == NULL or t.cipher == NULL:
        return 0
    proto[0] = p_SSL_get_version(t.ssl)
    cipher[0] = t.cipher
    return 1


cdef void tls_uc_failed(UConn* uc, int e) noexcept nogil:
    """A failed handshake costs this connection only (the caller closes it).
    Plain HTTP sent to the TLS port gets a plain-text 400 saying so (as
    nginx does)."""
    global c_tls_failed, errno
    cdef char why[256]
    cdef char where[48]
    cdef int n = peer_format(&uc.conn.peer, where, 48)
    cdef int saved = errno
    cdef unsigned long first = p_ERR_get_error() if e == SSL_ERROR_SSL else 0
    cdef const char* reason = p_ERR_reason_error_string(first) if first != 0 else NULL
    uc.conn.tls.flags |= TF_FATAL
    if e == SSL_ERROR_ZERO_RETURN or (e == SSL_ERROR_SYSCALL and first == 0
                                      and (saved == 0 or saved == ECONNRESET or saved == EPIPE)):
        p_ERR_clear_error()
        rp_elog(uc_errfd(uc), 7, "client %.*s closed the connection during the TLS handshake", n, where)
        return
    c_tls_failed += 1
    m_tls_failed(uc.srv)
    if reason != NULL and strcmp(reason, "http request") == 0:
        p_ERR_clear_error()
        rp_elog(uc_errfd(uc), 6, "client %.*s sent plain HTTP to a TLS port", n, where)
        send(uc.conn.h.fd, c_plain_http_resp, strlen(c_plain_http_resp), MSG_NOSIGNAL)
        return
    if reason != NULL:
        snprintf(why, 256, "%s", reason)
        if p_SSL_get_verify_result(uc.conn.tls.ssl) != X509_V_OK:
            snprintf(why, 256, "%s (certificate: %s)", reason,
                     p_X509_verify_cert_error_string(p_SSL_get_verify_result(uc.conn.tls.ssl)))
        p_ERR_clear_error()
    else:
        errno = saved
        tls_error_text(uc.conn.tls, why, 256)
    rp_elog(uc_errfd(uc), 6, "client %.*s: TLS handshake failed: %s", n, where, why)


cdef const char* c_plain_http_resp = (
    "HTTP/1.1 400 Bad Request\r\nServer: rproxy\r\nContent-Type: text/plain\r\n"
    "Content-Length: 45\r\nConnection: close\r\n\r\n"
    "400 Bad Request: this port speaks HTTPS only\n")


# ---- client side: callbacks run inside SSL_do_handshake ----------------------------------

cdef VhostRt* vhost_by_sni(ServerRt* srv, const char* name, uint32_t n) noexcept nogil:
    """The vhost a server name selects: titles and aliases in file order,
    case-insensitive globs; no default (no match = the server's certificate)."""
    cdef int i, j
    cdef VhostRt* v
    for i in range(srv.nvhosts):
        v = &srv.vhosts[i]
        for j in range(v.nglobs):
            if glob_match(v.globs[j], v.glob_lens[j], name, n, True):
                return v
    return NULL


cdef int tls_servername_cb(void* ssl, int* alert, void* arg) noexcept nogil:
    """SNI: pin the connection to the vhost the name selects and, when that
    vhost has its own `ssl`, switch to its context (certificate, CA store)
    and its client-certificate policy."""
    cdef UConn* uc = g_tls_cur
    cdef const char* name
    cdef char low[256]
    cdef uint32_t n
    cdef VhostRt* v
    if uc == NULL or uc.conn.tls == NULL:
        return SSL_TLSEXT_ERR_NOACK
    name = p_SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)
    if name == NULL:
        return SSL_TLSEXT_ERR_NOACK
    n = host_normalise(name, <uint32_t>strlen(name), low, 255)
    v = vhost_by_sni(uc.srv, low, n)
    if v == NULL:
        return SSL_TLSEXT_ERR_NOACK
    uc.conn.tls.vhost = v
    if v.tls_ctx != NULL and v.tls_ctx != uc.srv.tls_ctx:
        p_SSL_set_SSL_CTX(ssl, v.tls_ctx)
        # SSL_set_SSL_CTX swaps certificate and store, not the verify mode
        # the SSL copied from the first context
        p_SSL_set_verify(ssl, p_SSL_CTX_get_verify_mode(v.tls_ctx), <void*>tls_verify_cb)
    return SSL_TLSEXT_ERR_OK


cdef int tls_verify_cb(int ok, void* xctx) noexcept nogil:
    """Client certificate checks beyond OpenSSL's own:
    - verify-depth of the vhost the connection ended up on (OpenSSL's depth
      is the first context's, whatever SNI switched to): N allows N
      intermediate CAs between the certificate and the trusted one;
    - CRLs: the client certificate's issuer must have one (fail closed); a
      CA above it is checked against a CRL when there is one."""
    cdef UConn* uc = g_tls_cur
    cdef int depth = p_X509_STORE_CTX_get_error_depth(xctx)
    cdef int limit
    if not ok:
        if depth > 0 and p_X509_STORE_CTX_get_error(xctx) == X509_V_ERR_UNABLE_TO_GET_CRL:
            return 1
        return 0
    if uc != NULL and uc.conn.tls != NULL:
        if uc.conn.tls.vhost != NULL and uc.conn.tls.vhost.tls_ctx != NULL:
            limit = uc.conn.tls.vhost.tls_verify_depth
        else:
            limit = uc.srv.tls_verify_depth
        if depth > limit + 1:
            p_X509_STORE_CTX_set_error(xctx, X509_V_ERR_CERT_CHAIN_TOO_LONG)
            return 0
    return 1


cdef int tls_alpn_cb(void* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* inp, unsigned int inlen, void* arg) noexcept nogil:
    """ALPN: h2 when offered and the server has http2 on (h2.pxi), else
    http/1.1 (or http/1.0); a client offering none of them gets
    no_application_protocol, as RFC 7301 asks.  ACME's acme-tls/1 first."""
    cdef unsigned int i = 0, n
    cdef int http10 = -1
    cdef int acme = acme_alpn(ssl, out, outlen, inp, inlen)
    cdef UConn* uc = <UConn*>g_tls_cur
    if acme >= 0:
        return acme
    if uc != NULL and uc.srv.http2 and uc.conn.tls != NULL:
        while i < inlen:
            n = inp[i]
            if i + 1 + n > inlen:
                break
            if n == 2 and inp[i + 1] == c'h' and inp[i + 2] == c'2':
                out[0] = inp + i + 1
                outlen[0] = 2
                uc.conn.tls.flags |= TF_ALPN_H2
                return SSL_TLSEXT_ERR_OK
            i += 1 + n
        i = 0
    while i < inlen:
        n = inp[i]
        if i + 1 + n > inlen:
            break
        if n == 8 and memcmp(inp + i + 1, b"http/1.1", 8) == 0:
            out[0] = inp + i + 1
            outlen[0] = 8
            return SSL_TLSEXT_ERR_OK
        if n == 8 and memcmp(inp + i + 1, b"http/1.0", 8) == 0 and http10 < 0:
            http10 = <int>i
        i += 1 + n
    if http10 >= 0:
        out[0] = inp + http10 + 1
        outlen[0] = 8
        return SSL_TLSEXT_ERR_OK
    return SSL_TLSEXT_ERR_ALERT_FATAL


# ---- client side: X-SSL-* headers ---------------------------------------------------------

cdef void tls_client_cert_headers(UConn* uc) noexcept nogil:
    """Once per connection, right after the handshake: if the client sent a
    certificate, the headers the server's rules may ask for are made ready
    (by rproxy.tls, with the GIL: once per handshake, never per request)."""
    cdef void* x = p_SSL_get_peer_certificate(uc.conn.tls.ssl)
    if x == NULL:
        return
    p_X509_free(x)
    with gil:
        tls_run_header_fn(uc)
    p_ERR_clear_error()             # whatever the Python side left on this thread's queue


cdef void tls_run_header_fn(UConn* uc) noexcept:
    cdef bytes block
    cdef Tls* t = uc.conn.tls
    try:
        block = (<object>uc.srv.tls_hdr_fn)(<uintptr_t>t.ssl)
    except BaseException as e:
        msg = repr(e).encode("utf-8", "replace")
        rp_elog(g_errfd, 3, "client certificate headers: %s", <const char*>msg)
        return
    if not block:
        return
    t.hdrs = <char*>malloc(len(block))
    if t.hdrs == NULL:
        return
    memcpy(t.hdrs, <const char*>block, len(block))
    t.hdrs_len = <uint32_t>len(block)


cdef void tls_put_headers(W* w, Tls* t, uint64_t mask) noexcept nogil:
    """Append the X-SSL-* headers `mask` (RuleRt.xssl) asks for."""
    cdef uint32_t i = 0, n
    cdef uint8_t bit
    if (mask & (<uint64_t>1 << XSSL_CIPHER)) and t.cipher != NULL:
        w_put(w, "X-SSL-Cipher: ", 14)
        w_str(w, t.cipher)
        w_put(w, "\r\n", 2)
    while i + 3 <= t.hdrs_len:
        bit = <uint8_t>t.hdrs[i]
        n = <uint32_t><uint8_t>t.hdrs[i + 1] | (<uint32_t><uint8_t>t.hdrs[i + 2] << 8)
        if n > t.hdrs_len - i - 3:
            break                   # a record longer than the block: never read past it
        if bit < 64 and (mask & (<uint64_t>1 << bit)):
            w_put(w, t.hdrs + i + 3, n)
        i += 3 + n


# ---- downstream side -----------------------------------------------------------------------

cdef int tls_dc_start(DConn* dc) noexcept nogil:
    """TCP is up: the TLS handshake comes before the connection joins its
    pool.  As tls_dc_handshake."""
    cdef DownstreamRt* ds = dc.ds
    dc.conn.tls = tls_new(ds.tls_ctx, dc.conn.h.fd, False)
    if dc.conn.tls == NULL:
        return -ENOMEM
    if ds.tls_name[0]:
        p_SSL_set_tlsext_host_name(dc.conn.tls.ssl, ds.tls_name)
    if ds.tls_session != NULL:
        p_SSL_set_session(dc.conn.tls.ssl, ds.tls_session)
    timer_arm(&dc.conn.timer, ds.connect_timeout_ms)
    return tls_dc_handshake(dc)


cdef int tls_dc_handshake(DConn* dc) noexcept nogil:
    """One step of a downstream handshake: TLS_AGAIN, TLS_DONE (the caller
    goes on with dc_connected) or -errno (failed: the caller fails the
    connection)."""
    global c_tls_failed
    cdef Tls* t = dc.conn.tls
    cdef DownstreamRt* ds = dc.ds
    cdef char why[256]
    cdef int r = tls_handshake_step(&dc.conn)
    if r == 1:
        ds.tls_err_logged = 0
        return TLS_DONE
    if r == 0:
        return TLS_AGAIN
    c_tls_failed += 1
    t.flags |= TF_FATAL
    tls_error_text(t, why, 256)
    if not ds.tls_err_logged:
        ds.tls_err_logged = 1       # once per outage: every reconnect would say the same
        rp_elog(ds_errfd(ds), 3, "downstream %s (%s): TLS handshake failed: %s", ds.name, ds.label, why)
    return -EPROTO


cdef void tls_dc_release(DConn* dc) noexcept nogil:
    """Before the socket closes: keep a session to resume the next
    connection to this downstream with, then free the TLS state."""
    cdef DownstreamRt* ds = dc.ds
    cdef void* sess
    cdef Tls* t = dc.conn.tls
    dc.conn.tls = NULL
    if not (t.flags & (TF_HANDSHAKE | TF_FATAL)) and dc.nreq > 0:
        sess = p_SSL_get1_session(t.ssl)
        if sess != NULL:
            if ds.tls_session != NULL:
                p_SSL_SESSION_free(ds.tls_session)
            ds.tls_session = sess
    tls_free(t)


# ---- certificate store swaps (CRL reloads) ---------------------------------------------

cdef void tls_apply_store(uint32_t slot, void* store) noexcept nogil:
    """A CRL reload built a new certificate store (CA + CRLs) in a thread:
    the context takes it between events, and frees the old one.  Handshakes
    verify within one call, so none is half-way through the old store."""
    if slot < <uint32_t>g_tls_nslots and store != NULL:
        p_SSL_CTX_set_cert_store(g_tls_slots[slot], store)


# ---- the Python-facing edge (start-up only) ----------------------------------------------

TLS_FUNCTIONS = (
    "SSL_new", "SSL_free", "SSL_set_fd", "SSL_set_accept_state", "SSL_set_connect_state",
    "SSL_do_handshake", "SSL_read", "SSL_write", "SSL_get_error", "SSL_shutdown", "SSL_get_servername",
    "SSL_set_SSL_CTX", "SSL_set_verify", "SSL_CTX_get_verify_mode", "SSL_set_tlsext_host_name",
    "SSL_session_reused", "SSL_get_peer_certificate", "X509_free", "SSL_get_current_cipher",
    "SSL_CIPHER_get_name", "SSL_get_version", "SSL_get_verify_result", "X509_verify_cert_error_string",
    "ERR_get_error", "ERR_reason_error_string", "ERR_clear_error", "X509_STORE_CTX_get_error_depth",
    "X509_STORE_CTX_get_error", "X509_STORE_CTX_set_error", "SSL_CTX_set_cert_store", "SSL_set_session",
    "SSL_get1_session", "SSL_SESSION_free",
)


def tls_bind(dict fns):
    """The libssl entry points: {name: address} for every TLS_FUNCTIONS name."""
    global p_SSL_new, p_SSL_free, p_SSL_set_fd, p_SSL_set_accept_state, p_SSL_set_connect_state
    global p_SSL_do_handshake, p_SSL_read, p_SSL_write, p_SSL_get_error, p_SSL_shutdown
    global p_SSL_get_servername, p_SSL_set_SSL_CTX, p_SSL_set_verify, p_SSL_CTX_get_verify_mode
    global p_SSL_set_tlsext_host_name, p_SSL_session_reused, p_SSL_get_peer_certificate, p_X509_free
    global p_SSL_get_current_cipher, p_SSL_CIPHER_get_name, p_SSL_get_version, p_SSL_get_verify_result
    global p_X509_verify_cert_error_string, p_ERR_get_error, p_ERR_reason_error_string, p_ERR_clear_error
    global p_X509_STORE_CTX_get_error_depth, p_X509_STORE_CTX_get_error, p_X509_STORE_CTX_set_error
    global p_SSL_CTX_set_cert_store, p_SSL_set_session, p_SSL_get1_session, p_SSL_SESSION_free
    missing = [n for n in TLS_FUNCTIONS if not fns.get(n)]
    if missing:
        raise ValueError(f"libssl functions missing: {', '.join(missing)}")
    p_SSL_new = <fp_p_p><uintptr_t>fns["SSL_new"]
    p_SSL_free = <fp_v_p><uintptr_t>fns["SSL_free"]
    p_SSL_set_fd = <fp_i_pi><uintptr_t>fns["SSL_set_fd"]
    p_SSL_set_accept_state = <fp_v_p><uintptr_t>fns["SSL_set_accept_state"]
    p_SSL_set_connect_state = <fp_v_p><uintptr_t>fns["SSL_set_connect_state"]
    p_SSL_do_handshake = <fp_i_p><uintptr_t>fns["SSL_do_handshake"]
    p_SSL_read = <fp_i_pvi><uintptr_t>fns["SSL_read"]
    p_SSL_write = <fp_i_pvi><uintptr_t>fns["SSL_write"]
    p_SSL_get_error = <fp_i_pi><uintptr_t>fns["SSL_get_error"]
    p_SSL_shutdown = <fp_i_p><uintptr_t>fns["SSL_shutdown"]
    p_SSL_get_servername = <fp_s_pi><uintptr_t>fns["SSL_get_servername"]
    p_SSL_set_SSL_CTX = <fp_p_pp><uintptr_t>fns["SSL_set_SSL_CTX"]
    p_SSL_set_verify = <fp_v_pip><uintptr_t>fns["SSL_set_verify"]
    p_SSL_CTX_get_verify_mode = <fp_i_p><uintptr_t>fns["SSL_CTX_get_verify_mode"]
    p_SSL_set_tlsext_host_name = <fp_v_ps><uintptr_t>fns["SSL_set_tlsext_host_name"]
    p_SSL_session_reused = <fp_i_p><uintptr_t>fns["SSL_session_reused"]
    p_SSL_get_peer_certificate = <fp_p_p><uintptr_t>fns["SSL_get_peer_certificate"]
    p_X509_free = <fp_v_p><uintptr_t>fns["X509_free"]
    p_SSL_get_current_cipher = <fp_p_p><uintptr_t>fns["SSL_get_current_cipher"]
    p_SSL_CIPHER_get_name = <fp_s_p><uintptr_t>fns["SSL_CIPHER_get_name"]
    p_SSL_get_version = <fp_s_p><uintptr_t>fns["SSL_get_version"]
    p_SSL_get_verify_result = <fp_l_p><uintptr_t>fns["SSL_get_verify_result"]
    p_X509_verify_cert_error_string = <fp_s_l><uintptr_t>fns["X509_verify_cert_error_string"]
    p_ERR_get_error = <fp_ul_v><uintptr_t>fns["ERR_get_error"]
    p_ERR_reason_error_string = <fp_s_ul><uintptr_t>fns["ERR_reason_error_string"]
    p_ERR_clear_error = <fp_v_v><uintptr_t>fns["ERR_clear_error"]
    p_X509_STORE_CTX_get_error_depth = <fp_i_p><uintptr_t>fns["X509_STORE_CTX_get_error_depth"]
    p_X509_STORE_CTX_get_error = <fp_i_p><uintptr_t>fns["X509_STORE_CTX_get_error"]
    p_X509_STORE_CTX_set_error = <fp_v_pi><uintptr_t>fns["X509_STORE_CTX_set_error"]
    p_SSL_CTX_set_cert_store = <fp_v_pp><uintptr_t>fns["SSL_CTX_set_cert_store"]
    p_SSL_set_session = <fp_i_pp><uintptr_t>fns["SSL_set_session"]
    p_SSL_get1_session = <fp_p_p><uintptr_t>fns["SSL_get1_session"]
    p_SSL_SESSION_free = <fp_v_p><uintptr_t>fns["SSL_SESSION_free"]


def tls_callbacks():
    """Addresses of the C callbacks rproxy.tls installs on the contexts."""
    return {"servername": <uintptr_t><void*>tls_servername_cb, "verify": <uintptr_t><void*>tls_verify_cb,
            "alpn": <uintptr_t><void*>tls_alpn_cb}


def tls_constants():
    """The libssl constants compiled in here (checked against the binding)."""
    return {"SSL_ERROR_SSL": SSL_ERROR_SSL, "SSL_ERROR_WANT_READ": SSL_ERROR_WANT_READ,
            "SSL_ERROR_WANT_WRITE": SSL_ERROR_WANT_WRITE, "SSL_ERROR_SYSCALL": SSL_ERROR_SYSCALL,
            "SSL_ERROR_ZERO_RETURN": SSL_ERROR_ZERO_RETURN, "SSL_TLSEXT_ERR_OK": SSL_TLSEXT_ERR_OK,
            "SSL_TLSEXT_ERR_ALERT_FATAL": SSL_TLSEXT_ERR_ALERT_FATAL,
            "SSL_TLSEXT_ERR_NOACK": SSL_TLSEXT_ERR_NOACK, "TLSEXT_NAMETYPE_host_name": TLSEXT_NAMETYPE_host_name,
            "X509_V_OK": X509_V_OK, "X509_V_ERR_UNABLE_TO_GET_CRL": X509_V_ERR_UNABLE_TO_GET_CRL,
            "X509_V_ERR_CERT_CHAIN_TOO_LONG": X509_V_ERR_CERT_CHAIN_TOO_LONG}


XSSL_BITS = {"x_ssl_subject": XSSL_SUBJECT, "x_ssl_issuer": XSSL_ISSUER, "x_ssl_notbefore": XSSL_NOTBEFORE,
             "x_ssl_notafter": XSSL_NOTAFTER, "x_ssl_serial": XSSL_SERIAL, "x_ssl_sha1": XSSL_SHA1,
             "x_ssl_cipher": XSSL_CIPHER, "x_ssl_certificate": XSSL_CERTIFICATE}
XSSL_FIRST_EXTENSION_BIT = XSSL_FIRST_EXTENSION


def tls_register_context(uintptr_t ctx):
    """A context whose certificate store CRL reloads may replace: its slot."""
    global g_tls_slots, g_tls_nslots
    cdef void** grown = <void**>realloc(g_tls_slots, (g_tls_nslots + 1) * sizeof(void*))
    if grown == NULL:
        raise MemoryError()
    g_tls_slots = grown
    g_tls_slots[g_tls_nslots] = <void*>ctx
    g_tls_nslots += 1
    return g_tls_nslots - 1


def tls_set_server(int server, uintptr_t ctx, int verify_depth, header_fn=None):
    """A TLS listener: its context (SNI's starting point), the verify-depth
    of its own ssl block, and the callable that turns a client certificate
    into the header block its rules may send (None: no rule sends one)."""
    cdef ServerRt* s = &g_servers[server]
    s.tls_ctx = <void*>ctx
    s.tls = 1
    s.tls_verify_depth = verify_depth
    s.tls_hdr_fn = <void*>header_fn if header_fn is not None else NULL


def tls_set_vhost(int server, int vhost, uintptr_t ctx, int verify_depth):
    """A vhost with its own ssl block: the context SNI switches to."""
    cdef VhostRt* v = &g_servers[server].vhosts[vhost]
    v.tls_ctx = <void*>ctx
    v.tls_verify_depth = verify_depth


def set_https_redirect(int server, int vhost, int port):
    cdef VhostRt* v = &g_servers[server].vhosts[vhost]
    v.https_redirect = 1
    v.https_redirect_port = port


def tls_set_rule(int server, int vhost, int rule, uint64_t xssl_mask):
    """Which X-SSL-* headers (XSSL_BITS, extension slots) a rule sends."""
    g_servers[server].vhosts[vhost].rules[rule].xssl = xssl_mask


def tls_set_downstream(int index, uintptr_t ctx, str server_name=""):
    """TLS toward a downstream: its context, and the name sent as SNI
    ("" for none: an IP address)."""
    cdef DownstreamRt* d = &g_downstreams[index]
    d.tls_ctx = <void*>ctx
    _copy_cstr(d.tls_name, 256, server_name.encode())


def tls_store_record(int slot, uintptr_t store):
    """A CTL_TLS_STORE control record: context `slot` takes `store` (one
    reference, owned by the context from then on)."""
    cdef ControlRecord rec
    memset(&rec, 0, sizeof(rec))
    rec.type = CTL_TLS_STORE
    rec.index = slot
    memcpy(rec.addr, &store, sizeof(uintptr_t))
    return (<char*>&rec)[:sizeof(rec)]


def tls_stats():
    return {"tls_handshakes": c_tls_handshakes, "tls_resumed": c_tls_resumed, "tls_failed": c_tls_failed,
            "tls_states": c_tls_out}
