# Response cache, first cut (issue 21): entry files shared by all workers
# and kept across restarts, hits served from the loop.  What it does not do
# yet (README "Response caching"): a shared-memory index and eviction
# (max-size, inactive), validation (a stale entry is fetched again), Vary
# secondary keys (responses with Vary are not stored), cache-lock,
# cache-use-stale, bodies of unknown length, compressed variants.
#
# An entry is one file under the cache's path, named by a 64-bit FNV-1a hash
# of its key (scheme, Host, request target) and written to a temporary name
# then renamed, so a reader sees a whole entry or none:
#
#   CacheHdr | key | client head lines (status line + fields, CRLF each) | body
#
# Hooks:  uc_on_head      cache_on_request      lookup; a fresh hit is served
#         dc head         cache_on_response_head  invalidate / start storing
#         dc_process      cache_tee              body bytes into the temp file
#         dc_response_done cache_commit          rename into place
#         x_free          cache_free             an unfinished entry is removed

# open, O_RDONLY, O_CLOEXEC, pread, sendfile and time come from the includes and from static.pxi /
# edge.pxi (one compile unit: a second declaration with another signature would replace theirs).
cdef extern from "<fcntl.h>" nogil:
    int O_WRONLY
    int O_CREAT
    int O_EXCL

cdef extern from "<unistd.h>" nogil:
    int unlink(const char* path)

cdef extern from "<stdio.h>" nogil:
    int rename(const char* a, const char* b)

cdef extern from "<sys/stat.h>" nogil:
    int futimens(int fd, const void* times)

cdef enum:
    # Exchange.cst: what the cache did (X-Cache)
    CS_NONE = 0
    CS_MISS = 1
    CS_HIT = 2
    CS_EXPIRED = 3
    CS_BYPASS = 4
    CS_INVALIDATE = 5       # an unsafe method: a non-error response removes the entry

cdef enum:
    # Exchange.cflags
    CF_NO_STORE = 0x01      # the request said no-store
    CF_AUTH = 0x02          # the request carried Authorization
    CF_NO_LOOKUP = 0x04     # the request said no-cache / max-age=0: go to the downstream

cdef struct CacheRt:
    char path[480]

cdef struct CacheHdr:
    char magic[8]           # "RPXC0001"
    uint32_t hdr_len        # bytes before the body
    uint32_t key_len
    uint32_t head_len
    uint16_t status
    uint16_t pad
    uint64_t body_len
    int64_t req_time        # unix seconds
    int64_t resp_time
    int64_t date            # the response's Date, -1 = none
    int64_t age0            # its Age header
    int64_t lifetime        # freshness lifetime, seconds

cdef uint64_t g_cache_seq = 0
cdef uint64_t c_cache_hits = 0
cdef uint64_t c_cache_stored = 0


cdef uint64_t cache_key(UConn* uc, Exchange* x, char* out, uint32_t cap, uint32_t* klen) noexcept nogil:
    """The entry's key (scheme://host + target, host in lower case) and its
    hash; 0 when it does not fit."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef uint32_t n = 0, i
    cdef uint64_t h = 14695981039346656037ULL
    cdef const char* sch = "https://" if uc.conn.tls != NULL else "http://"
    cdef uint32_t sl = 8 if uc.conn.tls != NULL else 7
    if sl + x.host_sp.len + x.url_sp.len > cap:
        return 0
    memcpy(out, sch, sl)
    n = sl
    for i in range(x.host_sp.len):
        out[n] = cp_lower(base[x.host_sp.off + i])
        n += 1
    memcpy(out + n, base + x.url_sp.off, x.url_sp.len)
    n += x.url_sp.len
    klen[0] = n
    return cache_hash(out, n)


cdef uint64_t cache_hash(const char* p, uint32_t n) noexcept nogil:
    """FNV-1a, 64 bits (0 is kept for "no key")."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef uint32_t i
    for i in range(n):
        h ^= <uint8_t>p[i]
        h *= 1099511628211ULL
    return h if h != 0 else 1


cdef void cache_invalidate_ref(CacheRt* c, const char* key, uint32_t klen, const char* v, uint32_t vl) noexcept nogil:
    """RFC 9111 4.4: also invalidate the Location / Content-Location target
    when it has the request's origin (a path, or the same scheme://host)."""
    cdef char k2[4096]
    cdef char path[512]
    cdef uint32_t plen = 0, n
    cdef const char* rest
    cdef uint32_t rl
    while plen < klen and not (plen >= 3 and key[plen - 1] == c'/' and key[plen - 2] == c'/'):
        plen += 1
    while plen < klen and key[plen] != c'/' and key[plen] != c'?':
        plen += 1                   # key[0:plen] = scheme://host
    if vl and v[0] == c'/' and not (vl > 1 and v[1] == c'/'):
        rest = v
        rl = vl
    elif vl >= plen and strncasecmp(v, key, plen) == 0 and (vl == plen or v[plen] == c'/'):
        rest = v + plen
        rl = vl - plen
    else:
        return
    if plen + rl > 4096 or rl == 0:
        return
    memcpy(k2, key, plen)
    memcpy(k2 + plen, rest, rl)
    n = plen + rl
    cache_path(c, cache_hash(k2, n), path)
    unlink(path)


cdef void cache_path(CacheRt* c, uint64_t h, char* out) noexcept nogil:
    snprintf(out, 512, "%s/%016llx", c.path, <unsigned long long>h)


cdef void cache_tmp_path(CacheRt* c, uint64_t seq, char* out) noexcept nogil:
    snprintf(out, 512, "%s/.tmp.%d.%llu", c.path, getpid(), <unsigned long long>seq)


cdef bint cache_on_request(UConn* uc, Exchange* x) noexcept nogil:
    """At routing.  True when the request was answered from the cache."""
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef CcDirs req
    cdef int i, fd
    cdef Header* h
    cdef char key[4096]
    cdef char path[512]
    cdef uint32_t klen = 0
    cdef Buf* b
    cdef ssize_t n
    cdef CacheHdr* ch
    cdef int64_t now, age, apparent, corrected
    x.cflags = 0
    x.ckey = 0
    if x.method != HTTP_GET and x.method != HTTP_HEAD:
        if x.method != HTTP_OPTIONS and x.method != HTTP_TRACE:
            x.ckey = cache_key(uc, x, key, 4096, &klen)
            x.cst = CS_INVALIDATE
            x.ckey_copy = <char*>malloc(klen) if x.ckey else NULL
            if x.ckey_copy != NULL:
                memcpy(x.ckey_copy, key, klen)
                x.ckey_len = klen
        return False
    if (x.flags & XF_UPGRADE) or not uc_request_bodyless(uc):
        x.cst = CS_BYPASS
        return False
    cc_init(&req)
    for i in range(x.nreq):
        h = &x.req[i]
        if cp_eq(base + h.name.off, h.name.len, "cache-control"):
            cc_parse(base + h.value.off, h.value.len, &req)
        elif cp_eq(base + h.name.off, h.name.len, "authorization"):
            x.cflags |= CF_AUTH
        elif cp_eq(base + h.name.off, h.name.len, "pragma") and cp_eq(base + h.value.off, h.value.len, "no-cache"):
            req.flags |= CC_NO_CACHE
    if req.flags & CC_NO_STORE:
        x.cflags |= CF_NO_STORE
        x.cst = CS_BYPASS
        return False
    x.ckey = cache_key(uc, x, key, 4096, &klen)
    if x.ckey == 0:
        x.cst = CS_BYPASS
        return False
    x.ckey_copy = <char*>malloc(klen)      # for storing: the client's buffer moves on
    if x.ckey_copy != NULL:
        memcpy(x.ckey_copy, key, klen)
        x.ckey_len = klen
    x.creq_time = time(NULL)
    x.cst = CS_MISS
    if (req.flags & CC_NO_CACHE) or req.max_age == 0:
        x.cflags |= CF_NO_LOOKUP
        return False
    cache_path(c, x.ckey, path)
    fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0:
        return False
    b = buf_get()
    if b == NULL:
        close(fd)
        return False
    n = pread(fd, bdata(b), b.cap, 0)
    ch = <CacheHdr*>bdata(b)
    if n < <ssize_t>sizeof(CacheHdr) or memcmp(ch.magic, "RPXC0001", 8) != 0 or ch.hdr_len > <uint32_t>n \
            or ch.key_len != klen or memcmp(bdata(b) + sizeof(CacheHdr), key, klen) != 0:
        buf_put(b)
        close(fd)
        return False                # another key with the same hash, or not an entry: a miss
    now = time(NULL)
    apparent = ch.resp_time - ch.date if ch.date >= 0 and ch.resp_time > ch.date else 0
    corrected = ch.age0 + (ch.resp_time - ch.req_time if ch.resp_time > ch.req_time else 0)
    age = (apparent if apparent > corrected else corrected) + (now - ch.resp_time if now > ch.resp_time else 0)
    if age >= ch.lifetime or (req.max_age != CC_UNSET and age > req.max_age) \
            or (req.min_fresh != CC_UNSET and age + req.min_fresh >= ch.lifetime):
        buf_put(b)
        close(fd)
        x.cst = CS_EXPIRED
        return False
    cache_serve(uc, x, fd, b, age)
    return True


cdef void cache_serve(UConn* uc, Exchange* x, int fd, Buf* b, int64_t age) noexcept nogil:
    """Answer from the entry: its head with Age and X-Cache, then its body
    in bounded reads (cache_pump)."""
    global c_cache_hits
    cdef CacheHdr* ch = <CacheHdr*>bdata(b)
    cdef bint keep = uc_reject_keeps(uc)       # steps the parser over the (empty) body
    cdef Buf* hb = buf_get()
    cdef W w
    cdef char num[32]
    cdef int k
    if hb == NULL:
        buf_put(b)
        close(fd)
        uc_close(uc)
        return
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    x.flags |= XF_REQ_DONE
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_put(&w, bdata(b) + sizeof(CacheHdr) + ch.key_len, ch.head_len)
    k = snprintf(num, 32, "%lld", <long long>age)
    w_put(&w, "Age: ", 5)
    w_put(&w, num, k)
    w_put(&w, "\r\nX-Cache: HIT\r\n", 16)
    if uc.conn.flags & UF_CLOSE_AFTER:
        w_put(&w, "Connection: close\r\n", 19)
    elif x.flags & XF_HTTP10:
        w_put(&w, "Connection: keep-alive\r\n", 24)
    w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(hb)
        buf_put(b)
        close(fd)
        uc_respond(uc, 502, False)
        return
    x.flags |= XF_RESP_STARTED
    x.status = ch.status
    c_cache_hits += 1
    futimens(fd, NULL)              # "last used", for the manager's inactive / LRU (rproxy/cache_manager.py)
    x.cst = CS_HIT
    x.cfd = fd
    x.coff = ch.hdr_len
    x.cleft = 0 if (x.flags & XF_HEAD_REQ) else ch.body_len
    buf_put(b)
    out_release(&uc.conn.out)
    uc.conn.out.hptr = bdata(hb)
    uc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    uc.conn.out.hbuf = hb
    x.log.t_ds_head_us = g_now_us
    x.log.flags |= XL_RESP_HEAD
    x.log.body_base = x.log.bytes_out + uc.conn.out.hlen
    uc_move(uc, U_WAIT)
    timer_stop(&uc.conn.timer)
    cache_pump(uc)


cdef void cache_pump(UConn* uc) noexcept nogil:
    """Write the hit's body while the client takes it (sendfile on a plain
    connection, bounded preads through OpenSSL on TLS); then end the exchange."""
    cdef Exchange* x = uc.xhead
    cdef Buf* b
    cdef ssize_t n
    cdef uint32_t want
    cdef long off
    while True:
        if not out_empty(&uc.conn.out):
            if uc_send(uc) != 0:
                return              # socket full (EPOLLOUT resumes: uc_on_drained), or the client is gone
        if x.cleft == 0:
            break
        if uc.conn.tls == NULL:
            off = <long>x.coff
            n = sendfile(uc.conn.h.fd, x.cfd, &off, x.cleft if x.cleft < 1048576 else 1048576)
            if n > 0:
                x.coff += <uint64_t>n
                x.cleft -= <uint64_t>n
                x.log.bytes_out += <uint64_t>n
                continue
            if n < 0 and errno == EINTR:
                continue
            if n < 0 and errno == EAGAIN:
                uc.conn.flags &= ~CN_WRITABLE
                timer_arm(&uc.conn.timer, uc_write_timeout(uc))
                return              # EPOLLOUT resumes (uc_on_event)
            if n < 0 and (errno == EPIPE or errno == ECONNRESET):
                uc_close(uc)
                return
            rp_elog(x_errfd(x), 3, "cache: sending an entry failed: %s",
                    strerror(errno) if n < 0 else <char*>"the file ended early")
            uc_close(uc)
            return
        b = buf_get()
        if b == NULL:
            uc_close(uc)
            return
        want = b.cap if x.cleft > b.cap else <uint32_t>x.cleft
        n = pread(x.cfd, bdata(b), want, <long>x.coff)
        if n <= 0:
            buf_put(b)
            rp_elog(x_errfd(x), 3, "cache: entry file ended early (removed or truncated while read)")
            uc_close(uc)
            return
        x.coff += <uint64_t>n
        x.cleft -= <uint64_t>n
        uc.conn.out.bptr = bdata(b)
        uc.conn.out.blen = <uint32_t>n
        uc.conn.out.bbuf = b
    xlog_done(x)
    uc_x_end(uc)
    uc_after_response(uc)


cdef void cache_head_extra(W* w, Exchange* x) noexcept nogil:
    if x.cst == CS_MISS:
        w_put(w, "X-Cache: MISS\r\n", 15)
    elif x.cst == CS_EXPIRED:
        w_put(w, "X-Cache: EXPIRED\r\n", 18)
    elif x.cst == CS_BYPASS:
        w_put(w, "X-Cache: BYPASS\r\n", 17)


cdef bint cache_hop(const char* n, uint32_t l) noexcept nogil:
    """Fields an entry does not keep: hop-by-hop, and what is set per hit."""
    return cp_eq(n, l, "connection") or cp_eq(n, l, "keep-alive") or cp_eq(n, l, "proxy-connection") \
        or cp_eq(n, l, "te") or cp_eq(n, l, "transfer-encoding") or cp_eq(n, l, "trailer") \
        or cp_eq(n, l, "upgrade") or cp_eq(n, l, "age") or cp_eq(n, l, "x-cache")


cdef void cache_on_response_head(DConn* dc, Exchange* x) noexcept nogil:
    """The final response head: remove the entry after an unsafe method's
    success; else start storing when RFC 9111 and this first cut allow."""
    global g_cache_seq
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cdef llhttp_t* p = &dc.conn.parser
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef RespFacts f
    cdef CcDirs req
    cdef char path[512]
    cdef char key[4096]
    cdef uint32_t klen = 0
    cdef Buf* hb
    cdef W w
    cdef CacheHdr ch
    cdef int i, fd
    cdef Header* h
    cdef NameList* strip = &x.rule.vhost.strip
    cdef char code[4]
    if x.cst == CS_INVALIDATE:
        if x.ckey and x.status < 400:
            cache_path(c, x.ckey, path)
            unlink(path)
            for i in range(x.nresp):
                h = &x.resp[i]
                if x.ckey_copy != NULL and (cp_eq(base + h.name.off, h.name.len, "location")
                                            or cp_eq(base + h.name.off, h.name.len, "content-location")):
                    cache_invalidate_ref(c, x.ckey_copy, x.ckey_len, base + h.value.off, h.value.len)
        return
    if x.cst != CS_MISS and x.cst != CS_EXPIRED:
        return
    if x.cz != NULL or not (p.flags & F_CONTENT_LENGTH) or (x.flags & XF_HEAD_REQ):
        return                      # compressed variants and unknown lengths: not in this first cut
    resp_facts(base, x.resp, x.nresp, x.status, &f)
    cc_init(&req)
    if x.cflags & CF_NO_STORE:
        req.flags |= CC_NO_STORE
    if cache_storable(True, (x.cflags & CF_AUTH) != 0, &req, &f) != ST_OK or f.has_vary \
            or (f.cc.flags & CC_NO_CACHE):
        return
    for i in range(x.nresp):
        if cp_eq(base + x.resp[i].name.off, x.resp[i].name.len, "set-cookie"):
            return                  # never share one client's cookie with the others
    memset(&ch, 0, sizeof(CacheHdr))
    ch.resp_time = time(NULL)
    ch.lifetime = fresh_lifetime(&f, ch.resp_time)
    if ch.lifetime <= 0:
        return
    hb = buf_get()
    if hb == NULL:
        return
    # the key as made at the request (the client's buffer may hold other bytes by now)
    if not cache_key_again(x, key, 4096, &klen):
        buf_put(hb)
        return
    w.p = bdata(hb) + sizeof(CacheHdr) + klen
    w.end = bdata(hb) + hb.cap
    w.overflow = 0
    code[0] = <char>(48 + (x.status // 100) % 10)
    code[1] = <char>(48 + (x.status // 10) % 10)
    code[2] = <char>(48 + x.status % 10)
    code[3] = c' '
    w_put(&w, "HTTP/1.1 ", 9)
    w_put(&w, code, 4)
    w_put(&w, base + x.reason_sp.off, x.reason_sp.len)
    w_put(&w, "\r\n", 2)
    for i in range(x.nresp):
        h = &x.resp[i]
        if cache_hop(base + h.name.off, h.name.len):
            continue
        if strip.n and names_has(strip, base + h.name.off, h.name.len):
            continue
        w_put(&w, base + h.name.off, h.name.len)
        w_put(&w, ": ", 2)
        w_put(&w, base + h.value.off, h.value.len)
        w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(hb)
        return
    memcpy(ch.magic, "RPXC0001", 8)
    ch.key_len = klen
    ch.head_len = <uint32_t>(w.p - bdata(hb) - sizeof(CacheHdr) - klen)
    ch.hdr_len = <uint32_t>(w.p - bdata(hb))
    ch.status = x.status
    ch.body_len = p.content_length
    ch.req_time = x.creq_time
    ch.date = f.date
    ch.age0 = f.age
    memcpy(bdata(hb), &ch, sizeof(CacheHdr))
    memcpy(bdata(hb) + sizeof(CacheHdr), key, klen)
    g_cache_seq += 1
    cache_tmp_path(c, g_cache_seq, path)
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    if fd < 0:
        buf_put(hb)
        rp_elog(x_errfd(x), 3, "cache: cannot create %s: %s", path, strerror(errno))
        return
    if write(fd, bdata(hb), ch.hdr_len) != <ssize_t>ch.hdr_len:
        rp_elog(x_errfd(x), 3, "cache: cannot write %s: %s", path, strerror(errno))
        close(fd)
        unlink(path)
        buf_put(hb)
        return
    buf_put(hb)
    x.cwfd = fd
    x.cseq = g_cache_seq
    x.cleft = ch.body_len           # body bytes still to be written
    dc.conn.flags &= ~DF_SPLICE          # the body passes through here to be written


cdef bint cache_key_again(Exchange* x, char* out, uint32_t cap, uint32_t* klen) noexcept nogil:
    """The key as hashed at the request (kept in the exchange)."""
    if x.ckey_copy == NULL or x.ckey_len > cap:
        return False
    memcpy(out, x.ckey_copy, x.ckey_len)
    klen[0] = x.ckey_len
    return True


cdef void cache_tee(Exchange* x, const char* p, uint32_t n) noexcept nogil:
    """Body bytes on their way to the client: into the entry as well."""
    cdef ssize_t k
    cdef char path[512]
    while n:
        k = write(x.cwfd, p, n)
        if k < 0 and errno == EINTR:
            continue
        if k <= 0 or <uint64_t>k > x.cleft:
            rp_elog(x_errfd(x), 3, "cache: writing an entry failed: %s",
                    strerror(errno) if k < 0 else <char*>"longer than its Content-Length")
            close(x.cwfd)
            x.cwfd = -1
            cache_tmp_path(<CacheRt*>x.rule.cache, x.cseq, path)
            unlink(path)
            return
        x.cleft -= <uint64_t>k
        p += k
        n -= <uint32_t>k


cdef void cache_commit(Exchange* x) noexcept nogil:
    """The whole body is in: the entry goes into place."""
    global c_cache_stored
    cdef char tmp[512]
    cdef char path[512]
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cache_tmp_path(c, x.cseq, tmp)
    close(x.cwfd)
    x.cwfd = -1
    if x.cleft != 0:
        unlink(tmp)
        return
    cache_path(c, x.ckey, path)
    if rename(tmp, path) != 0:
        rp_elog(x_errfd(x), 3, "cache: rename to %s: %s", path, strerror(errno))
        unlink(tmp)
        return
    c_cache_stored += 1


cdef void cache_free(Exchange* x) noexcept nogil:
    cdef char tmp[512]
    if x.cfd >= 0:
        close(x.cfd)
        x.cfd = -1
    if x.cwfd >= 0:
        close(x.cwfd)
        x.cwfd = -1
        cache_tmp_path(<CacheRt*>x.rule.cache, x.cseq, tmp)
        unlink(tmp)                 # an unfinished entry
    if x.ckey_copy != NULL:
        free(x.ckey_copy)
        x.ckey_copy = NULL
    x.cst = 0
    x.ckey = 0


def rule_set_cache(int server, int vhost, int index, str path):
    """A rule's cache = NAME: the cache's directory."""
    cdef RuleRt* r = &g_servers[server].vhosts[vhost].rules[index]
    cdef CacheRt* c = <CacheRt*>calloc(1, sizeof(CacheRt))
    if c == NULL:
        raise MemoryError()
    _copy_cstr(c.path, 480, path.encode())
    r.cache = c


def cache_stats():
    """(hits served, entries stored) in this worker."""
    return c_cache_hits, c_cache_stored
