# Response cache (issue 21): entry files shared by all workers and kept
# across restarts, hits served from the loop, stale entries validated,
# Vary variants, a lock per key, stale answers (README "Response caching").
#
# An entry is one file under the cache's path, named by a 64-bit FNV-1a hash
# of its key (scheme, Host, request target) and written to a temporary name
# then renamed, so a reader sees a whole entry or none:
#
#   CacheHdr | key | client head lines (status line + fields, CRLF each) | body
#
# A response with Vary is stored as a variant: the file at hash(key) is then
# a small marker (kind CK_VARY) holding the Vary field names (lower case,
# comma-separated) and a generation; the variant's key is
# key \0 generation \0 "name:value\n" for each name, with the request's values
# (several fields joined by ",", whitespace around commas dropped).  A new
# marker (other names, or the old one invalidated) has a new generation, so
# the variants of an older one are never reached again (the manager evicts
# them by age).
#
# Hooks:  uc_start          cache_on_request       lookup; a fresh hit is served
#         build_request_head cache_req_extra       validators of a stale entry
#         dc head           cache_on_response_head  invalidate / 304 merge / start storing
#         dc head built     cache_on_head_built    a 304 merge: the client gets the stored head
#         dc_process        cache_tee              body bytes into the temp file
#         dc_response_done  cache_commit           rename into place
#         dc_response_done  cache_keeps_x          a 304 merge: the stored body follows
#         uc_respond        cache_stale_answer     use-stale on a downstream error / timeout
#         timer TK_CACHE    cache_on_timer         a request waiting for another's lock
#         x_free            cache_free             an unfinished entry is removed, the lock released

# open, O_RDONLY, O_CLOEXEC, pread, sendfile and time come from the includes and from static.pxi /
# edge.pxi / bodybuf.pxi (one compile unit: a second declaration with another signature would replace theirs).
cdef extern from "<fcntl.h>" nogil:
    int O_WRONLY
    int O_CREAT
    int O_EXCL

cdef extern from "<unistd.h>" nogil:
    int unlink(const char* path)
    ssize_t read(int fd, void* buf, size_t count)
    ssize_t copy_file_range(int fd_in, long long* off_in, int fd_out, long long* off_out, size_t n,
                            unsigned int flags)

cdef extern from "<signal.h>" nogil:
    int kill(int pid, int sig)

cdef extern from "<errno.h>" nogil:
    enum:
        ESRCH
        EEXIST

cdef extern from "<stdio.h>" nogil:
    int rename(const char* a, const char* b)

cdef extern from "<sys/stat.h>" nogil:
    int futimens(int fd, const void* times)

cdef extern from "<stdlib.h>" nogil:
    void qsort(void* base, size_t n, size_t size, int (*cmp)(const void*, const void*) noexcept nogil)

cdef enum:
    # Exchange.cst: what the cache did (X-Cache, {CACHE})
    CS_NONE = 0
    CS_MISS = 1
    CS_HIT = 2
    CS_EXPIRED = 3
    CS_BYPASS = 4
    CS_INVALIDATE = 5       # an unsafe method: a non-error response removes the entry
    CS_REVALIDATED = 6      # stale, validated by a 304: the stored body with the updated head
    CS_STALE = 7            # stale, served because the downstream failed (cache-use-stale error/timeout)
    CS_UPDATING = 8         # stale, served while another request refreshes it (cache-use-stale updating)

cdef enum:
    # Exchange.cflags
    CF_NO_STORE = 0x01      # the request said no-store
    CF_AUTH = 0x02          # the request carried Authorization
    CF_NO_LOOKUP = 0x04     # the request said no-cache / max-age=0: validate before use
    CF_LOCKED = 0x08        # this exchange holds the key's lock file
    CF_DONT_STORE = 0x10    # gave up waiting for the lock: the response is not stored
    CF_CLIENT_COND = 0x20   # the client sent conditionals: none of ours are added

cdef enum:
    CK_ENTRY = 0
    CK_VARY = 1

cdef enum:
    # CacheRt.stale (cache-use-stale)
    STALE_ERROR = 1
    STALE_TIMEOUT = 2
    STALE_UPDATING = 4

cdef enum:
    # CacheHdr.eflags
    EF_MUST_REVALIDATE = 1  # must-revalidate / proxy-revalidate: never served stale
    EF_NO_CACHE = 2         # no-cache: validated before every use
    EF_VALIDATOR = 4        # has ETag or Last-Modified

cdef int64_t CACHE_LOCK_MS = 5000       # how long a request waits for another's lock (nginx: 5 s)
cdef int64_t CACHE_LOCK_POLL_MS = 20
cdef uint32_t CACHE_REQ_CAP = 16384     # request header lines copied for Vary and conditionals

cdef struct CacheRt:
    char path[480]
    KzHdr* kz               # the cache's keys zone (shared index), NULL: none
    uint8_t lock            # cache-lock
    uint8_t stale           # STALE_*

cdef struct CacheHdr:
    char magic[8]           # "RPXC0002"
    uint32_t hdr_len        # bytes before the body
    uint32_t key_len
    uint32_t head_len
    uint16_t status
    uint16_t kind           # CK_*
    uint64_t body_len
    int64_t req_time        # unix seconds
    int64_t resp_time
    int64_t date            # the response's Date, -1 = none
    int64_t age0            # its Age header
    int64_t lifetime        # freshness lifetime, seconds
    uint32_t eflags         # EF_*
    uint32_t pad
    uint64_t gen            # a Vary marker's generation
    int64_t stale_if_error  # RFC 5861, -1 = none

cdef struct CacheX:
    # per exchange (malloc'd for cacheable requests; Exchange.cx)
    int old_fd              # the stored entry when stale (validation, stale answers), -1
    uint32_t old_hdr        # its header length (where its body starts)
    uint64_t old_body       # its body length
    uint64_t store_hash     # file name of the entry being stored (a variant's differs from x.ckey)
    uint32_t req_len        # request lines after the key in x.ckey_copy
    uint32_t val_len        # validator lines for the downstream in val
    int64_t wait_until      # cache-lock: waiting ends here (ms)
    int64_t age             # the head built in hb: its Age
    Buf* hb                 # CacheHdr | key | head of a 304-merged entry
    uint64_t store_size     # the entry being stored: file size (header + body), for the keys zone
    int64_t store_exp       # and when it stops being fresh (unix s)
    char val[1024]

cdef uint64_t g_cache_seq = 0
cdef uint64_t c_cache_hits = 0
cdef uint64_t c_cache_stored = 0
cdef uint64_t c_cache_misses = 0
cdef uint64_t c_cache_revalidated = 0
cdef uint64_t c_cache_stale = 0


# ---- keys zone: the shared index (keys-zone) ------------------------------------------
#
# One anonymous shared mapping per cache, mapped by the master before it forks
# (rproxy/cache_manager.py), so every worker and the master see one table:
#
#   KzHdr (64 bytes) | KzEnt[nslots] (32 bytes each)
#
# Open addressing without tombstones: a key lives in one of the KZ_PROBE slots
# from hash % nslots (wrapping), and a lookup reads all of them, so clearing a
# slot (hash = 0) is a deletion.  Words are read and written with atomic
# loads, stores and compare-and-swap (no lock, no syscall): a store claims an
# empty slot by CAS 0 -> hash, fills size, last use and expiry, then publishes
# `meta` (expiry << 1 | KZ_VALID); a reader trusts a slot only with the
# hash and the valid bit.  A race can at worst make a key look absent (one
# more downstream request) or present (one open() that finds nothing): the
# entry file itself, which holds its key, decides what is served.  When the
# window is full, the least recently used entry of the window is evicted (its
# file removed by the worker that needed the slot).

cdef extern from *:
    """
    static inline unsigned long long rp_kz_load(unsigned long long* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void rp_kz_store(unsigned long long* p, unsigned long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline int rp_kz_cas(unsigned long long* p, unsigned long long expect, unsigned long long want) {
        return __atomic_compare_exchange_n(p, &expect, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline void rp_kz_add(unsigned long long* p, unsigned long long v) {
        __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    }
    """
    unsigned long long rp_kz_load(unsigned long long* p) nogil
    void rp_kz_store(unsigned long long* p, unsigned long long v) nogil
    int rp_kz_cas(unsigned long long* p, unsigned long long expect, unsigned long long want) nogil
    void rp_kz_add(unsigned long long* p, unsigned long long v) nogil

cdef enum:
    KZ_PROBE = 8
    KZ_VALID = 1

cdef unsigned long long KZ_MAGIC = 0x5250524F58594B31ULL     # "RPROXYK1"

cdef struct KzHdr:
    unsigned long long magic
    unsigned long long nslots
    unsigned long long loaded       # the loader went through the directory: an unknown key is a miss
    unsigned long long skipped      # lookups the index answered "miss" without the file system
    unsigned long long full_evictions   # entries evicted because their window was full
    unsigned long long r5
    unsigned long long r6
    unsigned long long r7

cdef struct KzEnt:
    unsigned long long hash         # 0: empty
    unsigned long long size         # header + body bytes (the entry file's size)
    unsigned long long used         # last use, unix milliseconds
    unsigned long long meta         # expiry (unix seconds, >= 0) << 1 | KZ_VALID


cdef inline KzEnt* kz_slots(KzHdr* z) noexcept nogil:
    return <KzEnt*>(<char*>z + sizeof(KzHdr))


cdef KzEnt* kz_find(KzHdr* z, uint64_t h) noexcept nogil:
    """The valid slot of that key, or NULL."""
    cdef KzEnt* t = kz_slots(z)
    cdef uint64_t n = z.nslots, i, j = h % n
    for i in range(KZ_PROBE):
        if rp_kz_load(&t[j].hash) == h and (rp_kz_load(&t[j].meta) & KZ_VALID):
            return &t[j]
        j = j + 1 if j + 1 < n else 0
    return NULL


cdef void kz_clear(KzEnt* e, uint64_t h) noexcept nogil:
    rp_kz_store(&e.meta, 0)
    rp_kz_cas(&e.hash, h, 0)


cdef void kz_del(KzHdr* z, uint64_t h) noexcept nogil:
    """Every slot of that key (two stores racing may have made two)."""
    cdef KzEnt* t = kz_slots(z)
    cdef uint64_t n = z.nslots, i, j = h % n
    for i in range(KZ_PROBE):
        if rp_kz_load(&t[j].hash) == h:
            kz_clear(&t[j], h)
        j = j + 1 if j + 1 < n else 0


cdef int64_t kz_now_ms() noexcept nogil:
    """Wall clock in ms, coarse (a vDSO read, no syscall)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME_COARSE, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef void kz_touch(KzHdr* z, uint64_t h, int64_t now) noexcept nogil:
    cdef KzEnt* e = kz_find(z, h)
    if e != NULL and <int64_t>rp_kz_load(&e.used) + 20 <= now:
        rp_kz_store(&e.used, <unsigned long long>now)      # (at most every 20 ms: little line ping-pong)


cdef uint64_t kz_put(KzHdr* z, uint64_t h, uint64_t size, int64_t used, int64_t expires,
                     bint only_new) noexcept nogil:
    """Insert or update a key.  Returns the hash of the entry evicted to make
    room (its file is the caller's to remove), else 0.  only_new: the
    loader, which never replaces what a worker stored meanwhile."""
    cdef KzEnt* t = kz_slots(z)
    cdef KzEnt* e = NULL
    cdef KzEnt* lru = NULL
    cdef uint64_t n = z.nslots, i, j, w, victim = 0
    cdef unsigned long long meta = (<unsigned long long>(expires if expires > 0 else 0) << 1) | KZ_VALID
    cdef int attempt
    for attempt in range(4):
        j = h % n
        e = NULL
        lru = NULL
        for i in range(KZ_PROBE):
            w = rp_kz_load(&t[j].hash)
            if w == h:
                e = &t[j]
                break
            if w == 0:
                if e == NULL:
                    e = &t[j]       # the first empty slot, unless the key is further on
            elif lru == NULL or rp_kz_load(&t[j].used) < rp_kz_load(&lru.used):
                lru = &t[j]
            j = j + 1 if j + 1 < n else 0
        if e != NULL and rp_kz_load(&e.hash) == h:
            if only_new and (rp_kz_load(&e.meta) & KZ_VALID):
                return 0
        elif e != NULL:
            if not rp_kz_cas(&e.hash, 0, h):
                continue            # another store took it: look again
        elif lru != NULL:
            w = rp_kz_load(&lru.hash)
            if w == 0 or not rp_kz_cas(&lru.hash, w, h):
                continue
            rp_kz_store(&lru.meta, 0)
            rp_kz_add(&z.full_evictions, 1)
            victim = w
            e = lru
        else:
            continue
        rp_kz_store(&e.size, size)
        rp_kz_store(&e.used, <unsigned long long>used)
        rp_kz_store(&e.meta, meta)
        return victim
    return 0


cdef void cache_kz_stored(CacheRt* c, uint64_t h, uint64_t size, int64_t expires) noexcept nogil:
    """An entry file went into place: into the index (a full window evicts
    its least recently used entry, whose file goes too)."""
    cdef uint64_t victim
    cdef char path[512]
    if c.kz == NULL:
        return
    victim = kz_put(c.kz, h, size, kz_now_ms(), expires, False)
    if victim != 0 and victim != h:
        cache_path(c, victim, path)
        unlink(path)


cdef void cache_kz_removed(CacheRt* c, uint64_t h) noexcept nogil:
    if c.kz != NULL:
        kz_del(c.kz, h)


cdef int64_t kz_expiry(CacheHdr* ch) noexcept nogil:
    """When a stored entry stops being fresh (unix s)."""
    return ch.resp_time + ch.lifetime - entry_age(ch, ch.resp_time)


cdef uint64_t cache_key(UConn* uc, Exchange* x, char* out, uint32_t cap, uint32_t* klen) noexcept nogil:
    """The entry's key (scheme://host + target, host in lower case) and its
    hash; 0 when it does not fit."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef uint32_t n = 0, i
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
    cache_kz_removed(c, cache_hash(k2, n))


cdef void cache_path(CacheRt* c, uint64_t h, char* out) noexcept nogil:
    snprintf(out, 512, "%s/%016llx", c.path, <unsigned long long>h)


cdef void cache_tmp_path(CacheRt* c, uint64_t seq, char* out) noexcept nogil:
    snprintf(out, 512, "%s/.tmp.%d.%llu", c.path, getpid(), <unsigned long long>seq)


cdef void cache_lock_path(CacheRt* c, uint64_t h, char* out) noexcept nogil:
    snprintf(out, 512, "%s/.lock.%016llx", c.path, <unsigned long long>h)


# ---- request and head helpers ------------------------------------------------------

cdef inline bint c_ows(char ch) noexcept nogil:
    return ch == c' ' or ch == c'\t'


cdef uint32_t cache_req_lines(UConn* uc, Exchange* x, char* out, uint32_t cap) noexcept nogil:
    """The request's fields as "name:value\\n" (name in lower case, value
    trimmed): kept with the key, for Vary and conditionals after the client's
    buffer has moved on.  0xffffffff when they do not fit."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef uint32_t n = 0, i, k, vs, ve
    cdef Header* h
    for i in range(x.nreq):
        h = &x.req[i]
        vs = h.value.off
        ve = h.value.off + h.value.len
        while vs < ve and c_ows(base[vs]):
            vs += 1
        while ve > vs and c_ows(base[ve - 1]):
            ve -= 1
        if n + h.name.len + (ve - vs) + 2 > cap:
            return <uint32_t>0xffffffffU
        for k in range(h.name.len):
            out[n] = cp_lower(base[h.name.off + k])
            n += 1
        out[n] = c':'
        n += 1
        memcpy(out + n, base + vs, ve - vs)
        n += ve - vs
        out[n] = c'\n'
        n += 1
    return n


cdef int64_t req_field(const char* lines, uint32_t n, const char* name, uint32_t nl,
                       char* out, uint32_t cap) noexcept nogil:
    """The request's value of a field (lower-case name): all its fields
    joined by ",", whitespace around commas dropped.  -1 when absent, -2
    when it does not fit."""
    cdef uint32_t i = 0, e, o = 0, j, v, k2
    cdef bint found = False
    while i < n:
        e = i
        while e < n and lines[e] != c'\n':
            e += 1
        if e - i > nl and lines[i + nl] == c':' and memcmp(lines + i, name, nl) == 0:
            if found:
                if o >= cap:
                    return -2
                out[o] = c','
                o += 1
            found = True
            v = i + nl + 1
            j = v
            while j < e:
                if c_ows(lines[j]):
                    # drop whitespace next to a comma (and at the ends: already trimmed)
                    k2 = j
                    while k2 < e and c_ows(lines[k2]):
                        k2 += 1
                    if (k2 < e and lines[k2] == c',') or (o > 0 and out[o - 1] == c','):
                        j = k2
                        continue
                if o >= cap:
                    return -2
                out[o] = lines[j]
                o += 1
                j += 1
        i = e + 1
    return <int64_t>o if found else -1


cdef const char* head_value(const char* head, uint32_t n, const char* name, uint32_t* vlen) noexcept nogil:
    """A stored head's first field of that (lower-case) name: its value."""
    cdef uint32_t i = 0, e, c
    while i < n and head[i] != c'\n':
        i += 1
    i += 1                          # past the status line
    while i < n:
        e = i
        while e < n and head[e] != c'\r':
            e += 1
        c = i
        while c < e and head[c] != c':':
            c += 1
        if c < e and cp_eq(head + i, c - i, name):
            c += 1
            while c < e and c_ows(head[c]):
                c += 1
            vlen[0] = e - c
            return head + c
        i = e + 2
    return NULL


cdef int head_spans(const char* base, uint32_t start, uint32_t end, Header* hs, int cap) noexcept nogil:
    """Header spans (relative to base) of the fields of a stored head."""
    cdef uint32_t i = start, e, c, v
    cdef int nh = 0
    while i < end and base[i] != c'\n':
        i += 1
    i += 1
    while i < end and nh < cap:
        e = i
        while e < end and base[e] != c'\r':
            e += 1
        c = i
        while c < e and base[c] != c':':
            c += 1
        if c < e:
            v = c + 1
            while v < e and c_ows(base[v]):
                v += 1
            hs[nh].name.off = i
            hs[nh].name.len = c - i
            hs[nh].value.off = v
            hs[nh].value.len = e - v
            nh += 1
        i = e + 2
    return nh


cdef int vary_names(const char* base, Header* hs, int nh, char* out, int cap) noexcept nogil:
    """The Vary field names of a response, lower case, comma-separated
    (0: none, -1: "*" or too long)."""
    cdef int i, o = 0
    cdef uint32_t j, s
    cdef const char* v
    cdef Header* h
    for i in range(nh):
        h = &hs[i]
        if not cp_eq(base + h.name.off, h.name.len, "vary"):
            continue
        v = base + h.value.off
        j = 0
        while j < h.value.len:
            while j < h.value.len and (c_ows(v[j]) or v[j] == c','):
                j += 1
            s = j
            while j < h.value.len and not c_ows(v[j]) and v[j] != c',':
                j += 1
            if j == s:
                continue
            if j - s == 1 and v[s] == c'*':
                return -1
            if o + <int>(j - s) + 1 >= cap:
                return -1
            if o:
                out[o] = c','
                o += 1
            while s < j:
                out[o] = cp_lower(v[s])
                o += 1
                s += 1
    return o


cdef int64_t vary_key(const char* names, uint32_t nn, uint64_t gen, const char* key, uint32_t klen,
                      const char* lines, uint32_t ll, char* out, uint32_t cap) noexcept nogil:
    """A variant's key: key \\0 gen \\0 then name:value\\n per Vary name
    (an absent field: name!\\n).  -1 when it does not fit."""
    cdef uint32_t o, i = 0, s
    cdef int64_t r
    if klen + 20 > cap:
        return -1
    memcpy(out, key, klen)
    o = klen
    o += <uint32_t>snprintf(out + o, 20, "%c%016llx%c", 0, <unsigned long long>gen, 0)
    while i < nn:
        s = i
        while i < nn and names[i] != c',':
            i += 1
        if o + (i - s) + 2 > cap:
            return -1
        memcpy(out + o, names + s, i - s)
        o += i - s
        r = req_field(lines, ll, names + s, i - s, out + o + 1, cap - o - 2)
        if r == -2:
            return -1
        if r < 0:
            out[o] = c'!'
            o += 1
        else:
            out[o] = c':'
            o += 1 + <uint32_t>r
        out[o] = c'\n'
        o += 1
        i += 1
    return o


cdef int cache_open_entry(CacheRt* c, uint64_t h, const char* key, uint32_t klen, Buf* b) noexcept nogil:
    """Open the entry file of that hash and read its start into b: its fd
    when it is an entry of exactly that key, else -1."""
    cdef char path[512]
    cdef int fd
    cdef ssize_t n
    cdef CacheHdr* ch = <CacheHdr*>bdata(b)
    if c.kz != NULL and kz_find(c.kz, h) == NULL and rp_kz_load(&c.kz.loaded):
        rp_kz_add(&c.kz.skipped, 1)
        return -1                   # the index does not know it: a miss without the file system
    cache_path(c, h, path)
    fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0:
        return -1
    n = pread(fd, bdata(b), b.cap, 0)
    if n < <ssize_t>sizeof(CacheHdr) or memcmp(ch.magic, "RPXC0002", 8) != 0 or ch.hdr_len > <uint32_t>n \
            or ch.key_len != klen or memcmp(bdata(b) + sizeof(CacheHdr), key, klen) != 0 \
            or sizeof(CacheHdr) + ch.key_len + ch.head_len != ch.hdr_len:
        close(fd)
        return -1                   # another key with the same hash, or not an entry: a miss
    if c.kz != NULL:
        kz_touch(c.kz, h, kz_now_ms())  # "last used", for the manager's inactive / LRU
    return fd


cdef int64_t entry_age(CacheHdr* ch, int64_t now) noexcept nogil:
    """RFC 9111 4.2.3 for a stored entry."""
    cdef int64_t apparent, corrected
    apparent = ch.resp_time - ch.date if ch.date >= 0 and ch.resp_time > ch.date else 0
    corrected = ch.age0 + (ch.resp_time - ch.req_time if ch.resp_time > ch.req_time else 0)
    return (apparent if apparent > corrected else corrected) + (now - ch.resp_time if now > ch.resp_time else 0)


# ---- lookup -------------------------------------------------------------------------

cdef bint cache_on_request(UConn* uc, Exchange* x) noexcept nogil:
    """At routing.  True when the request was answered (or parked) by the cache."""
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef CcDirs req
    cdef int i
    cdef Header* h
    cdef char key[4096]
    cdef uint32_t klen = 0, rl
    cdef CacheX* cx
    cdef bint pragma = False, has_cc = False
    cdef char lines[16384]          # CACHE_REQ_CAP
    x.cflags = 0
    x.ckey = 0
    x.cx = NULL
    if x.method != HTTP_GET and x.method != HTTP_HEAD:
        if x.method != HTTP_OPTIONS and x.method != HTTP_TRACE:
            x.ckey = cache_key(uc, x, key, 4096, &klen)
            x.cst = CS_INVALIDATE
            x.ckey_copy = <char*>malloc(klen) if x.ckey else NULL
            if x.ckey_copy != NULL:
                memcpy(x.ckey_copy, key, klen)
                x.ckey_len = klen
        return False
    x.cst = CS_BYPASS
    if (x.flags & XF_UPGRADE) or not uc_request_bodyless(uc):
        return False
    cc_init(&req)
    for i in range(x.nreq):
        h = &x.req[i]
        if cp_eq(base + h.name.off, h.name.len, "cache-control"):
            cc_parse(base + h.value.off, h.value.len, &req)
            has_cc = True
        elif cp_eq(base + h.name.off, h.name.len, "authorization"):
            x.cflags |= CF_AUTH
        elif cp_eq(base + h.name.off, h.name.len, "pragma") and cp_eq(base + h.value.off, h.value.len, "no-cache"):
            pragma = True
        elif cp_eq(base + h.name.off, h.name.len, "if-none-match") \
                or cp_eq(base + h.name.off, h.name.len, "if-modified-since"):
            x.cflags |= CF_CLIENT_COND
        elif cp_eq(base + h.name.off, h.name.len, "if-match") \
                or cp_eq(base + h.name.off, h.name.len, "if-unmodified-since"):
            x.cflags |= CF_CLIENT_COND | CF_NO_LOOKUP      # for the origin server to evaluate
    if pragma and not has_cc:
        req.flags |= CC_NO_CACHE    # Pragma only counts without Cache-Control (RFC 9111 5.4)
    if req.flags & CC_NO_STORE:
        x.cflags |= CF_NO_STORE
        return False
    x.ckey = cache_key(uc, x, key, 4096, &klen)
    if x.ckey == 0:
        return False
    rl = cache_req_lines(uc, x, lines, CACHE_REQ_CAP)
    if rl == <uint32_t>0xffffffffU:
        x.ckey = 0
        return False                # fields too large to key variants by: not cached
    cx = <CacheX*>malloc(sizeof(CacheX))
    x.ckey_copy = <char*>malloc(klen + rl)     # the key and the fields: the client's buffer moves on
    if cx == NULL or x.ckey_copy == NULL:
        free(cx)
        free(x.ckey_copy)
        x.ckey_copy = NULL
        x.ckey = 0
        return False
    memcpy(x.ckey_copy, key, klen)
    memcpy(x.ckey_copy + klen, lines, rl)
    x.ckey_len = klen
    x.cx = cx
    cx.old_fd = -1
    cx.hb = NULL
    cx.req_len = rl
    cx.val_len = 0
    cx.store_hash = x.ckey
    cx.store_size = 0
    cx.store_exp = 0
    cx.wait_until = g_now + CACHE_LOCK_MS
    x.creq_time = time(NULL)
    x.cst = CS_MISS
    if (req.flags & CC_NO_CACHE) or req.max_age == 0:
        x.cflags |= CF_NO_LOOKUP
    if cache_lookup(uc, x, &req):
        return True
    if req.flags & CC_ONLY_IF_CACHED:
        if cx.old_fd >= 0:
            close(cx.old_fd)        # (not a downstream failure: no stale answer instead)
            cx.old_fd = -1
        cache_unlock(x)
        uc_reject(uc, 504)          # nothing stored that may be used (RFC 9111 5.2.1.7)
        return True
    return False


cdef bint cache_lookup(UConn* uc, Exchange* x, CcDirs* req) noexcept nogil:
    """Find the entry (through a Vary marker); serve it when fresh, keep it
    when stale (validation, stale answers); take or wait for the key's lock."""
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cdef CacheX* cx = <CacheX*>x.cx
    cdef Buf* b
    cdef CacheHdr* ch
    cdef int fd, r
    cdef int64_t now, age, vk
    cdef char vkey[8192]
    cdef const char* head
    cdef const char* v
    cdef uint32_t vl
    cdef bint fresh, stale_ok
    b = buf_get()
    if b == NULL:
        return False
    fd = cache_open_entry(c, x.ckey, x.ckey_copy, x.ckey_len, b)
    ch = <CacheHdr*>bdata(b)
    if fd >= 0 and ch.kind == CK_VARY:
        vk = vary_key(bdata(b) + ch.hdr_len - ch.head_len, ch.head_len, ch.gen, x.ckey_copy, x.ckey_len,
                      x.ckey_copy + x.ckey_len, cx.req_len, vkey, 8192)
        close(fd)
        fd = -1
        if vk > 0:
            fd = cache_open_entry(c, cache_hash(vkey, <uint32_t>vk), vkey, <uint32_t>vk, b)
            if fd >= 0 and ch.kind != CK_ENTRY:
                close(fd)
                fd = -1
    if fd < 0:
        buf_put(b)
        return cache_miss_lock(uc, x)
    now = time(NULL)
    age = entry_age(ch, now)
    fresh = age < ch.lifetime and not (ch.eflags & EF_NO_CACHE) and not (x.cflags & CF_NO_LOOKUP)
    if fresh and ((req.max_age != CC_UNSET and age > req.max_age)
                  or (req.min_fresh != CC_UNSET and age + req.min_fresh >= ch.lifetime)):
        fresh = False
    if not fresh and req.max_stale != CC_UNSET and not (ch.eflags & (EF_MUST_REVALIDATE | EF_NO_CACHE)) \
            and not (x.cflags & CF_NO_LOOKUP) and (req.max_age == CC_UNSET or age <= req.max_age) \
            and (req.max_stale == CC_ANY or age - ch.lifetime <= req.max_stale):
        fresh = True                # the client accepts that much staleness (RFC 9111 5.2.1.2)
    if fresh:
        cache_serve(uc, x, fd, b, age, CS_HIT)
        return True
    # stale (or the client asked for validation): kept for validation and stale answers
    x.cst = CS_MISS if x.cflags & CF_NO_LOOKUP else CS_EXPIRED
    cx.old_fd = fd
    cx.old_hdr = ch.hdr_len
    cx.old_body = ch.body_len
    cx.val_len = 0
    head = bdata(b) + sizeof(CacheHdr) + ch.key_len
    if not (x.cflags & CF_CLIENT_COND):
        v = head_value(head, ch.head_len, "etag", &vl)
        if v != NULL and cx.val_len + vl + 20 < 1024:
            memcpy(cx.val + cx.val_len, "If-None-Match: ", 15)
            cx.val_len += 15
            if v[0] != c'"' and not (vl > 2 and v[0] == c'W' and v[1] == c'/'):
                cx.val[cx.val_len] = c'"'   # an unquoted ETag is sent as the entity-tag it means
                memcpy(cx.val + cx.val_len + 1, v, vl)
                cx.val[cx.val_len + 1 + vl] = c'"'
                cx.val_len += vl + 2
            else:
                memcpy(cx.val + cx.val_len, v, vl)
                cx.val_len += vl
            memcpy(cx.val + cx.val_len, "\r\n", 2)
            cx.val_len += 2
        v = head_value(head, ch.head_len, "last-modified", &vl)
        if v != NULL and cx.val_len + vl + 22 < 1024:
            memcpy(cx.val + cx.val_len, "If-Modified-Since: ", 19)
            memcpy(cx.val + cx.val_len + 19, v, vl)
            memcpy(cx.val + cx.val_len + 19 + vl, "\r\n", 2)
            cx.val_len += 21 + vl
    stale_ok = (c.stale & STALE_UPDATING) and not (ch.eflags & (EF_MUST_REVALIDATE | EF_NO_CACHE)) \
        and not (x.cflags & CF_NO_LOOKUP)
    if (c.lock or stale_ok) and not (x.cflags & CF_NO_LOOKUP):
        r = cache_lock_take(c, x)
        if r == 0 and stale_ok:
            cx.old_fd = -1
            cx.val_len = 0
            cache_serve(uc, x, fd, b, age, CS_UPDATING)
            return True
        if r == 0 and c.lock:
            buf_put(b)
            return cache_park(uc, x)
    buf_put(b)
    return False


cdef bint cache_miss_lock(UConn* uc, Exchange* x) noexcept nogil:
    """No usable entry: with cache-lock, one request goes to the downstream
    and the others wait (bounded) for its entry (a HEAD cannot fill it)."""
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    if not c.lock or (x.cflags & CF_NO_LOOKUP) or (x.flags & XF_HEAD_REQ):
        return False
    if cache_lock_take(c, x) != 0:
        return False
    return cache_park(uc, x)


cdef int cache_lock_take(CacheRt* c, Exchange* x) noexcept nogil:
    """1: this exchange holds the key's lock now (or could not make one: it
    goes on unlocked); 0: another live process holds it."""
    cdef char path[512]
    cdef char num[32]
    cdef int fd, k, pid, tries
    cdef ssize_t n
    if x.cflags & CF_LOCKED:
        return 1
    cache_lock_path(c, x.ckey, path)
    for tries in range(2):
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0:
            k = snprintf(num, 32, "%d\n", getpid())
            write(fd, num, k)
            close(fd)
            x.cflags |= CF_LOCKED
            return 1
        if errno != EEXIST:
            return 1
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0:
            continue                # released meanwhile: try again
        n = read(fd, num, 31)
        close(fd)
        pid = 0
        if n > 0:
            num[n] = 0
            for k in range(n):
                if num[k] < c'0' or num[k] > c'9':
                    break
                pid = pid * 10 + (num[k] - 48)
        if pid > 0 and (kill(pid, 0) == 0 or errno != ESRCH):
            return 0
        unlink(path)                # its owner died while filling the entry
    return 1


cdef void cache_unlock(Exchange* x) noexcept nogil:
    cdef char path[512]
    if x.cflags & CF_LOCKED:
        x.cflags &= ~CF_LOCKED
        cache_lock_path(<CacheRt*>x.rule.cache, x.ckey, path)
        unlink(path)


cdef bint cache_park(UConn* uc, Exchange* x) noexcept nogil:
    """Wait for the lock's owner (polled), up to CACHE_LOCK_MS; then go to
    the downstream without storing."""
    cdef CacheX* cx = <CacheX*>x.cx
    if g_now >= cx.wait_until:
        x.cflags |= CF_DONT_STORE
        return False
    if cx.old_fd >= 0:
        close(cx.old_fd)
        cx.old_fd = -1
    cx.val_len = 0
    uc_move(uc, U_PENDING)
    timer_stop(&uc.conn.timer)
    timer_init(&x.ptimer, TK_CACHE, x)
    timer_arm(&x.ptimer, CACHE_LOCK_POLL_MS)
    return True


cdef void cache_on_timer(Exchange* x) noexcept nogil:
    """A request waiting for another's lock: look again."""
    cdef UConn* uc = x.uc
    cdef CcDirs req
    timer_init(&x.ptimer, TK_EXCH, x)
    cc_init(&req)
    x.cst = CS_MISS
    if cache_lookup(uc, x, &req):
        return
    uc_dispatch(uc)


# ---- serving an entry ------------------------------------------------------------------

cdef bint etag_matches(const char* inm, uint32_t n, const char* etag, uint32_t el) noexcept nogil:
    """If-None-Match (weak comparison, RFC 9110 13.1.2; quotes missing on
    either side are tolerated)."""
    cdef uint32_t i = 0, s, e
    if el >= 2 and etag[0] == c'W' and etag[1] == c'/':
        etag += 2
        el -= 2
    if el >= 2 and etag[0] == c'"' and etag[el - 1] == c'"':
        etag += 1
        el -= 2
    while i < n:
        while i < n and (c_ows(inm[i]) or inm[i] == c','):
            i += 1
        if i < n and inm[i] == c'*':
            return True
        if i + 1 < n and inm[i] == c'W' and inm[i + 1] == c'/':
            i += 2
        s = i
        if i < n and inm[i] == c'"':
            i += 1
            while i < n and inm[i] != c'"':
                i += 1
            i += 1
        else:
            while i < n and inm[i] != c',':
                i += 1
        if i > n:
            i = n
        e = i
        if e - s >= 2 and inm[s] == c'"' and inm[e - 1] == c'"':
            s += 1
            e -= 1
        if e - s == el and memcmp(inm + s, etag, el) == 0:
            return True
    return False


cdef int cache_range(const char* v, uint32_t n, uint64_t size, uint64_t* start, uint64_t* end) noexcept nogil:
    """One `bytes=` range: 1 satisfiable ([start, end] inclusive), 0 not
    satisfiable (416), -1 ignored (invalid, several ranges: the whole body)."""
    cdef uint32_t i = 6
    cdef uint64_t a = 0, b = 0
    cdef bint ha = False, hb = False
    if n < 7 or strncasecmp(v, "bytes=", 6) != 0 or memchr(v, c',', n) != NULL:
        return -1
    while i < n and v[i] >= c'0' and v[i] <= c'9':
        if a > 100000000000000000ULL:
            return -1
        a = a * 10 + <uint64_t>(v[i] - 48)
        ha = True
        i += 1
    if i >= n or v[i] != c'-':
        return -1
    i += 1
    while i < n and v[i] >= c'0' and v[i] <= c'9':
        if b > 100000000000000000ULL:
            return -1
        b = b * 10 + <uint64_t>(v[i] - 48)
        hb = True
        i += 1
    if i != n or (not ha and not hb):
        return -1
    if not ha:                      # a suffix: the last b bytes
        if b == 0 or size == 0:
            return 0
        start[0] = size - b if b < size else 0
        end[0] = size - 1
        return 1
    if hb and b < a:
        return -1
    if a >= size:
        return 0
    start[0] = a
    end[0] = b if hb and b < size else size - 1
    return 1


cdef bint cache_hit_head(UConn* uc, Exchange* x, Buf* b, int64_t age, uint8_t st) noexcept nogil:
    """The client's head for a stored entry (b: CacheHdr | key | head) into
    uc.conn.out: 304 for a matching client conditional, 206 / 416 for a Range,
    else the stored status; Age and X-Cache.  Sets the body to send."""
    cdef CacheHdr* ch = <CacheHdr*>bdata(b)
    cdef CacheX* cx = <CacheX*>x.cx
    cdef const char* head = bdata(b) + sizeof(CacheHdr) + ch.key_len
    cdef const char* lines = x.ckey_copy + x.ckey_len if x.ckey_copy != NULL else NULL
    cdef uint32_t ll = cx.req_len if cx != NULL else 0
    cdef Buf* hb = buf_get()
    cdef W w
    cdef char tmp[512]
    cdef char num[96]
    cdef int64_t r, t
    cdef int k, mode = 0            # 0 whole, 304, 206, 416
    cdef uint64_t rs = 0, re = 0
    cdef uint32_t i, e, c, vl
    cdef const char* v
    if hb == NULL:
        return False
    if lines != NULL and ch.status == 200:
        r = req_field(lines, ll, "if-none-match", 13, tmp, 512)
        if r >= 0:
            v = head_value(head, ch.head_len, "etag", &vl)
            if v != NULL and etag_matches(tmp, <uint32_t>r, v, vl):
                mode = 304
        else:
            r = req_field(lines, ll, "if-modified-since", 17, tmp, 512)
            if r >= 0:
                t = http_date(tmp, <uint32_t>r)
                v = head_value(head, ch.head_len, "last-modified", &vl)
                if v == NULL:
                    v = head_value(head, ch.head_len, "date", &vl)     # RFC 9110 13.1.3
                if t >= 0 and v != NULL and http_date(v, vl) >= 0 and http_date(v, vl) <= t:
                    mode = 304
        if mode == 0 and req_field(lines, ll, "if-range", 8, tmp, 512) < 0:
            r = req_field(lines, ll, "range", 5, tmp, 512)
            if r >= 0:
                k = cache_range(tmp, <uint32_t>r, ch.body_len, &rs, &re)
                if k == 1:
                    mode = 206
                elif k == 0:
                    mode = 416
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    i = 0
    while i < ch.head_len and head[i] != c'\n':
        i += 1
    i += 1
    if mode == 304:
        w_str(&w, "HTTP/1.1 304 Not Modified\r\n")
    elif mode == 206:
        w_str(&w, "HTTP/1.1 206 Partial Content\r\n")
    elif mode == 416:
        w_str(&w, "HTTP/1.1 416 Range Not Satisfiable\r\n")
    else:
        w_put(&w, head, i)
    while i < ch.head_len:
        e = i
        while e < ch.head_len and head[e] != c'\n':
            e += 1
        c = i
        while c < e and head[c] != c':':
            c += 1
        if mode == 0 or not cp_eq(head + i, c - i, "content-length"):
            w_put(&w, head + i, e + 1 - i)
        i = e + 1
    if mode == 206:
        k = snprintf(num, 96, "Content-Range: bytes %llu-%llu/%llu\r\nContent-Length: %llu\r\n",
                     <unsigned long long>rs, <unsigned long long>re, <unsigned long long>ch.body_len,
                     <unsigned long long>(re - rs + 1))
        w_put(&w, num, k)
    elif mode == 416:
        k = snprintf(num, 96, "Content-Range: bytes */%llu\r\nContent-Length: 0\r\n",
                     <unsigned long long>ch.body_len)
        w_put(&w, num, k)
    k = snprintf(num, 32, "%lld", <long long>(age if age > 0 else 0))
    w_put(&w, "Age: ", 5)
    w_put(&w, num, k)
    w_put(&w, "\r\nX-Cache: ", 11)
    w_str(&w, cache_status_name(st))
    w_put(&w, "\r\n", 2)
    if uc.conn.flags & UF_CLOSE_AFTER:
        w_put(&w, "Connection: close\r\n", 19)
    elif x.flags & XF_HTTP10:
        w_put(&w, "Connection: keep-alive\r\n", 24)
    w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(hb)
        return False
    x.status = ch.status if mode == 0 else <uint16_t>mode
    x.cst = st
    x.coff = ch.hdr_len + rs
    x.cleft = 0 if (x.flags & XF_HEAD_REQ) or mode == 304 or mode == 416 else \
        (re - rs + 1 if mode == 206 else ch.body_len)
    out_release(&uc.conn.out)
    uc.conn.out.hptr = bdata(hb)
    uc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    uc.conn.out.hbuf = hb
    x.flags |= XF_RESP_STARTED
    x.log.t_ds_head_us = g_now_us
    x.log.flags |= XL_RESP_HEAD
    x.log.body_base = x.log.bytes_out + uc.conn.out.hlen
    return True


cdef void cache_serve(UConn* uc, Exchange* x, int fd, Buf* b, int64_t age, uint8_t st) noexcept nogil:
    """Answer from the entry: its head (cache_hit_head), then its body in
    bounded reads (cache_pump).  Takes fd and b."""
    global c_cache_hits, c_cache_stale
    cdef bint keep = uc_reject_keeps(uc)       # steps the parser over the (empty) body
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    x.flags |= XF_REQ_DONE
    if not cache_hit_head(uc, x, b, age, st):
        buf_put(b)
        close(fd)
        if x.cx != NULL and (<CacheX*>x.cx).old_fd == fd:
            (<CacheX*>x.cx).old_fd = -1
        uc_respond(uc, 502, False)
        return
    if st == CS_HIT:
        c_cache_hits += 1
        if (<CacheRt*>x.rule.cache).kz == NULL:
            futimens(fd, NULL)      # "last used" without an index (the index has it: cache_open_entry)
    else:
        c_cache_stale += 1
    x.cfd = fd
    buf_put(b)
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
        if uc.conn.tls == NULL and not (uc.conn.flags & CN_VIRTUAL):    # (an HTTP/2 stream has no socket)
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


cdef const char* cache_status_name(uint8_t st) noexcept nogil:
    """X-Cache and {CACHE}; NULL for none."""
    if st == CS_MISS:
        return "MISS"
    if st == CS_HIT:
        return "HIT"
    if st == CS_EXPIRED:
        return "EXPIRED"
    if st == CS_BYPASS:
        return "BYPASS"
    if st == CS_REVALIDATED:
        return "REVALIDATED"
    if st == CS_STALE:
        return "STALE"
    if st == CS_UPDATING:
        return "UPDATING"
    return NULL


cdef void cache_head_extra(W* w, Exchange* x) noexcept nogil:
    cdef const char* s
    if x.cst == CS_INVALIDATE:
        return
    s = cache_status_name(x.cst)
    if s != NULL:
        w_put(w, "X-Cache: ", 9)
        w_str(w, s)
        w_put(w, "\r\n", 2)


cdef void cache_req_extra(W* w, Exchange* x) noexcept nogil:
    """build_request_head: the stale entry's validators (not on a pipelined
    request: its 304 must end the exchange alone on its connection)."""
    cdef CacheX* cx = <CacheX*>x.cx
    if cx == NULL or cx.val_len == 0 or cx.old_fd < 0:
        return
    if x.flags & XF_PIPELINED:
        cx.val_len = 0
        return
    x.flags &= ~XF_PIPE_OK          # nothing joins behind it
    w_put(w, cx.val, cx.val_len)


cdef bint cache_stale_answer(UConn* uc, Exchange* x, int status) noexcept nogil:
    """uc_respond: the downstream failed (502/503) or timed out (504): answer
    with the stale entry when cache-use-stale (or the entry's
    stale-if-error) allows it."""
    cdef CacheRt* c
    cdef CacheX* cx = <CacheX*>x.cx
    cdef Buf* b
    cdef CacheHdr* ch
    cdef int fd
    cdef int64_t now, age
    cdef bint ok
    if x.cst != CS_EXPIRED or cx == NULL or cx.old_fd < 0 or (x.flags & XF_RESP_STARTED) or status < 500 \
            or (x.cflags & CF_NO_LOOKUP) or x.dc != NULL:
        return False
    c = <CacheRt*>x.rule.cache
    b = buf_get()
    if b == NULL:
        return False
    fd = cx.old_fd
    if pread(fd, bdata(b), b.cap, 0) < <ssize_t>cx.old_hdr:
        buf_put(b)
        return False
    ch = <CacheHdr*>bdata(b)
    now = time(NULL)
    age = entry_age(ch, now)
    ok = (status == 504 and (c.stale & STALE_TIMEOUT)) or (status != 504 and (c.stale & STALE_ERROR)) \
        or (ch.stale_if_error >= 0 and age - ch.lifetime <= ch.stale_if_error)
    if not ok or (ch.eflags & (EF_MUST_REVALIDATE | EF_NO_CACHE)):
        buf_put(b)
        return False
    rp_elog(x_errfd(x), 4, "cache: downstream answer %d replaced by a stale entry (%lld s old)", status,
            <long long>age)
    cx.old_fd = -1
    cx.val_len = 0
    cache_serve(uc, x, fd, b, age, CS_STALE)
    return True


# ---- storing ---------------------------------------------------------------------------------

cdef bint cache_hop(const char* n, uint32_t l) noexcept nogil:
    """Fields an entry does not keep: hop-by-hop, the proxy's own, and what is set per hit."""
    return cp_eq(n, l, "connection") or cp_eq(n, l, "keep-alive") or cp_eq(n, l, "proxy-connection") \
        or cp_eq(n, l, "te") or cp_eq(n, l, "transfer-encoding") or cp_eq(n, l, "trailer") \
        or cp_eq(n, l, "upgrade") or cp_eq(n, l, "age") or cp_eq(n, l, "x-cache") \
        or cp_eq(n, l, "proxy-authenticate") or cp_eq(n, l, "proxy-authentication-info") \
        or cp_eq(n, l, "proxy-authorization")


cdef bint cache_no_update(const char* n, uint32_t l) noexcept nogil:
    """Fields a 304 does not replace in the stored head (RFC 9111 3.2)."""
    return cp_eq(n, l, "content-length") or cp_eq(n, l, "content-encoding") or cp_eq(n, l, "content-range") \
        or cp_eq(n, l, "content-md5") or cp_eq(n, l, "etag") or cp_eq(n, l, "transfer-encoding")


cdef uint32_t entry_eflags(RespFacts* f) noexcept nogil:
    cdef uint32_t e = 0
    if f.cc.flags & (CC_MUST_REVALIDATE | CC_PROXY_REVALIDATE):
        e |= EF_MUST_REVALIDATE
    if f.cc.flags & CC_NO_CACHE:
        e |= EF_NO_CACHE
    if f.has_validator:
        e |= EF_VALIDATOR
    return e


cdef int cache_write_tmp(CacheRt* c, Exchange* x, const char* p, uint32_t n, uint64_t* seq) noexcept nogil:
    """A new temp file holding p: its fd, or -1 (logged)."""
    global g_cache_seq
    cdef char path[512]
    cdef int fd
    g_cache_seq += 1
    seq[0] = g_cache_seq
    cache_tmp_path(c, g_cache_seq, path)
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    if fd < 0:
        rp_elog(x_errfd(x), 3, "cache: cannot create %s: %s", path, strerror(errno))
        return -1
    if write(fd, p, n) != <ssize_t>n:
        rp_elog(x_errfd(x), 3, "cache: cannot write %s: %s", path, strerror(errno))
        close(fd)
        unlink(path)
        return -1
    return fd


cdef uint64_t cache_vary_gen(CacheRt* c, Exchange* x, const char* names, uint32_t nn) noexcept nogil:
    """The generation of the key's Vary marker for these names: the
    current one, or a new marker's (0: none could be written)."""
    cdef Buf* b = buf_get()
    cdef CacheHdr* ch
    cdef CacheHdr mk
    cdef int fd
    cdef uint64_t gen = 0, seq
    cdef char tmp[512]
    cdef char path[512]
    if b == NULL:
        return 0
    ch = <CacheHdr*>bdata(b)
    fd = cache_open_entry(c, x.ckey, x.ckey_copy, x.ckey_len, b)
    if fd >= 0:
        close(fd)
        if ch.kind == CK_VARY and ch.head_len == nn and memcmp(bdata(b) + ch.hdr_len - nn, names, nn) == 0:
            gen = ch.gen
            buf_put(b)
            return gen
    memset(&mk, 0, sizeof(CacheHdr))
    memcpy(mk.magic, "RPXC0002", 8)
    mk.kind = CK_VARY
    mk.key_len = x.ckey_len
    mk.head_len = nn
    mk.hdr_len = <uint32_t>sizeof(CacheHdr) + x.ckey_len + nn
    mk.resp_time = time(NULL)
    mk.date = -1
    mk.stale_if_error = -1
    gen = (<uint64_t>g_now_us << 20) ^ (<uint64_t>getpid() << 8) ^ (g_cache_seq + 1)
    mk.gen = gen if gen != 0 else 1
    if mk.hdr_len > b.cap:
        buf_put(b)
        return 0
    memcpy(bdata(b), &mk, sizeof(CacheHdr))
    memcpy(bdata(b) + sizeof(CacheHdr), x.ckey_copy, x.ckey_len)
    memcpy(bdata(b) + sizeof(CacheHdr) + x.ckey_len, names, nn)
    fd = cache_write_tmp(c, x, bdata(b), mk.hdr_len, &seq)
    buf_put(b)
    if fd < 0:
        return 0
    close(fd)
    cache_tmp_path(c, seq, tmp)
    cache_path(c, x.ckey, path)
    if rename(tmp, path) != 0:
        unlink(tmp)
        return 0
    cache_kz_stored(c, x.ckey, mk.hdr_len, 0)
    return mk.gen


cdef void cache_on_response_head(DConn* dc, Exchange* x) noexcept nogil:
    """The final response head: remove the entry after an unsafe method's
    success; merge a 304 into the stale entry; else start storing when
    RFC 9111 allows."""
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cdef CacheX* cx = <CacheX*>x.cx
    cdef llhttp_t* p = &dc.conn.parser
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef RespFacts f
    cdef CcDirs req
    cdef char path[512]
    cdef char names[512]
    cdef char vkey[8192]
    cdef const char* key
    cdef uint32_t klen = 0
    cdef int64_t vk
    cdef int nn
    cdef uint64_t gen
    cdef Buf* hb
    cdef W w
    cdef CacheHdr ch
    cdef int i, fd
    cdef Header* h
    cdef NameList* strip = &x.rule.vhost.strip
    cdef Tokens toks
    cdef char code[4]
    if x.cst == CS_INVALIDATE:
        if x.ckey and x.status < 400:
            cache_path(c, x.ckey, path)
            unlink(path)
            cache_kz_removed(c, x.ckey)
            for i in range(x.nresp):
                h = &x.resp[i]
                if x.ckey_copy != NULL and (cp_eq(base + h.name.off, h.name.len, "location")
                                            or cp_eq(base + h.name.off, h.name.len, "content-location")):
                    cache_invalidate_ref(c, x.ckey_copy, x.ckey_len, base + h.value.off, h.value.len)
        return
    if (x.cst != CS_MISS and x.cst != CS_EXPIRED) or cx == NULL:
        return
    if x.status == 304 and cx.val_len and cx.old_fd >= 0:
        cache_merge_304(dc, x)
        return
    if x.cz != NULL or not ((p.flags & F_CONTENT_LENGTH) or x.status == 204) or (x.flags & XF_HEAD_REQ) \
            or (x.cflags & CF_DONT_STORE):
        return                      # compressed variants and unknown lengths: not stored
    resp_facts(base, x.resp, x.nresp, x.status, &f)
    cc_init(&req)
    if x.cflags & CF_NO_STORE:
        req.flags |= CC_NO_STORE
    if cache_storable(True, (x.cflags & CF_AUTH) != 0, &req, &f) != ST_OK:
        return
    for i in range(x.nresp):
        if cp_eq(base + x.resp[i].name.off, x.resp[i].name.len, "set-cookie"):
            return                  # never share one client's cookie with the others
    memset(&ch, 0, sizeof(CacheHdr))
    ch.resp_time = time(NULL)
    ch.lifetime = fresh_lifetime(&f, ch.resp_time)
    ch.eflags = entry_eflags(&f)
    if f.cc.flags & CC_NO_CACHE:
        ch.lifetime = 0
    if ch.lifetime <= 0 and not ((ch.eflags & EF_VALIDATOR) and ((f.cc.flags & CC_NO_CACHE)
                                 or f.cc.max_age != CC_UNSET or f.cc.s_maxage != CC_UNSET or f.expires >= 0)):
        return                      # stale at once and nothing to validate it with (or only heuristics)
    key = x.ckey_copy
    klen = x.ckey_len
    cx.store_hash = x.ckey
    if f.has_vary:
        nn = vary_names(base, x.resp, x.nresp, names, 512)
        if nn < 0:
            return
        if nn > 0:
            gen = cache_vary_gen(c, x, names, <uint32_t>nn)
            if gen == 0:
                return
            vk = vary_key(names, <uint32_t>nn, gen, x.ckey_copy, x.ckey_len, x.ckey_copy + x.ckey_len,
                          cx.req_len, vkey, 8192)
            if vk < 0:
                return
            key = vkey
            klen = <uint32_t>vk
            cx.store_hash = cache_hash(vkey, klen)
    hb = buf_get()
    if hb == NULL:
        return
    collect_connection_tokens(&toks, base, x.resp, x.nresp)
    w.p = bdata(hb) + sizeof(CacheHdr) + klen
    w.end = bdata(hb) + hb.cap
    w.overflow = 0
    if sizeof(CacheHdr) + klen >= hb.cap:
        buf_put(hb)
        return
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
        if toks.n and tokens_has(&toks, base + h.name.off, h.name.len):
            continue                # hop-by-hop by the response's Connection
        w_put(&w, base + h.name.off, h.name.len)
        w_put(&w, ": ", 2)
        w_put(&w, base + h.value.off, h.value.len)
        w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(hb)
        return
    memcpy(ch.magic, "RPXC0002", 8)
    ch.kind = CK_ENTRY
    ch.key_len = klen
    ch.head_len = <uint32_t>(w.p - bdata(hb) - sizeof(CacheHdr) - klen)
    ch.hdr_len = <uint32_t>(w.p - bdata(hb))
    ch.status = x.status
    ch.body_len = p.content_length if p.flags & F_CONTENT_LENGTH else 0
    ch.req_time = x.creq_time
    ch.date = f.date
    ch.age0 = f.age
    ch.stale_if_error = f.cc.stale_if_error
    memcpy(bdata(hb), &ch, sizeof(CacheHdr))
    memcpy(bdata(hb) + sizeof(CacheHdr), key, klen)
    fd = cache_write_tmp(c, x, bdata(hb), ch.hdr_len, &x.cseq)
    buf_put(hb)
    if fd < 0:
        return
    x.cwfd = fd
    x.cleft = ch.body_len           # body bytes still to be written
    cx.store_size = ch.hdr_len + ch.body_len
    cx.store_exp = kz_expiry(&ch)
    dc.conn.flags &= ~DF_SPLICE          # the body passes through here to be written


cdef void cache_merge_304(DConn* dc, Exchange* x) noexcept nogil:
    """A 304 to our validation: the stored head updated with the 304's
    fields (RFC 9111 3.2, 4.3.4) becomes a new entry (the body copied in the
    kernel), and the client gets the stored response with that head."""
    global c_cache_revalidated
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cdef CacheX* cx = <CacheX*>x.cx
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef Buf* ob = buf_get()
    cdef Buf* nb
    cdef CacheHdr* och
    cdef CacheHdr ch
    cdef const char* ohead
    cdef char* nhead
    cdef W w
    cdef uint32_t i, e, cl
    cdef int j, nh, fd
    cdef bint replaced
    cdef Header hs[HDR_CAP]
    cdef RespFacts f
    cdef RespFacts f304
    cdef CcDirs req
    cdef NameList* strip = &x.rule.vhost.strip
    cdef Tokens toks
    cdef Header* h
    cdef long long off_in, off_out
    cdef ssize_t n
    cdef uint64_t left
    cdef char tmp[512]
    cdef char path[512]
    if ob == NULL:
        return
    nb = buf_get()
    if nb == NULL:
        buf_put(ob)
        return
    och = <CacheHdr*>bdata(ob)
    if pread(cx.old_fd, bdata(ob), ob.cap, 0) < <ssize_t>cx.old_hdr or och.hdr_len != cx.old_hdr:
        buf_put(ob)
        buf_put(nb)
        return
    ohead = bdata(ob) + sizeof(CacheHdr) + och.key_len
    w.p = bdata(nb) + sizeof(CacheHdr) + och.key_len
    w.end = bdata(nb) + nb.cap
    w.overflow = 0
    nhead = w.p
    i = 0
    while i < och.head_len and ohead[i] != c'\n':
        i += 1
    i += 1
    w_put(&w, ohead, i)             # the stored status line
    while i < och.head_len:
        e = i
        while e < och.head_len and ohead[e] != c'\n':
            e += 1
        cl = i
        while cl < e and ohead[cl] != c':':
            cl += 1
        replaced = False
        if not cache_no_update(ohead + i, cl - i):
            for j in range(x.nresp):
                h = &x.resp[j]
                if h.name.len == cl - i and strncasecmp(base + h.name.off, ohead + i, cl - i) == 0 \
                        and not cache_hop(base + h.name.off, h.name.len):
                    replaced = True
                    break
        if not replaced:
            w_put(&w, ohead + i, e + 1 - i)
        i = e + 1
    collect_connection_tokens(&toks, base, x.resp, x.nresp)
    for j in range(x.nresp):
        h = &x.resp[j]
        if cache_hop(base + h.name.off, h.name.len) or cache_no_update(base + h.name.off, h.name.len):
            continue
        if toks.n and tokens_has(&toks, base + h.name.off, h.name.len):
            continue
        if strip.n and names_has(strip, base + h.name.off, h.name.len):
            continue
        w_put(&w, base + h.name.off, h.name.len)
        w_put(&w, ": ", 2)
        w_put(&w, base + h.value.off, h.value.len)
        w_put(&w, "\r\n", 2)
    if w.overflow:
        buf_put(ob)
        buf_put(nb)
        rp_elog(x_errfd(x), 3, "cache: a 304 made the stored head too large; passed on")
        return
    nh = head_spans(nhead, 0, <uint32_t>(w.p - nhead), hs, HDR_CAP)
    resp_facts(nhead, hs, nh, och.status, &f)
    resp_facts(base, x.resp, x.nresp, 304, &f304)
    memcpy(&ch, och, sizeof(CacheHdr))
    ch.head_len = <uint32_t>(w.p - nhead)
    ch.hdr_len = <uint32_t>(w.p - bdata(nb))
    ch.req_time = x.creq_time
    ch.resp_time = time(NULL)
    ch.date = f.date
    ch.age0 = f304.age
    ch.lifetime = fresh_lifetime(&f, ch.resp_time)
    ch.eflags = entry_eflags(&f)
    ch.stale_if_error = f.cc.stale_if_error
    if f.cc.flags & CC_NO_CACHE:
        ch.lifetime = 0
    memcpy(bdata(nb), &ch, sizeof(CacheHdr))
    memcpy(bdata(nb) + sizeof(CacheHdr), bdata(ob) + sizeof(CacheHdr), och.key_len)
    # the new entry: stored when the merged head still allows it
    cc_init(&req)
    if x.cflags & CF_NO_STORE:
        req.flags |= CC_NO_STORE
    if cache_storable(True, (x.cflags & CF_AUTH) != 0, &req, &f) == ST_OK and not (x.cflags & CF_DONT_STORE):
        fd = cache_write_tmp(c, x, bdata(nb), ch.hdr_len, &x.cseq)
        if fd >= 0:
            off_in = cx.old_hdr
            off_out = ch.hdr_len
            left = cx.old_body
            while left:
                n = copy_file_range(cx.old_fd, &off_in, fd, &off_out, left if left < 1073741824 else 1073741824, 0)
                if n <= 0:
                    break
                left -= <uint64_t>n
            close(fd)
            cache_tmp_path(c, x.cseq, tmp)
            cache_path(c, cache_hash(bdata(nb) + sizeof(CacheHdr), och.key_len), path)
            if left != 0 or rename(tmp, path) != 0:
                rp_elog(x_errfd(x), 3, "cache: updating %s after a 304 failed: %s", path, strerror(errno))
                unlink(tmp)
            else:
                cache_kz_stored(c, cache_hash(bdata(nb) + sizeof(CacheHdr), och.key_len),
                                ch.hdr_len + cx.old_body, kz_expiry(&ch))
    buf_put(ob)
    # the client's response: the merged head, the body from the stale file
    cx.hb = nb
    cx.age = entry_age(&ch, ch.resp_time)
    x.cst = CS_REVALIDATED
    c_cache_revalidated += 1


cdef void cache_on_head_built(UConn* uc, Exchange* x) noexcept nogil:
    """After the client's head was built from a 304 we merged: replace it
    with the stored response's (the body follows from the entry file once
    the 304 exchange is done: cache_keeps_x)."""
    cdef CacheX* cx = <CacheX*>x.cx
    if x.cst != CS_REVALIDATED or cx == NULL or cx.hb == NULL:
        return
    if not cache_hit_head(uc, x, cx.hb, cx.age, CS_REVALIDATED):
        return                      # (out of buffers: the 304 goes out; logged below)
    x.cfd = cx.old_fd               # the body: in the stale file, after its own header
    cx.old_fd = -1
    x.coff = x.coff - <uint64_t>(<CacheHdr*>bdata(cx.hb)).hdr_len + <uint64_t>cx.old_hdr


cdef bint cache_keeps_x(Exchange* x) noexcept nogil:
    """dc_response_done: True when the exchange goes on with the stored body
    (a 304 merge); the caller then lets cache_pump end it."""
    if x.cst == CS_REVALIDATED and x.cfd >= 0:
        timer_stop(&x.uc.conn.timer)
        return True
    return False


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
    """The whole body is in: the entry goes into place (and the key's lock
    is released: the waiters find the entry)."""
    global c_cache_stored
    cdef char tmp[512]
    cdef char path[512]
    cdef CacheRt* c = <CacheRt*>x.rule.cache
    cache_tmp_path(c, x.cseq, tmp)
    close(x.cwfd)
    x.cwfd = -1
    if x.cleft != 0:
        unlink(tmp)
        cache_unlock(x)
        return
    cache_path(c, (<CacheX*>x.cx).store_hash if x.cx != NULL else x.ckey, path)
    if rename(tmp, path) != 0:
        rp_elog(x_errfd(x), 3, "cache: rename to %s: %s", path, strerror(errno))
        unlink(tmp)
    else:
        c_cache_stored += 1
        if x.cx != NULL:
            cache_kz_stored(c, (<CacheX*>x.cx).store_hash, (<CacheX*>x.cx).store_size,
                            (<CacheX*>x.cx).store_exp)
    cache_unlock(x)


cdef void cache_free(Exchange* x) noexcept nogil:
    global c_cache_misses
    cdef char tmp[512]
    cdef CacheX* cx = <CacheX*>x.cx
    if x.cfd >= 0:
        close(x.cfd)
        x.cfd = -1
    if x.cwfd >= 0:
        close(x.cwfd)
        x.cwfd = -1
        cache_tmp_path(<CacheRt*>x.rule.cache, x.cseq, tmp)
        unlink(tmp)                 # an unfinished entry
    if x.cst == CS_MISS or x.cst == CS_EXPIRED:
        c_cache_misses += 1
    if cx != NULL:
        cache_unlock(x)
        if cx.old_fd >= 0:
            close(cx.old_fd)
        if cx.hb != NULL:
            buf_put(cx.hb)
        free(cx)
        x.cx = NULL
    if x.ckey_copy != NULL:
        free(x.ckey_copy)
        x.ckey_copy = NULL
    x.cst = 0
    x.ckey = 0


cdef class _KzZone:
    """Keeps a keys zone's buffer alive for the C pointers into it."""
    cdef object buf
    cdef unsigned char[::1] view


cdef list g_kz_keep = []


def _kz_addr(buf):
    """The address of the index in `buf` (a writable buffer: the master's
    mmap, alive as long as the caller holds it), checked."""
    cdef unsigned char[::1] view = buf
    cdef KzHdr* z
    if view.shape[0] < <Py_ssize_t>sizeof(KzHdr):
        raise ValueError("keys zone too small")
    z = <KzHdr*>&view[0]
    if z.magic != KZ_MAGIC or sizeof(KzHdr) + z.nslots * sizeof(KzEnt) > <size_t>view.shape[0] or z.nslots == 0:
        raise ValueError("not a keys zone")
    return <size_t>z


def kz_layout():
    """Bytes of the zone's header and of one slot, the probe window, the magic."""
    return {"header": sizeof(KzHdr), "slot": sizeof(KzEnt), "probe": KZ_PROBE, "magic": KZ_MAGIC}


def kz_init(buf, unsigned long long nslots):
    """Format a zone (zeroed, as a fresh mapping is) for nslots slots."""
    cdef unsigned char[::1] view = buf
    cdef KzHdr* z = <KzHdr*>&view[0]
    if nslots == 0 or sizeof(KzHdr) + nslots * sizeof(KzEnt) > <size_t>view.shape[0]:
        raise ValueError("keys zone too small")
    z.nslots = nslots
    z.magic = KZ_MAGIC


def kz_set_loaded(buf, bint done):
    cdef KzHdr* z = <KzHdr*><size_t>_kz_addr(buf)
    rp_kz_store(&z.loaded, 1 if done else 0)


def kz_put_key(buf, unsigned long long h, unsigned long long size, long long used, long long expires,
               bint only_new=False):
    """Insert or update (the loader: only_new).  The hash of the entry
    evicted to make room, or 0."""
    return kz_put(<KzHdr*><size_t>_kz_addr(buf), h, size, used, expires, only_new)


def kz_get(buf, unsigned long long h):
    """(size, last use (ms), expiry (s)) of a key the index holds, else None."""
    cdef KzEnt* e = kz_find(<KzHdr*><size_t>_kz_addr(buf), h)
    if e == NULL:
        return None
    return e.size, <long long>e.used, <long long>(e.meta >> 1)


def kz_del_key(buf, unsigned long long h):
    kz_del(<KzHdr*><size_t>_kz_addr(buf), h)


def kz_touch_key(buf, unsigned long long h, long long now):
    kz_touch(<KzHdr*><size_t>_kz_addr(buf), h, now)


def kz_stats(buf):
    """keys, bytes, slots, loaded, skipped (lookups answered without the
    file system), full_evictions."""
    cdef KzHdr* z = <KzHdr*><size_t>_kz_addr(buf)
    cdef KzEnt* t = kz_slots(z)
    cdef unsigned long long i, keys = 0, nbytes = 0
    with nogil:
        for i in range(z.nslots):
            if rp_kz_load(&t[i].hash) and (rp_kz_load(&t[i].meta) & KZ_VALID):
                keys += 1
                nbytes += t[i].size
    return {"keys": keys, "bytes": nbytes, "slots": z.nslots, "loaded": bool(z.loaded),
            "skipped": z.skipped, "full_evictions": z.full_evictions}


cdef struct KzVictim:
    unsigned long long used
    unsigned long long size
    unsigned long long hash
    unsigned long long slot


cdef int kz_cmp_used(const void* a, const void* b) noexcept nogil:
    cdef unsigned long long x = (<KzVictim*>a).used, y = (<KzVictim*>b).used
    return -1 if x < y else (1 if x > y else 0)


def kz_evict(buf, long long unused_before, unsigned long long max_size):
    """The manager's pass over the index: clear the entries last used
    before `unused_before` (unix ms; 0: none), then, while the rest is over max_size
    (0: no limit), the least recently used.  Returns (hashes cleared: their
    files are the caller's to remove, bytes kept)."""
    cdef KzHdr* z = <KzHdr*><size_t>_kz_addr(buf)
    cdef KzEnt* t = kz_slots(z)
    cdef unsigned long long i, h, total = 0, n = 0, k
    cdef KzVictim* v = NULL
    out = []
    for i in range(z.nslots):
        h = rp_kz_load(&t[i].hash)
        if h == 0 or not (rp_kz_load(&t[i].meta) & KZ_VALID):
            continue
        if unused_before > 0 and <long long>rp_kz_load(&t[i].used) < unused_before:
            kz_clear(&t[i], h)
            out.append(h)
            continue
        total += t[i].size
        n += 1
    if max_size == 0 or total <= max_size or n == 0:
        return out, total
    v = <KzVictim*>malloc(n * sizeof(KzVictim))
    if v == NULL:
        raise MemoryError()
    try:
        k = 0
        for i in range(z.nslots):
            h = rp_kz_load(&t[i].hash)
            if h == 0 or not (rp_kz_load(&t[i].meta) & KZ_VALID) or k == n:
                continue
            v[k].used = rp_kz_load(&t[i].used)
            v[k].size = t[i].size
            v[k].hash = h
            v[k].slot = i
            k += 1
        qsort(v, k, sizeof(KzVictim), kz_cmp_used)
        for i in range(k):
            if total <= max_size:
                break
            if rp_kz_load(&t[v[i].slot].hash) != v[i].hash:
                continue            # changed meanwhile
            kz_clear(&t[v[i].slot], v[i].hash)
            out.append(v[i].hash)
            total -= v[i].size if v[i].size < total else total
    finally:
        free(v)
    return out, total


def rule_set_cache(int server, int vhost, int index, str path, bint lock=False, stale=(), kz=None):
    """A rule's cache = NAME: the cache's directory, cache-lock, cache-use-stale,
    its keys zone (the buffer the master mapped; None: no index)."""
    cdef RuleRt* r = &g_servers[server].vhosts[vhost].rules[index]
    cdef CacheRt* c = <CacheRt*>calloc(1, sizeof(CacheRt))
    cdef _KzZone keep
    if c == NULL:
        raise MemoryError()
    if kz is not None:
        keep = _KzZone()
        keep.buf = kz
        keep.view = kz
        c.kz = <KzHdr*><size_t>_kz_addr(kz)
        g_kz_keep.append(keep)
    _copy_cstr(c.path, 480, path.encode())
    c.lock = lock
    c.stale = (STALE_ERROR if "error" in stale else 0) | (STALE_TIMEOUT if "timeout" in stale else 0) \
        | (STALE_UPDATING if "updating" in stale else 0)
    r.cache = c


def cache_status_names():
    """X-Cache names by CS_* index (metrics: the rule's cache words)."""
    return [(cache_status_name(i) or b"").decode() for i in range(9)]


def cache_stats():
    """(hits served, entries stored) in this worker."""
    return c_cache_hits, c_cache_stored


def cache_counts():
    """This worker's cache counts: hits, misses (incl. expired), entries
    stored, revalidated by a 304, stale answers (stale + updating)."""
    return {"hits": c_cache_hits, "misses": c_cache_misses, "stored": c_cache_stored,
            "revalidated": c_cache_revalidated, "stale": c_cache_stale}
