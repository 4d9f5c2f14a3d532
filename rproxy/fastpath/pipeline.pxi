# Pipelining to downstreams (`pipeline = N` on a downstream, N > 1).
#
# A pooled connection normally carries one exchange at a time.  With
# pipelining, when the pool of a downstream is exhausted, a request may be
# written on a busy connection behind the ones already in flight there:
#
# - only a request that can be sent again safely and whole: idempotent, no
#   body, no Upgrade, not a passthrough rule (XF_PIPE_OK, set at routing);
# - only behind requests that are all such requests and all fully written
#   (nothing is interleaved with a request still being sent);
# - at most N in flight per connection, and never on a connection that is
#   marked no-reuse, half-closed by the downstream, or being drained.
#
# The connection keeps its exchanges in order (DConn.x the oldest, whose
# response is being read; DConn.xlast the newest, whose request is being
# written; Exchange.pnext links them).  Responses come back in that order: when
# one ends, bytes read past its end are the start of the next one's and are
# parsed for it (dc_detach keeps them), never dropped, never given to the
# wrong client.
#
# Failures: the oldest exchange gets exactly what a lone exchange would get
# (downstream.pxi).  Every exchange behind it has seen no byte of its
# response, so when the connection cannot answer it -- the connection died,
# the response before it said `Connection: close` or ends at EOF, or an
# earlier client went away -- it is taken off the connection and replayed once
# elsewhere through the pending queue (XF_RETRIED: a replay never pipelines,
# and is never replayed twice), else answered 502.


cdef bint dc_can_join(DConn* dc) noexcept nogil:
    """May one more request be written on this busy connection now?"""
    cdef Exchange* h = dc.x
    cdef DownstreamRt* ds = dc.ds
    if dc.conn.state != D_ACTIVE or h == NULL or dc.phase == R_TUNNEL or g_stop:
        return False
    if dc.conn.flags & (DF_NO_REUSE | CN_RDHUP | DF_EOF_BODY):
        return False
    if dc.ninflight >= ds.pipeline:
        return False
    # everything in flight joined under the same rule, so the oldest being
    # pipelinable means all are; the newest written whole means all are
    if not (h.flags & XF_PIPE_OK) or not (dc.xlast.flags & XF_REQ_DONE) or not out_empty(&dc.conn.out):
        return False
    if ds.max_requests and dc.nreq >= ds.max_requests:
        return False
    if ds.max_age_ms and g_now - dc.connected_at >= ds.max_age_ms:
        return False
    return True


cdef DConn* lb_pick_pipelined(RuleRt* r) noexcept nogil:
    """A busy connection to pipeline a request on, when no downstream of the
    rule has an idle one.  The method's own measure, counted in requests in
    flight: rtt weighs its EWMA by the requests queued ahead, least-pending
    the downstream's exchanges in flight; the others take the connection with
    the fewest in flight (none: in the rule's order).  Ties: fewest in flight."""
    cdef DConn* best = NULL
    cdef DConn* dc
    cdef DownstreamRt* d
    cdef double score, best_score = 0
    cdef int i, j, ign = -1
    for i in range(r.nds):
        d = r.dss[i]
        if d.pipeline <= 1 or not d.enabled or d.hc_down or d.pp:     # private: one client's
            continue
        if d.eject_until > g_now:
            if ign < 0:
                ign = 1 if all_ejected(r) else 0
            if ign == 0:
                continue
        for j in range(d.nslots):
            dc = &d.conns[j]
            if not dc_can_join(dc):
                continue
            if r.lb == LB_RTT:
                score = (d.rtt_ms if d.rtt_samples else 0.0) * (dc.ninflight + 1) / d.weight
            elif r.lb == LB_LEAST_PENDING:
                score = (d.n_active + 1.0) / d.weight
            elif r.lb == LB_NONE:
                score = i
            else:
                score = (dc.ninflight + 1.0) / d.weight
            if best == NULL or score < best_score or (score == best_score and dc.ninflight < best.ninflight):
                best = dc
                best_score = score
    return best


cdef Exchange* pipe_unlink_from(DConn* dc, Exchange* first) noexcept nogil:
    """Take `first` and every exchange behind it off the connection; return
    them, still linked by pnext.  Request bytes not yet written belong to the
    newest: they are dropped with it (the connection will not be reused)."""
    cdef Exchange* y
    cdef Exchange* prev = NULL
    if first == NULL:
        return NULL
    y = dc.x
    while y != NULL and y != first:
        prev = y
        y = y.pnext
    if y == NULL:
        return NULL
    if prev == NULL:
        dc.x = NULL
    else:
        prev.pnext = NULL
    if not out_empty(&dc.conn.out):
        out_release(&dc.conn.out)        # the newest is always among those taken off
    dc.xlast = prev
    y = first
    while y != NULL:
        y.dc = NULL
        dc.ninflight -= 1
        dc.ds.n_active -= 1
        y = y.pnext
    return first


cdef void pipe_replay_list(Exchange* y, DownstreamRt* ds, Exchange* skip) noexcept nogil:
    """Exchanges taken off a connection before any byte of their response:
    each is replayed once elsewhere (via the pending queue) or answered 502.
    `skip` is one whose client is gone (its caller frees it)."""
    cdef Exchange* nx
    cdef UConn* uc
    cdef bint queued = False
    while y != NULL:
        nx = y.pnext
        y.pnext = NULL
        if y != skip:
            uc = y.uc
            if (y.flags & (XF_RETRIED | XF_RESP_STARTED)) or not (y.flags & XF_PIPE_OK) \
                    or not rule_alive(y.rule):
                c_errors_inc()
                rp_elog(g_errfd, 3, "downstream %s (%s): connection lost with a request in flight -> 502",
                        ds.name, ds.label)
                uc_respond(uc, 502, (y.flags & XF_REQ_DONE) != 0 and (y.flags & XF_KEEPALIVE) != 0)
            else:
                rp_elog(g_errfd, 6, "downstream %s (%s): connection ended with a request in flight; "
                        "retrying it on another connection", ds.name, ds.label)
                y.flags |= XF_RETRIED
                y.flags &= ~XF_REQ_SENT_ANY
                y.body_in = 0
                y.failed_ds = ds
                uc_move(uc, U_PENDING)
                timer_stop(&uc.conn.timer)
                pend_add(y)
                queued = True
        y = nx
    if queued:
        pend_serve()


cdef void pipe_drop(DConn* dc, Exchange* x) noexcept nogil:
    """The client of `x`, in flight behind the oldest exchange, went away.
    Its response will still come, and nothing may read it for another
    client: the connection ends after the oldest exchange's response, and
    the requests behind that one go elsewhere."""
    dc.conn.flags |= DF_NO_REUSE
    pipe_replay_list(pipe_unlink_from(dc, dc.x.pnext), dc.ds, x)


cdef void pipe_response_done(DConn* dc) noexcept nogil:
    """The oldest exchange's response is complete and keeps the connection
    open: hand the connection to the next one in flight."""
    cdef Exchange* x = dc.x
    cdef UConn* uc = x.uc
    cdef DownstreamRt* ds = dc.ds
    ds.fails_in_row = 0
    ds.ejections = 0
    dc_detach(dc)                   # keeps the bytes already read past this response
    uc_x_end(uc)
    uc_move(uc, U_WAIT)
    if dc.x != NULL:
        dc_move_phase(dc, R_HEAD)
        dc.conn.flags &= (CN_READABLE | CN_WRITABLE | CN_RDHUP | DF_NO_REUSE)
        if dc.conn.rbuf != NULL and dc.conn.rpos < dc.conn.rend:
            dc.conn.flags |= DF_GOT_BYTES
        llhttp_reset(&dc.conn.parser)
        dc.assigned_at = g_now_us
        timer_arm(&dc.conn.timer, ds.read_timeout_ms)
        dc_read(dc)                 # parses what is buffered, reads on while readable
    else:
        dc_recycle(dc)              # what was behind it had to go elsewhere
    pend_serve()                    # a place in a pipeline is free
    if uc.conn.state == U_CLOSED:
        return
    if out_empty(&uc.conn.out):
        uc_after_response(uc)
