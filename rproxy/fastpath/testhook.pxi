# Hooks into the request glue without sockets, for tests (fuzzing, the
# smuggling corpus) and micro-benchmarks.  They run exactly the code the
# loop runs: llhttp with the cdef callbacks, request_admit (limits, Host,
# routing) and build_request_head.

cdef ServerRt g_th_srv
cdef VhostRt g_th_vhost
cdef RuleRt g_th_rule
cdef DownstreamRt g_th_ds
cdef char* g_th_glob = "*"
cdef uint32_t g_th_glob_len = 1


cdef void testhook_setup(int max_headers, int max_request_line, int max_header_size,
                      uint64_t max_body, uint32_t hp, uint8_t underscores=US_DROP) noexcept nogil:
    http_settings_init()
    memset(&g_th_srv, 0, sizeof(ServerRt))
    memset(&g_th_vhost, 0, sizeof(VhostRt))
    memset(&g_th_rule, 0, sizeof(RuleRt))
    memset(&g_th_ds, 0, sizeof(DownstreamRt))
    g_th_srv.max_headers = max_headers if max_headers < HDR_CAP else HDR_CAP
    g_th_srv.max_request_line = max_request_line
    g_th_srv.max_header_size = max_header_size
    g_th_srv.client_max_body_size = max_body
    g_th_srv.port = 8080
    g_th_srv.underscores = underscores
    g_th_srv.vhosts = &g_th_vhost
    g_th_srv.nvhosts = 1
    g_th_vhost.globs = &g_th_glob
    g_th_vhost.glob_lens = &g_th_glob_len
    g_th_vhost.nglobs = 1
    g_th_vhost.rules = &g_th_rule
    g_th_vhost.nrules = 1
    g_th_rule.vhost = &g_th_vhost
    g_th_rule.match = M_PREFIX
    g_th_rule.pattern = "/"
    g_th_rule.plen = 1
    g_th_rule.hp = hp
    memcpy(g_th_ds.label, b"downstream:80", 14)


cdef int testhook_one(UConn* uc, const char* data, uint32_t n, W* w) noexcept nogil:
    """Parse one request head out of data.  >0: HTTP status of a rejection;
    0: head accepted and re-emitted into w; -1: incomplete."""
    cdef llhttp_errno_t err
    cdef int status = 0
    cdef RuleRt* rule
    llhttp_init(&uc.conn.parser, HTTP_REQUEST, &g_req_settings)
    uc.conn.parser.data = uc
    uc.srv = &g_th_srv
    uc.conn.state = U_IDLE
    uc.conn.flags = 0
    uc.conn.rpos = 0
    uc.conn.rend = n
    uc.mstart = 0
    memcpy(bdata(uc.conn.rbuf), data, n)
    uc.conn.peer.family = AF_INET
    uc.conn.peer.addr[0] = 192
    uc.conn.peer.addr[1] = 0
    uc.conn.peer.addr[2] = 2
    uc.conn.peer.addr[3] = 1
    err = llhttp_execute(&uc.conn.parser, bdata(uc.conn.rbuf), n)
    if err == HPE_PAUSED and (uc.conn.flags & CN_HEAD_DONE):
        uc.conn.rpos = <uint32_t>(llhttp_get_error_pos(&uc.conn.parser) - bdata(uc.conn.rbuf))
        if uc.conn.rpos - uc.mstart > g_th_srv.max_header_size:
            return 431
        rule = request_admit(uc, &status)
        if rule == NULL:
            return status
        uc.xhead.rule = rule
        build_request_head(w, uc, uc.xhead, &g_th_ds)
        return 0
    if err == HPE_OK:
        if uc.xhead != NULL and uc.conn.rend - uc.mstart > g_th_srv.max_header_size:
            return 431
        return -1
    return parse_error_status(uc, err)


def parse_request(bytes data, *, int max_headers=100, int max_request_line=8192,
                  int max_header_size=16384, int client_max_body_size=0, policy=(),
                  str underscores="drop"):
    """Run the fast path's request glue on `data` (one request head, maybe
    followed by more bytes).  Returns ("forward", head_sent_downstream, head_len)
    | ("reject", status) | ("incomplete",)."""
    cdef uint32_t hp = 0
    for k in policy:
        hp |= HEADER_POLICY[k]
    testhook_setup(max_headers, max_request_line, max_header_size, client_max_body_size, hp,
                UNDERSCORES[underscores])
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef Buf* rb = <Buf*>malloc(sizeof(Buf) + len(data) + 1)
    cdef Buf* ob = <Buf*>malloc(sizeof(Buf) + 65536)
    cdef W w
    cdef int r
    cdef const char* d = data
    cdef uint32_t n = len(data)
    if uc == NULL or rb == NULL or ob == NULL:
        free(uc); free(rb); free(ob)
        raise MemoryError()
    rb.cap = n + 1
    uc.conn.rbuf = rb
    uc.xhead = NULL
    w.p = bdata(ob)
    w.end = w.p + 65536
    w.overflow = 0
    with nogil:
        r = testhook_one(uc, d, n, &w)
    try:
        if r > 0:
            return ("reject", r)
        if r < 0:
            return ("incomplete",)
        if w.overflow:
            return ("reject", 431)
        return ("forward", bytes(bdata(ob)[:w.p - bdata(ob)]), uc.conn.rpos)
    finally:
        if uc.xhead != NULL:
            x_free(uc.xhead)
        free(uc)
        free(rb)
        free(ob)


def bench_parse_request(bytes data, int rounds, policy=()):
    """Parse + re-emit the same head `rounds` times in C; returns the number
    accepted (for pytest-benchmark: the loop itself runs no Python)."""
    cdef uint32_t hp = 0
    for k in policy:
        hp |= HEADER_POLICY[k]
    testhook_setup(100, 8192, 16384, 0, hp)
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef Buf* rb = <Buf*>malloc(sizeof(Buf) + len(data) + 1)
    cdef Buf* ob = <Buf*>malloc(sizeof(Buf) + 65536)
    cdef W w
    cdef int i, ok = 0
    cdef const char* d = data
    cdef uint32_t n = len(data)
    rb.cap = n + 1
    uc.conn.rbuf = rb
    with nogil:
        for i in range(rounds):
            w.p = bdata(ob)
            w.end = w.p + 65536
            w.overflow = 0
            if testhook_one(uc, d, n, &w) == 0:
                ok += 1
            if uc.xhead != NULL:
                uc_x_end(uc)
    free(uc)
    free(rb)
    free(ob)
    return ok


def bench_parse_response(bytes data, int rounds, bint http10_client=False):
    """Parse a response head and re-emit the client's, `rounds` times in C.
    Returns the length of the head the client would get."""
    cdef DConn* dc = <DConn*>calloc(1, sizeof(DConn))
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef Exchange* x
    cdef Buf* rb = <Buf*>malloc(sizeof(Buf) + len(data) + 1)
    cdef Buf* ob = <Buf*>malloc(sizeof(Buf) + 65536)
    cdef W w
    cdef int i
    cdef llhttp_errno_t err
    cdef const char* d = data
    cdef uint32_t n = len(data)
    testhook_setup(100, 8192, 16384, 0, 0)
    http_settings_init()
    rb.cap = n + 1
    memcpy(bdata(rb), d, n)
    dc.conn.rbuf = rb
    x = x_new(uc)
    x.rule = &g_th_rule
    x.flags = XF_KEEPALIVE | XF_REQ_DONE | (XF_HTTP10 if http10_client else 0)
    dc.x = x
    with nogil:
        for i in range(rounds):
            llhttp_init(&dc.conn.parser, HTTP_RESPONSE, &g_resp_settings)
            dc.conn.parser.data = dc
            dc.conn.flags = 0
            err = llhttp_execute(&dc.conn.parser, bdata(rb), n)
            if err != HPE_PAUSED or not (dc.conn.flags & CN_HEAD_DONE):
                break
            x.status = <uint16_t>dc.conn.parser.status_code
            w.p = bdata(ob)
            w.end = w.p + 65536
            w.overflow = 0
            build_response_head(&w, dc, x, False)
    out = w.p - bdata(ob)
    x_free(x)
    free(dc)
    free(uc)
    free(rb)
    free(ob)
    if i < rounds - 1:
        raise ValueError("response head did not parse")
    return out


def bench_lb_pick(str method, int ndownstreams, int idle_per_downstream, int rounds):
    """Pick an idle connection and put it back, `rounds` times, over synthetic
    downstreams (no sockets).  Returns how often each downstream was picked."""
    cdef RuleRt r
    cdef DownstreamRt* dss = <DownstreamRt*>calloc(ndownstreams, sizeof(DownstreamRt))
    cdef DownstreamRt** ptrs = <DownstreamRt**>calloc(ndownstreams, sizeof(DownstreamRt*))
    cdef DConn* conns = <DConn*>calloc(ndownstreams * idle_per_downstream, sizeof(DConn))
    cdef DConn* dc
    cdef long* picks = <long*>calloc(ndownstreams, sizeof(long))
    cdef int i, j
    memset(&r, 0, sizeof(RuleRt))
    r.lb = _lb_code(method)
    r.dss = ptrs
    r.nds = ndownstreams
    clock_update()
    for i in range(ndownstreams):
        dss[i].index = i
        dss[i].enabled = 1
        dss[i].weight = 1
        dss[i].rtt_ms = 1.0 + i
        dss[i].rtt_samples = 1
        ptrs[i] = &dss[i]
        for j in range(idle_per_downstream):
            dc = &conns[i * idle_per_downstream + j]
            dc.ds = &dss[i]
            dc.conn.h.fd = -1
            dc.conn.state = D_ACTIVE    # as if connected: only a connected one joins the idle list
            timer_init(&dc.conn.timer, TK_DCONN, dc)
            idle_push(dc)
            timer_stop(&dc.conn.timer)
    with nogil:
        for i in range(rounds):
            dc = lb_pick(&r)
            if dc == NULL:
                break
            picks[dc.ds.index] += 1
            idle_push(dc)
            timer_stop(&dc.conn.timer)
    out = [picks[i] for i in range(ndownstreams)]
    free(dss)
    free(ptrs)
    free(conns)
    free(picks)
    return out


def bench_accesslog(bytes request, items, int rounds, bytes response_headers=b""):
    """Render the access log line of one fixed exchange `rounds` times in C,
    with the ops compiled from `items` (accesslog.parse_format): the
    request head `request` parsed as the loop parses it, from 192.0.2.1:54321,
    answered 200 by 10.0.0.2:8081 from local port 40000 with 1024 body bytes
    after a 200-byte head.  `response_headers` ("Name: value\\r\\n"...) are
    the downstream's, for {DS_HDR}.  Returns the last line (for tests); the
    loop runs no Python (for pytest-benchmark)."""
    testhook_setup(100, 8192, 16384, 0, 0)
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef DConn* dc = <DConn*>calloc(1, sizeof(DConn))
    cdef Buf* rb = <Buf*>malloc(sizeof(Buf) + len(request) + 1)
    cdef Buf* ob = <Buf*>malloc(sizeof(Buf) + 65536)
    cdef Buf* db = NULL
    cdef LogSink sink
    cdef AccessLog* al = NULL
    cdef Exchange* x
    cdef W w
    cdef int i
    cdef llhttp_errno_t err
    cdef bytes resp = b"HTTP/1.1 200 OK\r\n" + response_headers + b"Content-Length: 1024\r\n\r\n"
    memset(&sink, 0, sizeof(LogSink))
    if uc == NULL or dc == NULL or rb == NULL or ob == NULL:
        free(uc); free(dc); free(rb); free(ob)
        raise MemoryError()
    rb.cap = len(request) + 1
    uc.conn.rbuf = rb
    w.p = bdata(ob)
    w.end = w.p + 65536
    w.overflow = 0
    try:
        clock_update()
        if testhook_one(uc, request, len(request), &w) != 0:
            raise ValueError("the request was not accepted")
        uc.conn.peer.port = 54321
        x = uc.xhead
        x.head_end = uc.conn.rpos            # as uc_process records it
        memcpy(g_th_rule.name, b"api", 4)
        memcpy(g_th_vhost.name, b"example.com", 12)
        x.status = 200
        x.flags |= XF_RESP_STARTED | XF_REQ_DONE
        memcpy(g_th_ds.label, b"10.0.0.2:8081", 14)
        x.log.ds = &g_th_ds
        x.log.ds_sport = 40000
        x.log.ds_peer.family = AF_INET
        x.log.ds_peer.port = 8081
        memcpy(x.log.ds_peer.addr, b"\x0a\x00\x00\x02", 4)
        x.log.t_start_us = g_now_us - 2500
        x.log.t_ds_us = g_now_us - 2000
        x.log.t_ds_head_us = g_now_us - 1000
        x.log.bytes_out = 200 + 1024
        x.log.body_base = 200
        x.log.flags |= XL_RESP_HEAD | XL_DONE
        sink.cap = LOG_LINE_MAX + 96
        sink.flush_at = sink.cap
        sink.fd = -1
        sink.buf = <char*>malloc(sink.cap)
        if sink.buf == NULL:
            raise MemoryError()
        al = _alog_compile(&sink, items)
        if al.ndshdr:
            # the response head, parsed as the loop parses it, for {DS_HDR}
            db = <Buf*>malloc(sizeof(Buf) + len(resp) + 1)
            if db == NULL:
                raise MemoryError()
            db.cap = len(resp) + 1
            memcpy(bdata(db), <const char*>resp, len(resp))
            http_settings_init()
            dc.conn.rbuf = db
            dc.x = x
            llhttp_init(&dc.conn.parser, HTTP_RESPONSE, &g_resp_settings)
            dc.conn.parser.data = dc
            err = llhttp_execute(&dc.conn.parser, bdata(db), len(resp))
            if err != HPE_PAUSED or not (dc.conn.flags & CN_HEAD_DONE):
                raise ValueError("response head did not parse")
            xlog_copy_response_headers(x, dc, al)
        with nogil:
            for i in range(rounds):
                sink.len = 0
                alog_line(al, x, uc)
        timer_stop(&g_log_timer)
        return sink.buf[:sink.len]
    finally:
        if uc.xhead != NULL:
            x_free(uc.xhead)
        if al != NULL:
            _alog_free(al)
        free(sink.buf)
        free(uc)
        free(dc)
        free(rb)
        free(ob)
        free(db)


def testhook_errorlog(int fd, int level, bytes value):
    """One fast-path error line carrying `value` as a %.*s argument, the way
    the loop logs bytes a client or downstream chose (for tests)."""
    rp_elog(fd, level, "probe: %.*s", <int>len(value), <const char*>value)


def lb_sequence(str method, list downstreams, int picks, bint hold=False, uint64_t seed=0):
    """The balancer's choices, `picks` times, over synthetic downstreams (no
    sockets): each a dict with any of weight (1), idle (1), active (0), rtt
    (ms; absent = never measured), enabled (True), down (health check),
    ejected (passive health).  `hold`: a pick stays in flight (counts as
    active), as under load.  Returns the list of picked indices (-1: none)."""
    cdef RuleRt r
    cdef int n = len(downstreams)
    cdef DownstreamRt* dss = <DownstreamRt*>calloc(max(n, 1), sizeof(DownstreamRt))
    cdef DownstreamRt** ptrs = <DownstreamRt**>calloc(max(n, 1), sizeof(DownstreamRt*))
    cdef int i, k
    global g_rand_state, g_ignore_ejection
    memset(&r, 0, sizeof(RuleRt))
    r.lb = _lb_code(method)
    r.dss = ptrs
    r.nds = n
    clock_update()
    if seed:
        g_rand_state = seed
    for i, spec in enumerate(downstreams):
        dss[i].index = i
        dss[i].weight = spec.get("weight", 1)
        dss[i].n_idle = spec.get("idle", 1)
        dss[i].n_active = spec.get("active", 0)
        dss[i].enabled = spec.get("enabled", True)
        dss[i].hc_down = spec.get("down", False)
        if "rtt" in spec:
            dss[i].rtt_ms = spec["rtt"]
            dss[i].rtt_samples = 1
        if spec.get("ejected", False):
            dss[i].eject_until = g_now + 60000
        ptrs[i] = &dss[i]
    if rule_rr_setup(&r) != 0:
        raise MemoryError()
    out = []
    g_ignore_ejection = all_ejected(&r)
    for k in range(picks):
        i = lb_choose(&r)
        out.append(i)
        if hold and i >= 0:
            dss[i].n_active += 1
    g_ignore_ejection = False
    free(dss)
    free(ptrs)
    free(r.rr_cur)
    return out


def testhook_pipeline_pick(str method, list downstreams):
    """Which busy connection lb_pick_pipelined chooses (no sockets).

    `downstreams`: one dict per downstream: {"pipeline": N, "rtt": ms,
    "weight": w, "conns": [conn, ...]}, each conn a dict: {"inflight": n,
    and optional flags "no_reuse", "rdhup", "writing" (the newest request
    not fully written), "body" (the oldest is not pipelinable)}.  Returns
    (downstream index, connection index) or None."""
    cdef int nds = len(downstreams)
    cdef RuleRt r
    cdef DownstreamRt* dss = <DownstreamRt*>calloc(max(nds, 1), sizeof(DownstreamRt))
    cdef DownstreamRt** ptrs = <DownstreamRt**>calloc(max(nds, 1), sizeof(DownstreamRt*))
    cdef list xs = []
    cdef DConn* dc
    cdef DConn* got
    cdef Exchange* x
    cdef Exchange* prev
    cdef int i, j, k, n
    memset(&r, 0, sizeof(RuleRt))
    r.lb = _lb_code(method)
    r.dss = ptrs
    r.nds = nds
    clock_update()
    try:
        for i, spec in enumerate(downstreams):
            d = &dss[i]
            ptrs[i] = d
            d.index = i
            d.enabled = 1
            d.weight = spec.get("weight", 1)
            d.pipeline = spec.get("pipeline", 1)
            d.rtt_ms = spec.get("rtt", 0.0)
            d.rtt_samples = 1 if "rtt" in spec else 0
            d.nconns = len(spec["conns"])
            d.nslots = d.nconns
            d.conns = <DConn*>calloc(max(d.nconns, 1), sizeof(DConn))
            for j, c in enumerate(spec["conns"]):
                dc = &d.conns[j]
                dc.ds = d
                dc.conn.h.fd = -1
                n = c["inflight"]
                if n == 0:
                    dc.conn.state = D_IDLE
                    continue
                dc.conn.state = D_ACTIVE
                dc.phase = R_BODY
                prev = NULL
                for k in range(n):
                    x = <Exchange*>calloc(1, sizeof(Exchange))
                    xs.append(<size_t>x)
                    x.flags = XF_PIPE_OK | XF_REQ_DONE | XF_IDEMPOTENT
                    x.dc = dc
                    if prev == NULL:
                        dc.x = x
                    else:
                        prev.pnext = x
                    prev = x
                dc.xlast = prev
                dc.ninflight = n
                d.n_active += n
                if c.get("no_reuse"):
                    dc.conn.flags |= DF_NO_REUSE
                if c.get("rdhup"):
                    dc.conn.flags |= CN_RDHUP
                if c.get("writing"):
                    dc.xlast.flags &= ~XF_REQ_DONE
                if c.get("body"):
                    dc.x.flags &= ~XF_PIPE_OK
        with nogil:
            got = lb_pick_pipelined(&r)
        if got == NULL:
            return None
        for i in range(nds):
            if dss[i].conns <= got < dss[i].conns + dss[i].nconns:
                return (i, <int>(got - dss[i].conns))
        return None
    finally:
        for p in xs:
            free(<Exchange*><size_t>p)
        for i in range(nds):
            free(dss[i].conns)
        free(dss)
        free(ptrs)


def testhook_strict(str what, bytes value):
    """The strictness checks of http.pxi on one value, for tests:
    "host" -> host_valid (bool); "te" -> te_check (0, 400 or 501);
    "authority" -> target_authority's authority (bytes), None for
    origin-form, False when refused."""
    cdef const char* v = value
    cdef uint32_t n = len(value), aoff = 0, alen = 0
    cdef int r
    if what == "host":
        return bool(host_valid(v, n))
    if what == "te":
        return te_check(v, n)
    if what == "authority":
        r = target_authority(v, n, &aoff, &alen)
        if r < 0:
            return False
        return value[aoff:aoff + alen] if r else None
    raise ValueError(what)


def testhook_bodybuf(str temp_dir, uint64_t mem_max, uint64_t file_max, list ops):
    """Drive one BodyBuf (bodybuf.pxi) through `ops`: ("in", bytes) appends
    (as much as bb_room allows, as the callers do), ("out", n) takes pieces
    until n bytes came out or it is empty.  Returns (bytes out, [(op, result,
    mem, file bytes pending, temp file open)] per op)."""
    cdef BodyBuf* bb = bb_new(mem_max, file_max)
    cdef Out o
    cdef int64_t k
    cdef uint64_t want, got_n
    cdef bytes b
    out = bytearray()
    trace = []
    _copy_cstr(g_temp_dir, sizeof(g_temp_dir), temp_dir.encode())
    try:
        for op, arg in ops:
            if op == "in":
                b = arg
                k = <int64_t>min(bb_room(bb), <uint64_t>len(b))
                if k > 0:
                    k = bb_append(bb, <const char*>b, <uint32_t>k)
                res = k
            else:
                want = arg
                got_n = 0
                while got_n < want:
                    memset(&o, 0, sizeof(Out))
                    if bb_take(bb, &o) != 1:
                        break
                    out += (<char*>o.bptr)[:o.blen]
                    got_n += o.blen
                    out_release(&o)
                res = got_n
            trace.append((op, res, bb.mem, bb.fwr - bb.frd, bb.fd >= 0))
    finally:
        bb_free(bb)
    return bytes(out), trace
