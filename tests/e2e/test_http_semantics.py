"""HTTP/1.1 semantics through the real proxy, with scripted downstreams that
record exactly what they received: framing cases, interim responses,
upgrades, strict parsing (the smuggling corpus end to end), limits and the
proxy's own error statuses."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from support.confs import one_downstream
from support.downstream import _response, payload, serve_raw
from support.proc import read_response, request

SMUGGLE = [
    b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
    b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
    b"GET /s HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    b"GET /s HTTP/1.1\nHost: a\n\n",
    b"GET /s HTTP/1.1\r\nHost: a\r\nX-A: b\x00\r\n\r\n",
    # chunk size overflowing 64 bits
    b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000000\r\nx\r\n0\r\n\r\n",
    # chunk data longer than the chunk size: the rest would be a second request
    b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1\r\nxGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
]


def conf(port, ds_port, extra="", ds_extra="", connections=2):
    return one_downstream(port, ds_port, connections=connections, extra=extra, ds_extra=ds_extra)


@pytest.fixture
def proxy(start_rproxy, downstream, port):
    return start_rproxy(conf(port, downstream.port), port)


def read_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not d:
            break
        data += d
    return data


@pytest.mark.parametrize("raw", SMUGGLE, ids=range(len(SMUGGLE)))
def test_smuggling_never_reaches_the_downstream(proxy, downstream, raw):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(raw)
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 400 ") or data == b"", data[:100]
    # follow with a clean request on a new connection: the proxy still serves
    status, _, body = request(proxy.port, b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, body) == (200, b"/after")
    # A body-framing error is only seen after the head went out: the
    # downstream then sees that request cut short (the proxy closes the
    # connection), never a second request made of the client's bytes.
    assert all(e.startswith("closed inside") for e in downstream.errors), downstream.errors
    assert not [r for r in downstream.requests if r.target in ("/s", "/smuggled")
                and (r.header("content-length") and r.header("transfer-encoding"))]
    assert not [r for r in downstream.requests if r.target == "/smuggled"]


def test_missing_and_duplicate_host_are_400(proxy, downstream):
    assert request(proxy.port, b"GET /h HTTP/1.1\r\n\r\n")[0] == 400
    assert request(proxy.port, b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")[0] == 400
    assert not downstream.requests
    # HTTP/1.0 may omit Host: the proxy supplies one for the downstream
    status, _, body = request(proxy.port, b"GET /h10 HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, b"/h10")
    assert downstream.requests[-1].header("Host")


def test_limits_414_431(proxy, downstream):
    assert request(proxy.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 414
    many = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    assert request(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")[0] == 431
    big = b"X-Big: " + b"v" * 20000 + b"\r\n"
    assert request(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")[0] == 431
    assert not downstream.requests


def test_error_responses_have_bodies_and_keep_the_connection_when_allowed(proxy):
    # well-framed but invalid (no Host): 400, and the connection carries on
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        st1, h1, b1, buf = read_response(s)
        st2, _, b2, _ = read_response(s, buf)
    assert st1 == 400 and b1.startswith(b"400 ")
    assert (st2, b2) == (200, b"/y")
    # unparsable: 400 with Connection: close, the rest is never read
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        st1, h1, b1, buf = read_response(s)
        assert st1 == 400 and b1.startswith(b"400 ")
        assert dict(h1)["connection"] == "close"
        assert read_all(s) == buf == b""
    # no route: 404 with a body, connection kept
    assert request(proxy.port, b"GET /z HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 200


@pytest.mark.parametrize("buffering", [True, False])
def test_expect_100_continue(start_rproxy, port, buffering):
    """Streaming: the downstream's 100 is relayed and it sees the Expect.
    Request buffering: rproxy sends the 100 itself, reads the body, and the
    downstream gets neither the Expect nor (a second 100 to) the client."""
    def handler(req, s):
        return True

    got = {}

    def serve(req, s):
        # a downstream that honours Expect: it answers 100 before the body
        got["expect"] = req.header("Expect")
        return True

    # a raw downstream: read head, send 100, read body, send final response
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def run():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(4096)
            head, rest = buf.split(b"\r\n\r\n", 1)
            got["head"] = head
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            while len(rest) < 5:
                rest += c.recv(4096)
            got["body"] = rest
            c.sendall(_response(200, b"done"))

    threading.Thread(target=run, daemon=True).start()
    extra = "" if buffering else "request-buffering = false"
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1, extra=extra), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        st, _, _, buf = read_response(s)
        assert st == 100                           # before any body was sent
        assert ("head" in got) is not buffering    # buffering: nothing reached the downstream yet
        s.sendall(b"hello")
        st, _, body, _ = read_response(s, buf)
    ls.close()
    assert (st, body) == (200, b"done")
    assert got["body"] == b"hello"
    assert (b"expect: 100-continue" in got["head"].lower()) is not buffering


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_keep_alive(proxy, status):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /status/%d HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n" % status)
        st, _, body, buf = read_response(s)
        st2, _, body2, _ = read_response(s, buf)
    assert (st, body) == (status, b"")
    assert (st2, body2) == (200, b"/next")


def test_http10_keepalive(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        for i in range(3):
            s.sendall(b"GET /ka%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            st, headers, body, rest = read_response(s)
            assert (st, body, rest) == (200, b"/ka%d" % i, b"")
            assert dict(headers)["connection"] == "keep-alive"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /plain10 HTTP/1.0\r\n\r\n")
        data = read_all(s)                      # no keep-alive asked: closed after
    assert data.endswith(b"/plain10")


def test_chunk_extensions_and_trailers_are_forwarded(start_rproxy, port):
    seen = {}
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def run():
        c, _ = ls.accept()
        buf = b""
        while not buf.endswith(b"\r\n\r\n") or buf.count(b"\r\n\r\n") < 2:
            d = c.recv(4096)
            if not d:
                break
            buf += d
        seen["raw"] = buf
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                  b"3;ext=1\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
        time.sleep(0.5)

    threading.Thread(target=run, daemon=True).start()
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"4;name=value\r\nwxyz\r\n0\r\nX-Trailer: t\r\n\r\n")
        data = b""
        while not data.endswith(b"X-Sum: 42\r\n\r\n"):
            d = s.recv(4096)
            if not d:
                break
            data += d
    ls.close()
    assert b"4;name=value\r\nwxyz\r\n0\r\nX-Trailer: t\r\n\r\n" in seen["raw"]
    assert data.endswith(b"3;ext=1\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")


def raw_downstream(script):
    """A downstream that, per connection, reads one request head (and the
    Content-Length body) then runs script(conn, head) and closes."""
    heads = []

    def one(c):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            heads.append(head)
            if not script(c, head):
                return

    return serve_raw(one), heads


@pytest.mark.parametrize("garbage", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"HTTX/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"\x00\x01\x02garbage\r\n\r\n",
], ids=range(6))
def test_malformed_downstream_response_is_502(start_rproxy, port, garbage):
    def script(c, head):
        c.sendall(garbage)
        time.sleep(0.2)
        return False

    ls, _ = raw_downstream(script)
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1), port)
    status, _, body = request(p.port, b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
    ls.close()
    assert status == 502
    assert body.startswith(b"502 ")
    assert "502" in p.read_log()


def test_downstream_extra_bytes_never_leak_into_the_next_exchange(start_rproxy, port):
    n = {"count": 0}

    def script(c, head):
        n["count"] += 1
        if n["count"] == 1:
            # declares 5 bytes, sends 5 + a whole fake response
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            return True
        c.sendall(_response(200, b"second"))
        return True

    ls, heads = raw_downstream(script)
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        st1, _, b1, _ = read_response(s)
        s.sendall(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        st2, _, b2, _ = read_response(s)
    ls.close()
    assert (st1, b1) == (200, b"first")
    assert (st2, b2) == (200, b"second")
    assert "after its response" in p.read_log()


def test_websocket_upgrade_is_tunnelled_and_does_not_use_up_the_pool(start_rproxy, port):
    def script(c, head):
        if b"upgrade: websocket" in head.lower():
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\nhello-from-ds")
            while True:                           # echo until the client closes
                d = c.recv(4096)
                if not d:
                    return False
                c.sendall(d.upper())
        c.sendall(_response(200, b"plain"))
        return True

    ls, heads = raw_downstream(script)
    # ONE pooled connection: while the tunnel is open, other requests still work
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1), port)
    ws = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    ws.sendall(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: x\r\n\r\n")
    buf = b""
    while b"hello-from-ds" not in buf:
        buf += ws.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101 ")
    assert b"upgrade: websocket" in buf.lower()
    for word in (b"ping", b"more data"):
        ws.sendall(word)
        got = b""
        while len(got) < len(word):
            got += ws.recv(4096)
        assert got == word.upper()
    for i in range(3):
        assert request(p.port, b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")[:3:2] == (200, b"plain")
    ws.close()
    ls.close()
    upgrade_heads = [h for h in heads if b"upgrade: websocket" in h.lower()]
    assert len(upgrade_heads) == 1
    assert b"connection: upgrade" in upgrade_heads[0].lower()


def test_upgrade_refused_by_downstream_closes_client(start_rproxy, port):
    def script(c, head):
        c.sendall(_response(426, b"no"))
        return True

    ls, _ = raw_downstream(script)
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        st, headers, body, _ = read_response(s)
        assert (st, body) == (426, b"no")
        assert dict(headers)["connection"] == "close"
        assert read_all(s) == b""
    ls.close()


def test_early_response_before_request_body(start_rproxy, port):
    """The downstream answers 413 without reading the body: the client gets
    the 413 and the connection is closed (the rest of its body is unread)."""
    def script(c, head):
        c.sendall(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        time.sleep(0.3)
        return False

    ls, _ = raw_downstream(script)
    p = start_rproxy(conf(port, ls.getsockname()[1], connections=1, extra="request-buffering = false"), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        st, headers, body, _ = read_response(s)
    ls.close()
    assert (st, body) == (413, b"big")
    assert dict(headers)["connection"] == "close"


def test_head_response_with_content_length_does_not_desync(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        for _ in range(3):
            s.sendall(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
            st, headers, body, rest = read_response(s, head_request=True)
            assert (st, body, rest) == (200, b"", b"")
            assert dict(headers)["content-length"] == "5000"
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n")
        st, _, body, _ = read_response(s)
    assert body == payload(10)
