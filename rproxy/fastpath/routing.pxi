# Routing: listener -> vhost (by normalised Host) -> rule (in file order).

cdef bint glob_match(const char* pat, uint32_t plen, const char* s, uint32_t slen,
                     bint nocase) noexcept nogil:
    """`*` matches any run of characters (including none); nothing else is special."""
    cdef uint32_t pi = 0, si = 0
    cdef int64_t star = -1, mark = 0
    cdef char a, b
    while si < slen:
        if pi < plen and pat[pi] == c'*':
            star = pi
            pi += 1
            mark = si
            continue
        if pi < plen:
            a = pat[pi]
            b = s[si]
            if nocase:
                if a >= c'A' and a <= c'Z':
                    a = a | 0x20
                if b >= c'A' and b <= c'Z':
                    b = b | 0x20
            if a == b:
                pi += 1
                si += 1
                continue
        if star >= 0:
            pi = <uint32_t>(star + 1)
            mark += 1
            si = <uint32_t>mark
            continue
        return False
    while pi < plen and pat[pi] == c'*':
        pi += 1
    return pi == plen


cdef uint32_t host_normalise(const char* v, uint32_t n, char* out, uint32_t cap) noexcept nogil:
    """Lower-case, drop the port and a trailing dot: `Example.COM.:8080` -> `example.com`."""
    cdef uint32_t i, m = 0
    cdef uint32_t end = n
    cdef char c
    if n and v[0] == c'[':                   # [v6]:port
        i = 1
        while i < n and v[i] != c']':
            i += 1
        end = i + 1 if i < n else n
    else:
        i = 0
        while i < n and v[i] != c':':
            i += 1
        end = i
    for i in range(end):
        if m >= cap:
            break
        c = v[i]
        if c >= c'A' and c <= c'Z':
            c = c | 0x20
        out[m] = c
        m += 1
    if m and out[m - 1] == c'.':
        m -= 1
    return m


cdef void path_span(const char* url, uint32_t n, uint32_t* off, uint32_t* plen) noexcept nogil:
    """The path of a request target: no query, no scheme://authority.
    Matching is on the path as sent (no decoding), as in RProxy."""
    cdef uint32_t i = 0, s
    if n and url[0] != c'/' and n > 7:
        # absolute-form: skip "scheme://authority"
        while i + 2 < n and not (url[i] == c':' and url[i + 1] == c'/' and url[i + 2] == c'/'):
            i += 1
        if i + 2 < n:
            i += 3
            while i < n and url[i] != c'/':
                i += 1
        else:
            i = 0
    s = i
    while i < n and url[i] != c'?' and url[i] != c'#':
        i += 1
    off[0] = s
    plen[0] = i - s


cdef bint rule_matches(RuleRt* r, const char* path, uint32_t plen, Exchange* x) noexcept nogil:
    """Does the rule take this path?  When it rewrites the path, record in
    x.cut_so/cut_eo the part that its replacement stands for:
      prefix  -> the prefix;  exact, glob -> the whole path;
      regex   -> the match, or for a 1.x rewrite everything up to the end of
                 the last capture group (RProxy 1.x: dst + what follows it)."""
    cdef regmatch_t m[10]
    cdef int i, last
    cdef bint ok = False
    x.cut_so = -1
    x.cut_eo = -1
    if r.match == M_PREFIX:
        ok = plen >= r.plen and memcmp(path, r.pattern, r.plen) == 0
        if ok and r.replace != NULL:
            x.cut_so = 0
            x.cut_eo = <int32_t>r.plen
        return ok
    if r.match == M_EXACT:
        ok = plen == r.plen and memcmp(path, r.pattern, r.plen) == 0
    elif r.match == M_GLOB:
        ok = glob_match(r.pattern, r.plen, path, plen, False)
    elif r.match == M_REGEX:
        m[0].rm_so = 0
        m[0].rm_eo = <regoff_t>plen
        if r.replace == NULL:
            return regexec(r.regex, path, 1, m, REG_STARTEND) == 0
        if regexec(r.regex, path, 10, m, REG_STARTEND) != 0:
            return False
        if r.rewrite_1x:
            last = 0
            for i in range(1, min(r.nsub, 9) + 1):
                if m[i].rm_so >= 0:
                    last = i
            x.cut_so = 0
            x.cut_eo = m[last].rm_eo
        else:
            x.cut_so = m[0].rm_so
            x.cut_eo = m[0].rm_eo
            if r.replace_refs:
                for i in range(10):
                    x.grp[2 * i] = m[i].rm_so if i <= r.nsub else -1
                    x.grp[2 * i + 1] = m[i].rm_eo if i <= r.nsub else -1
        return True
    if ok and r.replace != NULL:
        x.cut_so = 0
        x.cut_eo = <int32_t>plen
    return ok


cdef VhostRt* vhost_for(ServerRt* srv, const char* host, uint32_t hlen) noexcept nogil:
    cdef int i, j
    cdef VhostRt* v
    cdef VhostRt* fallback = NULL
    for i in range(srv.nvhosts):
        v = &srv.vhosts[i]
        for j in range(v.nglobs):
            if glob_match(v.globs[j], v.glob_lens[j], host, hlen, True):
                return v
        if v.is_default and fallback == NULL:
            fallback = v
    return fallback


cdef RuleRt* route(UConn* uc, Exchange* x, int* status) noexcept nogil:
    """Pick the rule for a parsed request head, or set *status (421/404).
    The vhost is chosen by the effective host (x.host_sp, checked by
    request_strict: the absolute-form authority, else Host)."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef int i
    cdef char hbuf[256]
    cdef uint32_t hlen = 0, poff, plen
    cdef VhostRt* v
    if x.host_sp.len:
        hlen = host_normalise(base + x.host_sp.off, x.host_sp.len, hbuf, 256)
    v = vhost_for(uc.srv, hbuf, hlen)
    if uc.conn.tls != NULL and uc.conn.tls.vhost != NULL and v != uc.conn.tls.vhost:
        if x.host_sp.len:
            rp_elog(g_errfd, 6, "Host %.*s is not the vhost the TLS server name chose: 421", hlen, hbuf)
            status[0] = 421         # domain fronting: the certificate was for another vhost
            return NULL
        v = uc.conn.tls.vhost            # HTTP/1.0 without Host: the server name says where
    if v == NULL:
        status[0] = 404
        return NULL
    path_span(base + x.url_sp.off, x.url_sp.len, &poff, &plen)
    x.path_off = poff
    x.path_len = plen
    for i in range(v.nrules):
        if rule_matches(&v.rules[i], base + x.url_sp.off + poff, plen, x):
            return &v.rules[i]
    status[0] = 404
    return NULL
