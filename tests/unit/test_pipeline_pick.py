"""The choice of a busy connection to pipeline on (lb_pick_pipelined),
deterministically, over synthetic downstreams: no sockets."""
from __future__ import annotations

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy._fastpath import testhook_pipeline_pick as pick


def ds(pipeline=4, conns=(), **kw):
    return {"pipeline": pipeline, "conns": [dict(c) for c in conns], **kw}


def c(n, **flags):
    return {"inflight": n, **flags}


def test_the_connection_with_the_fewest_in_flight():
    assert pick("roundrobin", [ds(conns=[c(3), c(1), c(2)])]) == (0, 1)
    assert pick("rtt", [ds(conns=[c(2), c(3), c(1)])]) == (0, 2)


def test_never_beyond_the_bound_nor_without_pipelining():
    assert pick("roundrobin", [ds(pipeline=2, conns=[c(2), c(2)])]) is None
    assert pick("roundrobin", [ds(pipeline=2, conns=[c(2), c(1)])]) == (0, 1)
    assert pick("roundrobin", [ds(pipeline=1, conns=[c(1)])]) is None


def test_only_behind_pipelinable_fully_written_requests_on_a_reusable_connection():
    for flag in ("no_reuse", "rdhup", "writing", "body"):
        assert pick("roundrobin", [ds(conns=[c(1, **{flag: True}), c(3)])]) == (0, 1), flag
        assert pick("roundrobin", [ds(conns=[c(1, **{flag: True})])]) is None, flag


def test_idle_and_down_slots_are_not_candidates():
    assert pick("roundrobin", [ds(conns=[c(0), c(2)])]) == (0, 1)


def test_methods_weigh_the_depth():
    # rtt: 10 ms with one in flight (20) beats 4 ms with four (20)? a tie: fewer in flight
    assert pick("rtt", [ds(rtt=10.0, conns=[c(1)]), ds(rtt=4.0, conns=[c(4)])]) == (0, 0)
    assert pick("rtt", [ds(rtt=10.0, conns=[c(2)]), ds(rtt=4.0, conns=[c(3)])]) == (1, 0)
    # least-pending: the downstream with the fewest exchanges in flight overall
    assert pick("least-pending", [ds(conns=[c(1), c(3)]), ds(conns=[c(2), c(1)])]) == (1, 1)
    # none: the rule's order first
    assert pick("none", [ds(conns=[c(3)]), ds(conns=[c(1)])]) == (0, 0)
    # weights divide
    assert pick("roundrobin", [ds(conns=[c(2)]), ds(weight=3, conns=[c(3)])]) == (1, 0)
