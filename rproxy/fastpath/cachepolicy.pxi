# RFC 9111 shared-cache rules as cdef nogil functions over header spans:
# the decisions the response cache of issue 21 makes per exchange (may this
# response be stored, for how long is it fresh, how old is it).  The cache
# itself (files, shared index, lock, serving hits) is not built yet; these
# functions are tested on their own through cache_policy() (unit tests).
#
#   http_date        IMF-fixdate, RFC 850 and asctime dates (RFC 9110 5.6.7)
#   cc_parse         Cache-Control directives, several fields combined
#   resp_facts       what a response head says (status, CC, dates, Vary...)
#   cache_storable   RFC 9111 3 (shared cache): 0 = may store, else why not
#   fresh_lifetime   RFC 9111 4.2.1 (s-maxage, max-age, Expires, heuristic)
#   current_age      RFC 9111 4.2.3

cdef enum:
    CC_NO_STORE = 0x001
    CC_NO_CACHE = 0x002
    CC_PRIVATE = 0x004
    CC_PUBLIC = 0x008
    CC_MUST_REVALIDATE = 0x010
    CC_PROXY_REVALIDATE = 0x020
    CC_NO_TRANSFORM = 0x040
    CC_ONLY_IF_CACHED = 0x080
    CC_IMMUTABLE = 0x100
    CC_BAD = 0x200          # a directive with an invalid value (its whole field is suspect)
    CC_MUST_UNDERSTAND = 0x400

cdef enum:
    # cache_storable results
    ST_OK = 0
    ST_METHOD = 1           # only GET responses are stored (HEAD is served from them)
    ST_STATUS = 2           # not a final status, or 304
    ST_NO_STORE = 3         # no-store (request or response)
    ST_PRIVATE = 4          # private: for a shared cache, never
    ST_AUTHORIZATION = 5    # a request with Authorization, without public / s-maxage / must-revalidate
    ST_NO_FRESHNESS = 6     # no explicit freshness, and not heuristically cacheable
    ST_VARY_STAR = 7        # Vary: * never matches
    ST_PARTIAL = 8          # 206 (this cache stores whole bodies only)

cdef int64_t CC_UNSET = -1
cdef int64_t CC_DELTA_MAX = 2147483648     # delta-seconds saturate here (RFC 9111 1.2.2)
cdef int64_t CC_ANY = 0x7fffffffffffffff   # a bare max-stale

cdef struct CcDirs:
    uint32_t flags
    int64_t max_age         # seconds, CC_UNSET when absent
    int64_t s_maxage
    int64_t min_fresh
    int64_t max_stale       # a bare max-stale: any staleness (INT64 max)
    int64_t stale_if_error  # RFC 5861
    int64_t stale_while_revalidate

cdef struct RespFacts:
    uint16_t status
    CcDirs cc
    int64_t date            # unix seconds, -1 = absent or invalid
    int64_t expires         # -1 absent; 0 for an invalid Expires (already expired, RFC 9111 5.3)
    int64_t last_modified
    int64_t age             # Age header, seconds, 0 when absent
    uint8_t has_vary
    uint8_t vary_star
    uint8_t has_validator   # ETag or Last-Modified


cdef inline char cp_lower(char c) noexcept nogil:
    return <char>(c + 32) if c >= c'A' and c <= c'Z' else c


cdef bint cp_eq(const char* p, uint32_t n, const char* lit) noexcept nogil:
    cdef uint32_t i = 0
    while lit[i] != 0:
        if i >= n or cp_lower(p[i]) != lit[i]:
            return False
        i += 1
    return i == n


cdef int cp_num(const char* p, uint32_t n, uint32_t* used) noexcept nogil:
    """Digits at p (up to n): the value, or -1 when there are none."""
    cdef uint32_t i = 0
    cdef int v = 0
    while i < n and p[i] >= c'0' and p[i] <= c'9':
        if v < 100000000:
            v = v * 10 + (p[i] - 48)
        i += 1
    used[0] = i
    return v if i > 0 else -1


cdef int64_t cp_days(int64_t y, int m, int d) noexcept nogil:
    """Days from 1970-01-01 (proleptic Gregorian, m 1..12)."""
    cdef int64_t era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef int cp_month(const char* p) noexcept nogil:
    cdef const char* names = "janfebmaraprmayjunjulaugsepoctnovdec"
    cdef int i
    for i in range(12):
        if cp_lower(p[0]) == names[3 * i] and cp_lower(p[1]) == names[3 * i + 1] \
                and cp_lower(p[2]) == names[3 * i + 2]:
            return i + 1
    return 0


cdef int64_t http_date(const char* p, uint32_t n) noexcept nogil:
    """An HTTP-date (RFC 9110 5.6.7) in unix seconds, -1 when invalid.
    IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday,
    06-Nov-94 08:49:37 GMT", asctime "Sun Nov  6 08:49:37 1994"."""
    cdef uint32_t i = 0, u
    cdef int d, mo, y, hh, mm, ss
    while i < n and (p[i] == c' ' or p[i] == c'\t'):
        i += 1
    while n > i and (p[n - 1] == c' ' or p[n - 1] == c'\t'):
        n -= 1
    while i < n and ((p[i] >= c'a' and p[i] <= c'z') or (p[i] >= c'A' and p[i] <= c'Z')):
        i += 1                      # day name
    if i >= n:
        return -1
    if p[i] == c',':
        i += 1
        if i < n and p[i] == c' ':
            i += 1
        d = cp_num(p + i, n - i, &u)
        if d < 0:
            return -1
        i += u
        if i + 5 > n or (p[i] != c' ' and p[i] != c'-'):
            return -1
        mo = cp_month(p + i + 1)
        i += 4
        if p[i] != c' ' and p[i] != c'-':
            return -1
        i += 1
        y = cp_num(p + i, n - i, &u)
        if y < 0 or (u != 4 and u != 2):
            return -1
        if u == 2:
            y += 2000 if y < 70 else 1900      # RFC 850: two-digit years (RFC 9110 5.6.7)
        i += u + 1
    elif p[i] == c' ':
        i += 1
        if i + 4 > n:
            return -1
        mo = cp_month(p + i)
        i += 4
        while i < n and p[i] == c' ':
            i += 1
        d = cp_num(p + i, n - i, &u)
        if d < 0:
            return -1
        i += u + 1
        y = -1
    else:
        return -1
    if mo == 0 or i + 8 > n or p[i + 2] != c':' or p[i + 5] != c':':
        return -1
    hh = cp_num(p + i, 2, &u)
    mm = cp_num(p + i + 3, 2, &u)
    ss = cp_num(p + i + 6, 2, &u)
    if hh < 0 or mm < 0 or ss < 0 or hh > 23 or mm > 59 or ss > 60 or d < 1 or d > 31:
        return -1
    i += 8
    if y < 0:                       # asctime: the year comes last
        if i >= n or p[i] != c' ':
            return -1
        y = cp_num(p + i + 1, n - i - 1, &u)
        if y < 0 or u != 4 or i + 1 + u != n:
            return -1
    elif not (i + 4 == n and cp_eq(p + i, 4, " gmt")):
        return -1
    return cp_days(y, mo, d) * 86400 + hh * 3600 + mm * 60 + ss


cdef int64_t cc_seconds(const char* p, uint32_t n, bint* bad) noexcept nogil:
    """delta-seconds, quoted or not; overflow saturates (RFC 9111 1.2.2)."""
    cdef uint32_t i = 0
    cdef int64_t v = 0
    if n >= 2 and p[0] == c'"' and p[n - 1] == c'"':
        p += 1
        n -= 2
    if n == 0:
        bad[0] = True
        return CC_UNSET
    for i in range(n):
        if p[i] < c'0' or p[i] > c'9':
            bad[0] = True
            return CC_UNSET
        if v < CC_DELTA_MAX:
            v = v * 10 + (p[i] - 48)
    return v if v < CC_DELTA_MAX else CC_DELTA_MAX


cdef void cc_init(CcDirs* d) noexcept nogil:
    d.flags = 0
    d.max_age = CC_UNSET
    d.s_maxage = CC_UNSET
    d.min_fresh = CC_UNSET
    d.max_stale = CC_UNSET
    d.stale_if_error = CC_UNSET
    d.stale_while_revalidate = CC_UNSET


cdef void cc_parse(const char* p, uint32_t n, CcDirs* d) noexcept nogil:
    """One Cache-Control field value added to d (call cc_init first).  A
    directive seen twice keeps its first value (RFC 9111 4.2.1: a cache may
    treat conflicting values as invalid; the first is the conservative pick
    for a numeric one only when it is the smaller)."""
    cdef uint32_t i = 0, s, e, vs, ve
    cdef bint bad = False
    cdef int64_t v
    while i < n:
        while i < n and (p[i] == c' ' or p[i] == c'\t' or p[i] == c','):
            i += 1
        s = i
        while i < n and p[i] != c'=' and p[i] != c',' and p[i] != c' ' and p[i] != c'\t':
            i += 1
        e = i
        vs = ve = 0
        while i < n and (p[i] == c' ' or p[i] == c'\t'):
            i += 1
        if i < n and p[i] == c'=':
            i += 1
            while i < n and (p[i] == c' ' or p[i] == c'\t'):
                i += 1
            vs = i
            if i < n and p[i] == c'"':
                i += 1
                while i < n and p[i] != c'"':
                    if p[i] == c'\\':
                        i += 1
                    i += 1
                if i < n:
                    i += 1
            else:
                while i < n and p[i] != c',' and p[i] != c' ' and p[i] != c'\t':
                    i += 1
            ve = i
        if e == s:
            continue
        bad = False
        if cp_eq(p + s, e - s, "max-age"):
            v = cc_seconds(p + vs, ve - vs, &bad)
            if not bad and (d.max_age == CC_UNSET or v < d.max_age):
                d.max_age = v
        elif cp_eq(p + s, e - s, "s-maxage"):
            v = cc_seconds(p + vs, ve - vs, &bad)
            if not bad and (d.s_maxage == CC_UNSET or v < d.s_maxage):
                d.s_maxage = v
        elif cp_eq(p + s, e - s, "min-fresh"):
            v = cc_seconds(p + vs, ve - vs, &bad)
            if not bad:
                d.min_fresh = v
        elif cp_eq(p + s, e - s, "max-stale"):
            if ve == vs:
                d.max_stale = CC_ANY
            else:
                v = cc_seconds(p + vs, ve - vs, &bad)
                if not bad:
                    d.max_stale = v
        elif cp_eq(p + s, e - s, "stale-if-error"):
            v = cc_seconds(p + vs, ve - vs, &bad)
            if not bad:
                d.stale_if_error = v
        elif cp_eq(p + s, e - s, "stale-while-revalidate"):
            v = cc_seconds(p + vs, ve - vs, &bad)
            if not bad:
                d.stale_while_revalidate = v
        elif cp_eq(p + s, e - s, "no-store"):
            d.flags |= CC_NO_STORE
        elif cp_eq(p + s, e - s, "no-cache"):
            d.flags |= CC_NO_CACHE  # a field-qualified no-cache is treated as unqualified (stricter)
        elif cp_eq(p + s, e - s, "private"):
            d.flags |= CC_PRIVATE   # likewise: a shared cache does not store it at all
        elif cp_eq(p + s, e - s, "public"):
            d.flags |= CC_PUBLIC
        elif cp_eq(p + s, e - s, "must-revalidate"):
            d.flags |= CC_MUST_REVALIDATE
        elif cp_eq(p + s, e - s, "proxy-revalidate"):
            d.flags |= CC_PROXY_REVALIDATE
        elif cp_eq(p + s, e - s, "no-transform"):
            d.flags |= CC_NO_TRANSFORM
        elif cp_eq(p + s, e - s, "only-if-cached"):
            d.flags |= CC_ONLY_IF_CACHED
        elif cp_eq(p + s, e - s, "immutable"):
            d.flags |= CC_IMMUTABLE
        elif cp_eq(p + s, e - s, "must-understand"):
            d.flags |= CC_MUST_UNDERSTAND
        if bad:
            d.flags |= CC_BAD


cdef void resp_facts(const char* base, Header* hs, int nh, uint16_t status, RespFacts* f) noexcept nogil:
    cdef int i
    cdef Header* h
    cdef const char* n
    cdef const char* v
    cdef uint32_t u
    cdef int64_t t
    cdef bint seen_age = False
    f.status = status
    cc_init(&f.cc)
    f.date = -1
    f.expires = -1
    f.last_modified = -1
    f.age = 0
    f.has_vary = 0
    f.vary_star = 0
    f.has_validator = 0
    for i in range(nh):
        h = &hs[i]
        n = base + h.name.off
        v = base + h.value.off
        if cp_eq(n, h.name.len, "cache-control"):
            cc_parse(v, h.value.len, &f.cc)
        elif cp_eq(n, h.name.len, "date"):
            f.date = http_date(v, h.value.len)
        elif cp_eq(n, h.name.len, "expires"):
            t = http_date(v, h.value.len)
            if f.expires == -1 or (t >= 0 and t < f.expires):
                f.expires = t if t >= 0 else 0
        elif cp_eq(n, h.name.len, "last-modified"):
            f.last_modified = http_date(v, h.value.len)
            f.has_validator = 1
        elif cp_eq(n, h.name.len, "etag"):
            f.has_validator = 1
        elif cp_eq(n, h.name.len, "age"):
            # one field of plain digits; anything else (a second field, a
            # list, a sign, a fraction) is taken as too old to trust: stale
            t = cp_num(v, h.value.len, &u)
            f.age = t if t >= 0 and u == h.value.len and f.age == 0 and not seen_age else CC_DELTA_MAX
            seen_age = True
        elif cp_eq(n, h.name.len, "vary"):
            if h.value.len:
                f.has_vary = 1
            for u in range(h.value.len):
                if v[u] == c'*':
                    f.vary_star = 1


cdef bint status_understood(uint16_t st) noexcept nogil:
    """Statuses whose caching rules this cache implements (must-understand)."""
    return st == 200 or st == 203 or st == 204 or st == 300 or st == 301 or st == 302 or st == 303 \
        or st == 307 or st == 308 or st == 404 or st == 405 or st == 410 or st == 414 or st == 501


cdef bint status_heuristic(uint16_t st) noexcept nogil:
    """Heuristically cacheable by default (RFC 9110 15.1)."""
    return st == 200 or st == 203 or st == 204 or st == 206 or st == 300 or st == 301 or st == 308 \
        or st == 404 or st == 405 or st == 410 or st == 414 or st == 501


cdef int cache_storable(bint is_get, bint has_auth, CcDirs* req, RespFacts* f) noexcept nogil:
    """RFC 9111 3 and 3.5 for a shared cache."""
    cdef uint32_t rf = f.cc.flags
    if not is_get:
        return ST_METHOD
    if f.status == 206:
        return ST_PARTIAL
    if f.status < 200 or f.status == 304:
        return ST_STATUS            # any final status may be stored (RFC 9111 3: must-understand aside)
    if (rf & CC_MUST_UNDERSTAND) and not status_understood(f.status):
        return ST_STATUS
    if (req.flags & CC_NO_STORE) or ((rf & CC_NO_STORE) and not (rf & CC_MUST_UNDERSTAND)):
        return ST_NO_STORE          # (must-understand on an understood status overrides no-store: 5.2.2.3)
    if rf & CC_PRIVATE:
        return ST_PRIVATE
    if has_auth and not (rf & (CC_PUBLIC | CC_MUST_REVALIDATE)) and f.cc.s_maxage == CC_UNSET:
        return ST_AUTHORIZATION
    if f.vary_star:
        return ST_VARY_STAR
    if f.expires >= 0 or f.cc.max_age != CC_UNSET or f.cc.s_maxage != CC_UNSET or (rf & CC_PUBLIC) \
            or status_heuristic(f.status) or (rf & CC_NO_CACHE):
        return ST_OK                # no-cache: stored, validated before each use
    return ST_NO_FRESHNESS


cdef int64_t fresh_lifetime(RespFacts* f, int64_t response_time) noexcept nogil:
    """RFC 9111 4.2.1 for a shared cache: s-maxage, max-age, Expires - Date,
    then a heuristic (10 % of the time since Last-Modified, at most a day)
    for heuristically cacheable statuses; 0 when nothing applies."""
    cdef int64_t date, lm
    if f.cc.s_maxage != CC_UNSET:
        return f.cc.s_maxage
    if f.cc.max_age != CC_UNSET:
        return f.cc.max_age
    if f.expires >= 0:
        date = f.date if f.date >= 0 else response_time
        return f.expires - date if f.expires > date else 0
    if (status_heuristic(f.status) or (f.cc.flags & CC_PUBLIC)) and f.last_modified >= 0:
        date = f.date if f.date >= 0 else response_time
        if date > f.last_modified:
            lm = (date - f.last_modified) // 10
            return lm if lm < 86400 else 86400
    return 0


cdef int64_t current_age(RespFacts* f, int64_t request_time, int64_t response_time, int64_t now) noexcept nogil:
    """RFC 9111 4.2.3."""
    cdef int64_t apparent = 0, corrected, delay
    if f.date >= 0 and response_time > f.date:
        apparent = response_time - f.date
    delay = response_time - request_time
    corrected = f.age + (delay if delay > 0 else 0)
    return (apparent if apparent > corrected else corrected) + (now - response_time)


def cache_policy(str method, req_headers, int status, resp_headers, int64_t request_time=0,
                 int64_t response_time=0, int64_t now=0):
    """The rules above for one exchange (unit tests): headers as
    [(name, value)]; returns a dict of the decisions."""
    cdef bytes blob
    cdef Header hs[64]
    cdef CcDirs req
    cdef RespFacts f
    cdef int i, nh = 0
    cdef bint auth = False
    parts = []
    off = 0
    cc_init(&req)
    for name, value in req_headers:
        if name.lower() == "authorization":
            auth = True
        if name.lower() == "cache-control":
            b = value.encode()
            cc_parse(b, len(b), &req)
    for name, value in resp_headers[:64]:
        nb, vb = name.encode(), value.encode()
        hs[nh].name.off = off
        hs[nh].name.len = len(nb)
        hs[nh].value.off = off + len(nb)
        hs[nh].value.len = len(vb)
        parts += [nb, vb]
        off += len(nb) + len(vb)
        nh += 1
    blob = b"".join(parts)
    resp_facts(blob, hs, nh, <uint16_t>status, &f)
    reasons = {ST_OK: "ok", ST_METHOD: "method", ST_STATUS: "status", ST_NO_STORE: "no-store",
               ST_PRIVATE: "private", ST_AUTHORIZATION: "authorization", ST_NO_FRESHNESS: "no-freshness",
               ST_VARY_STAR: "vary-star", ST_PARTIAL: "partial"}
    storable = cache_storable(method == "GET", auth, &req, &f)
    flags = [name for bit, name in ((CC_NO_STORE, "no-store"), (CC_NO_CACHE, "no-cache"),
                                    (CC_PRIVATE, "private"), (CC_PUBLIC, "public"),
                                    (CC_MUST_REVALIDATE, "must-revalidate"),
                                    (CC_PROXY_REVALIDATE, "proxy-revalidate"), (CC_NO_TRANSFORM, "no-transform"),
                                    (CC_ONLY_IF_CACHED, "only-if-cached"), (CC_IMMUTABLE, "immutable"),
                                    (CC_BAD, "bad"), (CC_MUST_UNDERSTAND, "must-understand")) if f.cc.flags & bit]
    return {"storable": reasons[storable], "lifetime": fresh_lifetime(&f, response_time),
            "age": current_age(&f, request_time, response_time, now), "date": f.date, "expires": f.expires,
            "max_age": f.cc.max_age, "s_maxage": f.cc.s_maxage, "flags": flags,
            "req_max_stale": req.max_stale, "req_min_fresh": req.min_fresh, "has_validator": bool(f.has_validator),
            "has_vary": bool(f.has_vary)}


def http_date_parse(str text):
    """http_date() for the unit tests: unix seconds or -1."""
    cdef bytes b = text.encode()
    return http_date(b, len(b))
