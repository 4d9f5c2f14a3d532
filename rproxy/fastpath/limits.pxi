# Edge policy at request admission: access rules, `deny = true` rules and
# rate limits (issue 19).  One hook in uc_on_head (edge_admit), after
# routing and before a downstream connection is taken.
#
# Rate limits are GCRA (the generic cell rate algorithm, as governor does):
# per key, one "theoretical arrival time" (TAT).  A request at `now` finds
# d = max(TAT, now) - now; it conforms when d <= tol, and then TAT becomes
# max(TAT, now) + T, T = 1 / rate.  reject / dry-run: tol = (burst - 1) * T,
# so `burst` requests pass at once, then one per T.  delay: tol = burst * T
# and the request is held d before it goes on (nginx's limit_req without
# nodelay: paced at `rate`, up to `burst` waiting).
#
# States live in the rate limit zone (rproxy/limits.py): shared memory the
# master maps before forking, so every worker of every generation updates
# the same states and N workers admit `rate`, not N x `rate`.  The zone is
# a fixed table of 64-bit words, one per key:
#
#     bits 63..48  tag: 16 bits of the key's hash (never 0 in a used word)
#     bits 47..0   TAT, microseconds since the zone's epoch (8.9 years)
#
# A key's word is found by open addressing from its hash (a window of
# EDGE_PROBE words) and updated with one compare-and-swap: no lock, no
# syscall.  A word whose TAT is in the past holds no information (a key
# with TAT <= now is in the same state as a key never seen), so such a
# word is reused for any key.  When the window has no empty or expired
# word (zone full), the word with the smallest TAT (the state closest to
# expiring) is taken over and counted as an eviction.  Two keys whose
# hashes share a window and a tag share a budget: a chance of about
# EDGE_PROBE / 65536 for a new key in a full window.

cdef extern from *:
    """
    static inline unsigned long long rp_atomic_load64(unsigned long long* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline int rp_cas64(unsigned long long* p, unsigned long long expect, unsigned long long want) {
        return __atomic_compare_exchange_n(p, &expect, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline void rp_add64(unsigned long long* p, unsigned long long v) {
        __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    }
    """
    unsigned long long rp_atomic_load64(unsigned long long* p) nogil
    int rp_cas64(unsigned long long* p, unsigned long long expect, unsigned long long want) nogil
    void rp_add64(unsigned long long* p, unsigned long long v) nogil

cdef enum:
    EDGE_PROBE = 8
    EDGE_MAX_LIMITS = 8         # limits checked per request (vhost's + rule's)
    EDGE_MAX_ACCESS = 64
    LK_CLIENT_IP = 0
    LK_HEADER = 1
    LK_ROUTE = 2
    LM_REJECT = 0
    LM_DELAY = 1
    LM_DRY_RUN = 2
    # counters per limit in the zone (words), exported by edge_layout()
    LC_ADMITTED = 0
    LC_LIMITED = 1
    LC_DELAYED = 2
    LC_DRY_LIMITED = 3
    LC_EVICTIONS = 4
    LC_WORDS = 8

cdef unsigned long long EDGE_TAT_MASK = 0xFFFFFFFFFFFF

cdef struct LimitRt:
    char name[64]
    uint32_t id                 # catalog number in the zone (part of every key's hash)
    int64_t T                   # emission interval, us
    int64_t tol                 # tolerance, us (see above)
    int64_t window_s            # RateLimit-Policy w=
    uint32_t burst
    uint8_t mode
    uint8_t key
    uint8_t redis               # store = redis (redis.pxi), else the zone
    char hdr[64]                # key = header:NAME
    uint32_t hdr_len
    unsigned long long* counters

cdef struct AccessRt:
    uint8_t family              # AF_INET / AF_INET6
    uint8_t plen
    uint8_t allow
    uint8_t addr[16]

cdef struct EdgeLimitRef:
    LimitRt* lim
    uint64_t scope              # key = route: the vhost or rule it was named in

cdef struct EdgePolicy:
    int naccess
    AccessRt access[EDGE_MAX_ACCESS]
    uint16_t deny               # 0, or the status of a `deny = true` rule
    int nlimits
    EdgeLimitRef limits[EDGE_MAX_LIMITS]

cdef LimitRt* g_limits = NULL
cdef int g_nlimits = 0
cdef unsigned long long* g_edge_slots = NULL
cdef unsigned long long g_edge_mask = 0
cdef int64_t g_edge_epoch = 0


# ---- hashing -------------------------------------------------------------------------

cdef inline uint64_t edge_mix(uint64_t h) noexcept nogil:
    # splitmix64's finalizer
    h ^= h >> 30
    h *= 0xbf58476d1ce4e5b9ULL
    h ^= h >> 27
    h *= 0x94d049bb133111ebULL
    h ^= h >> 31
    return h


cdef inline uint64_t edge_fnv(uint64_t h, const char* p, uint32_t n) noexcept nogil:
    cdef uint32_t i
    for i in range(n):
        h ^= <uint8_t>p[i]
        h *= 0x100000001b3ULL
    return h


cdef inline const uint8_t* edge_addr(Peer* p, int* family) noexcept nogil:
    """The client address, an IPv4-mapped IPv6 one as IPv4."""
    cdef int i
    if p.family == AF_INET6:
        for i in range(10):
            if p.addr[i] != 0:
                family[0] = AF_INET6
                return p.addr
        if p.addr[10] == 0xff and p.addr[11] == 0xff:
            family[0] = AF_INET
            return p.addr + 12
        family[0] = AF_INET6
        return p.addr
    family[0] = p.family
    return p.addr


# ---- GCRA on the shared table -----------------------------------------------------------

cdef int edge_gcra(LimitRt* L, uint64_t h, int64_t* wait) noexcept nogil:
    """0: admitted (*wait: us to hold it, delay mode), 1: refused (*wait:
    us until it would conform)."""
    cdef int64_t now = g_now_us - g_edge_epoch
    cdef unsigned long long tag = (h >> 48) | 1     # never 0
    cdef unsigned long long w, w0, want
    cdef uint64_t idx = h & g_edge_mask
    cdef uint64_t j
    cdef int64_t tat, d, oldest_tat
    cdef int i, attempt, found, free_at, oldest
    cdef bint evict
    tag <<= 48
    if now < 0:
        now = 0
    for attempt in range(16):
        found = -1
        free_at = -1
        oldest = -1
        oldest_tat = 0
        w = 0
        for i in range(EDGE_PROBE):
            j = (idx + <uint64_t>i) & g_edge_mask
            w = rp_atomic_load64(&g_edge_slots[j])
            if w == 0:
                if free_at < 0:
                    free_at = <int>j
                break                   # words are never emptied: the key is not further
            if (w & ~EDGE_TAT_MASK) == tag:
                found = <int>j
                break
            tat = <int64_t>(w & EDGE_TAT_MASK)
            if tat <= now:
                if free_at < 0:
                    free_at = <int>j
            elif oldest < 0 or tat < oldest_tat:
                oldest = <int>j
                oldest_tat = tat
        evict = False
        if found >= 0:
            j = <uint64_t>found
            w0 = w
            tat = <int64_t>(w0 & EDGE_TAT_MASK)
        else:
            if free_at >= 0:
                j = <uint64_t>free_at
            else:
                j = <uint64_t>oldest
                evict = True
            w0 = rp_atomic_load64(&g_edge_slots[j])
            tat = 0
        if tat < now:
            tat = now
        d = tat - now
        if d > L.tol:
            wait[0] = d - L.tol
            return 1
        want = tag | (<unsigned long long>(tat + L.T) & EDGE_TAT_MASK)
        if rp_cas64(&g_edge_slots[j], w0, want):
            if evict and L.counters != NULL:
                rp_add64(&L.counters[LC_EVICTIONS], 1)
            wait[0] = d
            return 0
    wait[0] = 0                         # contended beyond reason: admit
    return 0


cdef bint edge_key(UConn* uc, Exchange* x, LimitRt* L, uint64_t scope, uint64_t* out) noexcept nogil:
    """The key's hash; False when the request has no such key (no header)."""
    cdef uint64_t h = 0xcbf29ce484222325ULL ^ (<uint64_t>L.id * 0x9E3779B97F4A7C15ULL)
    cdef const uint8_t* a
    cdef int fam = 0, i
    cdef const char* base
    cdef uint8_t k = L.key
    h = edge_fnv(h, <const char*>&k, 1)
    if L.key == LK_CLIENT_IP:
        a = edge_addr(&uc.conn.peer, &fam)
        h = edge_fnv(h, <const char*>a, 4 if fam == AF_INET else 16)
    elif L.key == LK_ROUTE:
        h = edge_fnv(h, <const char*>&scope, 8)
    else:
        base = bdata(uc.conn.rbuf)
        for i in range(x.nreq):
            if x.req[i].name.len == L.hdr_len \
                    and strncasecmp(base + x.req[i].name.off, L.hdr, L.hdr_len) == 0:
                h = edge_fnv(h, base + x.req[i].value.off, x.req[i].value.len)
                break
        else:
            return False
    out[0] = edge_mix(h)
    return True


# ---- access rules ----------------------------------------------------------------------

cdef bint edge_net_match(AccessRt* r, const uint8_t* a, int fam) noexcept nogil:
    cdef int full, rest
    if r.family != fam:
        return False
    full = r.plen // 8
    rest = r.plen % 8
    if full and memcmp(r.addr, a, full) != 0:
        return False
    if rest and ((r.addr[full] ^ a[full]) & <uint8_t>(0xFF << (8 - rest))) != 0:
        return False
    return True


cdef bint edge_access_allowed(EdgePolicy* e, Peer* p) noexcept nogil:
    cdef int fam = 0, i
    cdef const uint8_t* a
    if e.naccess == 0:
        return True
    if p.family != AF_INET and p.family != AF_INET6:
        return True                     # unix: sockets carry no address to judge
    a = edge_addr(p, &fam)
    for i in range(e.naccess):
        if edge_net_match(&e.access[i], a, fam):
            return e.access[i].allow != 0
    return True


# ---- answers -----------------------------------------------------------------------------

cdef void policy_answer(UConn* uc, Exchange* x, int status, const char* reason, LimitRt* L,
                      int64_t retry_us) noexcept nogil:
    """403 / 404 / 429 ... of the proxy's own, with the rate limit headers
    when L is given (draft-ietf-httpapi-ratelimit-headers: RateLimit-Policy
    and RateLimit, plus Retry-After)."""
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb
    cdef W w
    cdef char body[96]
    cdef int blen
    cdef int64_t secs = (retry_us + 999999) // 1000000
    cdef const char* resp
    hb = buf_get()
    if hb == NULL:
        uc_close(uc)
        return
    if L != NULL:
        blen = snprintf(body, 96, "%d %s (%s)\n", status, reason, L.name)
    else:
        blen = snprintf(body, 96, "%d %s\n", status, reason)
    if secs < 1:
        secs = 1
    w.p = bdata(hb)
    w.end = w.p + hb.cap - 1            # room for the NUL xlog_answer reads up to
    w.overflow = 0
    w_str(&w, "HTTP/1.1 ")
    w_uint(&w, <uint64_t>status)
    w_put(&w, " ", 1)
    w_str(&w, reason)
    w_str(&w, "\r\nServer: rproxy\r\nContent-Type: text/plain\r\nContent-Length: ")
    w_uint(&w, <uint64_t>blen)
    w_str(&w, "\r\n")
    if L != NULL:
        w_str(&w, "Retry-After: ")
        w_uint(&w, <uint64_t>secs)
        w_str(&w, "\r\nRateLimit-Policy: \"")
        w_str(&w, L.name)
        w_str(&w, "\";q=")
        w_uint(&w, L.burst)
        w_str(&w, ";w=")
        w_uint(&w, <uint64_t>L.window_s)
        w_str(&w, "\r\nRateLimit: \"")
        w_str(&w, L.name)
        w_str(&w, "\";r=0;t=")
        w_uint(&w, <uint64_t>secs)
        w_str(&w, "\r\n")
    if not keep or g_stop:
        w_str(&w, "Connection: close\r\n")
    w_str(&w, "\r\n")
    w_put(&w, body, <size_t>blen)
    if w.overflow:
        buf_put(hb)
        uc_respond(uc, status, False)
        return
    w.p[0] = 0
    resp = bdata(hb)
    xlog_answer(x, status, resp)
    uc_answer(uc, resp, <uint32_t>(w.p - resp), hb, keep)


# ---- admission -----------------------------------------------------------------------------

cdef bint edge_admit(UConn* uc, Exchange* x, RuleRt* rule) noexcept nogil:
    """True: the request was answered (403, deny status, 429, 503) or is
    held (delay, or waiting for Redis); False: go on."""
    cdef EdgePolicy* e = rule.edge
    cdef char where[48]
    cdef int n
    if not edge_access_allowed(e, &uc.conn.peer):
        n = peer_format(&uc.conn.peer, where, 48)
        rp_elog(x_errfd(x), 4, "client %.*s: denied by the access rules of vhost '%s': 403", n, where,
                rule.vhost.name)
        policy_answer(uc, x, 403, "Forbidden", NULL, 0)
        return True
    if e.deny:
        n = peer_format(&uc.conn.peer, where, 48)
        rp_elog(x_errfd(x), 5, "client %.*s: rule '%s' denies: %d", n, where, rule.name, <int>e.deny)
        policy_answer(uc, x, e.deny, "Not Found" if e.deny == 404 else "Forbidden" if e.deny == 403
                    else "Gone" if e.deny == 410 else "Unavailable For Legal Reasons" if e.deny == 451
                    else "Denied", NULL, 0)
        return True
    if e.nlimits == 0:
        return False
    x.edge_next = 0
    x.edge_hold = 0
    return edge_limits(uc, x, e)


cdef const char* edge_limit_name(Exchange* x) noexcept nogil:
    """For the access log's {RATE_LIMIT}."""
    return (<LimitRt*>x.edge_limit).name if x.edge_limit != NULL else NULL


cdef void edge_hold_x(UConn* uc, Exchange* x, int64_t ms) noexcept nogil:
    """Park x (no reading, no downstream) until its timer fires."""
    uc_move(uc, U_PENDING)
    timer_stop(&uc.conn.timer)
    timer_init(&x.ptimer, TK_LIMIT, x)
    timer_arm(&x.ptimer, ms)


cdef bint edge_verdict(UConn* uc, Exchange* x, LimitRt* L, int rc, int64_t wait) noexcept nogil:
    """Apply one limit's decision; True when x was answered."""
    cdef char where[48]
    cdef int n
    if rc == 0:
        if L.counters != NULL:
            rp_add64(&L.counters[LC_DELAYED if wait > 0 and L.mode == LM_DELAY else LC_ADMITTED], 1)
        if L.mode == LM_DELAY and wait > x.edge_hold:
            x.edge_hold = wait
            x.edge_limit = L
        return False
    x.edge_limit = L
    n = peer_format(&uc.conn.peer, where, 48)
    if L.mode == LM_DRY_RUN:
        if L.counters != NULL:
            rp_add64(&L.counters[LC_DRY_LIMITED], 1)
        rp_elog(x_errfd(x), 5, "client %.*s: rate limit '%s' exceeded (dry-run: admitted)", n, where, L.name)
        return False
    if L.counters != NULL:
        rp_add64(&L.counters[LC_LIMITED], 1)
    rp_elog(x_errfd(x), 4, "client %.*s: rate limit '%s' exceeded: 429 (retry after %lld ms)", n, where,
            L.name, <long long>((wait + 999) // 1000))
    policy_answer(uc, x, 429, "Too Many Requests", L, wait)
    return True


cdef bint edge_limits(UConn* uc, Exchange* x, EdgePolicy* e) noexcept nogil:
    """Check the limits from x.edge_next on.  True: answered or held."""
    cdef int i, rc
    cdef int64_t wait
    cdef uint64_t h
    cdef LimitRt* L
    while x.edge_next < e.nlimits:
        i = x.edge_next
        x.edge_next += 1
        L = e.limits[i].lim
        if not edge_key(uc, x, L, e.limits[i].scope, &h):
            continue
        if L.redis:
            if redis_ask(x, L, h) == 0:
                x.edge_wait = 1
                edge_hold_x(uc, x, g_redis.timeout_ms)
                return True
            if edge_store_failed(uc, x, L, "is down"):
                return True
            continue
        if g_edge_slots == NULL:
            continue
        wait = 0
        rc = edge_gcra(L, h, &wait)
        if edge_verdict(uc, x, L, rc, wait):
            return True
    if x.edge_hold > 0:
        # held without blocking the loop: the exchange's timer resumes it
        edge_hold_x(uc, x, (x.edge_hold + 999) // 1000)
        x.edge_hold = 0
        return True
    return False


cdef bint edge_store_failed(UConn* uc, Exchange* x, LimitRt* L, const char* what) noexcept nogil:
    """Redis gave no decision for L: fail open (admit, count) or closed
    (503).  True when x was answered."""
    cdef char where[48]
    cdef int n
    if g_redis.fail_closed:
        n = peer_format(&uc.conn.peer, where, 48)
        rp_elog(x_errfd(x), 4, "client %.*s: rate limit '%s': redis %s (fail = closed): 503", n, where,
                L.name, what)
        if L.counters != NULL:
            rp_add64(&L.counters[LC_LIMITED], 1)
        policy_answer(uc, x, 503, "Service Unavailable", NULL, 0)
        return True
    if L.counters != NULL:
        rp_add64(&L.counters[LC_ADMITTED], 1)
    return False


cdef void edge_resume(Exchange* x) noexcept nogil:
    """After a Redis answer (or its failure): the remaining limits, then on."""
    cdef UConn* uc = x.uc
    timer_stop(&x.ptimer)
    timer_init(&x.ptimer, TK_EXCH, x)
    if not edge_limits(uc, x, x.rule.edge):
        uc_start(uc, x, x.rule)


cdef void edge_redis_answer(Exchange* x, long long v) noexcept nogil:
    """The script's answer for x: v <= -1 admitted (held -(v + 1) us in
    delay mode), v >= 1 refused (retry after v us)."""
    cdef LimitRt* L = x.rule.edge.limits[x.edge_next - 1].lim
    x.edge_wait = 0
    if v < 0:
        edge_verdict(x.uc, x, L, 0, -(v + 1))
    elif edge_verdict(x.uc, x, L, 1, v if v > 0 else 1):
        return
    edge_resume(x)


cdef void edge_redis_failed(Exchange* x) noexcept nogil:
    cdef LimitRt* L = x.rule.edge.limits[x.edge_next - 1].lim
    x.edge_wait = 0
    timer_stop(&x.ptimer)
    if edge_store_failed(x.uc, x, L, "failed"):
        return
    edge_resume(x)


cdef void edge_on_timer(Exchange* x) noexcept nogil:
    """A delayed request's turn has come, or Redis did not answer in time."""
    cdef LimitRt* L
    if x.edge_wait:
        redis_forget(x)
        x.edge_wait = 0
        L = x.rule.edge.limits[x.edge_next - 1].lim
        if edge_store_failed(x.uc, x, L, "timed out"):
            return
        edge_resume(x)
        return
    timer_init(&x.ptimer, TK_EXCH, x)
    uc_start(x.uc, x, x.rule)


# ---- set-up (from rproxy/limits.py) -----------------------------------------------------------

cdef class _EdgeZone:
    """Keeps the zone's buffer alive for the C pointers into it."""
    cdef object buf
    cdef unsigned char[::1] view


def edge_layout():
    return {"admitted": LC_ADMITTED, "limited": LC_LIMITED, "delayed": LC_DELAYED,
            "dry_run_limited": LC_DRY_LIMITED, "evictions": LC_EVICTIONS, "words": LC_WORDS,
            "probe": EDGE_PROBE, "max_limits": EDGE_MAX_LIMITS, "max_access": EDGE_MAX_ACCESS}


def _edge_attach(buf, long long slots_word, long long nslots, long long epoch_us, limits):
    """Point the fast path at the zone `buf` (writable; the master's mmap):
    nslots words (a power of two) from word slots_word; limits: one dict per
    configured limit, in config order (the index set_edge refers to)."""
    global g_limits, g_nlimits, g_edge_slots, g_edge_mask, g_edge_epoch
    cdef _EdgeZone keep = _EdgeZone()
    cdef unsigned long long* base
    cdef long long nw
    cdef LimitRt* L
    cdef bytes b
    keep.buf = buf
    keep.view = buf
    base = <unsigned long long*>&keep.view[0]
    nw = keep.view.shape[0] // 8
    if nslots <= 0 or nslots & (nslots - 1) or slots_word < 0 or slots_word + nslots > nw:
        raise ValueError("rate limit table outside the zone")
    g_limits = <LimitRt*>calloc(max(len(limits), 1), sizeof(LimitRt))
    if g_limits == NULL:
        raise MemoryError()
    for i, lim in enumerate(limits):
        L = &g_limits[i]
        _copy_cstr(L.name, 64, lim["name"].encode())
        L.id = lim["id"]
        T = max(1, int(round(1e6 / lim["rate"])))
        L.T = T
        L.burst = lim["burst"]
        L.mode = {"reject": LM_REJECT, "delay": LM_DELAY, "dry-run": LM_DRY_RUN}[lim["mode"]]
        L.redis = lim.get("store") == "redis"
        if L.redis:
            L.id = 0                    # the same key on every node: the name is in the Redis key
        L.tol = T * lim["burst"] if L.mode == LM_DELAY else T * (lim["burst"] - 1)
        L.window_s = max(1, -(-lim["burst"] * T // 1000000))
        key = lim["key"]
        if key == "client-ip":
            L.key = LK_CLIENT_IP
        elif key == "route":
            L.key = LK_ROUTE
        else:
            L.key = LK_HEADER
            b = key[7:].encode()
            _copy_cstr(L.hdr, 64, b)
            L.hdr_len = len(b[:63])
        cw = lim["counters_word"]
        if cw < 0 or cw + LC_WORDS > nw:
            raise ValueError("rate limit counters outside the zone")
        L.counters = base + <long long>cw
    g_nlimits = len(limits)
    g_edge_slots = base + slots_word
    g_edge_mask = <unsigned long long>(nslots - 1)
    g_edge_epoch = epoch_us
    return keep


def _edge_set_rule(int server, int vhost, int rule, access, int deny, limits):
    """access: [(family, addr bytes, prefix length, allowed)] in order;
    deny: status of a deny rule or 0; limits: [(limit index, scope)]."""
    cdef RuleRt* r = &g_servers[server].vhosts[vhost].rules[rule]
    cdef EdgePolicy* e
    cdef AccessRt* a
    cdef bytes raw
    if len(access) > EDGE_MAX_ACCESS:
        raise ValueError(f"at most {EDGE_MAX_ACCESS} access entries per vhost")
    if len(limits) > EDGE_MAX_LIMITS:
        raise ValueError(f"at most {EDGE_MAX_LIMITS} rate limits per request")
    if not access and not deny and not limits:
        return
    e = <EdgePolicy*>calloc(1, sizeof(EdgePolicy))
    if e == NULL:
        raise MemoryError()
    for i, (fam, raw, plen, allow) in enumerate(access):
        a = &e.access[i]
        a.family = AF_INET if fam == 4 else AF_INET6
        memcpy(a.addr, <const char*>raw, min(len(raw), 16))
        a.plen = plen
        a.allow = 1 if allow else 0
    e.naccess = len(access)
    e.deny = <uint16_t>deny
    for i, (li, scope) in enumerate(limits):
        if not 0 <= li < g_nlimits:
            free(e)
            raise ValueError("unknown rate limit")
        e.limits[i].lim = &g_limits[li]
        e.limits[i].scope = scope
    e.nlimits = len(limits)
    r.edge = e


def bench_edge_gcra(int rounds, int keys):
    """`rounds` GCRA decisions over `keys` client keys on a private table
    (for cost figures; no Python in the loop).  Returns admitted count."""
    global g_edge_slots, g_edge_mask, g_edge_epoch
    cdef unsigned long long* saved = g_edge_slots
    cdef unsigned long long smask = g_edge_mask
    cdef unsigned long long* t = <unsigned long long*>calloc(1 << 16, 8)
    cdef LimitRt L
    cdef int i, ok = 0
    cdef int64_t wait
    memset(&L, 0, sizeof(LimitRt))
    L.T = 10
    L.tol = 1000
    g_edge_slots = t
    g_edge_mask = (1 << 16) - 1
    with nogil:
        for i in range(rounds):
            if edge_gcra(&L, edge_mix(<uint64_t>(i % keys) + 1), &wait) == 0:
                ok += 1
    g_edge_slots = saved
    g_edge_mask = smask
    free(t)
    return ok
