# Load balancing: pick an idle pooled connection for a rule.  State is per
# worker.  Every method only considers enabled downstreams with an idle
# connection; a pick takes that downstream's longest-idle connection (FIFO),
# which keeps every pooled connection warm.

cdef uint64_t g_rand_state = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t rand64() noexcept nogil:
    # xorshift64*: cheap, good enough to spread load
    global g_rand_state
    g_rand_state ^= g_rand_state >> 12
    g_rand_state ^= g_rand_state << 25
    g_rand_state ^= g_rand_state >> 27
    return g_rand_state * 0x2545F4914F6CDD1DULL


cdef bint g_ignore_ejection = False     # every candidate was ejected: use them anyway


cdef inline bint ds_usable(DownstreamRt* d) noexcept nogil:
    return d.enabled and not d.hc_down and d.n_idle > 0 and (g_ignore_ejection or d.eject_until <= g_now)


cdef int lb_choose(RuleRt* r) noexcept nogil:
    """Index (into r.dss) of the downstream to use, or -1 if none has an idle
    connection."""
    cdef int i, k, best = -1, n = r.nds
    cdef DownstreamRt* d
    cdef double score, best_score = 0
    cdef uint64_t total, pick
    if n == 0:
        return -1
    if r.lb == LB_NONE:
        for i in range(n):
            if ds_usable(r.dss[i]):
                return i
        return -1
    if r.lb == LB_ROUNDROBIN:
        if r.rr_cur != NULL:
            return swrr_choose(r)
        for k in range(n):
            i = (r.rr_next + k) % n
            if ds_usable(r.dss[i]):
                r.rr_next = (i + 1) % n
                return i
        return -1
    if r.lb == LB_MOST_IDLE:
        for i in range(n):
            d = r.dss[i]
            if ds_usable(d) and (best < 0 or d.n_idle * r.dss[best].weight > r.dss[best].n_idle * d.weight):
                best = i
        return best
    if r.lb == LB_RANDOM:
        total = 0
        for i in range(n):
            if ds_usable(r.dss[i]):
                total += <uint64_t>r.dss[i].weight
        if total == 0:
            return -1
        pick = rand64() % total
        for i in range(n):
            if ds_usable(r.dss[i]):
                if pick < <uint64_t>r.dss[i].weight:
                    return i
                pick -= <uint64_t>r.dss[i].weight
        return -1
    if r.lb == LB_LEAST_PENDING:
        for i in range(n):
            d = r.dss[i]
            if ds_usable(d):
                score = (d.n_active + 1.0) / d.weight
                if best < 0 or score < best_score:
                    best = i
                    best_score = score
        return best
    # LB_RTT: lowest EWMA of time to first byte, divided by weight.  A
    # downstream with no sample yet scores 0, so each one is tried early and
    # gets measured instead of being starved by a never-measured +inf.
    for i in range(n):
        d = r.dss[i]
        if ds_usable(d):
            score = (d.rtt_ms if d.rtt_samples else 0.0) / d.weight
            if best < 0 or score < best_score:
                best = i
                best_score = score
    return best


cdef int rule_rr_setup(RuleRt* r) noexcept nogil:
    """Once, when the rule is built (its downstreams' weights known): the
    smooth weighted round-robin state, only when the weights differ (equal
    weights take the plain rotation).  -1: out of memory."""
    cdef int i
    r.rr_cur = NULL
    for i in range(1, r.nds):
        if r.dss[i].weight != r.dss[0].weight:
            r.rr_cur = <int64_t*>calloc(r.nds, sizeof(int64_t))
            return 0 if r.rr_cur != NULL else -1
    return 0


cdef int swrr_choose(RuleRt* r) noexcept nogil:
    """Smooth weighted round-robin (nginx's): every usable downstream gains
    its weight, the one with the most is picked and pays back the total.
    Weights 5, 1, 1 give a a b a c a a: proportional and interleaved, never
    five in a row."""
    cdef int i, best = -1
    cdef int64_t total = 0
    for i in range(r.nds):
        if ds_usable(r.dss[i]):
            r.rr_cur[i] += r.dss[i].weight
            total += r.dss[i].weight
            if best < 0 or r.rr_cur[i] > r.rr_cur[best]:
                best = i
    if best >= 0:
        r.rr_cur[best] -= total
    return best


cdef bint rule_alive(RuleRt* r) noexcept nogil:
    """False when every downstream of the rule is known to be down (its
    connections failed and none is up): waiting would only delay a 502."""
    cdef int i
    cdef DownstreamRt* d
    for i in range(r.nds):
        d = r.dss[i]
        if d.enabled and not d.hc_down and (d.n_up > 0 or not d.down_logged or (d.pp and g_now >= d.pp_retry_at)):
            return True
    return False


cdef bint all_ejected(RuleRt* r) noexcept nogil:
    cdef int i
    for i in range(r.nds):
        if r.dss[i].enabled and r.dss[i].eject_until <= g_now:
            return False
    return True


cdef DConn* lb_pick(RuleRt* r) noexcept nogil:
    """An idle connection for the rule, checked alive, or NULL."""
    global g_ignore_ejection
    cdef int i
    cdef DConn* dc
    # Passive health: ejected downstreams are skipped -- unless all of the
    # rule's are ejected, where refusing everything would turn a partial
    # outage into a total one (nginx does the same).
    g_ignore_ejection = all_ejected(r)
    while True:
        i = lb_choose(r)
        if i < 0:
            g_ignore_ejection = False
            return NULL
        dc = idle_pop(r.dss[i])
        if dc_alive(dc):
            g_ignore_ejection = False
            return dc
        dc_recycle(dc)              # closed by the downstream while idle: never hand it out


cdef DConn* lb_pick_replay(Exchange* x) noexcept nogil:
    """For a replay, which is the request's last chance.  In this order:
    a never-used connection of another downstream; any idle connection of
    another downstream; a never-used connection of the downstream that
    failed -- any when what failed was a reused connection (the usual
    stale-pool case: its twins met the same idle timeout, a fresh one will
    do), only one opened after the failure when a fresh connection failed
    (the downstream itself is failing or restarting); a connection of the
    failed downstream that has just answered (replay_recent); else nothing
    (the request waits in the pending queue for the failed slot's
    reconnection or any connection freed).  The scanned candidates are
    checked alive now: a fresh connection may have been reset by a
    downstream that died since it was accepted into a listen backlog."""
    cdef DConn* dc = replay_scan(x, True, True, 0)
    if dc == NULL:
        dc = replay_scan(x, True, False, 0)
    if dc == NULL:
        dc = replay_scan(x, False, True, x.failed_at if x.flags & XF_FAILED_FRESH else 0)
    if dc == NULL:
        dc = replay_recent(x)
    return dc


cdef DConn* replay_scan(Exchange* x, bint other, bint fresh_only, int64_t opened_after) noexcept nogil:
    """The first idle connection, alive, of the rule's other downstreams
    (`other`) or of the failed one, never used if `fresh_only`, connected
    after `opened_after` (ms) if not 0.  Dead ones met on the way are
    recycled."""
    cdef RuleRt* r = x.rule
    cdef int i, k
    cdef DownstreamRt* d
    cdef DConn* dc
    cdef DConn* nx
    for k in range(r.nds):
        i = (r.rr_next + k) % r.nds
        d = r.dss[i]
        if (d == x.failed_ds) == other or not d.enabled or d.hc_down:
            continue
        if other and d.eject_until > g_now:
            continue
        dc = d.idle_first
        while dc != NULL:
            nx = dc.inext
            if (dc.nreq == 0 or not fresh_only) and dc.connected_at > opened_after:
                idle_remove(dc)
                timer_stop(&dc.conn.timer)
                if dc_alive_now(dc):
                    return dc
                dc_recycle(dc)
            dc = nx
    return NULL


cdef DConn* replay_recent(Exchange* x) noexcept nogil:
    """The failed downstream's connections that have just answered a
    request are no twins on the brink: they serve replays that found no
    other (with one connection, the requests that were in flight behind a
    failed one are replayed one after another on its replacement)."""
    cdef DConn* dc
    cdef DownstreamRt* d = x.failed_ds
    if d != NULL and d.enabled and not d.hc_down:
        dc = d.idle_first
        while dc != NULL:
            if dc.nreq > 0 and g_now - dc.idle_since < 250 and not (dc.conn.flags & CN_RDHUP):
                idle_remove(dc)
                timer_stop(&dc.conn.timer)
                return dc
            dc = dc.inext
    return NULL


cdef DConn* lb_pick_for(Exchange* x) noexcept nogil:
    """An idle connection; failing that, for a request that may be
    pipelined, a busy one with room (pipeline.pxi).  A replay takes neither
    twins of the failed connection nor a pipeline."""
    cdef DConn* dc = NULL
    cdef int wait = 0
    if x.flags & XF_RETRIED:
        dc = lb_pick_replay(x)
        if dc != NULL and dc.ds != x.failed_ds and x.rule.serve_edge != NULL \
                and x.rule.serve_edge.sticky == STICKY_COOKIE:
            x.sticky_set = 1        # moved off the downstream its cookie named: the response names the new one
    else:
        if x.rule.serve_edge != NULL and x.rule.serve_edge.sticky:
            dc = sticky_pick(x, &wait)  # sticky sessions (edge.pxi): its downstream's, or wait for one of them
        if dc == NULL and not wait:
            dc = lb_pick(x.rule)
            if dc == NULL and (x.flags & XF_PIPE_OK):
                dc = lb_pick_pipelined(x.rule)
    if dc == NULL and x.uc.pp != NULL:
        dc = pp_pick(x)             # the client's own private connection (proxy-protocol, pool.pxi)
    return dc


cdef void rtt_sample(DownstreamRt* d, double ms) noexcept nogil:
    if d.rtt_samples == 0:
        d.rtt_ms = ms
    else:
        d.rtt_ms = d.rtt_ms * 0.8 + ms * 0.2
    d.rtt_samples += 1
