"""Pipelining to downstreams (`pipeline = N`): the real rproxy in front of a
real downstream that holds requests on demand and counts, per connection,
how many requests it has received and not yet answered.

Each test first brings the proxy into a known state by waiting for what the
downstream (or the proxy's own counters) reports -- never by sleeping -- and
only then lets the held request go."""
from __future__ import annotations

import socket
import time

from support.downstream import Downstream, _response
from support.proc import read_response, request
from support.stats import worker_stats


def conf(port, ds_port, pipeline=4, connections=1, extra=""):
    return f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds_port}  connections = {connections}  pipeline = {pipeline}
                   max-connections = {connections}
                   {extra} }}
    vhost "*" {{ rule all {{ uri-gmatch = "*"  downstreams = {{ d }} }} }}
}}
"""


def send(port, raw: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(raw)
    return s


def get(port, path: str) -> socket.socket:
    return send(port, f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())


def answer(s: socket.socket):
    try:
        return read_response(s)[:3:2]          # (status, body)
    finally:
        s.close()


def wait_until(cond, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def wait_pending(p, n: int):
    """Wait until the worker's pending queue holds n requests."""
    def ok():
        return [s["pending"] for s in worker_stats(p).values()] == [n]
    wait_until(ok, f"{n} pending requests")


def received(ds, path: str) -> list:
    return [r.conn_id for r in list(ds.requests) if r.target == path]


def test_four_clients_share_one_connection(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, pipeline=4), port)
    first = get(port, "/hold/a")
    wait_until(lambda: received(downstream, "/hold/a"), "the first request reached the downstream")
    others = [get(port, f"/p{i}") for i in (2, 3, 4)]
    cid = downstream.wait_depth(4)                  # all four in flight on one connection
    downstream.release("a")
    assert answer(first) == (200, b"/hold/a")
    for i, s in zip((2, 3, 4), others):
        assert answer(s) == (200, b"/p%d" % i)      # each client its own response
    assert downstream.connections == 1
    assert {r.conn_id for r in downstream.requests} == {cid}
    assert downstream.depth_max[cid] == 4
    assert not downstream.errors
    assert "-> 502" not in p.read_log()


def test_depth_never_exceeds_the_configured_bound(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, pipeline=2), port)
    first = get(port, "/hold/a")
    wait_until(lambda: received(downstream, "/hold/a"), "the first request reached the downstream")
    second = get(port, "/p2")
    downstream.wait_depth(2)
    rest = [get(port, f"/p{i}") for i in (3, 4, 5)]
    wait_pending(p, 3)                              # the others wait: the pipeline is full
    assert max(downstream.depth_now.values()) == 2
    downstream.release("a")
    assert answer(first) == (200, b"/hold/a")
    assert answer(second) == (200, b"/p2")
    for i, s in zip((3, 4, 5), rest):
        assert answer(s) == (200, b"/p%d" % i)
    assert max(downstream.depth_max.values()) == 2
    assert downstream.connections == 1


def test_a_post_never_joins_a_pipeline_nor_is_joined(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, pipeline=4), port)
    # behind a GET in flight: the POST waits, a later GET is pipelined past it
    first = get(port, "/hold/a")
    wait_until(lambda: received(downstream, "/hold/a"), "the first request reached the downstream")
    post = send(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    wait_pending(p, 1)
    later = get(port, "/p3")
    cid = downstream.wait_depth(2)
    downstream.release("a")
    assert answer(first) == (200, b"/hold/a")
    assert answer(later) == (200, b"/p3")
    status, body = answer(post)
    assert status == 200 and b'"length": 5' in body
    assert [(r.target, r.conn_id) for r in downstream.requests] == [("/hold/a", cid), ("/p3", cid),
                                                                   ("/echo", cid)]
    assert downstream.depth_max[cid] == 2          # the POST was never in flight with them
    # a POST in flight: a GET does not join it
    post = send(port, b"POST /hold/b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    wait_until(lambda: received(downstream, "/hold/b"), "the POST reached the downstream")
    behind = get(port, "/p4")
    wait_pending(p, 1)
    assert max(downstream.depth_now.values()) == 1
    downstream.release("b")
    assert answer(post) == (200, b"/hold/b")
    assert answer(behind) == (200, b"/p4")
    assert [r.target for r in downstream.requests if r.method == "POST"] == ["/echo", "/hold/b"]
    assert max(downstream.depth_max.values()) == 2


def test_pipeline_1_never_pipelines(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, pipeline=1), port)
    first = get(port, "/hold/a")
    wait_until(lambda: received(downstream, "/hold/a"), "the first request reached the downstream")
    second = get(port, "/p2")
    wait_pending(p, 1)
    downstream.release("a")
    assert answer(first) == (200, b"/hold/a")
    assert answer(second) == (200, b"/p2")
    assert max(downstream.depth_max.values()) == 1


def _three_in_flight(port, ds):
    first = get(port, "/hold/a")
    wait_until(lambda: received(ds, "/hold/a"), "the first request reached the downstream")
    rest = [get(port, "/p2"), get(port, "/p3")]
    cid = ds.wait_depth(3)
    return first, rest, cid


def _three_answered(p, port, ds):
    """Three requests in flight on one connection, the first released:
    each client gets its own answer and none is a 502.  Returns the
    connection id they were in flight on."""
    first, rest, cid = _three_in_flight(port, ds)
    ds.release("a")
    assert answer(first) == (200, b"/hold/a")
    assert answer(rest[0]) == (200, b"/p2")
    assert answer(rest[1]) == (200, b"/p3")
    assert "-> 502" not in p.read_log()
    return cid


def test_downstream_closing_after_the_first_response_replays_the_rest(start_rproxy, port):
    def handler(req, s):
        keep = Downstream.default_handler(req, s)
        return keep and not req.target.startswith("/hold/")    # close after answering the first
    ds = Downstream(handler=handler)
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4), port)
        _three_answered(p, port, ds)
        # they were in flight on the connection that closed (wait_depth saw
        # them there, unanswered), and were answered on a new one
        assert ds.connections == 2
        for path in ("/p2", "/p3"):
            assert received(ds, path) == [2]
    finally:
        ds.close()


def _ending_response(kind):
    def handler(req, s):
        if req.target.startswith("/hold/"):
            if kind == "connection-close":
                s.sendall(_response(200, b"/hold/a", [("Connection", "close")]))
                return True             # ... and answers the rest anyway: must never be used
            s.sendall(b"HTTP/1.1 200 OK\r\n\r\n/hold/a")   # close-delimited
            return False
        if req.conn_id == 1:
            s.sendall(_response(200, b"WRONG"))
            return True
        return Downstream.default_handler(req, s)
    return handler


def test_connection_close_response_sends_the_rest_elsewhere(start_rproxy, port):
    ds = Downstream(handler=_ending_response("connection-close"))
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4), port)
        assert _three_answered(p, port, ds) == 1
        assert ds.connections == 2
    finally:
        ds.close()


def test_close_delimited_response_sends_the_rest_elsewhere(start_rproxy, port):
    ds = Downstream(handler=_ending_response("close-delimited"))
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4), port)
        _three_answered(p, port, ds)
    finally:
        ds.close()


def test_truncated_response_closes_its_client_and_replays_the_rest(start_rproxy, port):
    """The first response stops halfway (the downstream stalls: read timeout):
    its client's connection is closed, as without pipelining; the two behind
    it had no byte of their answer yet and are replayed."""
    def handler(req, s):
        if req.target.startswith("/hold/"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            ds._event("never").wait(30)     # stalls (until the test ends)
            return False
        return Downstream.default_handler(req, s)
    ds = Downstream(handler=handler)
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4, extra="read-timeout = 1s"), port)
        first, rest, cid = _three_in_flight(port, ds)
        ds.release("a")
        buf = b""
        first.settimeout(10)
        while True:                     # the truncated one: what came, then the close
            d = first.recv(65536)
            if not d:
                break
            buf += d
        first.close()
        assert buf.startswith(b"HTTP/1.1 200") and buf.endswith(b"only part")
        assert answer(rest[0]) == (200, b"/p2")
        assert answer(rest[1]) == (200, b"/p3")
        assert "read timeout -> 504" in p.read_log()
    finally:
        ds.release("never")
        ds.close()


def test_pipelined_responses_arriving_in_one_read_are_each_parsed(start_rproxy, port):
    """The downstream answers three pipelined requests with one write: bytes
    past the end of one response are the next one's (a HEAD's response, with
    its Content-Length and no body, in the middle)."""
    def handler(req, s):
        if req.target.startswith("/hold/") or req.target == "/p2":
            return True                 # answered below, with the one behind them
        if req.target == "/p3":
            s.sendall(_response(200, b"/hold/a") + _response(200, b"/p2", [("X-N", "2")], head_only=True)
                      + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n/p3\r\n0\r\n\r\n")
            return True
        return Downstream.default_handler(req, s)
    ds = Downstream(handler=handler)
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4), port)
        first = get(port, "/hold/a")
        wait_until(lambda: received(ds, "/hold/a"), "the first request reached the downstream")
        head = send(port, b"HEAD /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        third = get(port, "/p3")
        ds.wait_depth(3)
        ds.release("a")
        assert answer(first) == (200, b"/hold/a")
        status, headers, body, rest = read_response(head, head_request=True)
        head.close()
        assert (status, body, rest) == (200, b"", b"") and ("x-n", "2") in headers
        assert answer(third) == (200, b"/p3")
        # the connection is still good for the next request
        assert request(p.port, b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")[:3:2] == (200, b"/after")
        assert ds.connections == 1
    finally:
        ds.close()


def test_downstream_dying_with_requests_in_flight_gives_502s_and_recovers(start_rproxy, port):
    ds = Downstream()
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4, extra="retry = 50ms"), port)
        first, rest, cid = _three_in_flight(port, ds)
        ds.close()                      # connection reset, nothing listening any more
        assert answer(first)[0] == 502
        assert answer(rest[0])[0] == 502
        assert answer(rest[1])[0] == 502
        assert p.poll() is None
        ds2 = Downstream(bind_port=ds.port)
        try:
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline and status != 200:
                status = request(p.port, b"GET /back HTTP/1.1\r\nHost: a\r\n\r\n")[0]
                if status != 200:
                    time.sleep(0.05)
            assert status == 200, p.read_log()
        finally:
            ds2.close()
    finally:
        ds.close()


def test_interim_response_goes_to_its_own_client_only(start_rproxy, port):
    """A 103 before the first response of a pipeline (in one write with
    it) is relayed to that client, and to no other."""
    def handler(req, s):
        if req.target == "/hold/early":
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + _response(200, b"/hold/early"))
            return True
        return Downstream.default_handler(req, s)
    ds = Downstream(handler=handler)
    try:
        start_rproxy(conf(port, ds.port, pipeline=4), port)
        first = get(port, "/hold/early")
        wait_until(lambda: received(ds, "/hold/early"), "the first request reached the downstream")
        rest = [get(port, "/p2"), get(port, "/p3")]
        ds.wait_depth(3)
        ds.release("early")
        status, headers, body, more = read_response(first)
        assert status == 103 and ("link", "</s.css>") in headers
        assert read_response(first, more)[:3:2] == (200, b"/hold/early")
        first.close()
        for i, s in zip((2, 3), rest):
            status, headers, body, more = read_response(s)
            s.close()
            assert (status, body, more) == (200, b"/p%d" % i, b"")
        assert ds.connections == 1
    finally:
        ds.close()


def test_switching_protocols_to_a_plain_request_sends_the_rest_elsewhere(start_rproxy, port):
    """A 101 to a request that asked for no upgrade fails that request (502);
    the two pipelined behind it are replayed on another downstream's
    connection, never answered from the switched one."""
    def handler(req, s):
        if req.target == "/hold/switch":
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
            return True                 # ... and the requests behind get "WRONG": never used
        s.sendall(_response(200, b"WRONG"))
        return True
    bad = Downstream(handler=handler)
    good = Downstream()
    try:
        text = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream bad {{ addr = 127.0.0.1  port = {bad.port}  connections = 1  pipeline = 4 }}
    downstream good {{ addr = 127.0.0.1  port = {good.port}  connections = 1 }}
    vhost "*" {{ rule all {{ uri-gmatch = "*"  downstreams = {{ bad, good }}  lb-method = none }} }}
}}
"""
        p = start_rproxy(text, port)
        first = get(port, "/hold/switch")       # bad's connection (the rule's order)
        wait_until(lambda: received(bad, "/hold/switch"), "the first request reached bad")
        other = get(port, "/hold/g")            # good's idle connection
        wait_until(lambda: received(good, "/hold/g"), "the second request reached good")
        rest = [get(port, "/p3"), get(port, "/p4")]     # pipelined on bad's
        bad.wait_depth(3)
        bad.release("switch")
        assert answer(first)[0] == 502
        good.release("g")
        assert answer(other) == (200, b"/hold/g")
        assert answer(rest[0]) == (200, b"/p3")
        assert answer(rest[1]) == (200, b"/p4")
        assert sorted(r.target for r in good.requests) == ["/hold/g", "/p3", "/p4"]
        assert "101 Switching Protocols to a request that asked for none" in p.read_log()
    finally:
        bad.close()
        good.close()


def test_mixed_load_every_client_gets_its_own_responses(start_rproxy, port):
    """Sixteen keep-alive clients, two pooled connections pipelining up to
    four deep, and a downstream that ends about one connection in twenty
    (Connection: close, or a close-delimited body); some clients leave before
    their answer, some send a POST.  Every answer that arrives is the one for
    its own request, nothing is lost, and the worker ends with nothing held."""
    import random
    import threading
    import http.client

    rnd = random.Random(5)
    lock = threading.Lock()

    def handler(req, s):
        with lock:
            r = rnd.random()
        body = req.target.encode()
        if req.method != "GET":
            return Downstream.default_handler(req, s)
        if r < 0.03:
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return False
        if r < 0.05:
            s.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + body)
            return False
        return Downstream.default_handler(req, s)

    ds = Downstream(handler=handler)
    try:
        p = start_rproxy(conf(port, ds.port, pipeline=4, connections=2), port)
        bad = []

        def client(k):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for i in range(150):
                path = f"/c{k}/{i}"
                try:
                    if i % 23 == 5:
                        get(port, "/slow/5").close()      # gone before its answer
                    elif i % 17 == 0:
                        c.request("POST", "/echo", body=b"x" * 100)
                        r = c.getresponse()
                        if r.status != 200 or b'"length": 100' not in r.read():
                            bad.append((path, r.status))
                    else:
                        c.request("GET", path)
                        r = c.getresponse()
                        b = r.read()
                        if (r.status, b) != (200, path.encode()):
                            bad.append((path, r.status, b[:40]))
                except (OSError, http.client.HTTPException) as e:
                    bad.append((path, repr(e)))
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bad == []
        assert 2 <= max(ds.depth_max.values()) <= 4     # it did pipeline, never deeper
        assert "-> 502" not in p.read_log()
        # the fixture then checks the worker is back to zero
    finally:
        ds.close()


def test_every_pipelined_and_replayed_request_gets_its_access_log_line(start_rproxy, port, tmp_path):
    """Three requests in flight on one connection; the downstream closes it
    after the first response, so two are replayed on a new connection.
    Each request is logged once, with its own path, status and the local
    port of the connection that really answered it."""
    def handler(req, s):
        keep = Downstream.default_handler(req, s)
        return keep and not req.target.startswith("/hold/")
    ds = Downstream(handler=handler)
    log = tmp_path / "access.log"
    try:
        p = start_rproxy("access-log-flush = 20ms\n" + conf(port, ds.port, pipeline=4, extra="").replace(
            'vhost "*" {', f'logging {{ request {{ enabled = true  output = "file:{log}"  '
                           f'format = "{{URI}} {{STATUS}} {{DS_SPORT}}" }} }}\n    vhost "*" {{', 1), port)
        _three_answered(p, port, ds)
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, "three log lines")
        time.sleep(0.1)                              # a fourth line, if any, would be flushed by now
        lines = sorted(log.read_text().splitlines())
        assert [ln.split()[:2] for ln in lines] == [["/hold/a", "200"], ["/p2", "200"], ["/p3", "200"]]
        sport = {ln.split()[0]: ln.split()[2] for ln in lines}
        assert sport["/p2"] == sport["/p3"] != sport["/hold/a"]    # replayed together on the new one
    finally:
        ds.close()
