"""Routing through the real proxy: listener -> vhost (normalised Host, glob
titles, aliases) -> rule in file order (uri-match exact, uri-gmatch glob,
uri-rmatch POSIX regex) -> downstreams; 404 with a body when nothing routes."""
from __future__ import annotations

import socket

import pytest

from support.downstream import Downstream
from support.proc import read_response, request


@pytest.fixture
def two_downstreams():
    a, b = Downstream(), Downstream()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def routed(start_rproxy, port, two_downstreams):
    a, b = two_downstreams
    conf = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream dsa {{ addr = 127.0.0.1  port = {a.port} }}
    downstream dsb {{ addr = 127.0.0.1  port = {b.port} }}
    vhost "example.com" {{
        aliases = {{ "www.example.com", "*.example.org" }}
        rule exact  {{ uri-match = "/exact"        downstreams = {{ dsb }} }}
        rule api    {{ uri-gmatch = "/api/*"       downstreams = {{ dsb }} }}
        rule things {{ uri-rmatch = "^/things/[0-9]+$"  downstreams = {{ dsb }} }}
        rule rest   {{ uri-gmatch = "/*"           downstreams = {{ dsa }} }}
    }}
    vhost "only-exact.test" {{
        rule one {{ uri-match = "/one" downstreams = {{ dsa }} }}
    }}
}}
"""
    return start_rproxy(conf, port), a, b


def get(port, path, host):
    return request(port, b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")


@pytest.mark.parametrize("host", [b"example.com", b"EXAMPLE.com", b"example.com:8080", b"example.com.",
                                  b"www.example.com", b"a.b.example.org"])
def test_vhost_by_normalised_host(routed, host):
    p, a, b = routed
    status, _, body = get(p.port, b"/exact", host)
    assert (status, body) == (200, b"/exact")
    assert b.requests and b.requests[-1].target == "/exact"
    assert b.requests[-1].header("Host") == host.decode()    # Host itself is forwarded as sent


@pytest.mark.parametrize("path,which", [
    (b"/exact", "b"), (b"/exact/", "a"), (b"/api/v1/x", "b"), (b"/things/42", "b"),
    (b"/things/42x", "a"), (b"/other", "a"), (b"/exact?q=1", "b"),
])
def test_rules_in_file_order(routed, path, which):
    p, a, b = routed
    status, _, body = get(p.port, path, b"example.com")
    assert status == 200
    ds = {"a": a, "b": b}[which]
    assert ds.requests and ds.requests[-1].target == path.decode()


def test_no_vhost_and_no_rule_give_404_with_body_and_keep_alive(routed):
    p, a, b = routed
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: unknown.test\r\n\r\n"
                  b"GET /two HTTP/1.1\r\nHost: only-exact.test\r\n\r\n"
                  b"GET /one HTTP/1.1\r\nHost: only-exact.test\r\n\r\n")
        st1, _, b1, buf = read_response(s)
        st2, _, b2, buf = read_response(s, buf)
        st3, _, b3, _ = read_response(s, buf)
    assert (st1, b1) == (404, b"404 Not Found\n")
    assert (st2, b2) == (404, b"404 Not Found\n")
    assert (st3, b3) == (200, b"/one")
    assert [r.target for r in a.requests] == ["/one"]
