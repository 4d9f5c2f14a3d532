"""End to end: the real `rproxy` command in front of a real downstream.

GET and POST with Content-Length and chunked bodies (0 B / 1 KiB / 1 MiB)
both ways, 100 pipelined requests answered in order, keep-alive reuse of the
downstream pool, worker count and process titles, clean stop on SIGTERM.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import signal
import socket
import time

import psutil
import pytest

from support.confs import one_downstream
from support.downstream import payload
from support.proc import read_response, request

SIZES = [0, 1024, 1024 * 1024]


def conf(port, ds_port, workers=1, connections=4, extra=""):
    return one_downstream(port, ds_port, workers=workers, connections=connections, extra=extra)


@pytest.fixture
def proxy(start_rproxy, downstream, port):
    return start_rproxy(conf(port, downstream.port), port)


def test_get_returns_the_downstream_page(proxy, downstream):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    c.request("GET", "/hello/world?x=1")
    r = c.getresponse()
    assert r.status == 200
    assert r.read() == b"/hello/world"
    assert downstream.requests[-1].target == "/hello/world?x=1"
    assert downstream.requests[-1].method == "GET"


@pytest.mark.parametrize("size", SIZES)
def test_response_bodies_content_length(proxy, size):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    c.request("GET", f"/bytes/{size}")
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Length") == str(size)
    assert r.read() == payload(size)


@pytest.mark.parametrize("size", SIZES)
def test_response_bodies_chunked(proxy, size):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    c.request("GET", f"/chunked/{size}")
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.read() == payload(size)


@pytest.mark.parametrize("size", SIZES)
def test_post_content_length(proxy, size):
    body = payload(size)
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    c.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    assert r.status == 200
    info = json.loads(r.read())
    assert info["method"] == "POST"
    assert info["length"] == size
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["chunked"] is False


@pytest.mark.parametrize("size", SIZES)
def test_post_chunked(proxy, size):
    body = payload(size)

    def pieces():
        for i in range(0, len(body), 10000):
            yield body[i:i + 10000]

    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    c.request("POST", "/echo", body=pieces(), encode_chunked=True)
    r = c.getresponse()
    assert r.status == 200
    info = json.loads(r.read())
    assert info["length"] == size
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["chunked"] is True


def test_hundred_pipelined_requests_answered_in_order(proxy):
    reqs = b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(100))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(reqs)
        buf = b""
        for i in range(100):
            status, _, body, buf = read_response(s, buf)
            assert status == 200
            assert body == b"/pipe/%d" % i


def test_pipelined_posts_and_gets_mixed(proxy):
    body = payload(5000)
    reqs = (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + body
            + b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
            + b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"5\r\nhello\r\n0\r\n\r\n"
            + b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(reqs)
        st, _, b1, buf = read_response(s)
        st2, _, b2, buf = read_response(s, buf)
        st3, _, b3, buf = read_response(s, buf)
        st4, _, b4, buf = read_response(s, buf)
    assert (st, st2, st3, st4) == (200, 200, 200, 200)
    assert json.loads(b1)["sha256"] == hashlib.sha256(body).hexdigest()
    assert b2 == b"/a"
    assert json.loads(b3)["length"] == 5
    assert b4 == b"/b"


def test_keepalive_reuses_downstream_connections(start_rproxy, downstream, port):
    """200 requests over 20 client connections: the downstream sees only the
    pool's connections (4 per worker), each reused many times."""
    p = start_rproxy(conf(port, downstream.port, workers=1, connections=4), port)
    for _ in range(20):
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        for i in range(10):
            c.request("GET", f"/r{i}")
            r = c.getresponse()
            assert r.status == 200 and r.read() == f"/r{i}".encode()
        c.close()
    assert len(downstream.requests) == 200
    assert downstream.connections <= 4
    assert len({r.conn_id for r in downstream.requests}) <= 4


def test_client_keepalive_one_connection_many_requests(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        for i in range(50):
            s.sendall(b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            status, headers, body, rest = read_response(s)
            assert status == 200 and body == b"/k%d" % i and rest == b""


def test_head_request_has_no_body(proxy):
    status, headers, body = request(proxy.port, b"HEAD /bytes/100 HTTP/1.1\r\nHost: t\r\n\r\n",
                                    head=True)
    assert status == 200
    assert dict(headers)["content-length"] == "100"
    # the connection must still be usable: a second request on it works
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"HEAD /bytes/100 HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        st1, _, b1, buf = read_response(s, head_request=True)
        st2, _, b2, _ = read_response(s, buf)
    assert (st1, b1, st2, b2) == (200, b"", 200, b"/after")


def test_connection_close_is_honoured(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, headers, body, _ = read_response(s)
        assert status == 200 and body == b"/bye"
        assert dict(headers)["connection"] == "close"
        assert s.recv(10) == b""           # the proxy closed its side


def test_close_delimited_response_is_relayed(proxy):
    status, headers, body = request(proxy.port, b"GET /close/3000 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    assert body == payload(3000)


def test_http10_client_gets_chunked_response_unchunked(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /chunked/20000 HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == payload(20000)


def test_workers_and_titles(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=3), port)
    expected = [f"rproxy: worker {i} (gen 1)" for i in range(3)]
    deadline = time.monotonic() + 5
    titles = []
    while time.monotonic() < deadline:
        workers = p.workers()
        titles = sorted(w.cmdline()[0] for w in workers)
        if titles == expected:      # a worker takes its title just after fork
            break
        time.sleep(0.05)
    assert titles == expected
    master = psutil.Process(p.pid)
    assert master.cmdline()[0].startswith("rproxy: master -c ")
    assert master.cmdline()[0].endswith(p.conf)
    # the listening socket is shared: every worker holds it
    for w in workers:
        assert any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in w.net_connections(kind="tcp"))


def test_sigterm_stops_master_and_workers(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(p.workers()) < 2:
        time.sleep(0.05)
    workers = p.workers()
    assert len(workers) == 2
    p.signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_downstream_down_gives_502(start_rproxy, port):
    from support.proc import free_port

    dead = free_port()
    p = start_rproxy(conf(port, dead), port)
    status, headers, body = request(p.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status in (502, 503)
    assert body.startswith(str(status).encode())
