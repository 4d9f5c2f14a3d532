# Pool growth: beyond `connections`, up to `max-connections` per downstream.
#
# Every downstream has `max-connections` slots allocated up front; the first
# `connections` are kept connected (downstream.pxi), the rest are "extra"
# slots that stay closed (D_DOWN, no timer armed) until a request has to wait
# for a connection.  Then one extra slot of a downstream of its rule that is
# up, has nothing idle and has a closed slot left is opened; once connected it
# joins the idle list and serves the pending queue like any other.  An extra
# connection that stays idle for EXTRA_IDLE_MS (or the downstream's
# idle-timeout, if shorter) is closed again, and one that fails or cannot be
# reused is closed, not reconnected: the pool shrinks back to `connections`.

cdef enum:
    EXTRA_IDLE_MS = 5000


cdef inline int64_t pool_idle_ms(DConn* dc) noexcept nogil:
    """How long an idle connection is kept before it is refreshed (base) or
    closed (extra)."""
    if dc.extra and dc.ds.idle_timeout_ms > EXTRA_IDLE_MS:
        return EXTRA_IDLE_MS
    return dc.ds.idle_timeout_ms


cdef DConn* pool_closed_slot(DownstreamRt* d) noexcept nogil:
    """A closed extra slot of `d`, or NULL when all are open or opening."""
    cdef int j
    for j in range(d.nconns, d.nslots):
        if d.conns[j].conn.state == D_DOWN:
            return &d.conns[j]
    return NULL


cdef bint pool_may_grow(DownstreamRt* d) noexcept nogil:
    """Growing only helps a downstream that is up, pickable and busy."""
    return not d.pp and d.nslots > d.nconns and d.enabled and not d.hc_down and d.n_up > 0 and d.n_idle == 0 \
        and d.eject_until <= g_now


cdef void pool_grow(RuleRt* r) noexcept nogil:
    """A request of rule `r` is about to wait: open one extra connection to
    one of its downstreams (the first in the rule's order with a closed
    slot, so `lb-method none` keeps its fallback order)."""
    cdef int i
    cdef DownstreamRt* d
    cdef DConn* dc
    if r == NULL:
        return
    for i in range(r.nds):
        d = r.dss[i]
        if not pool_may_grow(d):
            continue
        dc = pool_closed_slot(d)
        if dc == NULL:
            continue
        if rp_elog_wants(ds_errfd(d), 7):
            rp_elog(ds_errfd(d), 7, "downstream %s (%s): all %d connections busy; opening an extra one",
                    d.name, d.label, d.n_up)
        dc.fails = 0
        dc_connect(dc)
        return


# ---- private connections (`proxy-protocol = v1|v2` on a downstream) ----------------------
#
# A PROXY header names one client, so a connection that carried one can
# serve no other client (HAProxy makes such connections private).  For such
# a downstream nothing is connected ahead: each of its `max-connections`
# slots (default 4 x connections) is opened for one client connection when
# that client's request needs one (the request waits in the pending queue
# meanwhile, under max-pending and pending-timeout as any other), the header
# goes first (before TLS), and the connection then carries only that
# client's requests (DConn.owner; UConn.pp.pdc lists them).  It is never on its
# downstream's idle list: between requests it waits for its own client, and
# it closes when the client closes, when it stays idle past idle-timeout, or
# when a request of another client waits for a slot and none is free (an
# idle client never blocks a waiting one).  A failed connect answers like a
# pool that is down (502 once every downstream of the rule is) and backs off
# by `retry` before the next one.  Pipelining onto a private connection is
# never done; a tunnel (Upgrade, passthrough) takes its socket out as usual
# (freeing the slot) and stays the client's.

cdef inline bint pp_in_rule(RuleRt* r, DownstreamRt* d) noexcept nogil:
    cdef int i
    for i in range(r.nds):
        if r.dss[i] == d:
            return True
    return False


cdef bint pp_may_open(DownstreamRt* d) noexcept nogil:
    """A private connection of `d` can be opened now (a slot is closed, or
    held by a connection idle between its client's requests)."""
    cdef int j
    if not d.pp or not d.enabled or d.hc_down or g_now < d.pp_retry_at:
        return False
    for j in range(d.nslots):
        if d.conns[j].conn.state == D_DOWN or d.conns[j].conn.state == D_IDLE:
            return True
    return False


cdef DConn* pp_pick(Exchange* x) noexcept nogil:
    """The client's own idle connection to one of the rule's downstreams,
    checked alive, or NULL (lb_pick_for)."""
    cdef DConn* dc = x.uc.pp.pdc if x.uc.pp != NULL else NULL
    cdef DConn* nx
    cdef DownstreamRt* d
    while dc != NULL:
        nx = dc.onext
        d = dc.ds
        if dc.conn.state == D_IDLE and pp_in_rule(x.rule, d) and d.enabled and not d.hc_down \
                and (d.eject_until <= g_now or all_ejected(x.rule)):
            idle_remove(dc)
            timer_stop(&dc.conn.timer)
            if dc_alive(dc):
                return dc
            dc_recycle(dc)          # closed by the downstream while idle
        dc = nx
    return NULL


cdef bint pp_opening(Exchange* x) noexcept nogil:
    """The client has a connection on its way to one of the rule's
    downstreams: it will serve this request (pend_serve) once connected."""
    cdef DConn* dc = x.uc.pp.pdc if x.uc.pp != NULL else NULL
    while dc != NULL:
        if dc.conn.state == D_CONNECTING and pp_in_rule(x.rule, dc.ds):
            return True
        dc = dc.onext
    return False


cdef bint pp_usable(RuleRt* r, int i, bint ign) noexcept nogil:
    return pp_may_open(r.dss[i]) and (ign or r.dss[i].eject_until <= g_now)


cdef int pp_choose(RuleRt* r) noexcept nogil:
    """Index (in r.dss) of the proxy-protocol downstream to open a private
    connection to, or -1.  The rule's method, counted in private
    connections (balance.pxi's pick idle ones, which these never are):
    none, the first in order; rtt, the lowest EWMA per weight (unmeasured
    first); random, weighted; the others, the fewest connections up per
    weight, ties taken in turn.  Ejected ones only when all are."""
    cdef bint ign = all_ejected(r)
    cdef int i, k, best = -1, n = r.nds
    cdef double score, best_score = 0
    cdef uint64_t total = 0, pick
    if r.lb == LB_RANDOM:
        for i in range(n):
            if pp_usable(r, i, ign):
                total += <uint64_t>r.dss[i].weight
        if total == 0:
            return -1
        pick = rand64() % total
        for i in range(n):
            if pp_usable(r, i, ign):
                if pick < <uint64_t>r.dss[i].weight:
                    return i
                pick -= <uint64_t>r.dss[i].weight
        return -1
    for k in range(n):
        i = k if r.lb == LB_NONE else (r.rr_next + k) % n
        if not pp_usable(r, i, ign):
            continue
        if r.lb == LB_NONE:
            return i
        if r.lb == LB_RTT:
            score = (r.dss[i].rtt_ms if r.dss[i].rtt_samples else 0.0) / r.dss[i].weight
        else:
            score = (r.dss[i].n_up + 1.0) / r.dss[i].weight
        if best < 0 or score < best_score:
            best = i
            best_score = score
    if best >= 0:
        r.rr_next = (best + 1) % n
    return best


cdef DConn* pp_slot(DownstreamRt* d) noexcept nogil:
    """A closed slot of `d`; else the one idle longest, closed for it."""
    cdef DConn* best = NULL
    cdef int j
    for j in range(d.nslots):
        if d.conns[j].conn.state == D_DOWN:
            return &d.conns[j]
        if d.conns[j].conn.state == D_IDLE and (best == NULL or d.conns[j].idle_since < best.idle_since):
            best = &d.conns[j]
    if best != NULL:
        if rp_elog_wants(ds_errfd(d), 7):
            rp_elog(ds_errfd(d), 7, "downstream %s (%s): every private connection taken; closing one "
                    "idle for %lld ms for a waiting client", d.name, d.label, g_now - best.idle_since)
        dc_teardown(best)
    return best


cdef void pp_grow(Exchange* x) noexcept nogil:
    """A request is about to wait (pend_add): if its rule has proxy-protocol
    downstreams and its client has no connection on its way to one, open
    one for that client, on the downstream the rule's method picks (its
    sticky one, if any)."""
    cdef RuleRt* r = x.rule
    cdef DownstreamRt* d = NULL
    cdef DConn* dc
    cdef PPClient* p
    cdef int i, k = -1
    if r == NULL:
        return
    for i in range(r.nds):
        if r.dss[i].pp:
            break
    else:
        return
    if pp_opening(x):
        return
    if r.serve_edge != NULL and r.serve_edge.sticky:
        k = sticky_from_cookie(x.uc, x) if r.serve_edge.sticky == STICKY_COOKIE else sticky_ip_pick(x.uc, r)
        if k >= 0 and pp_may_open(r.dss[k]) and r.dss[k].eject_until <= g_now:
            d = r.dss[k]
    if d == NULL:
        i = pp_choose(r)
        if i < 0:
            return                  # every slot busy: a freed one serves the queue (pp_slot_timer)
        d = r.dss[i]
    p = pp_client(x.uc)
    if p == NULL:
        return                      # out of memory: the request waits (pending-timeout)
    dc = pp_slot(d)
    if dc == NULL:
        return
    dc.owner = x.uc
    dc.onext = p.pdc
    p.pdc = dc
    dc.fails = 0
    if rp_elog_wants(ds_errfd(d), 7):
        rp_elog(ds_errfd(d), 7, "downstream %s (%s): opening a private connection for a client",
                d.name, d.label)
    dc_connect(dc)


cdef void pp_unlink(DConn* dc) noexcept nogil:
    """The connection stops being its client's (closed, or its socket went
    to a tunnel): the slot is free, and a timer run hands it to a waiting
    request (pp_slot_timer), outside whatever closed it."""
    cdef DConn** pp = &dc.owner.pp.pdc
    while pp[0] != NULL and pp[0] != dc:
        pp = &pp[0].onext
    if pp[0] == dc:
        pp[0] = dc.onext
    dc.owner = NULL
    dc.onext = NULL
    timer_arm(&dc.conn.timer, 1)


cdef void pp_release(UConn* uc) noexcept nogil:
    """The client closes: so do its private connections (uc_close, after
    its exchange was dropped), and its PROXY protocol state is freed."""
    cdef DConn* dc
    while uc.pp.pdc != NULL:
        dc = uc.pp.pdc
        if dc.x != NULL:
            dc_abandon(dc)
        else:
            dc_teardown(dc)
        if uc.pp.pdc == dc:         # (teardown unlinks it; never loop on one that did not)
            pp_unlink(dc)
    free(uc.pp)
    uc.pp = NULL


cdef void pp_failed(DConn* dc, int err) noexcept nogil:
    """dc_failed for a private connection: closed, never reconnected for
    nobody; a failed connect backs the downstream off."""
    cdef DownstreamRt* ds = dc.ds
    cdef bint connecting = dc.conn.state == D_CONNECTING
    dc_teardown(dc)
    if not connecting:
        rp_elog(ds_errfd(ds), 6, "downstream %s (%s): private connection failed (%s)", ds.name, ds.label,
                strerror(err))
        return
    ds.pp_fails += 1
    ds.pp_retry_at = g_now + backoff_ms(ds, ds.pp_fails)
    if ds.n_up == 0 and not ds.down_logged:
        ds.down_logged = 1
        rp_elog(ds_errfd(ds), 3, "downstream %s (%s) is down: %s", ds.name, ds.label, strerror(err))
    elif rp_elog_wants(ds_errfd(ds), 7):
        rp_elog(ds_errfd(ds), 7, "downstream %s (%s): connection failed (%s), %d in a row", ds.name,
                ds.label, strerror(err), ds.pp_fails)


cdef bint pp_waiter(Exchange* x, DownstreamRt* d, UConn* other_than) noexcept nogil:
    return x.rule != NULL and x.uc != other_than and pp_in_rule(x.rule, d) and not pp_opening(x)


cdef void pp_idle(DConn* dc) noexcept nogil:
    """A private connection goes idle (idle_push): its idle timeout, or at
    once when another client's request waits for a slot of its downstream
    and none is free (the timer closes it: dc_on_timer)."""
    cdef Exchange* x
    cdef DownstreamRt* d = dc.ds
    cdef int j
    if g_npending > 0:
        for j in range(d.nslots):
            if d.conns[j].conn.state == D_DOWN:
                break               # a free slot: no need to take this one
        else:
            x = g_pend_first
            while x != NULL:
                if pp_waiter(x, d, dc.owner):
                    timer_arm(&dc.conn.timer, 1)
                    return
                x = x.next
    timer_arm(&dc.conn.timer, d.idle_timeout_ms)


cdef void pp_slot_timer(DConn* dc) noexcept nogil:
    """A slot was freed (or a connect failed): answer the requests whose
    rule is now dead (502), then open connections for waiting requests that
    have none on its way, while slots allow (after the backoff)."""
    global g_pend_changes
    cdef DownstreamRt* ds = dc.ds
    cdef Exchange* x
    cdef Exchange* nx
    cdef uint32_t seen
    if ds.down_logged:
        pend_fail_dead()
    if g_now < ds.pp_retry_at:
        timer_arm(&dc.conn.timer, ds.pp_retry_at - g_now)
        return
    x = g_pend_first
    while x != NULL:
        nx = x.next
        if x.rule != NULL and pp_in_rule(x.rule, ds) and not pp_opening(x):
            seen = g_pend_changes
            pp_grow(x)
            if g_pend_changes != seen:
                nx = g_pend_first   # served at once (unix: connected in the call): walk again
        x = nx
