# PROXY protocol v1 and v2 in (HAProxy's spec), on listeners with
# `proxy-protocol = true` (issue 19).
#
# Only sources in `proxy-protocol-from` may send it: a connection from any
# other address is closed at accept with a log line (it could otherwise
# claim any client address).  The header comes before anything else, TLS
# included.  It is read with MSG_PEEK until complete, then exactly its bytes
# are consumed, so what follows (a TLS ClientHello, a request) stays in the
# socket for the usual path.  A header split across reads waits for more
# (edge-triggered epoll signals each arrival); one that is malformed or too
# long is closed, never parsed as HTTP.  The client address it carries
# replaces the connection's peer: X-Forwarded-For, {SRC}, access rules and
# rate limit keys all read that.  LOCAL (v2) and UNKNOWN (v1) keep the real
# peer, as the spec says.
#
# Hooks: listener_on_event (pp_accept, after uc_new), uc_on_event (pp_read,
# first thing while the header is awaited).
#
# PROXY protocol out (`proxy-protocol = v1|v2` on a downstream): the first
# bytes of each of its connections, before TLS, name the one client that
# connection belongs to (connections are private: pool.pxi).  Source: the
# client's address as rproxy sees it (the PROXY-in one when trusted);
# destination: the one a PROXY header in named, else the listener address
# the client reached.  A client with no IP address (a unix: listener) is
# sent as UNKNOWN (v1) / UNSPEC (v2).  Health checks send v1 UNKNOWN /
# v2 LOCAL (HAProxy's check-send-proxy): no client, the real addresses.

cdef struct PPServer:
    int nfrom
    AccessRt* nets              # proxy-protocol-from, as access entries (allow = 1)

cdef struct PPClient:
    # What PROXY protocol keeps of one client connection (UConn.pp), behind
    # one pointer allocated only when a connection needs it (pp_client: a
    # PROXY header in named a destination, or a private downstream
    # connection is opened for it) and freed when it closes (pp_release), so
    # that an idle keep-alive connection of any other kind pays 8 bytes.
    DConn* pdc                  # its private downstream connections (pool.pxi), linked by DConn.onext
    Peer dst                    # the destination a PROXY header in named (family 0: none)

cdef const char* PP_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
cdef enum:
    PP_MAX = 536                # the spec's largest header worth buffering (v2 with TLVs)


cdef PPClient* pp_client(UConn* uc) noexcept nogil:
    """The connection's PROXY protocol state, allocated on first use; NULL
    when out of memory."""
    if uc.pp == NULL:
        uc.pp = <PPClient*>calloc(1, sizeof(PPClient))
    return uc.pp


cdef int pp_set_dst(UConn* uc, int fam, const uint8_t* addr, uint16_t port) noexcept nogil:
    """Keep the destination a PROXY header in named, for a PROXY header out:
    0, or -1 when out of memory."""
    cdef PPClient* p = pp_client(uc)
    if p == NULL:
        return -1
    memset(p.dst.addr, 0, 16)
    memcpy(p.dst.addr, addr, 4 if fam == AF_INET else 16)
    p.dst.family = <uint8_t>fam
    p.dst.port = port
    return 0


cdef int pp_accept(UConn* uc) noexcept nogil:
    """A connection on a PROXY-protocol listener: 0 to wait for its header,
    -1 to close it (not a trusted source)."""
    cdef PPServer* pp = <PPServer*>uc.srv.pp
    cdef const uint8_t* a
    cdef int fam = 0, i, n
    cdef char where[48]
    if uc.conn.peer.family == AF_INET or uc.conn.peer.family == AF_INET6:
        a = edge_addr(&uc.conn.peer, &fam)
        for i in range(pp.nfrom):
            if edge_net_match(&pp.nets[i], a, fam):
                uc.conn.flags |= UF_PP_WAIT
                return 0
    n = peer_format(&uc.conn.peer, where, 48)
    rp_elog(uc_errfd(uc), 4, "client %.*s: not in proxy-protocol-from: connection closed", n, where)
    return -1


cdef int pp_v1_addr(const char* tok, uint32_t n, int fam, uint8_t* out) noexcept nogil:
    cdef char s[48]
    if n == 0 or n >= 48:
        return -1
    memcpy(s, tok, n)
    s[n] = 0
    return 0 if inet_pton(fam, s, out) == 1 else -1


cdef int pp_v1_port(const char* tok, uint32_t n, uint16_t* out) noexcept nogil:
    cdef uint32_t i, v = 0
    if n == 0 or n > 5 or (tok[0] == c'0' and n > 1):
        return -1
    for i in range(n):
        if tok[i] < c'0' or tok[i] > c'9':
            return -1
        v = v * 10 + <uint32_t>(tok[i] - 48)
    if v > 65535:
        return -1
    out[0] = <uint16_t>v
    return 0


cdef int pp_parse_v1(UConn* uc, const char* b, int n, int* used) noexcept nogil:
    """1: incomplete, 0: parsed (*used bytes), -1: malformed, -2: out of memory."""
    cdef int end = -1, i, nt = 0, fam
    cdef const char* tok[6]
    cdef uint32_t tl[6]
    cdef uint8_t addr[16]
    cdef uint8_t daddr[16]
    cdef uint16_t port = 0, dport = 0
    for i in range(n - 1):
        if b[i] == c'\r' and b[i + 1] == c'\n':
            end = i
            break
    if end < 0:
        return 1 if n < 107 else -1     # 107: the longest v1 line
    if end + 2 > 107:
        return -1
    i = 0
    while i < end and nt < 6:
        tok[nt] = b + i
        while i < end and b[i] != c' ':
            i += 1
        tl[nt] = <uint32_t>(b + i - tok[nt])
        nt += 1
        if i < end:
            i += 1                       # one space between fields
    if i < end or nt < 2 or tl[0] != 5 or memcmp(tok[0], b"PROXY", 5) != 0:
        return -1
    used[0] = end + 2
    if tl[1] == 7 and memcmp(tok[1], b"UNKNOWN", 7) == 0:
        return 0                         # keep the real peer
    if nt != 6 or tl[1] != 4 or (memcmp(tok[1], b"TCP4", 4) != 0 and memcmp(tok[1], b"TCP6", 4) != 0):
        return -1
    fam = AF_INET if tok[1][3] == c'4' else AF_INET6
    if pp_v1_addr(tok[3], tl[3], fam, daddr) != 0 or pp_v1_port(tok[5], tl[5], &dport) != 0:
        return -1
    if pp_v1_addr(tok[2], tl[2], fam, addr) != 0 or pp_v1_port(tok[4], tl[4], &port) != 0:
        return -1
    if pp_set_dst(uc, fam, daddr, dport) != 0:
        return -2                        # the destination: kept for a PROXY header out
    memset(uc.conn.peer.addr, 0, 16)
    memcpy(uc.conn.peer.addr, addr, 4 if fam == AF_INET else 16)
    uc.conn.peer.family = fam
    uc.conn.peer.port = port
    return 0


cdef int pp_parse_v2(UConn* uc, const uint8_t* b, int n, int* used) noexcept nogil:
    """As pp_parse_v1."""
    cdef int total, fam
    if n < 16:
        return 1
    total = 16 + ((<int>b[14] << 8) | b[15])
    if (b[12] >> 4) != 2 or (b[12] & 0x0F) > 1 or total > PP_MAX:
        return -1
    if n < total:
        return 1
    used[0] = total
    if (b[12] & 0x0F) == 0:
        return 0                         # LOCAL: the balancer's own check; keep the real peer
    fam = b[13] >> 4
    if fam == 1 and total >= 16 + 12:                # AF_INET: src, dst, sport, dport
        memset(uc.conn.peer.addr, 0, 16)
        memcpy(uc.conn.peer.addr, b + 16, 4)
        uc.conn.peer.family = AF_INET
        uc.conn.peer.port = <uint16_t>((<int>b[24] << 8) | b[25])
        if pp_set_dst(uc, AF_INET, b + 20, <uint16_t>((<int>b[26] << 8) | b[27])) != 0:
            return -2
    elif fam == 2 and total >= 16 + 36:
        memcpy(uc.conn.peer.addr, b + 16, 16)
        uc.conn.peer.family = AF_INET6
        uc.conn.peer.port = <uint16_t>((<int>b[48] << 8) | b[49])
        if pp_set_dst(uc, AF_INET6, b + 32, <uint16_t>((<int>b[50] << 8) | b[51])) != 0:
            return -2
    elif fam == 1 or fam == 2:
        return -1                        # too short for its family
    return 0                             # UNSPEC / unix: keep the real peer


cdef int pp_read(UConn* uc) noexcept nogil:
    """The PROXY header, if it is all there: 0 done (go on with the event),
    1 wait for more, -1 closed."""
    cdef uint8_t b[PP_MAX]
    cdef ssize_t n
    cdef int rc, used = 0, k
    cdef char where[48]
    cdef const char* why = "malformed PROXY protocol header"
    n = recv(uc.conn.h.fd, b, PP_MAX, MSG_PEEK)
    if n < 0:
        if errno == EAGAIN or errno == EINTR:
            return 1
        uc_close(uc)
        return -1
    if n == 0:
        uc_close(uc)                     # gone before its header
        return -1
    k = 12 if n >= 12 else <int>n
    if memcmp(b, PP_V2_SIG, k) == 0:
        rc = pp_parse_v2(uc, b, <int>n, &used)
    else:
        k = 6 if n >= 6 else <int>n
        if memcmp(b, b"PROXY ", k) == 0:
            rc = pp_parse_v1(uc, <const char*>b, <int>n, &used)
        else:
            rc = -1
            why = "no PROXY protocol header"
    if rc == 1:
        if n >= PP_MAX:
            rc = -1
        else:
            return 1
    if rc == 0 and recv(uc.conn.h.fd, b, <size_t>used, 0) != used:
        rc = -1
    if rc == -2:
        why = "out of memory for its PROXY protocol header"
    if rc < 0:
        k = peer_format(&uc.conn.peer, where, 48)
        rp_elog(uc_errfd(uc), 4, "client %.*s: %s: connection closed", k, where, why)
        uc_close(uc)
        return -1
    uc.conn.flags &= ~UF_PP_WAIT
    return 0


def _pp_set_server(int index, nets):
    """proxy-protocol on server `index`, trusted from nets: [(family 4|6, addr bytes, prefix)]."""
    cdef PPServer* pp = <PPServer*>calloc(1, sizeof(PPServer))
    cdef AccessRt* a
    cdef bytes raw
    if pp == NULL:
        raise MemoryError()
    pp.nets = <AccessRt*>calloc(max(len(nets), 1), sizeof(AccessRt))
    if pp.nets == NULL:
        free(pp)
        raise MemoryError()
    for i, (fam, raw, plen) in enumerate(nets):
        a = &pp.nets[i]
        a.family = AF_INET if fam == 4 else AF_INET6
        memcpy(a.addr, <const char*>raw, min(len(raw), 16))
        a.plen = plen
        a.allow = 1
    pp.nfrom = len(nets)
    g_servers[index].pp = pp


cdef enum:
    PP_OUT_MAX = 128                # v1: 107 at most; v2 IPv6: 52


cdef void pp_mapped(Peer* p) noexcept nogil:
    """An IPv4 address as IPv4-mapped IPv6 (v1 and v2 carry one family)."""
    if p.family == AF_INET:
        memmove(p.addr + 12, p.addr, 4)
        memset(p.addr, 0, 10)
        p.addr[10] = 0xFF
        p.addr[11] = 0xFF
        p.family = AF_INET6


cdef int pp_out_header(int version, UConn* uc, char* out) noexcept nogil:
    """The PROXY header naming client `uc` (NULL: none, as a health check
    sends it) into out (PP_OUT_MAX bytes): its length."""
    cdef Peer src, dst
    cdef uint8_t ss[128]
    cdef socklen_t sl = 128
    cdef char a[64]
    cdef char b[64]
    cdef int n, alen
    memset(&src, 0, sizeof(Peer))
    memset(&dst, 0, sizeof(Peer))
    if uc != NULL and (uc.conn.peer.family == AF_INET or uc.conn.peer.family == AF_INET6):
        src = uc.conn.peer
        if uc.pp != NULL and uc.pp.dst.family != 0:
            dst = uc.pp.dst
        elif getsockname(uc.conn.h.fd, <sockaddr*>ss, &sl) == 0:
            peer_from_sockaddr(&dst, ss)
    if (src.family == AF_INET or src.family == AF_INET6) and (dst.family == AF_INET or dst.family == AF_INET6):
        if src.family != dst.family:
            pp_mapped(&src)
            pp_mapped(&dst)
    else:
        src.family = 0              # nothing to name
    if version == 1:
        if src.family == 0:
            memcpy(out, b"PROXY UNKNOWN\r\n", 15)
            return 15
        if inet_ntop(src.family, src.addr, a, 64) == NULL or inet_ntop(dst.family, dst.addr, b, 64) == NULL:
            memcpy(out, b"PROXY UNKNOWN\r\n", 15)
            return 15
        n = snprintf(out, PP_OUT_MAX, "PROXY %s %s %s %u %u\r\n", "TCP4" if src.family == AF_INET else "TCP6",
                     a, b, <unsigned>src.port, <unsigned>dst.port)
        return n if 0 < n < PP_OUT_MAX else 0
    memcpy(out, PP_V2_SIG, 12)
    if uc == NULL:
        out[12] = <char>0x20        # LOCAL
        out[13] = 0
        out[14] = 0
        out[15] = 0
        return 16
    out[12] = <char>0x21            # PROXY
    if src.family == 0:
        out[13] = 0                 # UNSPEC: the receiver uses the real addresses
        out[14] = 0
        out[15] = 0
        return 16
    alen = 4 if src.family == AF_INET else 16
    out[13] = <char>(0x11 if src.family == AF_INET else 0x21)     # TCP over IPv4 / IPv6
    out[14] = 0
    out[15] = <char>(2 * alen + 4)
    memcpy(out + 16, src.addr, alen)
    memcpy(out + 16 + alen, dst.addr, alen)
    out[16 + 2 * alen] = <char>(src.port >> 8)
    out[17 + 2 * alen] = <char>(src.port & 0xFF)
    out[18 + 2 * alen] = <char>(dst.port >> 8)
    out[19 + 2 * alen] = <char>(dst.port & 0xFF)
    return 20 + 2 * alen


cdef int pp_send(int fd, int version, UConn* uc) noexcept nogil:
    """Write the header on a socket just connected (before TLS).  Its send
    buffer is empty, so the few bytes go whole or the connection is failed:
    0 sent, else an errno."""
    cdef char h[PP_OUT_MAX]
    cdef int n = pp_out_header(version, uc, h)
    cdef ssize_t w
    if n <= 0:
        return EINVAL
    w = send(fd, h, <size_t>n, MSG_NOSIGNAL)
    if w == n:
        return 0
    return errno if w < 0 else EAGAIN
