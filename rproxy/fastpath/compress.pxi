# On-the-fly response compression (gzip, brotli, zstd): a stage on the
# response body path (DESIGN.md 8) with head(), data() and end().
#
#   head  comp_on_response_head   decide from the request's Accept-Encoding
#                                 (parsed at routing, comp_on_request) and the
#                                 response head: type, size, status, exclusions
#   data  comp_drive              [fpos, fend) of the downstream's read buffer
#                                 (dechunked in place: DF_DECHUNK) is encoded
#                                 into one pooled Buf handed to the client's Out
#   end   comp_drive at R_DONE    the encoder's epilogue and the last chunk
#
# Backpressure is the proxy's usual one: the downstream is not read again
# until the client took the previous output, and one output Buf per exchange
# (at most high-watermark bytes) is in flight.  Input that did not fit stays
# in the downstream's read buffer and is encoded when the client drains.
# Every data() ends with a flush (Z_SYNC_FLUSH, BROTLI_OPERATION_FLUSH,
# ZSTD_e_flush): what the downstream sent is never held back, so server-sent
# events and slow streams reach the client as promptly as uncompressed.
#
# Memory per stream is bounded by the encoder parameters below (README,
# "Compression"): gzip level 6, 32 KiB window, memLevel 8 (256 KiB); brotli
# quality 4, 256 KiB window (1.6 MiB); zstd level 3, 256 KiB window, 2^16
# tables (1.5 MiB).  Encoders of gzip and zstd are
# reset and reused (per-worker free lists, at most COMP_FREE_MAX each).

cdef extern from "<zlib.h>" nogil:
    ctypedef struct z_stream:
        const unsigned char* next_in
        unsigned int avail_in
        unsigned long total_in
        unsigned char* next_out
        unsigned int avail_out
        unsigned long total_out
        void* zalloc
        void* zfree
        void* opaque
    int Z_OK
    int Z_STREAM_END
    int Z_BUF_ERROR
    int Z_SYNC_FLUSH
    int Z_FINISH
    int Z_DEFLATED
    int Z_DEFAULT_STRATEGY
    int deflateInit2(z_stream* strm, int level, int method, int windowBits, int memLevel, int strategy)
    int deflate(z_stream* strm, int flush)
    int deflateReset(z_stream* strm)
    int deflateEnd(z_stream* strm)

cdef extern from "<brotli/encode.h>" nogil:
    ctypedef struct BrotliEncoderState:
        pass
    ctypedef enum BrotliEncoderOperation:
        BROTLI_OPERATION_PROCESS
        BROTLI_OPERATION_FLUSH
        BROTLI_OPERATION_FINISH
    ctypedef enum BrotliEncoderParameter:
        BROTLI_PARAM_QUALITY
        BROTLI_PARAM_LGWIN
        BROTLI_PARAM_MODE
    BrotliEncoderState* BrotliEncoderCreateInstance(void* alloc_func, void* free_func, void* opaque)
    int BrotliEncoderSetParameter(BrotliEncoderState* s, BrotliEncoderParameter p, uint32_t v)
    int BrotliEncoderCompressStream(BrotliEncoderState* s, BrotliEncoderOperation op, size_t* available_in,
                                    const uint8_t** next_in, size_t* available_out, uint8_t** next_out,
                                    size_t* total_out)
    int BrotliEncoderIsFinished(BrotliEncoderState* s)
    int BrotliEncoderHasMoreOutput(BrotliEncoderState* s)
    void BrotliEncoderDestroyInstance(BrotliEncoderState* s)

cdef extern from "<zstd.h>" nogil:
    ctypedef struct ZSTD_CCtx:
        pass
    ctypedef struct ZSTD_inBuffer:
        const void* src
        size_t size
        size_t pos
    ctypedef struct ZSTD_outBuffer:
        void* dst
        size_t size
        size_t pos
    ctypedef enum ZSTD_EndDirective:
        ZSTD_e_continue
        ZSTD_e_flush
        ZSTD_e_end
    ctypedef enum ZSTD_cParameter:
        ZSTD_c_compressionLevel
        ZSTD_c_windowLog
        ZSTD_c_hashLog
        ZSTD_c_chainLog
    ctypedef enum ZSTD_ResetDirective:
        ZSTD_reset_session_only
    ZSTD_CCtx* ZSTD_createCCtx()
    size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx)
    size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, ZSTD_cParameter param, int value)
    size_t ZSTD_CCtx_reset(ZSTD_CCtx* cctx, ZSTD_ResetDirective reset)
    size_t ZSTD_compressStream2(ZSTD_CCtx* cctx, ZSTD_outBuffer* output, ZSTD_inBuffer* input,
                                ZSTD_EndDirective endOp)
    unsigned ZSTD_isError(size_t code)
    size_t ZSTD_sizeof_CCtx(const ZSTD_CCtx* cctx)

cdef extern from "<strings.h>" nogil:
    int strncasecmp(const char* a, const char* b, size_t n)

cdef enum:
    # codings (CompRule.order, Exchange.cz_coding)
    CZ_NONE = 0
    CZ_GZIP = 1
    CZ_BR = 2
    CZ_ZSTD = 3
    CZ_N = 4

cdef enum:
    # Exchange.cz_flags
    CZF_VARY = 0x01         # eligible for compression: Vary: Accept-Encoding
    CZF_ON = 0x02           # this response is compressed (x.cz holds the encoder)
    CZF_NOID = 0x04         # the client refused identity (identity;q=0 or *;q=0)
    CZF_CHUNKED = 0x08      # framed as chunks (HTTP/1.1 client); else close-delimited
    CZF_FINISHED = 0x10     # the encoder's epilogue and the last chunk are out
    CZF_PENDING = 0x20      # the encoder holds output it could not write yet

cdef enum:
    GZIP_LEVEL = 6
    GZIP_WBITS = 15         # 32 KiB window (+16: the gzip wrapper)
    GZIP_MEMLEVEL = 8
    BR_QUALITY = 4
    BR_LGWIN = 18           # 256 KiB window
    ZSTD_LEVEL = 3
    ZSTD_WLOG = 18          # 256 KiB window
    ZSTD_TLOG = 16          # hash and chain tables of 2^16 entries (level 3 has 2^17)
    COMP_FREE_MAX = 16      # idle encoders kept per coding and worker
    CHUNK_HDR = 10          # room for "%x\r\n" before the data (8 hex digits at most)
    CHUNK_TAIL = 7          # "\r\n" after the data, "0\r\n\r\n" after the last chunk

cdef struct CompRule:
    # a rule's compress, compress-types and compress-min-size
    uint8_t order[3]        # codings in preference order (CZ_*), CZ_NONE-terminated
    int ntypes
    char** types            # "text/*", "application/json", ... (lower case)
    uint32_t* type_lens
    uint64_t min_size

cdef struct CompStream:
    CompStream* next        # free list
    uint8_t coding
    z_stream zs
    BrotliEncoderState* br
    ZSTD_CCtx* zc

cdef CompStream* g_cz_free[CZ_N]
cdef int g_cz_nfree[CZ_N]
cdef int64_t c_cz_streams = 0       # encoders in use now (stats; tests assert it returns to 0)
cdef uint64_t c_cz_responses = 0    # responses compressed


# ---- encoders -------------------------------------------------------------------

cdef CompStream* cz_get(uint8_t coding) noexcept nogil:
    global c_cz_streams
    cdef CompStream* s = g_cz_free[coding]
    if s != NULL:
        g_cz_free[coding] = s.next
        g_cz_nfree[coding] -= 1
        s.next = NULL
        c_cz_streams += 1
        return s
    s = <CompStream*>calloc(1, sizeof(CompStream))
    if s == NULL:
        return NULL
    s.coding = coding
    if coding == CZ_GZIP:
        if deflateInit2(&s.zs, GZIP_LEVEL, Z_DEFLATED, GZIP_WBITS + 16, GZIP_MEMLEVEL, Z_DEFAULT_STRATEGY) != Z_OK:
            free(s)
            return NULL
    elif coding == CZ_BR:
        s.br = BrotliEncoderCreateInstance(NULL, NULL, NULL)
        if s.br == NULL:
            free(s)
            return NULL
        BrotliEncoderSetParameter(s.br, BROTLI_PARAM_QUALITY, BR_QUALITY)
        BrotliEncoderSetParameter(s.br, BROTLI_PARAM_LGWIN, BR_LGWIN)
    else:
        s.zc = ZSTD_createCCtx()
        if s.zc == NULL:
            free(s)
            return NULL
        ZSTD_CCtx_setParameter(s.zc, ZSTD_c_compressionLevel, ZSTD_LEVEL)
        ZSTD_CCtx_setParameter(s.zc, ZSTD_c_windowLog, ZSTD_WLOG)
        ZSTD_CCtx_setParameter(s.zc, ZSTD_c_hashLog, ZSTD_TLOG)
        ZSTD_CCtx_setParameter(s.zc, ZSTD_c_chainLog, ZSTD_TLOG)
    c_cz_streams += 1
    return s


cdef void cz_put(CompStream* s) noexcept nogil:
    """Back to the free list (reset), or freed: brotli has no reset."""
    global c_cz_streams
    c_cz_streams -= 1
    if s.coding == CZ_GZIP:
        if g_cz_nfree[CZ_GZIP] < COMP_FREE_MAX and deflateReset(&s.zs) == Z_OK:
            s.next = g_cz_free[CZ_GZIP]
            g_cz_free[CZ_GZIP] = s
            g_cz_nfree[CZ_GZIP] += 1
            return
        deflateEnd(&s.zs)
    elif s.coding == CZ_BR:
        BrotliEncoderDestroyInstance(s.br)
    else:
        if g_cz_nfree[CZ_ZSTD] < COMP_FREE_MAX \
                and not ZSTD_isError(ZSTD_CCtx_reset(s.zc, ZSTD_reset_session_only)):
            s.next = g_cz_free[CZ_ZSTD]
            g_cz_free[CZ_ZSTD] = s
            g_cz_nfree[CZ_ZSTD] += 1
            return
        ZSTD_freeCCtx(s.zc)
    free(s)


cdef int cz_encode(CompStream* s, const char** inp, uint32_t* inlen, char* out, uint32_t outcap,
                   uint32_t* outlen, bint last) noexcept nogil:
    """Encode as much of the input as fits, then flush (last: finish).
    Returns 1 when the input is consumed and the flush (or finish) is
    complete, 0 when the output is full first, -1 on an encoder error."""
    cdef int r
    cdef size_t ai, ao, zr
    cdef const uint8_t* ni
    cdef uint8_t* no
    cdef ZSTD_inBuffer zin
    cdef ZSTD_outBuffer zout
    if s.coding == CZ_GZIP:
        s.zs.next_in = <const unsigned char*>inp[0]
        s.zs.avail_in = inlen[0]
        s.zs.next_out = <unsigned char*>out
        s.zs.avail_out = outcap
        r = deflate(&s.zs, Z_FINISH if last else Z_SYNC_FLUSH)
        inp[0] = <const char*>s.zs.next_in
        inlen[0] = s.zs.avail_in
        outlen[0] = outcap - s.zs.avail_out
        if r == Z_STREAM_END:
            return 1
        if r != Z_OK and r != Z_BUF_ERROR:
            return -1
        # a flush is complete when output room was left over
        return 1 if (not last and s.zs.avail_in == 0 and s.zs.avail_out > 0) else 0
    if s.coding == CZ_BR:
        ai = inlen[0]
        ni = <const uint8_t*>inp[0]
        ao = outcap
        no = <uint8_t*>out
        if not BrotliEncoderCompressStream(s.br, BROTLI_OPERATION_FINISH if last else BROTLI_OPERATION_FLUSH,
                                           &ai, &ni, &ao, &no, NULL):
            return -1
        inp[0] = <const char*>ni
        inlen[0] = <uint32_t>ai
        outlen[0] = <uint32_t>(outcap - ao)
        if ai == 0 and not BrotliEncoderHasMoreOutput(s.br) and (not last or BrotliEncoderIsFinished(s.br)):
            return 1
        return 0
    zin.src = inp[0]
    zin.size = inlen[0]
    zin.pos = 0
    zout.dst = out
    zout.size = outcap
    zout.pos = 0
    zr = ZSTD_compressStream2(s.zc, &zout, &zin, ZSTD_e_end if last else ZSTD_e_flush)
    if ZSTD_isError(zr):
        return -1
    inp[0] += zin.pos
    inlen[0] -= <uint32_t>zin.pos
    outlen[0] = <uint32_t>zout.pos
    return 1 if zr == 0 and inlen[0] == 0 else 0


# ---- request: Accept-Encoding ----------------------------------------------------

cdef inline bint cz_is_ows(char c) noexcept nogil:
    return c == c' ' or c == c'\t'


cdef int cz_qvalue(const char* p, uint32_t n) noexcept nogil:
    """q=0.xyz in thousandths; 1000 for a bad or missing value."""
    cdef uint32_t i = 0
    cdef int q, k
    if n == 0:
        return 1000
    if p[0] == c'1':
        return 1000
    if p[0] != c'0':
        return 1000
    q = 0
    i = 1
    if i < n and p[i] == c'.':
        i += 1
        k = 0
        while i < n and k < 3 and p[i] >= c'0' and p[i] <= c'9':
            q = q * 10 + (p[i] - 48)
            k += 1
            i += 1
        while k < 3:
            q *= 10
            k += 1
    return q


cdef void cz_parse_ae(const char* p, uint32_t n, int* q) noexcept nogil:
    """One Accept-Encoding field value: q[coding] for gzip, br, zstd, and
    q[0] for identity, q[CZ_N] for *.  -1 = not listed."""
    cdef uint32_t i = 0, s, e, ps
    cdef int code, qv
    while i < n:
        while i < n and (cz_is_ows(p[i]) or p[i] == c','):
            i += 1
        s = i
        while i < n and p[i] != c',' and p[i] != c';' and not cz_is_ows(p[i]):
            i += 1
        e = i
        qv = 1000
        while i < n and p[i] != c',':
            # parameters: look for q=
            if p[i] == c';':
                i += 1
                while i < n and cz_is_ows(p[i]):
                    i += 1
                if i + 1 < n and (p[i] == c'q' or p[i] == c'Q') and p[i + 1] == c'=':
                    ps = i + 2
                    i = ps
                    while i < n and p[i] != c',' and p[i] != c';' and not cz_is_ows(p[i]):
                        i += 1
                    qv = cz_qvalue(p + ps, i - ps)
                    continue
            i += 1
        code = -1
        if e - s == 4 and strncasecmp(p + s, "gzip", 4) == 0:
            code = CZ_GZIP
        elif e - s == 6 and strncasecmp(p + s, "x-gzip", 6) == 0:
            code = CZ_GZIP
        elif e - s == 2 and strncasecmp(p + s, "br", 2) == 0:
            code = CZ_BR
        elif e - s == 4 and strncasecmp(p + s, "zstd", 4) == 0:
            code = CZ_ZSTD
        elif e - s == 8 and strncasecmp(p + s, "identity", 8) == 0:
            code = 0
        elif e - s == 1 and p[s] == c'*':
            code = CZ_N
        if code >= 0 and qv > q[code]:
            q[code] = qv


cdef void comp_on_request(UConn* uc, Exchange* x) noexcept nogil:
    """At routing: pick the coding this client gets if its response is
    eligible, by q-value and then the rule's order."""
    cdef CompRule* cr = <CompRule*>x.rule.comp
    cdef const char* base = bdata(uc.conn.rbuf)
    cdef int q[CZ_N + 1]
    cdef int i, c, best = 0, cq, bestq = 0
    cdef Header* h
    for i in range(CZ_N + 1):
        q[i] = -1
    for i in range(x.nreq):
        h = &x.req[i]
        if h.name.len == 15 and strncasecmp(base + h.name.off, "accept-encoding", 15) == 0:
            cz_parse_ae(base + h.value.off, h.value.len, q)
    if q[0] == 0 or (q[0] < 0 and q[CZ_N] == 0):
        x.cz_flags |= CZF_NOID
    for i in range(3):
        c = cr.order[i]
        if c == CZ_NONE:
            break
        cq = q[c] if q[c] >= 0 else q[CZ_N]
        if cq > bestq:
            best = c
            bestq = cq
    x.cz_coding = <uint8_t>best


# ---- response head ---------------------------------------------------------------

cdef bint cz_type_ok(CompRule* cr, const char* p, uint32_t n) noexcept nogil:
    cdef uint32_t e = 0
    cdef int i
    cdef uint32_t tl
    while e < n and p[e] != c';' and not cz_is_ows(p[e]):
        e += 1
    for i in range(cr.ntypes):
        tl = cr.type_lens[i]
        if tl >= 2 and cr.types[i][tl - 1] == c'*' and cr.types[i][tl - 2] == c'/':
            if e > tl - 1 and strncasecmp(p, cr.types[i], tl - 1) == 0:
                return True
        elif e == tl and strncasecmp(p, cr.types[i], tl) == 0:
            return True
    return False


cdef bint cz_has_token(const char* p, uint32_t n, const char* tok, uint32_t tl) noexcept nogil:
    cdef uint32_t i
    if n < tl:
        return False
    for i in range(n - tl + 1):
        if strncasecmp(p + i, tok, tl) == 0:
            return True
    return False


cdef void comp_on_response_head(DConn* dc, Exchange* x, bint* close_client) noexcept nogil:
    """head(): decide whether this response is compressed.  Sets DF_DECHUNK
    (the body is read unframed) and, for an HTTP/1.0 client, closes after."""
    global c_cz_responses
    cdef CompRule* cr = <CompRule*>x.rule.comp
    cdef llhttp_t* p = &dc.conn.parser
    cdef const char* base = bdata(dc.conn.rbuf)
    cdef Header* h
    cdef const char* n
    cdef bint typed = False
    cdef int i
    cdef uint16_t st = x.status
    x.cz_flags &= CZF_NOID
    if x.cz != NULL:
        cz_put(<CompStream*>x.cz)   # a replayed exchange starts over
        x.cz = NULL
    if st < 200 or st == 204 or st == 206 or st == 304 or (x.flags & XF_HEAD_REQ):
        return
    for i in range(x.nresp):
        h = &x.resp[i]
        n = base + h.name.off
        if h.name.len == 16 and strncasecmp(n, "content-encoding", 16) == 0:
            if not (h.value.len == 8 and strncasecmp(base + h.value.off, "identity", 8) == 0):
                return
        elif h.name.len == 13 and strncasecmp(n, "content-range", 13) == 0:
            return
        elif h.name.len == 13 and strncasecmp(n, "cache-control", 13) == 0:
            if cz_has_token(base + h.value.off, h.value.len, "no-transform", 12):
                return
        elif h.name.len == 12 and strncasecmp(n, "content-type", 12) == 0:
            typed = cz_type_ok(cr, base + h.value.off, h.value.len)
    if not typed:
        return
    if (p.flags & F_CONTENT_LENGTH) and p.content_length < cr.min_size and not (x.cz_flags & CZF_NOID):
        return
    x.cz_flags |= CZF_VARY
    if x.cz_coding == CZ_NONE:
        return
    x.cz = cz_get(x.cz_coding)
    if x.cz == NULL:
        return                      # out of memory: send it as it is
    x.cz_flags |= CZF_ON
    x.flags &= ~XF_RESP_BUFFER      # the encoder keeps the one-buffer backpressure (README)
    c_cz_responses += 1
    dc.conn.flags |= DF_DECHUNK
    dc.conn.flags &= ~DF_SPLICE
    if x.flags & XF_HTTP10:
        close_client[0] = True      # no chunks: the end of the body is the close
        x.uc.conn.flags |= UF_CLOSE_AFTER
    else:
        x.cz_flags |= CZF_CHUNKED


cdef bint comp_header(W* w, Exchange* x, const char* base, Header* h, int hid) noexcept nogil:
    """A downstream header while the client's head is built: True when this
    stage handled it (dropped or rewritten)."""
    cdef const char* n = base + h.name.off
    cdef const char* v = base + h.value.off
    if h.name.len == 4 and strncasecmp(n, "vary", 4) == 0:
        if cz_has_token(v, h.value.len, "accept-encoding", 15) or (h.value.len == 1 and v[0] == c'*'):
            x.cz_flags &= ~CZF_VARY  # already says so
        return False
    if not (x.cz_flags & CZF_ON):
        return False
    if hid == H_CONTENT_LENGTH:
        return True                 # the compressed length is not known yet
    if h.name.len == 16 and strncasecmp(n, "content-encoding", 16) == 0:
        return True                 # "identity": replaced by ours
    if h.name.len == 4 and strncasecmp(n, "etag", 4) == 0 and h.value.len and v[0] == c'"':
        w_put(w, "ETag: W/", 8)     # other bytes than the validator's: a weak one
        w_put(w, v, h.value.len)
        w_put(w, "\r\n", 2)
        return True
    return False


cdef void comp_head_extra(W* w, Exchange* x) noexcept nogil:
    """Headers this stage adds at the end of the client's head."""
    cdef uint8_t c
    if x.cz_flags & CZF_VARY:
        w_put(w, "Vary: Accept-Encoding\r\n", 23)
    if not (x.cz_flags & CZF_ON):
        return
    c = (<CompStream*>x.cz).coding
    if c == CZ_GZIP:
        w_put(w, "Content-Encoding: gzip\r\n", 24)
    elif c == CZ_BR:
        w_put(w, "Content-Encoding: br\r\n", 22)
    else:
        w_put(w, "Content-Encoding: zstd\r\n", 24)
    if x.cz_flags & CZF_CHUNKED:
        w_put(w, "Transfer-Encoding: chunked\r\n", 28)


# ---- body ---------------------------------------------------------------------------

cdef inline bint comp_pending(DConn* dc, Exchange* x) noexcept nogil:
    return dc.conn.fpos < dc.fend or (x.cz_flags & CZF_PENDING) != 0 \
        or (dc.phase == R_DONE and not (x.cz_flags & CZF_FINISHED))


cdef int comp_fill(DConn* dc, Exchange* x, UConn* uc) noexcept nogil:
    """Encode what waits in [fpos, fend) into a fresh Buf given to the
    client's Out (framed as a chunk for HTTP/1.1).  0 or -1 (failed)."""
    cdef CompStream* s = <CompStream*>x.cz
    cdef Buf* b = buf_get()
    cdef uint32_t cap, room, olen = 0, inl, start, end, k
    cdef const char* inp
    cdef char* d
    cdef char hexd[12]
    cdef int rc
    cdef bint last = dc.phase == R_DONE
    cdef bint chunked = (x.cz_flags & CZF_CHUNKED) != 0
    if b == NULL:
        return -1
    d = bdata(b)
    cap = b.cap
    if uc.srv.high_watermark and cap > uc.srv.high_watermark:
        cap = uc.srv.high_watermark if uc.srv.high_watermark > 1024 else 1024
    room = cap - CHUNK_HDR - CHUNK_TAIL if chunked else cap
    inp = bdata(dc.conn.rbuf) + dc.conn.fpos
    inl = dc.fend - dc.conn.fpos
    rc = cz_encode(s, &inp, &inl, d + CHUNK_HDR, room, &olen, last)
    if rc < 0:
        buf_put(b)
        return -1
    dc.conn.fpos = dc.fend - inl
    if x.cwfd >= 0 and olen:
        cache_tee(x, d + CHUNK_HDR, olen)   # a compressed variant being stored (cache.pxi)
    if rc == 0:
        x.cz_flags |= CZF_PENDING
    else:
        x.cz_flags &= ~CZF_PENDING
        if last:
            x.cz_flags |= CZF_FINISHED
    start = CHUNK_HDR
    end = CHUNK_HDR + olen
    if chunked:
        if olen:
            k = <uint32_t>snprintf(hexd, 12, "%x\r\n", olen)
            start = CHUNK_HDR - k
            memcpy(d + start, hexd, k)
            memcpy(d + end, "\r\n", 2)
            end += 2
        if x.cz_flags & CZF_FINISHED:
            memcpy(d + end, "0\r\n\r\n", 5)
            end += 5
    if end == start:
        buf_put(b)
        return 0
    uc.conn.out.bptr = d + start
    uc.conn.out.blen = end - start
    uc.conn.out.bbuf = b
    return 0


cdef int comp_drive(DConn* dc) noexcept nogil:
    """data() and end(): encode while the client takes the output.  1: all
    input is encoded (finished at R_DONE; the last output may still be in
    the client's Out); 0: waiting for the client (uc_on_drained -> dc_read
    resumes); -1: the exchange ended (client gone, or the encoder failed and
    the client connection was closed)."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef int r
    while comp_pending(dc, x):
        if uc.conn.out.blen:
            r = uc_send(uc)
            if r < 0:
                return -1
            if r > 0:
                return 0
            continue
        if comp_fill(dc, x, uc) < 0:
            rp_elog(x_errfd(x), 3, "compression failed (encoder error or out of memory): closing")
            dc_abandon(dc)
            xlog_failed(x, 502)
            uc_close(uc)
            return -1
    return 1


cdef bint comp_resume(DConn* dc) noexcept nogil:
    """The client drained its output (dc_read) or a close-delimited body
    ended (dc_on_eof): continue encoding.  True when dc_read must stop."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef int r = comp_drive(dc)
    if r <= 0:
        return True
    if not out_empty(&uc.conn.out) and uc_send(uc) < 0:
        return True
    if dc.phase == R_DONE:
        dc_response_done(dc)
        return True
    return False


cdef void comp_free(Exchange* x) noexcept nogil:
    if x.cz != NULL:
        cz_put(<CompStream*>x.cz)
        x.cz = NULL
    x.cz_flags = 0
    x.cz_coding = 0


# ---- configuration (Worker setup, Python) ------------------------------------------

_CODINGS = {"gzip": CZ_GZIP, "br": CZ_BR, "zstd": CZ_ZSTD}


def rule_set_compress(int server, int vhost, int index, codings, types, min_size):
    """A rule's compress = { ... }, compress-types and compress-min-size."""
    cdef RuleRt* r = &g_servers[server].vhosts[vhost].rules[index]
    cdef CompRule* cr = <CompRule*>calloc(1, sizeof(CompRule))
    cdef bytes b
    if cr == NULL:
        raise MemoryError()
    for i, c in enumerate(codings[:3]):
        cr.order[i] = _CODINGS[c]
    cr.ntypes = len(types)
    cr.types = <char**>calloc(max(cr.ntypes, 1), sizeof(char*))
    cr.type_lens = <uint32_t*>calloc(max(cr.ntypes, 1), sizeof(uint32_t))
    for i, t in enumerate(types):
        b = t.lower().encode()
        cr.types[i] = _dup(b)
        cr.type_lens[i] = len(b)
    cr.min_size = min_size
    r.comp = cr


def compress_stats():
    """(encoders in use, responses compressed) in this worker (tests)."""
    return c_cz_streams, c_cz_responses


cdef size_t g_cnt_cur = 0
cdef size_t g_cnt_peak = 0


cdef void* _cnt_alloc(void* opaque, size_t n) noexcept nogil:
    global g_cnt_cur, g_cnt_peak
    cdef size_t* p = <size_t*>malloc(n + 16)
    if p == NULL:
        return NULL
    p[0] = n
    g_cnt_cur += n
    if g_cnt_cur > g_cnt_peak:
        g_cnt_peak = g_cnt_cur
    return <char*>p + 16


cdef void _cnt_free(void* opaque, void* q) noexcept nogil:
    global g_cnt_cur
    if q == NULL:
        return
    cdef size_t* p = <size_t*>(<char*>q - 16)
    g_cnt_cur -= p[0]
    free(p)


def compress_memory():
    """Bytes one encoder holds after encoding 1 MiB in 32 KiB flushes (README
    figures): gzip by zlib's formula, brotli counted by its allocator, zstd
    by ZSTD_sizeof_CCtx."""
    global g_cnt_cur, g_cnt_peak
    cdef CompStream* s = cz_get(CZ_ZSTD)
    cdef bytes data = bytes(range(256)) * 4096
    cdef char* dst = <char*>malloc(1 << 17)
    cdef const char* p
    cdef uint32_t n, o
    cdef int k
    cdef BrotliEncoderState* br
    cdef size_t ai, ao
    cdef const uint8_t* ni
    cdef uint8_t* no
    for k in range(32):
        p = <const char*>data + k * 32768
        n = 32768
        cz_encode(s, &p, &n, dst, 1 << 17, &o, False)
    zsize = ZSTD_sizeof_CCtx(s.zc)
    cz_put(s)
    g_cnt_cur = 0
    g_cnt_peak = 0
    br = BrotliEncoderCreateInstance(<void*>_cnt_alloc, <void*>_cnt_free, NULL)
    BrotliEncoderSetParameter(br, BROTLI_PARAM_QUALITY, BR_QUALITY)
    BrotliEncoderSetParameter(br, BROTLI_PARAM_LGWIN, BR_LGWIN)
    for k in range(32):
        ni = <const uint8_t*>data + k * 32768
        ai = 32768
        ao = 1 << 17
        no = <uint8_t*>dst
        BrotliEncoderCompressStream(br, BROTLI_OPERATION_FLUSH, &ai, &ni, &ao, &no, NULL)
    BrotliEncoderDestroyInstance(br)
    free(dst)
    return {"gzip": (1 << (GZIP_WBITS + 2)) + (1 << (GZIP_MEMLEVEL + 9)), "br": g_cnt_peak, "zstd": zsize}


def compress_buffer(str coding, bytes data, int piece=16384):
    """Encode data as the fast path does (a flush every `piece` bytes);
    the micro-benchmark and the unit tests use it."""
    cdef CompStream* s = cz_get(_CODINGS[coding])
    cdef Buf* b = buf_get()
    cdef const char* p = data
    cdef uint32_t left = len(data), n, o
    cdef const char* q
    cdef int rc
    cdef bint last
    out = []
    if s == NULL or b == NULL:
        raise MemoryError()
    try:
        while True:
            n = left if left < <uint32_t>piece else <uint32_t>piece
            last = n == left
            q = p
            while True:
                o = 0
                with nogil:
                    rc = cz_encode(s, &q, &n, bdata(b), b.cap, &o, last)
                if rc < 0:
                    raise RuntimeError("encoder error")
                out.append(bdata(b)[:o])
                if rc == 1:
                    break
            p = q
            left = len(data) - <uint32_t>(p - <const char*>data)
            if last:
                break
    finally:
        cz_put(s)
        buf_put(b)
    return b"".join(out)
