# Static files (issue 20): a rule with `root` answers GET and HEAD from the
# file system, in the loop, without Python.
#
# Confinement: the request path is percent-decoded once, split into
# segments, and refused (400) if any segment is `..`, holds a NUL, a
# backslash or a control byte; segments starting with `.` (dotfiles) are 404,
# except `.well-known`.  The file is then opened with openat2(2) relative to
# the root's directory fd with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS: no
# path, absolute symlink or `..` inside a symlink can leave the root (EXDEV
# -> 403 with a log line).  Symlinks that stay inside the root work.
#
# Body: sendfile(2) from the loop on plain TCP (edge-triggered EPOLLOUT
# resumes it); over TLS a read of one buffer at a time, written with
# SSL_write through the connection's Out (one buffer in flight).

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat_t "stat":
        unsigned int st_mode
        long long st_size
        long st_mtime
        long st_ctime
        unsigned long st_ino
        unsigned long st_dev
    int fstat(int fd, stat_t* st)
    bint S_ISDIR(unsigned int m)
    bint S_ISREG(unsigned int m)

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, long* offset, size_t count)

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long offset)

cdef extern from "<linux/openat2.h>" nogil:
    cdef struct open_how:
        uint64_t flags
        uint64_t mode
        uint64_t resolve
    enum:
        RESOLVE_BENEATH
        RESOLVE_NO_MAGICLINKS

cdef extern from "<sys/syscall.h>" nogil:
    enum:
        SYS_openat2

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_RDONLY
        O_DIRECTORY
        O_PATH

cdef extern from "<errno.h>" nogil:
    enum:
        ENOTDIR
        EXDEV
        ELOOP
        EACCES
        ENAMETOOLONG

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    cdef struct dirent:
        char d_name[256]
    DIR* fdopendir(int fd)
    int dirfd(DIR* d)
    dirent* readdir(DIR* d)
    int closedir(DIR* d)

cdef enum:
    SF_PATH_MAX = 4096
    SF_CHUNK = 1048576       # sendfile per call


# ---- MIME types: an open-addressing table built at start-up ---------------------------

cdef struct MimeSlot:
    char* ext               # lower case, NULL = empty
    uint32_t elen
    char* type
    uint32_t tlen

cdef MimeSlot* g_mime = NULL
cdef uint32_t g_mime_mask = 0


cdef inline uint32_t mime_hash(const char* s, uint32_t n) noexcept nogil:
    cdef uint32_t h = 2166136261u
    cdef uint32_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if c >= c'A' and c <= c'Z':
            c = c | 0x20
        h = (h ^ <uint8_t>c) * 16777619u
    return h


cdef MimeSlot* mime_lookup(const char* name, uint32_t n) noexcept nogil:
    """The type for a file name (by its last extension), or NULL."""
    cdef uint32_t i = n, h, e
    while i > 0 and name[i - 1] != c'.' and name[i - 1] != c'/':
        i -= 1
    if i == 0 or name[i - 1] != c'.' or g_mime == NULL:
        return NULL
    e = n - i
    h = mime_hash(name + i, e) & g_mime_mask
    while g_mime[h].ext != NULL:
        if g_mime[h].elen == e and strncasecmp(g_mime[h].ext, name + i, e) == 0:
            return &g_mime[h]
        h = (h + 1) & g_mime_mask
    return NULL


def set_mime_types(pairs):
    """(extension, type) pairs, later ones winning; once per worker."""
    global g_mime, g_mime_mask
    cdef uint32_t cap = 64, h
    cdef bytes eb, tb
    d = {}
    for ext, typ in pairs:
        d[ext.lower()] = typ
    while cap < len(d) * 2:
        cap *= 2
    g_mime = <MimeSlot*>calloc(cap, sizeof(MimeSlot))
    if g_mime == NULL:
        raise MemoryError()
    g_mime_mask = cap - 1
    for ext, typ in d.items():
        eb = ext.encode()
        tb = typ.encode()
        h = mime_hash(eb, len(eb)) & g_mime_mask
        while g_mime[h].ext != NULL:
            h = (h + 1) & g_mime_mask
        g_mime[h].ext = _dup(eb)
        g_mime[h].elen = len(eb)
        g_mime[h].type = _dup(tb)
        g_mime[h].tlen = len(tb)


# ---- the request path -------------------------------------------------------------

cdef inline int hexval(char c) noexcept nogil:
    if c >= c'0' and c <= c'9':
        return c - 48
    if c >= c'a' and c <= c'f':
        return c - 87
    if c >= c'A' and c <= c'F':
        return c - 55
    return -1


cdef int static_path(const char* p, uint32_t n, char* out, uint32_t cap, uint32_t* olen) noexcept nogil:
    """Decode and normalise a request path into a path relative to the root
    (no leading `/`, `.` and empty segments dropped).  0: ok; 400: refused
    (`..`, NUL, backslash, control bytes, bad %-escape); 404: a dotfile;
    414: too long.  out[*olen] is NUL; a trailing `/` is kept."""
    cdef uint32_t i = 0, m = 0, s
    cdef int a, b
    cdef char c
    cdef bint trailing = n > 0 and p[n - 1] == c'/'
    while i < n:
        c = p[i]
        if c == c'%':
            if i + 2 >= n:
                return 400
            a = hexval(p[i + 1])
            b = hexval(p[i + 2])
            if a < 0 or b < 0:
                return 400
            c = <char>(a * 16 + b)
            i += 3
        else:
            i += 1
        if <uint8_t>c < 0x20 or c == 0x7f or c == c'\\':
            return 400
        if m + 2 >= cap:
            return 414
        out[m] = c
        m += 1
    # segments
    cdef uint32_t r = 0, w = 0, seglen
    while r < m:
        while r < m and out[r] == c'/':
            r += 1
        s = r
        while r < m and out[r] != c'/':
            r += 1
        seglen = r - s
        if seglen == 0:
            continue
        if seglen == 1 and out[s] == c'.':
            continue
        if seglen == 2 and out[s] == c'.' and out[s + 1] == c'.':
            return 400
        if out[s] == c'.' and not (seglen == 11 and memcmp(out + s, b".well-known", 11) == 0):
            memmove(out, out + s, seglen)       # named in the log line
            out[seglen] = 0
            return 404
        if w:
            out[w] = c'/'
            w += 1
        memmove(out + w, out + s, seglen)
        w += seglen
    if trailing and w:
        out[w] = c'/'
        w += 1
    out[w] = 0
    olen[0] = w
    return 0


cdef int sf_open(int at, const char* rel, int flags) noexcept nogil:
    cdef open_how how
    cdef long fd
    cdef const char* pth = rel
    if rel[0] == 0:
        pth = "."
    memset(&how, 0, sizeof(open_how))
    how.flags = <uint64_t>(flags | O_CLOEXEC)
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
    fd = syscall(<long>SYS_openat2, <long>at, pth, &how, <size_t>sizeof(open_how))
    return <int>fd


cdef const char* req_header(UConn* uc, Exchange* x, const char* name, uint32_t nlen, uint32_t* vlen) noexcept nogil:
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef const char* v
    cdef uint32_t n
    cdef int i
    for i in range(x.nreq):
        if x.req[i].name.len == nlen and strncasecmp(base + x.req[i].name.off, name, nlen) == 0:
            v = base + x.req[i].value.off
            n = x.req[i].value.len
            ows_trim(&v, &n)
            vlen[0] = n
            return v
    return NULL


cdef bint etag_listed(const char* v, uint32_t n, const char* etag, uint32_t elen) noexcept nogil:
    """If-None-Match: `*` or a list holding our entity tag (weak comparison)."""
    cdef uint32_t i = 0, s, e
    while i < n:
        while i < n and (v[i] == c' ' or v[i] == c',' or v[i] == c'\t'):
            i += 1
        s = i
        while i < n and v[i] != c',':
            i += 1
        e = i
        while e > s and (v[e - 1] == c' ' or v[e - 1] == c'\t'):
            e -= 1
        if e - s == 1 and v[s] == c'*':
            return True
        if e - s >= 2 and v[s] == c'W' and v[s + 1] == c'/':
            s += 2
        if e - s == elen and memcmp(v + s, etag, elen) == 0:
            return True
    return False


cdef long sf_http_date(const char* v, uint32_t n) noexcept nogil:
    """IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) -> seconds, -1 if not."""
    cdef const char* months = "JanFebMarAprMayJunJulAugSepOctNovDec"
    cdef int i, mon = -1, y, d, hh, mm, ss
    cdef long days
    if n != 29 or v[3] != c',' or memcmp(v + 26, b"GMT", 3) != 0:
        return -1
    for i in range(12):
        if memcmp(v + 8, months + 3 * i, 3) == 0:
            mon = i
    if mon < 0:
        return -1
    cdef const char* digits_at = "\x05\x06\x0c\x0d\x0e\x0f\x11\x12\x14\x15\x17\x18"
    for i in range(12):
        if v[<int>digits_at[i]] < c'0' or v[<int>digits_at[i]] > c'9':
            return -1
    d = (v[5] - 48) * 10 + v[6] - 48
    y = (v[12] - 48) * 1000 + (v[13] - 48) * 100 + (v[14] - 48) * 10 + v[15] - 48
    hh = (v[17] - 48) * 10 + v[18] - 48
    mm = (v[20] - 48) * 10 + v[21] - 48
    ss = (v[23] - 48) * 10 + v[24] - 48
    # days from civil (Howard Hinnant's algorithm)
    y -= 1 if mon < 2 else 0
    cdef long era = (y if y >= 0 else y - 399) // 400
    cdef long yoe = y - era * 400
    cdef long mp = (mon + 10) % 12       # March = 0
    cdef long doy = (153 * mp + 2) // 5 + d - 1
    cdef long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


cdef int range_parse(const char* v, uint32_t n, uint64_t size, uint64_t* start, uint64_t* end) noexcept nogil:
    """A single `bytes=` range.  0: ignore the header (serve it whole: not
    bytes, several ranges, malformed); 1: [start, end]; 416: unsatisfiable."""
    cdef uint32_t i = 6
    cdef uint64_t a = 0, b = 0
    cdef bint has_a = False, has_b = False
    if n < 7 or strncasecmp(v, "bytes=", 6) != 0 or memchr(v, c',', n) != NULL:
        return 0
    while i < n and v[i] >= c'0' and v[i] <= c'9':
        if a > 100000000000000000ULL:
            return 0
        a = a * 10 + <uint64_t>(v[i] - 48)
        has_a = True
        i += 1
    if i >= n or v[i] != c'-':
        return 0
    i += 1
    while i < n and v[i] >= c'0' and v[i] <= c'9':
        if b > 100000000000000000ULL:
            return 0
        b = b * 10 + <uint64_t>(v[i] - 48)
        has_b = True
        i += 1
    if i != n or not (has_a or has_b):
        return 0
    if not has_a:                       # suffix: the last b bytes
        if b == 0 or size == 0:
            return 416
        start[0] = size - b if b < size else 0
        end[0] = size - 1
        return 1
    if has_b and b < a:
        return 0
    if a >= size:
        return 416
    start[0] = a
    end[0] = b if has_b and b < size else size - 1
    return 1


cdef bint accepts(const char* v, uint32_t n, const char* coding, uint32_t clen) noexcept nogil:
    """Accept-Encoding lists `coding` with a non-zero q (a bare token or q>0)."""
    cdef uint32_t i = 0, s, e, j
    while i < n:
        while i < n and (v[i] == c' ' or v[i] == c',' or v[i] == c'\t'):
            i += 1
        s = i
        while i < n and v[i] != c',' and v[i] != c';' and v[i] != c' ':
            i += 1
        e = i
        j = i
        while i < n and v[i] != c',':
            i += 1
        if e - s == clen and strncasecmp(v + s, coding, clen) == 0:
            # q=0 refuses it
            while j < i and (v[j] == c' ' or v[j] == c';'):
                j += 1
            if i - j >= 3 and (v[j] == c'q' or v[j] == c'Q') and v[j + 1] == c'=':
                j += 2
                while j < i and (v[j] == c'0' or v[j] == c'.'):
                    j += 1
                return j < i and v[j] >= c'1' and v[j] <= c'9'
            return True
    return False


# ---- serving -----------------------------------------------------------------------

cdef void static_fail(UConn* uc, Exchange* x, int status, const char* why, const char* path) noexcept nogil:
    cdef char where[48]
    cdef int n
    if why != NULL:
        n = peer_format(&uc.conn.peer, where, 48)
        rp_elog(x_errfd(x), 4 if status == 400 or status == 403 else 6,
                "client %.*s: rule '%s': %s: %s (%d)", n, where, x.rule.name, why, path, status)
    edge_error(uc, x, status)


cdef void edge_error(UConn* uc, Exchange* x, int status) noexcept nogil:
    """An error of a static rule, with the rule's response headers."""
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb = buf_get()
    cdef const char* reason = "Internal Server Error"
    cdef W w
    if hb == NULL:
        uc_close(uc)
        return
    if status == 400:
        reason = "Bad Request"
    elif status == 403:
        reason = "Forbidden"
    elif status == 404:
        reason = "Not Found"
    elif status == 405:
        reason = "Method Not Allowed"
    elif status == 414:
        reason = "URI Too Long"
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_status_line(&w, status, reason)
    if status == 405:
        w_put(&w, "Allow: GET, HEAD\r\n", 18)
    w_put(&w, "Content-Type: text/plain\r\nContent-Length: ", 42)
    w_uint(&w, <uint64_t>(5 + strlen(reason)))
    w_put(&w, "\r\n", 2)
    w_end_head(&w, uc, x, keep)
    if not (x.flags & XF_HEAD_REQ):
        w_uint(&w, <uint64_t>status)
        w_put(&w, " ", 1)
        w_str(&w, reason)
        w_put(&w, "\n", 1)
    edge_answer(uc, x, hb, &w, status, keep)


cdef int static_serve(UConn* uc, Exchange* x) noexcept nogil:
    """Serve the request from the rule's root.  0: answered; 1: not found
    here and the rule has downstreams: forward it (try-files)."""
    cdef EdgeRule* e = x.rule.serve_edge
    cdef const char* url = bdata(uc.conn.rbuf) + x.url_sp.off
    cdef const char* p = url + x.path_off
    cdef uint32_t plen = x.path_len, rlen = 0
    cdef char rel[SF_PATH_MAX]
    cdef int st, fd, dfd, i, err
    cdef stat_t sb
    cdef bint fwd = x.rule.nds > 0
    if x.method != HTTP_GET and x.method != HTTP_HEAD:
        if fwd:
            return 1
        static_fail(uc, x, 405, NULL, "")
        return 0
    if x.rule.match == M_PREFIX and x.rule.plen <= plen:
        # the prefix maps onto the root (nginx's alias): /static/a.css -> ROOT/a.css
        p += x.rule.plen
        plen -= x.rule.plen
    st = static_path(p, plen, rel, SF_PATH_MAX - 64, &rlen)
    if st == 404:
        static_fail(uc, x, 404, "hidden file", rel)
        return 0
    if st:
        static_fail(uc, x, st, "refused path (.., NUL, backslash, control byte or bad %-escape)", "-")
        return 0
    fd = ofc_open(e, rel, rlen, &sb, &err)     # filecache.pxi: sf_open + fstat, cached
    if fd == -2:
        static_fail(uc, x, 500, "fstat failed", rel)
        return 0
    if fd < 0:
        if (err == ENOENT or err == ENOTDIR) and fwd:
            return 1
        if err == EXDEV or err == ELOOP:
            static_fail(uc, x, 403, "path leaves the root", rel)
        elif err == EACCES:
            static_fail(uc, x, 403, "permission denied", rel)
        elif err == ENOENT or err == ENOTDIR:
            static_fail(uc, x, 404, "no such file", rel)
        else:
            static_fail(uc, x, 500, strerror(err), rel)
        return 0
    if S_ISDIR(sb.st_mode):
        if x.path_len == 0 or url[x.path_off + x.path_len - 1] != c'/':
            close(fd)
            static_slash_redirect(uc, x)
            return 0
        dfd = fd
        fd = -1
        for i in range(e.nindex):
            if rlen + e.index_len[i] + 1 >= SF_PATH_MAX:
                break
            fd = sf_open(dfd, e.index[i], O_RDONLY)
            if fd >= 0:
                if fstat(fd, &sb) == 0 and S_ISREG(sb.st_mode):
                    memcpy(rel + rlen, e.index[i], e.index_len[i] + 1)
                    rlen += e.index_len[i]
                    break
                close(fd)
                fd = -1
        if fd < 0:
            if e.autoindex:
                static_autoindex(uc, x, dfd, p, plen)       # takes dfd
                return 0
            close(dfd)
            if fwd:
                return 1
            static_fail(uc, x, 403, "directory without an index", rel)
            return 0
        close(dfd)
    if not S_ISREG(sb.st_mode):
        close(fd)
        static_fail(uc, x, 403, "not a regular file", rel)
        return 0
    static_file(uc, x, fd, &sb, rel, rlen)
    return 0


cdef void static_slash_redirect(UConn* uc, Exchange* x) noexcept nogil:
    """A directory asked for without its `/`: 301 to the same path with it."""
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb = buf_get()
    cdef const char* url = bdata(uc.conn.rbuf) + x.url_sp.off
    cdef uint32_t qoff = x.path_off + x.path_len
    cdef W w
    if hb == NULL:
        uc_close(uc)
        return
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_status_line(&w, 301, "Moved Permanently")
    w_put(&w, "Location: ", 10)
    w_put(&w, url + x.path_off, x.path_len)
    w_put(&w, "/", 1)
    w_put(&w, url + qoff, x.url_sp.len - qoff)
    w_put(&w, "\r\nContent-Length: 0\r\n", 21)
    w_end_head(&w, uc, x, keep)
    edge_answer(uc, x, hb, &w, 301, keep)


cdef int sf_precompressed(UConn* uc, Exchange* x, int fd, stat_t* sb, const char* rel, uint32_t rlen,
                          const char** coding, bint* vary) noexcept nogil:
    """A precompressed sibling (.br, then .gz) when the client accepts it: the
    descriptor to send (fd, or the sibling's, fd then closed and sb the
    sibling's); coding set to its Content-Encoding; vary when a sibling
    exists at all (the answer depends on Accept-Encoding)."""
    cdef uint32_t vlen = 0
    cdef const char* v = req_header(uc, x, "accept-encoding", 15, &vlen)
    cdef int zfd, zi, zerr = 0
    cdef stat_t zsb
    cdef char zrel[SF_PATH_MAX]
    coding[0] = NULL
    vary[0] = False
    for zi in range(2):
        if rlen + 4 >= SF_PATH_MAX or v == NULL:
            break                   # a client accepting no coding gets the file (no probe, no Vary)
        memcpy(zrel, rel, rlen)
        if zi == 0:
            memcpy(zrel + rlen, ".br", 4)
        else:
            memcpy(zrel + rlen, ".gz", 4)
        zfd = ofc_open(x.rule.serve_edge, zrel, rlen + 3, &zsb, &zerr)
        if zfd < 0:
            continue
        if not S_ISREG(zsb.st_mode):
            close(zfd)
            continue
        vary[0] = True
        if accepts(v, vlen, "br" if zi == 0 else "gzip", 2 if zi == 0 else 4):
            coding[0] = "br" if zi == 0 else "gzip"
            close(fd)
            memcpy(sb, &zsb, sizeof(stat_t))
            return zfd
        close(zfd)
    return fd


cdef int sf_status(UConn* uc, Exchange* x, const char* etag, uint32_t elen, const char* lm, uint32_t lmlen,
                   time_t mt, uint64_t size, uint64_t* start, uint64_t* end) noexcept nogil:
    """The answer's status from the client's conditionals (RFC 9110 13.2.2:
    If-None-Match wins over If-Modified-Since) and Range (with If-Range):
    200, 304, 206 ([start, end]) or 416."""
    cdef uint32_t vlen = 0
    cdef const char* v
    cdef const char* inm = req_header(uc, x, "if-none-match", 13, &vlen)
    cdef int rr
    if inm != NULL:
        if etag_listed(inm, vlen, etag, elen):
            return 304
    else:
        v = req_header(uc, x, "if-modified-since", 17, &vlen)
        if v != NULL and sf_http_date(v, vlen) >= mt and sf_http_date(v, vlen) >= 0:
            return 304
    if x.method != HTTP_GET:
        return 200
    v = req_header(uc, x, "range", 5, &vlen)
    if v == NULL:
        return 200
    rr = range_parse(v, vlen, size, start, end)
    inm = req_header(uc, x, "if-range", 8, &vlen)
    if inm != NULL and not ((vlen == elen and memcmp(inm, etag, elen) == 0)
                            or (vlen == lmlen and memcmp(inm, lm, lmlen) == 0)):
        return 200                  # the client's copy is another version: send it whole
    if rr == 1:
        return 206
    if rr == 416:
        return 416
    return 200


cdef uint64_t sf_write_head(W* w, int status, MimeSlot* mime, uint64_t size, uint64_t start, uint64_t end,
                            const char* lm, uint32_t lmlen, const char* etag, uint32_t elen,
                            const char* coding, bint vary) noexcept nogil:
    """The answer's status line and entity fields (not yet the end of the
    head: w_end_head adds the rule's fields); the body length to send."""
    cdef uint64_t body = size
    if status == 200:
        w_status_line(w, 200, "OK")
    elif status == 304:
        w_status_line(w, 304, "Not Modified")
    elif status == 206:
        w_status_line(w, 206, "Partial Content")
    else:
        w_status_line(w, 416, "Range Not Satisfiable")
    if status != 304 and status != 416:
        w_put(w, "Content-Type: ", 14)
        if mime != NULL:
            w_put(w, mime.type, mime.tlen)
        else:
            w_put(w, "application/octet-stream", 24)
        w_put(w, "\r\n", 2)
    if status == 416:
        w_put(w, "Content-Range: bytes */", 23)
        w_uint(w, size)
        w_put(w, "\r\nContent-Length: 0\r\n", 21)
        body = 0
    elif status == 206:
        w_put(w, "Content-Range: bytes ", 21)
        w_uint(w, start)
        w_put(w, "-", 1)
        w_uint(w, end)
        w_put(w, "/", 1)
        w_uint(w, size)
        w_put(w, "\r\nContent-Length: ", 18)
        w_uint(w, end - start + 1)
        w_put(w, "\r\n", 2)
        body = end - start + 1
    elif status == 200:
        w_put(w, "Content-Length: ", 16)
        w_uint(w, size)
        w_put(w, "\r\n", 2)
    if status != 416:
        w_put(w, "Last-Modified: ", 15)
        w_put(w, lm, lmlen)
        w_put(w, "\r\nETag: ", 8)
        w_put(w, etag, elen)
        w_put(w, "\r\n", 2)
    if status == 200 or status == 206:
        w_put(w, "Accept-Ranges: bytes\r\n", 22)
    if coding != NULL:
        w_put(w, "Content-Encoding: ", 18)
        w_str(w, coding)
        w_put(w, "\r\n", 2)
    if vary:
        w_put(w, "Vary: Accept-Encoding\r\n", 23)
    return body


cdef void static_file(UConn* uc, Exchange* x, int fd, stat_t* sb, const char* rel, uint32_t rlen) noexcept nogil:
    """Answer with an open regular file: a precompressed sibling if the
    client takes one, the conditionals and Range, the head, then the body
    from static_pump."""
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb
    cdef W w
    cdef char etag[48]
    cdef char lm[40]
    cdef tm t
    cdef time_t mt
    cdef int elen, status
    cdef uint32_t lmlen
    cdef uint64_t size, body, start = 0, end = 0
    cdef const char* coding = NULL
    cdef bint vary = False
    fd = sf_precompressed(uc, x, fd, sb, rel, rlen, &coding, &vary)
    mt = sb.st_mtime
    size = <uint64_t>sb.st_size
    elen = snprintf(etag, 48, "\"%lx-%llx%s\"", <long>mt, <unsigned long long>size,
                    "" if coding == NULL else ("-br" if coding[0] == c'b' else "-gz"))
    gmtime_r(&mt, &t)
    lmlen = <uint32_t>strftime(lm, 40, "%a, %d %b %Y %H:%M:%S GMT", &t)
    status = sf_status(uc, x, etag, <uint32_t>elen, lm, lmlen, mt, size, &start, &end)
    hb = buf_get()
    if hb == NULL:
        close(fd)
        uc_close(uc)
        return
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    body = sf_write_head(&w, status, mime_lookup(rel, rlen), size, start, end, lm, lmlen, etag, <uint32_t>elen,
                         coding, vary)
    w_end_head(&w, uc, x, keep)
    if status == 304 or status == 416 or (x.flags & XF_HEAD_REQ) or body == 0:
        close(fd)
    else:
        x.sf_fd = fd
        x.sf_off = start if status == 206 else 0
        x.sf_left = body
    edge_answer(uc, x, hb, &w, status, keep)


cdef void static_pump(UConn* uc) noexcept nogil:
    """Send more of the file: until the socket is full, the file is done, or
    the client is gone."""
    cdef Exchange* x = uc.xhead
    cdef ssize_t n
    cdef long off
    cdef size_t want
    cdef Buf* b
    while True:
        if not out_empty(&uc.conn.out):
            if uc_send(uc) != 0:
                return
        if x.sf_left == 0:
            close(x.sf_fd)
            x.sf_fd = -1
            x_drop(uc)
            uc_on_drained(uc)
            return
        want = SF_CHUNK if x.sf_left > SF_CHUNK else <size_t>x.sf_left
        if uc.conn.tls == NULL and not (uc.conn.flags & CN_VIRTUAL):    # (an HTTP/2 stream has no socket)
            off = <long>x.sf_off
            n = sendfile(uc.conn.h.fd, x.sf_fd, &off, want)
            if n > 0:
                x.sf_off += <uint64_t>n
                x.sf_left -= <uint64_t>n
                x.log.bytes_out += <uint64_t>n
                continue
            if n < 0 and errno == EINTR:
                continue
            if n < 0 and errno == EAGAIN:
                uc.conn.flags &= ~CN_WRITABLE
                timer_arm(&uc.conn.timer, uc_write_timeout(uc))
                return
        else:
            b = buf_get()
            if b == NULL:
                uc_close(uc)
                return
            if want > b.cap:
                want = b.cap
            n = pread(x.sf_fd, bdata(b), want, <long>x.sf_off)
            if n > 0:
                x.sf_off += <uint64_t>n
                x.sf_left -= <uint64_t>n
                uc.conn.out.bptr = bdata(b)
                uc.conn.out.blen = <uint32_t>n
                uc.conn.out.bbuf = b
                continue
            buf_put(b)
        if n == 0:
            rp_elog(x_errfd(x), 3, "rule '%s': a file shrank while it was sent", x.rule.name)
        elif n < 0 and errno != EPIPE and errno != ECONNRESET:
            rp_elog(x_errfd(x), 4, "rule '%s': sending a file: %s", x.rule.name, strerror(errno))
        uc_close(uc)
        return


cdef void static_release(Exchange* x) noexcept nogil:
    """Hook in x_free: the file of an exchange that ended early."""
    if x.sf_fd >= 0:
        close(x.sf_fd)
        x.sf_fd = -1


cdef void w_html(W* w, const char* s, uint32_t n) noexcept nogil:
    cdef uint32_t i
    for i in range(n):
        if s[i] == c'<':
            w_put(w, "&lt;", 4)
        elif s[i] == c'>':
            w_put(w, "&gt;", 4)
        elif s[i] == c'&':
            w_put(w, "&amp;", 5)
        elif s[i] == c'"':
            w_put(w, "&quot;", 6)
        else:
            w_put(w, s + i, 1)


cdef void w_urlpart(W* w, const char* s, uint32_t n) noexcept nogil:
    cdef uint32_t i
    cdef char hx[3]
    cdef const char* digits = "0123456789ABCDEF"
    cdef uint8_t c
    for i in range(n):
        c = <uint8_t>s[i]
        if (g_cc[c] & CC_TCHAR) and c != c'%' and c != c'#' and c != c'?' and c != c'&' and c != c'+':
            w_put(w, s + i, 1)
        else:
            hx[0] = c'%'
            hx[1] = digits[c >> 4]
            hx[2] = digits[c & 15]
            w_put(w, hx, 3)


cdef void static_autoindex(UConn* uc, Exchange* x, int dfd, const char* p, uint32_t plen) noexcept nogil:
    """An HTML listing of a directory (dotfiles left out), one buffer at
    most: a longer listing is cut with a note."""
    cdef bint keep = uc_reject_keeps(uc)
    cdef Buf* hb = buf_get()
    cdef Buf* bb = buf_get()
    cdef W w
    cdef W bw
    cdef DIR* d
    cdef dirent* de
    cdef uint32_t nlen
    cdef int lfd
    cdef stat_t sb
    cdef char* mark
    if hb == NULL or bb == NULL:
        if hb != NULL:
            buf_put(hb)
        if bb != NULL:
            buf_put(bb)
        close(dfd)
        uc_close(uc)
        return
    # the listing needs a readable fd (the root fd is O_PATH: reopen)
    lfd = sf_open(dfd, ".", O_RDONLY | O_DIRECTORY)
    close(dfd)
    d = fdopendir(lfd) if lfd >= 0 else NULL
    bw.p = bdata(bb)
    bw.end = bw.p + bb.cap - 64
    bw.overflow = 0
    w_str(&bw, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ")
    w_html(&bw, p, plen)
    w_str(&bw, "</title></head><body><h1>Index of ")
    w_html(&bw, p, plen)
    w_str(&bw, "</h1><ul>\n<li><a href=\"../\">../</a></li>\n")
    if d != NULL:
        while not bw.overflow:
            de = readdir(d)
            if de == NULL:
                break
            if de.d_name[0] == c'.':
                continue
            nlen = <uint32_t>strlen(de.d_name)
            mark = bw.p
            w_str(&bw, "<li><a href=\"")
            w_urlpart(&bw, de.d_name, nlen)
            lfd = sf_open(dirfd(d), de.d_name, O_PATH)
            if lfd >= 0 and fstat(lfd, &sb) == 0 and S_ISDIR(sb.st_mode):
                w_put(&bw, "/", 1)
            w_str(&bw, "\">")
            w_html(&bw, de.d_name, nlen)
            if lfd >= 0 and S_ISDIR(sb.st_mode):
                w_put(&bw, "/", 1)
            if lfd >= 0:
                close(lfd)
            w_str(&bw, "</a></li>\n")
            if bw.overflow:
                bw.p = mark
        closedir(d)
    bw.end = bdata(bb) + bb.cap
    bw.overflow = 0
    w_str(&bw, "</ul></body></html>\n")
    w.p = bdata(hb)
    w.end = w.p + hb.cap
    w.overflow = 0
    w_status_line(&w, 200, "OK")
    w_str(&w, "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\nContent-Length: ")
    w_uint(&w, <uint64_t>(bw.p - bdata(bb)))
    w_put(&w, "\r\n", 2)
    w_end_head(&w, uc, x, keep)
    if x.flags & XF_HEAD_REQ:
        buf_put(bb)
    else:
        uc.conn.out.bptr = bdata(bb)
        uc.conn.out.blen = <uint32_t>(bw.p - bdata(bb))
        uc.conn.out.bbuf = bb
    edge_answer_keep_body(uc, x, hb, &w, keep)


cdef void edge_answer_keep_body(UConn* uc, Exchange* x, Buf* hb, W* w, bint keep) noexcept nogil:
    """edge_answer for a head with a body already set in uc.conn.out."""
    cdef const char* bptr = uc.conn.out.bptr
    cdef uint32_t blen = uc.conn.out.blen
    cdef Buf* bbuf = uc.conn.out.bbuf
    uc.conn.out.bptr = NULL
    uc.conn.out.blen = 0
    uc.conn.out.bbuf = NULL
    out_release(&uc.conn.out)
    uc.conn.out.bptr = bptr
    uc.conn.out.blen = blen
    uc.conn.out.bbuf = bbuf
    if w.overflow:
        out_release(&uc.conn.out)
        buf_put(hb)
        uc_respond(uc, 500, False)
        return
    x.status = 200
    x.flags |= XF_RESP_STARTED
    x.sf_fd = SF_ANSWERED
    xlog_done(x)
    if not keep or g_stop:
        uc.conn.flags |= UF_CLOSE_AFTER
    uc.conn.out.hptr = bdata(hb)
    uc.conn.out.hlen = <uint32_t>(w.p - bdata(hb))
    uc.conn.out.hbuf = hb
    uc_move(uc, U_WAIT)
    if uc_send(uc) == 0:
        x_drop(uc)
        uc_on_drained(uc)
