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
    return d.nslots > d.nconns and d.enabled and not d.hc_down and d.n_up > 0 and d.n_idle == 0 \
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
