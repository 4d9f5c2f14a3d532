"""The balancer, method by method, on synthetic downstreams (no sockets):
deterministic sequences of the fast path's own choice function
(testhook.lb_sequence calls balance.pxi's lb_choose)."""
from collections import Counter

import pytest

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy import _fastpath as fp

METHODS = ["rtt", "roundrobin", "most-idle", "none", "random", "least-pending"]


def seq(method, dss, picks, **kw):
    return fp.lb_sequence(method, dss, picks, **kw)


def test_roundrobin_equal_weights_cycles_in_order():
    assert seq("roundrobin", [{}, {}, {}], 7) == [0, 1, 2, 0, 1, 2, 0]


def test_roundrobin_weights_are_smooth_and_proportional():
    # nginx's smooth weighted round-robin: a a b a c a a, never five a in a row
    assert seq("roundrobin", [{"weight": 5}, {}, {}], 7) == [0, 0, 1, 0, 2, 0, 0]
    assert seq("roundrobin", [{"weight": 2}, {"weight": 1}], 6) == [0, 1, 0, 0, 1, 0]
    counts = Counter(seq("roundrobin", [{"weight": 3}, {"weight": 2}, {"weight": 1}], 600))
    assert counts == {0: 300, 1: 200, 2: 100}


def test_roundrobin_skips_what_cannot_serve():
    dss = [{}, {"enabled": False}, {"down": True}, {"idle": 0}, {}]
    assert seq("roundrobin", dss, 4) == [0, 4, 0, 4]


def test_none_is_an_ordered_fallback():
    assert seq("none", [{}, {}, {}], 3) == [0, 0, 0]
    assert seq("none", [{"idle": 0}, {"down": True}, {}], 2) == [2, 2]


def test_most_idle_takes_the_most_idle_per_weight():
    assert seq("most-idle", [{"idle": 2}, {"idle": 5}, {"idle": 3}], 1) == [1]
    # 4 idle at weight 4 is 1 per unit: less idle than 3 at weight 1
    assert seq("most-idle", [{"idle": 4, "weight": 4}, {"idle": 3}], 1) == [1]


def test_least_pending_spreads_in_flight_requests_by_weight():
    picks = seq("least-pending", [{"weight": 2}, {}], 6, hold=True)
    assert picks == [0, 0, 1, 0, 0, 1]
    assert seq("least-pending", [{"active": 3}, {"active": 1}, {"active": 2}], 1) == [1]


def test_rtt_prefers_the_fastest_and_measures_the_unmeasured_first():
    assert seq("rtt", [{"rtt": 9.0}, {"rtt": 2.0}, {"rtt": 5.0}], 2) == [1, 1]
    # a downstream never measured is tried before a measured one
    assert seq("rtt", [{"rtt": 1.0}, {}], 1) == [1]
    # weight divides the time: 6 ms at weight 3 beats 3 ms at weight 1
    assert seq("rtt", [{"rtt": 3.0}, {"rtt": 6.0, "weight": 3}], 1) == [1]


def test_random_follows_the_weights():
    counts = Counter(seq("random", [{"weight": 3}, {"weight": 1}], 8000, seed=12345))
    assert set(counts) == {0, 1}
    assert 0.72 < counts[0] / 8000 < 0.78
    again = Counter(seq("random", [{"weight": 3}, {"weight": 1}], 8000, seed=12345))
    assert again == counts              # seeded: the same sequence


@pytest.mark.parametrize("method", METHODS)
def test_ejected_downstreams_are_skipped_unless_all_are(method):
    picks = seq(method, [{"ejected": True}, {}, {"ejected": True}], 5, hold=True)
    assert set(picks) == {1}
    # all ejected: serve anyway rather than turn a partial outage into a total one
    picks = seq(method, [{"ejected": True}, {"ejected": True}], 4, hold=True)
    assert -1 not in picks


@pytest.mark.parametrize("method", METHODS)
def test_nothing_usable_is_minus_one(method):
    assert seq(method, [{"idle": 0}, {"enabled": False}, {"down": True}], 2) == [-1, -1]
