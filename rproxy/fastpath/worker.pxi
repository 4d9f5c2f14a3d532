# The Python-facing edge: `Worker` builds the C runtime tables from plain
# Python values (worker.py translates the Config) and runs the loop.  Nothing
# here runs per request.

cdef int _lb_code(str name) except -1:
    codes = {"rtt": LB_RTT, "roundrobin": LB_ROUNDROBIN, "most-idle": LB_MOST_IDLE,
             "none": LB_NONE, "random": LB_RANDOM, "least-pending": LB_LEAST_PENDING}
    if name not in codes:
        raise ValueError(f"unknown lb-method {name!r}")
    return codes[name]


cdef int _match_code(str kind) except -1:
    codes = {"prefix": M_PREFIX, "exact": M_EXACT, "glob": M_GLOB, "regex": M_REGEX}
    if kind not in codes:
        raise ValueError(f"unknown match kind {kind!r}")
    return codes[kind]


cdef int _namelist(NameList* l, names) except -1:
    l.n = len(names)
    l.names = <char**>calloc(max(l.n, 1), sizeof(char*))
    l.lens = <uint32_t*>calloc(max(l.n, 1), sizeof(uint32_t))
    if l.names == NULL or l.lens == NULL:
        raise MemoryError()
    for i, name in enumerate(names):
        b = name.encode()
        l.names[i] = _dup(b)
        l.lens[i] = len(b)
    return 0


HEADER_POLICY = {
    "x_forwarded_for": HP_XFF, "x_forwarded_for_replace": HP_XFF_REPLACE, "x_real_ip": HP_X_REAL_IP,
    "x_forwarded_proto": HP_X_FORWARDED_PROTO, "x_forwarded_host": HP_X_FORWARDED_HOST,
    "x_forwarded_port": HP_X_FORWARDED_PORT, "forwarded": HP_FORWARDED, "via": HP_VIA,
}

UNDERSCORES = {"drop": US_DROP, "allow": US_ALLOW, "reject": US_REJECT}


def _ms(seconds):
    """Seconds (float) -> whole milliseconds, at least 1 when non-zero."""
    if not seconds or seconds <= 0:
        return 0
    return max(1, int(round(seconds * 1000)))


# ---- issue 20's rule actions (edge.pxi): built once per rule at start-up

_HOP_CODES = {"set": HOP_SET, "add": HOP_ADD, "remove": HOP_REMOVE, "default": HOP_DEFAULT}


cdef int _hdrops(HdrOps* o, ops) except -1:
    """ops: (kind, name, value, tls_only) tuples."""
    cdef HdrOp* op
    ops = list(ops)[:64]
    o.n = len(ops)
    o.ops = <HdrOp*>calloc(max(o.n, 1), sizeof(HdrOp))
    if o.ops == NULL:
        raise MemoryError()
    for i, (kind, name, value, tls_only) in enumerate(ops):
        op = &o.ops[i]
        op.op = _HOP_CODES[kind]
        op.tls_only = bool(tls_only)
        nb = name.encode()
        vb = (value or "").encode()
        op.name = _dup(nb)
        op.nlen = len(nb)
        op.value = _dup(vb)
        op.vlen = len(vb)
        op.has_vars = b"$" in vb
    return 0


cdef int edge_setup(RuleRt* r, req_ops, resp_ops, redirect, int status, int rootfd, index, bint autoindex,
                    str sticky, str cookie, tokens) except -1:
    cdef EdgeRule* e = <EdgeRule*>calloc(1, sizeof(EdgeRule))
    if e == NULL:
        raise MemoryError()
    _hdrops(&e.req, req_ops)
    _hdrops(&e.resp, resp_ops)
    if redirect is not None:
        if r.match == M_REGEX and r.regex != NULL:
            # captures for \\1..\\9 in the target (set_rule compiled it without)
            regfree(r.regex)
            if regcomp(r.regex, r.pattern, REG_EXTENDED) != 0:
                raise ValueError("bad regular expression")
            r.nsub = <int>r.regex.re_nsub
        b = redirect.encode()
        e.redirect = _dup(b)
        e.redirect_len = len(b)
        e.redirect_status = status
    e.rootfd = rootfd
    e.nindex = len(index)
    e.index = <char**>calloc(max(e.nindex, 1), sizeof(char*))
    e.index_len = <uint32_t*>calloc(max(e.nindex, 1), sizeof(uint32_t))
    for i, name in enumerate(index):
        b = name.encode()
        e.index[i] = _dup(b)
        e.index_len[i] = len(b)
    e.autoindex = autoindex
    e.sticky = {"off": STICKY_OFF, "cookie": STICKY_COOKIE, "ip-hash": STICKY_IP_HASH}[sticky]
    b = cookie.encode()
    e.cookie = _dup(b)
    e.cookie_len = len(b)
    e.tokens = <char**>calloc(max(len(tokens), 1), sizeof(char*))
    for i, t in enumerate(tokens):
        b = t.encode()
        e.tokens[i] = _dup(b)
        e.token_len = len(b)
    r.serve_edge = e
    return 0


cdef int ofc_setup(EdgeRule* er, int size, double valid) except -1:
    """The open-file cache of a rule with `root` (filecache.pxi), at start-up."""
    cdef OpenFileCache* c
    cdef uint32_t nb = 16
    cdef int32_t i
    if size <= 0:
        return 0
    c = <OpenFileCache*>calloc(1, sizeof(OpenFileCache))
    if c == NULL:
        raise MemoryError()
    while nb < <uint32_t>size * 2:
        nb <<= 1
    c.e = <OfcEntry*>calloc(size, sizeof(OfcEntry))
    c.buckets = <int32_t*>malloc(nb * sizeof(int32_t))
    if c.e == NULL or c.buckets == NULL:
        raise MemoryError()
    for i in range(<int32_t>nb):
        c.buckets[i] = -1
    c.bmask = nb - 1
    c.cap = size
    c.head = -1
    c.tail = -1
    for i in range(size):
        c.e[i].fd = -1
        c.e[i].next = i + 1 if i + 1 < size else -1
    c.free_head = 0
    c.valid_ms = <int64_t>(valid * 1000.0)
    er.ofc = c
    return 0


cdef class Worker:
    """One worker's fast path.  Build with add_* calls, then run()."""

    cdef bint _built
    cdef list _keep            # Python objects whose buffers C points into
    cdef int _resolve_rfd

    def __cinit__(self, int nservers, int ndownstreams, int nlisteners, *, int buffer_size=32768,
                  int max_free_buffers=256, int errfd=2, int loglevel=6, double shutdown_timeout=30.0,
                  long long splice_min=65536):
        global g_servers, g_nservers, g_downstreams, g_ndownstreams, g_listeners, g_nlisteners
        global g_buf_size, g_free_bufs, g_errfd, g_shutdown_timeout_ms, g_pid
        global g_epfd, g_stop, g_reopen, g_rand_state, g_splice_min
        if g_servers != NULL:
            raise RuntimeError("only one Worker per process")
        self._keep = []
        self._resolve_rfd = -1
        g_buf_size = max(buffer_size, 4096)
        g_splice_min = splice_min if splice_min > 0 else 0
        g_free_bufs.cap = max_free_buffers
        g_errfd = errfd
        rp_elog_set(errfd, loglevel, -1, NULL)  # lines above `loglevel` are dropped in C
        g_shutdown_timeout_ms = _ms(shutdown_timeout)
        g_pid = getpid()
        g_stop = 0
        g_reopen = 0
        g_rand_state ^= (<uint64_t>g_pid << 17) | 1
        g_servers = <ServerRt*>calloc(max(nservers, 1), sizeof(ServerRt))
        g_downstreams = <DownstreamRt*>calloc(max(ndownstreams, 1), sizeof(DownstreamRt))
        g_listeners = <Listener*>calloc(max(nlisteners, 1), sizeof(Listener))
        if g_servers == NULL or g_downstreams == NULL or g_listeners == NULL:
            raise MemoryError()
        g_nservers = nservers
        g_ndownstreams = ndownstreams
        g_nlisteners = nlisteners
        for i in range(nlisteners):
            g_listeners[i].h.fd = -1
        http_settings_init()
        canned_init()
        timer_init(&g_worker_timer, TK_WORKER, NULL)
        clock_update()
        g_epfd = epoll_create1(EPOLL_CLOEXEC)
        if g_epfd < 0:
            raise OSError(errno, "epoll_create1")

    def set_server(self, int index, *, read_timeout, write_timeout, keepalive_timeout,
                   pending_timeout, int max_request_line, int max_header_size, int max_headers,
                   client_max_body_size, int max_pending, int nvhosts, int port=0, bint tls=False,
                   tunnel_timeout=3600.0, int high_watermark=0, client_body_buffer_size=16384,
                   response_buffer_size=65536, max_temp_file_size=1024 ** 3, client_body_timeout=None,
                   send_timeout=None, bint http2=False, int http2_max_streams=100, int http2_max_resets=100,
                   int http2_max_ctl=500, int http2_max_cont=8):
        cdef ServerRt* s = &g_servers[index]
        s.http2 = http2
        s.h2_max_streams = http2_max_streams
        s.h2_max_resets = http2_max_resets
        s.h2_max_ctl = http2_max_ctl
        s.h2_max_cont = http2_max_cont
        s.index = index
        s.port = port
        s.tls = tls
        s.read_timeout_ms = _ms(read_timeout)
        s.write_timeout_ms = _ms(write_timeout)
        s.client_body_buffer_size = client_body_buffer_size
        s.response_buffer_size = response_buffer_size
        s.max_temp_file_size = max_temp_file_size
        s.client_body_timeout_ms = _ms(client_body_timeout if client_body_timeout else read_timeout)
        s.send_timeout_ms = _ms(send_timeout if send_timeout else write_timeout)
        s.keepalive_timeout_ms = _ms(keepalive_timeout)
        s.pending_timeout_ms = _ms(pending_timeout)
        s.tunnel_timeout_ms = _ms(tunnel_timeout)
        s.high_watermark = high_watermark
        s.max_request_line = max_request_line
        s.max_header_size = max_header_size
        s.max_headers = min(max_headers, HDR_CAP)
        s.client_max_body_size = client_max_body_size
        s.max_pending = max_pending
        s.vhosts = <VhostRt*>calloc(max(nvhosts, 1), sizeof(VhostRt))
        s.nvhosts = nvhosts

    def set_underscores(self, int index, str mode):
        """underscores-in-headers of a server: drop | allow | reject."""
        g_servers[index].underscores = UNDERSCORES[mode]

    def set_vhost(self, int server, int index, globs, bint is_default, int nrules, strip_headers=()):
        cdef VhostRt* v = &g_servers[server].vhosts[index]
        _copy_cstr(v.name, 128, globs[0].encode())
        _namelist(&v.strip, strip_headers)
        v.nglobs = len(globs)
        v.globs = <char**>calloc(max(v.nglobs, 1), sizeof(char*))
        v.glob_lens = <uint32_t*>calloc(max(v.nglobs, 1), sizeof(uint32_t))
        for i, g in enumerate(globs):
            b = g.encode()
            v.globs[i] = _dup(b)
            v.glob_lens[i] = len(b)
        v.is_default = is_default
        v.rules = <RuleRt*>calloc(max(nrules, 1), sizeof(RuleRt))
        v.nrules = nrules

    def set_rule(self, int server, int vhost, int index, str name, str match, str pattern,
                 downstreams, str lb_method, header_policy=(), replace=None, bint rewrite_1x=False,
                 bint passthrough=False, bint allow_redirect=False, redirect_filter=(),
                 up_read_timeout=None, up_write_timeout=None, bint request_buffering=True,
                 bint response_buffering=True):
        """header_policy: names from HEADER_POLICY; replace: the path
        replacement (1.x rewrite dst when rewrite_1x, else 2.x replace-path)."""
        cdef RuleRt* r = &g_servers[server].vhosts[vhost].rules[index]
        cdef bytes pb = pattern.encode()
        cdef bytes rb
        cdef int rc
        cdef char msg[256]
        _copy_cstr(r.name, 64, name.encode())
        r.vhost = &g_servers[server].vhosts[vhost]
        r.match = _match_code(match)
        r.pattern = _dup(pb)
        r.plen = len(pb)
        r.lb = _lb_code(lb_method)
        r.hp = 0
        for k in header_policy:
            r.hp |= HEADER_POLICY[k]
        if replace is not None:
            rb = replace.encode()
            r.replace = _dup(rb)
            r.replace_len = len(rb)
        r.rewrite_1x = rewrite_1x
        r.replace_refs = replace is not None and not rewrite_1x and any(
            f"\\{n}" in replace for n in range(10))
        r.up_read_ms = _ms(up_read_timeout) if up_read_timeout else 0
        r.up_write_ms = _ms(up_write_timeout) if up_write_timeout else 0
        r.passthrough = passthrough
        r.request_buffering = request_buffering
        r.response_buffering = response_buffering
        r.allow_redirect = allow_redirect
        _namelist(&r.redirect_filter, redirect_filter)
        r.nds = len(downstreams)
        r.dss = <DownstreamRt**>calloc(max(r.nds, 1), sizeof(DownstreamRt*))
        for i, d in enumerate(downstreams):
            r.dss[i] = &g_downstreams[<int>d]
        if rule_rr_setup(r) != 0:
            raise MemoryError()
        if r.match == M_REGEX:
            r.regex = <regex_t*>malloc(sizeof(regex_t))
            # captures are only needed when the match drives a rewrite
            rc = regcomp(r.regex, r.pattern, REG_EXTENDED | (0 if r.replace != NULL else REG_NOSUB))
            if rc != 0:
                regerror(rc, r.regex, msg, 256)
                raise ValueError(f"rule {name}: bad regular expression: {msg.decode()}")
            r.nsub = <int>r.regex.re_nsub

    def set_edge(self, int server, int vhost, int index, *, req_ops=(), resp_ops=(), redirect=None,
                 int status=302, root=None, index_files=(), bint autoindex=False, str sticky="off",
                 str cookie="rp_srv", tokens=(), int ofc_size=0, double ofc_valid=1.0):
        """Issue 20's rule actions (edge.pxi): header ops (kind, name, value,
        tls_only), a redirect template, a static root, sticky sessions."""
        import os
        rootfd = -1
        if root is not None:
            rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        edge_setup(&g_servers[server].vhosts[vhost].rules[index], req_ops, resp_ops, redirect, status,
                   rootfd, index_files, autoindex, sticky, cookie, tokens)
        if rootfd >= 0:
            ofc_setup(g_servers[server].vhosts[vhost].rules[index].serve_edge, ofc_size, ofc_valid)

    def set_temp_dir(self, str path):
        """Where buffered bodies' temp files are created (unlinked at once)."""
        cdef bytes b = path.encode()
        if len(b) >= sizeof(g_temp_dir) - 32:
            raise ValueError("temp-dir path too long")
        _copy_cstr(g_temp_dir, sizeof(g_temp_dir), b)

    def set_owned_headers(self, names):
        """Request header names the proxy owns (x509-extension headers): a
        client's copies are always dropped.  X-SSL-* is owned by prefix."""
        _namelist(&g_owned, names)

    def set_downstream(self, int index, str name, str label, int family, bytes sockaddr, *,
                       int connections, retry, connect_timeout, read_timeout, write_timeout,
                       idle_timeout, int max_requests, bint enabled, int weight, max_age=0.0,
                       int max_fails=3, fail_timeout=5.0, int high_watermark=0, int pipeline=1,
                       int max_connections=0, int proxy_protocol=0):
        cdef DownstreamRt* d = &g_downstreams[index]
        d.index = index
        _copy_cstr(d.name, 64, name.encode())
        _copy_cstr(d.label, 112, label.encode())
        if len(sockaddr) > 128:
            raise ValueError("address too long")
        memcpy(d.addr, <const char*>sockaddr, len(sockaddr))
        d.addrlen = len(sockaddr)
        d.family = family
        d.nconns = connections
        d.retry_ms = _ms(retry)
        d.connect_timeout_ms = _ms(connect_timeout)
        d.read_timeout_ms = _ms(read_timeout)
        d.write_timeout_ms = _ms(write_timeout)
        d.idle_timeout_ms = _ms(idle_timeout)
        d.max_requests = max_requests
        d.max_age_ms = _ms(max_age)
        d.high_watermark = high_watermark
        d.max_fails = max_fails
        d.fail_timeout_ms = max(_ms(fail_timeout), 1)
        d.pipeline = max(pipeline, 1)
        d.enabled = enabled
        d.weight = max(weight, 1)
        d.nslots = max(max_connections, connections)
        d.pp = proxy_protocol
        if proxy_protocol:
            d.nconns = 0            # private connections only, opened per client (pool.pxi)
        d.conns = <DConn*>calloc(max(d.nslots, 1), sizeof(DConn))
        if d.conns == NULL:
            raise MemoryError()
        for j in range(d.nslots):
            d.conns[j].extra = j >= connections or proxy_protocol != 0     # (private: never reconnected)
            d.conns[j].conn.h.kind = K_DCONN
            d.conns[j].conn.h.fd = -1
            d.conns[j].ds = d
            dc_move(&d.conns[j], D_DOWN)
            timer_init(&d.conns[j].conn.timer, TK_DCONN, &d.conns[j])
            llhttp_init(&d.conns[j].conn.parser, HTTP_RESPONSE, &g_resp_settings)
            d.conns[j].conn.parser.data = &d.conns[j]

    def set_health_check(self, int index, str path, interval, timeout, int rise, int fall):
        global g_probes, g_nprobes
        cdef DownstreamRt* d = &g_downstreams[index]
        cdef Probe* pr
        if g_probes == NULL:
            g_probes = <Probe*>calloc(max(g_ndownstreams, 1), sizeof(Probe))
            if g_probes == NULL:
                raise MemoryError()
            g_nprobes = g_ndownstreams
            for i in range(g_nprobes):          # unused slots: no socket, not in the heap
                g_probes[i].h.fd = -1
                timer_init(&g_probes[i].timer, TK_PROBE, &g_probes[i])
        _copy_cstr(d.hc_path, 256, path.encode())
        d.hc_interval_ms = max(_ms(interval), 1)
        d.hc_timeout_ms = max(_ms(timeout), 1)
        d.hc_rise = max(rise, 1)
        d.hc_fall = max(fall, 1)
        pr = &g_probes[index]
        pr.h.kind = K_PROBE
        pr.h.fd = -1
        pr.ds = d
        timer_init(&pr.timer, TK_PROBE, pr)

    def set_hostname(self, int index):
        """This downstream's address came from a name (re-resolved on failure)."""
        g_downstreams[index].hostname = 1

    def control_pipe(self):
        """(fd to write control records to, fd the loop writes re-resolve
        requests to) -- for the worker's resolver thread."""
        global g_control_rfd, g_control_wfd, g_resolve_wfd
        cdef int fds[2]
        cdef int req[2]
        cdef epoll_event ev
        if g_control_wfd < 0:
            if pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0 or pipe2(req, O_NONBLOCK | O_CLOEXEC) != 0:
                raise OSError(errno, "pipe2")
            g_control_rfd, g_control_wfd = fds[0], fds[1]
            g_resolve_wfd = req[1]
            self._resolve_rfd = req[0]
            g_control_handle.kind = K_CONTROL
            g_control_handle.fd = g_control_rfd
            ev.events = EPOLLIN
            ev.data.ptr = &g_control_handle
            epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_control_rfd, &ev)
        return g_control_wfd, self._resolve_rfd

    @staticmethod
    def address_record(int index, int family, bytes sockaddr):
        """A CTL_SET_ADDRESS record, ready to write to the control pipe."""
        cdef ControlRecord rec
        memset(&rec, 0, sizeof(rec))
        rec.type = CTL_SET_ADDRESS
        rec.index = index
        rec.family = family
        rec.addrlen = len(sockaddr)
        memcpy(rec.addr, <const char*>sockaddr, min(len(sockaddr), 128))
        return (<char*>&rec)[:sizeof(rec)]

    def set_listener(self, int index, int fd, int server):
        g_listeners[index].h.kind = K_LISTENER
        g_listeners[index].h.fd = fd
        g_listeners[index].srv = &g_servers[server]

    def run(self):
        """Run the loop until stopped.  Returns "stopped", "drained" or
        "reopen" (SIGUSR1: reopen log files, then call run() again)."""
        global g_sigfd
        cdef sigset_t mask
        cdef epoll_event ev
        cdef int rc, i, j
        if not self._built:
            # signals arrive through a signalfd in the loop, never as Python handlers
            sigemptyset(&mask)
            for s in (SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2):
                sigaddset(&mask, s)
            pthread_sigmask(SIG_BLOCK, &mask, NULL)
            g_sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)
            if g_sigfd < 0:
                raise OSError(errno, "signalfd")
            g_sig_handle.kind = K_SIGNAL
            g_sig_handle.fd = g_sigfd
            ev.events = EPOLLIN
            ev.data.ptr = &g_sig_handle
            epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_sigfd, &ev)
            listeners_register(1)
            clock_update()
            for i in range(g_ndownstreams):
                if g_downstreams[i].enabled:
                    for j in range(g_downstreams[i].nconns):
                        dc_connect(&g_downstreams[i].conns[j])
            for i in range(g_nprobes):
                if g_probes[i].ds != NULL:
                    probe_schedule(&g_probes[i], 1)
            m_start()
            redis_start()
            self._built = True
        with nogil:
            rc = loop_run()
        if rc == RUN_REOPEN:
            accesslog_flush_all()       # old files get every line written before the reopen
            return "reopen"
        close_everything()              # (logs the exchanges it cuts short)
        accesslog_flush_all()
        if rc == RUN_DRAINED:
            return "drained"
        if rc == RUN_ERROR:
            return "error"
        return "stopped"

    def set_metrics(self, *args, **kw):
        """Point the runtime tables at this worker's slot of the metrics zone (metrics.pxi)."""
        self._keep.append(_metrics_attach(*args, **kw))

    def drain(self):
        """Begin a graceful stop (as SIGQUIT does)."""
        drain_start(g_shutdown_timeout_ms)

    def set_errfd(self, int fd):
        global g_errfd
        g_errfd = fd

    def stats(self):
        """Counters the tests assert back to zero, and a few totals."""
        cdef int i, idle = 0, up = 0, active = 0
        for i in range(g_ndownstreams):
            idle += g_downstreams[i].n_idle
            up += g_downstreams[i].n_up
            active += g_downstreams[i].n_active
        return {
            "buffers_out": c_bufs_out,
            "exchanges_out": c_x_out,
            "clients": g_nuconns,
            "pending": g_npending,
            "requests": c_requests,
            "accepted": c_accepted,
            "downstream_connects": c_ds_connects,
            "downstream_idle": idle,
            "downstream_up": up,
            "downstream_active": active,
            "errors": c_errors,
            "temp_files": c_temp_files,
        }


def sizes():
    """Struct sizes, for the memory-per-connection budget."""
    return {"UConn": sizeof(UConn), "DConn": sizeof(DConn), "Exchange": sizeof(Exchange),
            "llhttp_t": sizeof(llhttp_t), "Buf": sizeof(Buf)}


def set_parent_death_signal(int sig):
    """Ask the kernel to send `sig` to this process when its parent dies."""
    if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(errno, "prctl(PR_SET_PDEATHSIG)")


def set_malloc_trim_threshold(int nbytes):
    """memtrim-sz: mallopt(M_TRIM_THRESHOLD)."""
    if mallopt(M_TRIM_THRESHOLD, nbytes) != 1:
        raise OSError("mallopt(M_TRIM_THRESHOLD) failed")


def check_posix_regex(str pattern):
    """None if `pattern` compiles as the fast path will compile it (POSIX
    extended, regcomp), else the error text."""
    cdef regex_t rx
    cdef char msg[256]
    cdef bytes b = pattern.encode()
    cdef int rc = regcomp(&rx, b, REG_EXTENDED)
    if rc != 0:
        regerror(rc, &rx, msg, 256)
        return msg.decode("utf-8", "replace")
    regfree(&rx)
    return None
