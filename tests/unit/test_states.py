"""The state tables of the fast path (rproxy/fastpath/states.pxi), read from
the compiled core: every state can be reached from where a machine starts,
every live state can end, and the moves that must never happen are absent."""
from collections import deque

import pytest

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols, then the core)
from rproxy import _fastpath

TABLES = _fastpath.state_tables()

# where each machine starts, and where it ends
START = {"client": "idle", "downstream": "down", "response": "head"}
FINAL = {"client": {"closed"}, "downstream": {"down"}, "response": {"done", "tunnel"}}


def reachable(pairs, start):
    seen, todo = {start}, deque([start])
    while todo:
        s = todo.popleft()
        for a, b in pairs:
            if a == s and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


@pytest.mark.parametrize("machine", sorted(TABLES))
def test_table_is_well_formed(machine):
    states, pairs = TABLES[machine]
    assert len(set(states)) == len(states), states
    assert pairs and len(set(pairs)) == len(pairs), f"{machine}: a move is listed twice"
    for a, b in pairs:
        assert a in states and b in states and a != b, (machine, a, b)


@pytest.mark.parametrize("machine", sorted(TABLES))
def test_every_state_is_reachable_and_can_end(machine):
    states, pairs = TABLES[machine]
    assert reachable(pairs, START[machine]) == set(states), machine
    for s in states:
        assert reachable(pairs, s) & FINAL[machine], f"{machine}: {s} can never end"


def test_client_moves_that_must_not_happen():
    _, pairs = TABLES["client"]
    moves = set(pairs)
    # closed is final: its struct is freed at the end of the loop turn
    assert not [b for a, b in moves if a == "closed"]
    # a tunnel carries raw bytes until it closes: no more HTTP on it
    assert {b for a, b in moves if a == "tunnel"} == {"closed"}
    # keep-alive only after a response: nothing but a finished exchange goes idle
    assert {a for a, b in moves if b == "idle"} == {"wait"}
    # every live state can be closed at once (a reset, an error, a stop)
    assert {a for a, b in moves if b == "closed"} == set(TABLES["client"][0]) - {"closed"}


def test_downstream_and_response_moves():
    assert ("idle", "connecting") not in TABLES["downstream"][1]     # an idle connection is connected
    assert ("down", "idle") not in TABLES["downstream"][1]           # only a connected one is pooled
    assert not [b for a, b in TABLES["response"][1] if a == "tunnel"]   # a tunnel never speaks HTTP again

