"""A pooled downstream connection's life: how it is opened (IPv6, unix
sockets, connect timeout), how long it serves (max-requests, idle-timeout),
and when a downstream leaves the rotation (passive ejection, enabled = false
on reload).  Real rproxy, real downstream servers on 127.0.0.1 / ::1."""
from __future__ import annotations

import http.client
import socket
import time

import pytest

from support.confs import named_downstreams, one_downstream
from support.downstream import Downstream
from support.proc import request


def get(port, target):
    return request(port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())


def keepalive_gets(port, targets):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for t in targets:
        c.request("GET", t)
        r = c.getresponse()
        out.append((r.status, r.read()))
    c.close()
    return out


def wait_log(p, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in p.read_log():
            return p.read_log()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{p.read_log()[-2000:]}")


def reset_connection(s):
    """Close with an RST (SO_LINGER 0), as a crashing server would."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def conn_ids(ds, prefix):
    return [r.conn_id for r in ds.requests if r.target.startswith(prefix)]


def test_max_requests_retires_a_connection_after_that_many(start_rproxy, downstream, port):
    p = start_rproxy(one_downstream(port, downstream.port, connections=1, ds_extra="max-requests = 3"), port)
    results = keepalive_gets(p.port, [f"/m{i}" for i in range(9)])
    assert [s for s, _ in results] == [200] * 9
    assert [b for _, b in results] == [f"/m{i}".encode() for i in range(9)]
    ids = conn_ids(downstream, "/m")
    assert len(ids) == 9
    # three connections, three requests each, in order
    assert len(set(ids)) == 3, ids
    assert ids == sorted(ids) and all(ids.count(i) == 3 for i in set(ids)), ids


def test_idle_timeout_replaces_an_idle_pooled_connection(start_rproxy, downstream, port):
    p = start_rproxy(one_downstream(port, downstream.port, connections=1, ds_extra="idle-timeout = 300ms"), port)
    assert get(p.port, "/i1")[0] == 200
    time.sleep(1.0)                     # past the idle timeout: the pool refreshed its connection
    assert get(p.port, "/i2")[0] == 200
    a, b = conn_ids(downstream, "/i")
    assert a != b


def test_unix_socket_downstream(start_rproxy, port, tmp_path):
    path = str(tmp_path / "app.sock")
    ds = Downstream(host=f"unix:{path}")
    try:
        p = start_rproxy(named_downstreams(port, {"app": f'addr = "unix:{path}"  connections = 2'}), port)
        results = keepalive_gets(p.port, ["/u1", "/u2", "/u3"])
        assert results == [(200, b"/u1"), (200, b"/u2"), (200, b"/u3")]
        assert conn_ids(ds, "/u")
    finally:
        ds.close()


def test_ipv6_downstream(start_rproxy, port):
    try:
        ds = Downstream(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        p = start_rproxy(one_downstream(port, ds.port).replace("addr = 127.0.0.1\n        port",
                                                                "addr = ::1\n        port"), port)
        status, _, body = get(p.port, "/v6")
        assert (status, body) == (200, b"/v6")
        assert conn_ids(ds, "/v6")
    finally:
        ds.close()


def test_connect_timeout(start_rproxy, port):
    """A downstream whose listen backlog is full: its SYNs are dropped, the
    connect never completes, and connect-timeout (not the 60 s read
    timeout) decides; the client gets a 502 and the log says why."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fillers = []
    try:
        for _ in range(3):                  # fill the accept queue: later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", ls.getsockname()[1]))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.2)
        p = start_rproxy(one_downstream(port, ls.getsockname()[1], connections=1,
                                        ds_extra="connect-timeout = 300ms  retry = 10s"), port)
        status = get(p.port, "/ct")[0]
        log = wait_log(p, "is down")
        assert status in (502, 503), status
        assert "timed out" in log.lower(), log[-1500:]
    finally:
        for s in fillers:
            s.close()
        ls.close()


@pytest.fixture
def good_and_resetting():
    """Two downstreams: a answers, b accepts and resets every request."""
    def reset(req, s):
        reset_connection(s)
        return False

    a, b = Downstream(), Downstream(handler=reset)
    yield a, b
    a.close()
    b.close()


def proxy_over(start_rproxy, port, a, b, b_extra=""):
    return start_rproxy(named_downstreams(port, {
        "a": f"addr = 127.0.0.1  port = {a.port}  connections = 2",
        "b": f"addr = 127.0.0.1  port = {b.port}  connections = 2  retry = 20ms  {b_extra}"},
        lb="roundrobin"), port)


def test_failing_downstream_is_ejected_and_its_requests_replayed(start_rproxy, port, good_and_resetting):
    """b resets every request; the rule's other downstream takes the
    replays, so every client sees 200; after 3 failures in a row (the
    default max-fails) b is ejected and stops being picked."""
    a, b = good_and_resetting
    p = proxy_over(start_rproxy, port, a, b)
    statuses = [get(p.port, f"/e{i}")[0] for i in range(30)]
    assert statuses == [200] * 30
    log = wait_log(p, "ejected for 5000 ms after 3 failures in a row")
    assert "downstream b" in log
    tried_on_b = len(conn_ids(b, "/e"))
    assert 3 <= tried_on_b <= 6, tried_on_b        # ejected after 3; roundrobin would send 15
    assert len(conn_ids(a, "/e")) == 30             # every request answered by a


def test_enabled_false_on_reload_takes_a_downstream_out(start_rproxy, port):
    a, b = Downstream(), Downstream()

    def conf(b_enabled):
        return named_downstreams(port, {
            "a": f"addr = 127.0.0.1  port = {a.port}  connections = 2",
            "b": f"addr = 127.0.0.1  port = {b.port}  connections = 2  enabled = {b_enabled}"}, lb="roundrobin")
    try:
        p = start_rproxy(conf("true"), port)
        assert [get(p.port, f"/before{i}")[0] for i in range(10)] == [200] * 10
        assert conn_ids(b, "/before")
        with open(p.conf, "w") as f:
            f.write(conf("false"))
        p.signal(1)                                     # SIGHUP
        wait_log(p, "reloaded")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(p.workers()) != 1:
            time.sleep(0.05)
        assert [get(p.port, f"/after{i}")[0] for i in range(10)] == [200] * 10
        assert not conn_ids(b, "/after")
        assert len(conn_ids(a, "/after")) == 10
    finally:
        a.close()
        b.close()


def test_single_downstream_resetting_a_fresh_connection_is_retried_on_a_newer_one(start_rproxy, port):
    """The only downstream resets the very first request it gets (as one
    restarting would): the replay is not sent on that connection's twin,
    opened at the same moment, but waits for one opened after the failure;
    the client sees 200."""
    seen = []

    def reset_first(req, s):
        seen.append(req.conn_id)
        if len(seen) == 1:
            reset_connection(s)
            return False
        return Downstream.default_handler(req, s)

    ds = Downstream(handler=reset_first)
    try:
        p = start_rproxy(one_downstream(port, ds.port, connections=2), port)
        deadline = time.monotonic() + 5
        while ds.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.02)                # both pooled connections are open before the request
        assert ds.connections == 2
        status, _, body = get(p.port, "/fresh")
        assert (status, body) == (200, b"/fresh")
        assert len(seen) == 2
        assert seen[1] > 2, (seen, ds.connections)     # a third connection, not the twin
        assert "retrying the request on another connection" in p.read_log()
    finally:
        ds.close()


@pytest.mark.parametrize("max_fails, fail_timeout", [(0, "5s"), (2, "300ms")])
def test_max_fails_and_fail_timeout(start_rproxy, port, good_and_resetting, max_fails, fail_timeout):
    """max-fails = 0 never ejects (every other request still meets b and is
    replayed on a); max-fails = 2 ejects after two, for fail-timeout, after
    which b is tried again."""
    a, b = good_and_resetting
    p = proxy_over(start_rproxy, port, a, b, f"max-fails = {max_fails}  fail-timeout = {fail_timeout}")
    statuses = [get(p.port, f"/f{i}")[0] for i in range(20)]
    assert statuses == [200] * 20
    if max_fails == 0:
        assert "ejected" not in p.read_log()
        assert len(conn_ids(b, "/f")) >= 8          # roundrobin keeps sending b its share
    else:
        wait_log(p, "downstream b (127.0.0.1:%d) ejected for 300 ms after 2 failures in a row" % b.port)
        tried = len(conn_ids(b, "/f"))
        assert 2 <= tried <= 4, tried
        time.sleep(0.5)                             # the ejection is over: b is tried again
        assert [get(p.port, f"/g{i}")[0] for i in range(4)] == [200] * 4
        assert conn_ids(b, "/g")
