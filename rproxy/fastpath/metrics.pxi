# Metrics: counters and gauges in a shared memory zone (rproxy/metrics/zone.py).
#
# The master maps one zone (MAP_SHARED | MAP_ANONYMOUS) before it forks and
# gives each worker a slot of it.  A worker writes only its own slot, with
# plain stores to its own cache lines: no lock, no syscall, no Python.  The
# master sums the slots when it serves /metrics, and folds the slot of a
# worker that exited into the zone's "retired" totals before reusing it.
#
# Hooks (one line each, where the event happens):
#   x_free               m_request_done     requests by class, bytes, histograms
#   listener_on_event    m_accepted         accepted client connections
#   uc_new / uc_close    m_conn_open / m_conn_closed   open client connections
#   tls_uc_handshake     m_tls_done         full / resumed handshakes
#   tls_uc_failed        m_tls_failed
#   dc_failed            m_ds_failed        connect failures, broken connections
#   x_try_replay         m_replay
#   ds_exchange_failed   m_ejection
#   x_on_pending_timeout m_pend_timeout
#   request overflow     m_pend_rejected    max-pending reached (503)
# Gauges (pool states, in-flight, pending depth, health, rtt) are published
# into the slot by a once-a-second timer (m_publish), not at hook points: they
# change many times per request and are only read by a scrape.
#
# Layout: every section is an array of fixed-size records of uint64 words,
# indexed by a catalog position the master assigned to the record's labels
# (server; server+vhost+rule; server+downstream).  The word numbers below are
# exported by metrics_layout() so that the Python side never repeats them.

cdef enum:
    # per server (listener), counters
    SC_ACCEPTED = 0
    SC_TLS_FULL = 1
    SC_TLS_RESUMED = 2
    SC_TLS_FAILED = 3
    SC_H2_STREAMS = 4       # HTTP/2 streams served (h2.pxi)
    SC_WORDS = 5
    # per server, gauges
    SG_OPEN = 0
    SG_WORDS = 1
    # per rule (and one "unrouted" record per server), counters
    RC_CLASS = 0            # 6 words: status class 0 (none), 1xx .. 5xx
    RC_BYTES_IN = 6
    RC_BYTES_OUT = 7
    RC_PEND_TIMEOUTS = 8
    RC_PEND_REJECTED = 9
    RC_CACHE = 10           # 9 words: requests by what the cache did, indexed by CS_* (cache.pxi)
    RC_WORDS = 19
    # per rule, gauges
    RG_PENDING = 0
    RG_WORDS = 1
    # histograms: M_NB bounds, M_NB + 1 buckets (the last is +Inf), then the sum in us
    M_NB = 14
    M_HWORDS = 16
    # per downstream, counters
    DC_CLASS = 0            # 6 words, as RC_CLASS
    DC_CONNECT_FAILS = 6
    DC_CONN_FAILS = 7       # an established connection broke
    DC_REPLAYS = 8
    DC_EJECTIONS = 9
    DC_PEND_TIMEOUTS = 10
    DC_DURATION = 11        # M_HWORDS: request duration of the exchanges it served
    DC_TTFB = 27            # M_HWORDS: time to its response head
    DC_WORDS = 43
    # per downstream, gauges
    DG_IDLE = 0
    DG_BUSY = 1
    DG_CONNECTING = 2
    DG_DOWN = 3
    DG_INFLIGHT = 4
    DG_PENDING = 5
    DG_USABLE = 6           # enabled, connected, not failing its health check, not ejected
    DG_HC_DOWN = 7
    DG_EJECTED = 8
    DG_RTT_US = 9
    DG_RTT_VALID = 10
    DG_WORDS = 11
    # per slot, gauges about the worker itself
    WG_PID = 0
    WG_GENERATION = 1
    WG_INDEX = 2
    WG_HEARTBEAT_MS = 3     # CLOCK_MONOTONIC of its last publish
    WG_CLIENTS = 4
    WG_PENDING = 5
    WG_WORDS = 6

cdef int64_t[14] g_m_bounds_us = [500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
                                  500000, 1000000, 2500000, 5000000, 10000000]

cdef bint g_m_on = False
cdef uint64_t* g_m_worker = NULL    # this worker's WG_* words
cdef int* g_m_scratch = NULL        # pending counts per downstream while publishing
cdef Timer g_m_timer


cdef inline void m_hist(uint64_t* h, int64_t us) noexcept nogil:
    cdef int i = 0
    if us < 0:
        us = 0
    while i < M_NB and us > g_m_bounds_us[i]:
        i += 1
    h[i] += 1
    h[M_NB + 1] += <uint64_t>us


cdef inline int m_class(int status) noexcept nogil:
    cdef int c = status // 100
    return c if 1 <= c <= 5 else 0


cdef void m_exchange_end(Exchange* x) noexcept nogil:
    cdef UConn* uc = x.uc
    cdef uint64_t* rc
    cdef uint64_t* dc
    cdef DownstreamRt* ds
    cdef int cls
    if uc == NULL or uc.srv == NULL:
        return
    rc = x.rule.mc if x.rule != NULL else uc.srv.mc_none
    if rc == NULL:
        return
    cls = m_class(xlog_status(x))
    rc[RC_CLASS + cls] += 1
    rc[RC_BYTES_IN] += xlog_bytes_received(x, uc)
    rc[RC_BYTES_OUT] += xlog_bytes_sent(x, uc)
    if x.cst and x.cst <= 8:
        rc[RC_CACHE + x.cst] += 1
    ds = x.log.ds
    if ds != NULL and ds.mc != NULL:
        dc = ds.mc
        dc[DC_CLASS + cls] += 1
        m_hist(dc + DC_DURATION, g_now_us - x.log.t_start_us)
        if x.log.t_ds_head_us and x.log.t_ds_us:
            m_hist(dc + DC_TTFB, x.log.t_ds_head_us - x.log.t_ds_us)


cdef inline void m_request_done(Exchange* x) noexcept nogil:
    if g_m_on:
        m_exchange_end(x)


cdef inline void m_accepted(ServerRt* srv) noexcept nogil:
    if g_m_on and srv.mc != NULL:
        srv.mc[SC_ACCEPTED] += 1


cdef inline void m_conn_open(ServerRt* srv) noexcept nogil:
    if g_m_on and srv != NULL and srv.mg != NULL:
        srv.mg[SG_OPEN] += 1


cdef inline void m_h2_stream(ServerRt* srv) noexcept nogil:
    if g_m_on and srv != NULL and srv.mc != NULL:
        srv.mc[SC_H2_STREAMS] += 1


cdef inline void m_conn_closed(ServerRt* srv) noexcept nogil:
    if g_m_on and srv != NULL and srv.mg != NULL:
        srv.mg[SG_OPEN] -= 1


cdef inline void m_tls_done(ServerRt* srv, bint resumed) noexcept nogil:
    if g_m_on and srv.mc != NULL:
        srv.mc[SC_TLS_RESUMED if resumed else SC_TLS_FULL] += 1


cdef inline void m_tls_failed(ServerRt* srv) noexcept nogil:
    if g_m_on and srv.mc != NULL:
        srv.mc[SC_TLS_FAILED] += 1


cdef inline void m_ds_failed(DConn* dc) noexcept nogil:
    """Before dc_failed tears the connection down: was it still connecting?"""
    if g_m_on and dc.ds.mc != NULL:
        dc.ds.mc[DC_CONNECT_FAILS if dc.conn.state == D_CONNECTING else DC_CONN_FAILS] += 1


cdef inline void m_replay(DownstreamRt* ds) noexcept nogil:
    if g_m_on and ds.mc != NULL:
        ds.mc[DC_REPLAYS] += 1


cdef inline void m_ejection(DownstreamRt* ds) noexcept nogil:
    if g_m_on and ds.mc != NULL:
        ds.mc[DC_EJECTIONS] += 1


cdef void m_pend_count(Exchange* x, int rword, int dword) noexcept nogil:
    """A waiting exchange gave up: counted for its rule and for each
    downstream it was waiting for (it could have been served by any)."""
    cdef int i
    cdef RuleRt* r = x.rule
    if r == NULL:
        return
    if r.mc != NULL:
        r.mc[rword] += 1
    if dword >= 0:
        for i in range(r.nds):
            if r.dss[i].mc != NULL:
                r.dss[i].mc[dword] += 1


cdef inline void m_pend_timeout(Exchange* x) noexcept nogil:
    if g_m_on:
        m_pend_count(x, RC_PEND_TIMEOUTS, DC_PEND_TIMEOUTS)


cdef inline void m_pend_rejected(Exchange* x) noexcept nogil:
    if g_m_on:
        m_pend_count(x, RC_PEND_REJECTED, -1)


cdef void m_publish() noexcept nogil:
    """The gauges, from the loop's state (once a second, and at start)."""
    cdef int i, j, k, s, v, r
    cdef DownstreamRt* ds
    cdef uint64_t* g
    cdef uint64_t st[4]
    cdef Exchange* x
    cdef RuleRt* rule
    for i in range(g_ndownstreams):
        g_m_scratch[i] = 0
    for s in range(g_nservers):
        for v in range(g_servers[s].nvhosts):
            for r in range(g_servers[s].vhosts[v].nrules):
                g_servers[s].vhosts[v].rules[r].m_pending = 0
    x = g_pend_first
    while x != NULL:
        rule = x.rule
        if rule != NULL:
            rule.m_pending += 1
            for k in range(rule.nds):
                g_m_scratch[rule.dss[k].index] += 1
        x = x.next
    for s in range(g_nservers):
        for v in range(g_servers[s].nvhosts):
            for r in range(g_servers[s].vhosts[v].nrules):
                rule = &g_servers[s].vhosts[v].rules[r]
                if rule.mg != NULL:
                    rule.mg[RG_PENDING] = <uint64_t>rule.m_pending
    for i in range(g_ndownstreams):
        ds = &g_downstreams[i]
        g = ds.mg
        if g == NULL:
            continue
        st[0] = st[1] = st[2] = st[3] = 0
        for j in range(ds.nslots if ds.pp else ds.nconns):     # proxy-protocol: its private ones (pool.pxi)
            k = ds.conns[j].conn.state
            if k == D_IDLE:
                st[0] += 1
            elif k == D_ACTIVE:
                st[1] += 1
            elif k == D_CONNECTING:
                st[2] += 1
            elif not ds.pp:         # (a closed private slot is free, not down)
                st[3] += 1
        g[DG_IDLE] = st[0]
        g[DG_BUSY] = st[1]
        g[DG_CONNECTING] = st[2]
        g[DG_DOWN] = st[3]
        g[DG_INFLIGHT] = <uint64_t>(ds.n_active if ds.n_active > 0 else 0)
        g[DG_PENDING] = <uint64_t>g_m_scratch[i]
        g[DG_HC_DOWN] = ds.hc_down
        g[DG_EJECTED] = ds.eject_until > g_now
        g[DG_USABLE] = ds.enabled and not ds.hc_down and ds.n_up > 0 and ds.eject_until <= g_now
        g[DG_RTT_VALID] = ds.rtt_samples > 0
        g[DG_RTT_US] = <uint64_t>(ds.rtt_ms * 1000.0) if ds.rtt_samples > 0 and ds.rtt_ms > 0 else 0
    g_m_worker[WG_CLIENTS] = <uint64_t>g_nuconns
    g_m_worker[WG_PENDING] = <uint64_t>g_npending
    g_m_worker[WG_HEARTBEAT_MS] = <uint64_t>g_now


cdef void m_on_timer() noexcept nogil:
    m_publish()
    if g_stop != 2:                 # a draining worker keeps publishing as its exchanges end
        timer_arm(&g_m_timer, 1000)


cdef void m_start() noexcept nogil:
    """At the loop's start: publish once, then every second."""
    if g_m_on:
        timer_init(&g_m_timer, TK_METRICS, NULL)
        m_publish()
        timer_arm(&g_m_timer, 1000)


def metrics_layout():
    """The zone's record layouts (word numbers), for rproxy.metrics.zone."""
    return {
        "server_counters": {"accepted": SC_ACCEPTED, "tls_full": SC_TLS_FULL,
                            "tls_resumed": SC_TLS_RESUMED, "tls_failed": SC_TLS_FAILED,
                            "h2_streams": SC_H2_STREAMS, "words": SC_WORDS},
        "server_gauges": {"open": SG_OPEN, "words": SG_WORDS},
        "rule_counters": {"class": RC_CLASS, "bytes_in": RC_BYTES_IN, "bytes_out": RC_BYTES_OUT,
                          "pending_timeouts": RC_PEND_TIMEOUTS, "pending_rejected": RC_PEND_REJECTED,
                          "cache": RC_CACHE, "cache_names": cache_status_names(), "words": RC_WORDS},
        "rule_gauges": {"pending": RG_PENDING, "words": RG_WORDS},
        "ds_counters": {"class": DC_CLASS, "connect_failures": DC_CONNECT_FAILS,
                        "connection_failures": DC_CONN_FAILS, "replays": DC_REPLAYS,
                        "ejections": DC_EJECTIONS, "pending_timeouts": DC_PEND_TIMEOUTS,
                        "duration": DC_DURATION, "ttfb": DC_TTFB, "words": DC_WORDS},
        "ds_gauges": {"idle": DG_IDLE, "busy": DG_BUSY, "connecting": DG_CONNECTING, "down": DG_DOWN,
                      "in_flight": DG_INFLIGHT, "pending": DG_PENDING, "usable": DG_USABLE,
                      "hc_down": DG_HC_DOWN, "ejected": DG_EJECTED, "rtt_us": DG_RTT_US,
                      "rtt_valid": DG_RTT_VALID, "words": DG_WORDS},
        "worker_gauges": {"pid": WG_PID, "generation": WG_GENERATION, "index": WG_INDEX,
                          "heartbeat_ms": WG_HEARTBEAT_MS, "clients": WG_CLIENTS, "pending": WG_PENDING,
                          "words": WG_WORDS},
        "histogram": {"bounds_us": [g_m_bounds_us[i] for i in range(M_NB)], "words": M_HWORDS},
    }


cdef class _MetricsSlot:
    """What Worker.set_metrics keeps alive: the zone's buffer."""
    cdef object buf
    cdef unsigned char[::1] view


def _m_check(long long word, int words, long long nwords):
    """A record of `words` words at word `word` must lie inside the zone."""
    if word < 0 or word + words > nwords:
        raise ValueError("metrics record outside the zone")
    return word


def _metrics_attach(buf, long long worker_word, servers, rules, unrouted, downstreams,
                    int pid, int generation, int index):
    """Point the runtime tables at their records in the zone `buf` (a
    writable buffer: the master's mmap).  servers: [(counters word, gauges
    word)] per server index; rules: {(server, vhost, rule): (counters word,
    gauges word)}; unrouted: [counters word] per server; downstreams:
    [(counters word, gauges word)] per downstream index."""
    global g_m_on, g_m_worker, g_m_scratch
    cdef _MetricsSlot keep = _MetricsSlot()
    cdef uint64_t* base
    cdef long long nw
    cdef RuleRt* r
    if len(servers) != g_nservers or len(unrouted) != g_nservers or len(downstreams) != g_ndownstreams:
        raise ValueError("metrics records do not match the runtime tables")
    keep.buf = buf
    keep.view = buf
    base = <uint64_t*>&keep.view[0]
    nw = keep.view.shape[0] // 8
    g_m_worker = <uint64_t*>base + <long long>_m_check(worker_word, WG_WORDS, nw)
    for i, (c, g) in enumerate(servers):
        g_servers[i].mc = <uint64_t*>base + <long long>_m_check(c, SC_WORDS, nw)
        g_servers[i].mg = <uint64_t*>base + <long long>_m_check(g, SG_WORDS, nw)
        g_servers[i].mc_none = <uint64_t*>base + <long long>_m_check(unrouted[i], RC_WORDS, nw)
    for (s, v, ri), (c, g) in rules.items():
        r = &g_servers[s].vhosts[v].rules[ri]
        r.mc = <uint64_t*>base + <long long>_m_check(c, RC_WORDS, nw)
        r.mg = <uint64_t*>base + <long long>_m_check(g, RG_WORDS, nw)
    for i, (c, g) in enumerate(downstreams):
        g_downstreams[i].mc = <uint64_t*>base + <long long>_m_check(c, DC_WORDS, nw)
        g_downstreams[i].mg = <uint64_t*>base + <long long>_m_check(g, DG_WORDS, nw)
    g_m_scratch = <int*>calloc(max(g_ndownstreams, 1), sizeof(int))
    if g_m_scratch == NULL:
        raise MemoryError()
    g_m_worker[WG_PID] = pid
    g_m_worker[WG_GENERATION] = generation
    g_m_worker[WG_INDEX] = index
    g_m_on = True
    return keep


def bench_metrics_exchange(int rounds):
    """Count `rounds` ended exchanges (a rule, a downstream, both histograms)
    into a private record set, as x_free does with metrics on; returns the
    requests counted (for pytest-benchmark: the loop runs no Python)."""
    global g_m_on
    cdef uint64_t* words = <uint64_t*>calloc(RC_WORDS + DC_WORDS + SC_WORDS + SG_WORDS, sizeof(uint64_t))
    cdef ServerRt* srv = <ServerRt*>calloc(1, sizeof(ServerRt))
    cdef RuleRt* rule = <RuleRt*>calloc(1, sizeof(RuleRt))
    cdef DownstreamRt* ds = <DownstreamRt*>calloc(1, sizeof(DownstreamRt))
    cdef UConn* uc = <UConn*>calloc(1, sizeof(UConn))
    cdef Exchange* x = <Exchange*>calloc(1, sizeof(Exchange))
    cdef bint was = g_m_on
    cdef int i
    cdef uint64_t n
    if words == NULL or srv == NULL or rule == NULL or ds == NULL or uc == NULL or x == NULL:
        raise MemoryError()
    rule.mc = words
    ds.mc = words + RC_WORDS
    srv.mc = words + RC_WORDS + DC_WORDS
    srv.mg = srv.mc + SC_WORDS
    uc.srv = srv
    x.uc = uc
    x.rule = rule
    x.status = 200
    x.flags = XF_RESP_STARTED
    x.head_end = 78
    x.log.flags = XL_DONE
    x.log.bytes_out = 1200
    x.log.ds = ds
    g_m_on = True
    with nogil:
        for i in range(rounds):
            x.log.t_start_us = g_now_us - 300 - (i & 1023) * 7
            x.log.t_ds_us = x.log.t_start_us + 20
            x.log.t_ds_head_us = x.log.t_ds_us + 150
            m_request_done(x)
    g_m_on = was
    n = words[RC_CLASS + 2]
    free(words)
    free(srv)
    free(rule)
    free(ds)
    free(uc)
    free(x)
    return n
