"""Directives reached through real config files and the real proxy: header
policy, strip-headers, path rewriting (1.x rewrite, replace-path, uri-prefix),
passthrough, default vhost, health checks, timeouts, admission."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from support.downstream import Downstream, _response
from support.proc import read_response, request


def proxy_conf(port, body, workers=1, top=""):
    return f"workers = {workers}\n{top}\nserver {{\n    addr = 127.0.0.1\n    port = {port}\n{body}\n}}\n"


def get(port, path, host=b"a", extra=b""):
    return request(port, b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n")


# ---- header policy -----------------------------------------------------------------

def test_headers_block_policy(start_rproxy, port, downstream):
    p = start_rproxy(proxy_conf(port, f"""
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{
        headers {{ x-forwarded-for = true  x-real-ip = true  x-forwarded-proto = true
                  x-forwarded-host = true  x-forwarded-port = true  forwarded = true  via = true }}
        rule replaced {{ uri-prefix = "/r/"  downstreams = {{ app }}
                        headers {{ x-forwarded-for = true  x-forwarded-for-mode = replace }} }}
        rule none     {{ uri-prefix = "/n/"  downstreams = {{ app }}  headers {{ x-forwarded-for = false }} }}
        rule rest     {{ uri-prefix = "/"    downstreams = {{ app }} }}
    }}"""), port)
    fwd = b"X-Forwarded-For: 10.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nX-SSL-Subject: /CN=forged\r\n"
    assert get(p.port, b"/v", b"shop.test:8080", fwd)[0] == 200
    req = downstream.requests[-1]
    assert req.header_all("X-Forwarded-For") == ["10.1.1.1, 127.0.0.1"]
    assert req.header_all("X-Real-IP") == ["127.0.0.1"]
    assert req.header("X-Forwarded-Proto") == "http"
    assert req.header("X-Forwarded-Host") == "shop.test:8080"
    assert req.header("X-Forwarded-Port") == str(port)
    assert req.header("Forwarded") == 'for=127.0.0.1;proto=http;host="shop.test:8080"'
    assert req.header("Via") == "1.1 rproxy"
    assert req.header("X-SSL-Subject") is None            # proxy-owned: never from a client
    # a rule's own headers block replaces the vhost's whole (no per-key merge)
    assert get(p.port, b"/r/x", extra=fwd)[0] == 200
    req = downstream.requests[-1]
    assert req.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert req.header("Via") is None and req.header_all("X-Real-IP") == ["6.6.6.6"]
    assert get(p.port, b"/n/x", extra=fwd)[0] == 200
    assert downstream.requests[-1].header_all("X-Forwarded-For") == ["10.1.1.1"]


def test_strip_headers_removes_every_copy(start_rproxy, port):
    def handler(req, s):
        s.sendall(_response(200, b"ok", [("Server", "secret/1.0"), ("X-Powered-By", "php"),
                                         ("x-powered-by", "again"), ("X-Kept", "1")]))
        return True

    ds = Downstream(handler=handler)
    try:
        p = start_rproxy(proxy_conf(port, f"""
    downstream app {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{ strip-headers = {{ Server, X-Powered-By }}
                 rule all {{ uri-prefix = "/"  downstreams = {{ app }} }} }}"""), port)
        status, headers, body = get(p.port, b"/")
        names = [k for k, _ in headers]
        assert (status, body) == (200, b"ok")
        assert "server" not in names and "x-powered-by" not in names and "x-kept" in names
    finally:
        ds.close()


# ---- path rewriting ----------------------------------------------------------------

def test_1x_rewrite_src_dst(start_rproxy, port, downstream):
    p = start_rproxy(proxy_conf(port, f"""
    rewrite {{ src = "^(/dir/).*"  dst = "/derp/" }}
    rewrite {{ src = "^/api/(v[0-9]+)/"  dst = "/backend/" }}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}"""), port)
    assert get(p.port, b"/dir/something/file.html?x=1")[0] == 200
    assert downstream.requests[-1].target == "/derp/something/file.html?x=1"
    assert get(p.port, b"/api/v2/users")[0] == 200
    assert downstream.requests[-1].target == "/backend//users"   # dst + what follows group 1
    assert get(p.port, b"/elsewhere")[0] == 404                   # no rewrite matched


def test_replace_path_prefix_exact_and_regex_groups(start_rproxy, port, downstream):
    p = start_rproxy(proxy_conf(port, f"""
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{
        rule strip  {{ uri-prefix = "/app/"  replace-path = "/"  downstreams = {{ app }} }}
        rule login  {{ uri-match = "/login"  replace-path = "/auth/signin"  downstreams = {{ app }} }}
        rule users  {{ uri-rmatch = "^/u/([a-z]+)/([0-9]+)$"  replace-path = "/users/\\\\2/\\\\1"
                      downstreams = {{ app }} }}
        rule rest   {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}"""), port)
    cases = {b"/app/x/y?q": "/x/y?q", b"/login": "/auth/signin", b"/u/alice/42": "/users/42/alice",
             b"/other": "/other"}
    for path, want in cases.items():
        assert get(p.port, path)[0] == 200
        assert downstream.requests[-1].target == want, path


def test_default_vhost_catches_unknown_hosts(start_rproxy, port):
    a, b = Downstream(), Downstream()
    try:
        p = start_rproxy(proxy_conf(port, f"""
    downstream da {{ addr = 127.0.0.1  port = {a.port} }}
    downstream db {{ addr = 127.0.0.1  port = {b.port} }}
    vhost "a.test" {{ rule r {{ uri-prefix = "/" downstreams = {{ da }} }} }}
    vhost "b.test" {{ default = true  rule r {{ uri-prefix = "/" downstreams = {{ db }} }} }}"""), port)
        assert get(p.port, b"/1", b"a.test")[0] == 200
        assert get(p.port, b"/2", b"nobody.test")[0] == 200
        assert [r.target for r in a.requests] == ["/1"] and [r.target for r in b.requests] == ["/2"]
    finally:
        a.close()
        b.close()


def test_passthrough_rule_relays_raw_bytes(start_rproxy, port):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        c, _ = ls.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        c.sendall(b"NOT-HTTP-AT-ALL\n")                 # passthrough does not parse this
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d[::-1])
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    p = start_rproxy(proxy_conf(port, f"""
    downstream raw {{ addr = 127.0.0.1  port = {ls.getsockname()[1]} }}
    vhost "*" {{ rule raw {{ uri-prefix = "/raw" passthrough = true downstreams = {{ raw }} }} }}"""), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /raw HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        while not got.endswith(b"\n"):
            got += s.recv(4096)
        assert got == b"NOT-HTTP-AT-ALL\n"
        s.sendall(b"abc")
        assert s.recv(10) == b"cba"
    ls.close()


# ---- health, timeouts, admission ------------------------------------------------------

def test_active_health_check_takes_a_downstream_out_and_back(start_rproxy, port):
    state = {"healthy": True}

    def handler(req, s):
        if req.target == "/health":
            s.sendall(_response(200 if state["healthy"] else 500, b"h"))
        else:
            s.sendall(_response(200, b"sick-one"))
        return True

    sick, good = Downstream(handler=handler), Downstream()
    try:
        p = start_rproxy(proxy_conf(port, f"""
    downstream sick {{ addr = 127.0.0.1  port = {sick.port}
                      health-check {{ path = /health  interval = 100ms  timeout = 80ms  rise = 2  fall = 2 }} }}
    downstream good {{ addr = 127.0.0.1  port = {good.port} }}
    vhost "*" {{ rule r {{ uri-prefix = "/" downstreams = {{ sick, good }} lb-method = roundrobin }} }}"""), port)
        time.sleep(0.5)
        state["healthy"] = False
        deadline = time.monotonic() + 10
        while "failed 2 health checks" not in p.read_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "failed 2 health checks" in p.read_log()
        before = len([r for r in sick.requests if r.target != "/health"])
        for i in range(10):
            assert get(p.port, b"/x%d" % i)[:3:2] == (200, b"/x%d" % i)     # all from good
        assert len([r for r in sick.requests if r.target != "/health"]) == before
        state["healthy"] = True
        deadline = time.monotonic() + 10
        while "passed 2 health checks" not in p.read_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        bodies = {get(p.port, b"/y")[2] for _ in range(6)}
        assert b"sick-one" in bodies                                       # back in rotation
    finally:
        sick.close()
        good.close()


def test_downstream_that_never_answers_gives_504(start_rproxy, port):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)                                 # accepts (kernel backlog), never reads or answers
    p = start_rproxy(proxy_conf(port, f"""
    downstream mute {{ addr = 127.0.0.1  port = {ls.getsockname()[1]}  read-timeout = 500ms }}"""), port)
    t0 = time.monotonic()
    status, _, body = get(p.port, b"/")
    elapsed = time.monotonic() - t0
    ls.close()
    assert status == 504 and body.startswith(b"504 ")
    assert 0.4 < elapsed < 5
    assert "read timeout -> 504" in p.read_log()


def test_pending_overflow_and_timeout_give_503(start_rproxy, port):
    ds = Downstream()
    try:
        p = start_rproxy(proxy_conf(port, f"""
    pending-timeout = 300ms
    max-pending = 1
    downstream one {{ addr = 127.0.0.1  port = {ds.port}  connections = 1  max-connections = 1 }}"""), port)
        results = {}

        def fire(name, path):
            results[name] = get(p.port, path)[0]

        slow = threading.Thread(target=fire, args=("slow", b"/slow/1500"))
        slow.start()
        time.sleep(0.2)                                  # the only connection is busy
        waiting = threading.Thread(target=fire, args=("waiting", b"/w"))
        waiting.start()
        time.sleep(0.05)
        fire("overflow", b"/o")                          # a second waiter: over max-pending
        waiting.join(5)
        slow.join(5)
        assert results == {"slow": 200, "waiting": 503, "overflow": 503}
        log = p.read_log()
        assert "max-pending (1) reached" in log and "pending timeout" in log
    finally:
        ds.close()


def test_rule_upstream_read_timeout_overrides_the_servers(start_rproxy, port, downstream):
    p = start_rproxy(proxy_conf(port, f"""
    read-timeout = 30s
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{
        rule quick {{ uri-prefix = "/quick" upstream-read-timeout = 300ms downstreams = {{ app }} }}
        rule rest  {{ uri-prefix = "/" downstreams = {{ app }} }}
    }}"""), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /quick HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        t0 = time.monotonic()
        status, _, _, _ = read_response(s)               # the body never completes
        assert status == 408 and time.monotonic() - t0 < 5


def test_max_age_replaces_connections(start_rproxy, port, downstream):
    p = start_rproxy(proxy_conf(port, f"""
    downstream app {{ addr = 127.0.0.1  port = {downstream.port}  connections = 1  max-age = 300ms }}"""), port)
    assert get(p.port, b"/1")[0] == 200
    time.sleep(0.5)
    assert get(p.port, b"/2")[0] == 200
    assert get(p.port, b"/3")[0] == 200
    conns = [r.conn_id for r in downstream.requests]
    assert conns[0] != conns[1]                          # /1's connection was too old to reuse
    assert conns[1] == conns[2]


def test_disabled_downstream_is_never_used(start_rproxy, port):
    on, off = Downstream(), Downstream()
    try:
        p = start_rproxy(proxy_conf(port, f"""
    downstream on  {{ addr = 127.0.0.1  port = {on.port} }}
    downstream off {{ addr = 127.0.0.1  port = {off.port}  enabled = false }}
    vhost "*" {{ rule r {{ uri-prefix = "/" downstreams = {{ on, off }} lb-method = roundrobin }} }}"""), port)
        for i in range(6):
            assert get(p.port, b"/%d" % i)[0] == 200
        assert len(on.requests) == 6 and off.requests == [] and off.connections == 0
    finally:
        on.close()
        off.close()


@pytest.mark.parametrize("method", ["roundrobin", "rtt", "most-idle", "none", "random", "least-pending"])
def test_every_lb_method_serves(start_rproxy, port, method):
    a, b = Downstream(), Downstream()
    try:
        p = start_rproxy(proxy_conf(port, f"""
    downstream da {{ addr = 127.0.0.1  port = {a.port}  connections = 2 }}
    downstream db {{ addr = 127.0.0.1  port = {b.port}  connections = 2 }}
    vhost "*" {{ rule r {{ uri-prefix = "/" downstreams = {{ da, db }} lb-method = {method} }} }}"""), port)
        for i in range(20):
            assert get(p.port, b"/%d" % i)[0] == 200
        assert len(a.requests) + len(b.requests) == 20
        if method == "roundrobin":
            assert len(a.requests) == len(b.requests) == 10
        if method == "none":
            assert len(a.requests) == 20                  # ordered fallback: the first while it is up
    finally:
        a.close()
        b.close()


# ---- internal redirect (377) ---------------------------------------------------------

def redirecting_downstream(target: str):
    def handler(req, s):
        s.sendall(_response(377, b"moved inside", [("X-Internal-Redirect", target)]))
        return True
    return Downstream(handler=handler)


def redirect_conf(port, ds_port, rule_extra):
    return proxy_conf(port, f"""
    downstream first {{ addr = 127.0.0.1  port = {ds_port} }}
    vhost "*" {{ rule r {{ uri-prefix = "/" downstreams = {{ first }} {rule_extra} }} }}""")


def test_internal_redirect_follows_a_filtered_target(start_rproxy, port, downstream):
    first = redirecting_downstream(f"127.0.0.1:{downstream.port}")
    try:
        p = start_rproxy(redirect_conf(port, first.port,
                                       'allow-redirect = true  redirect-filter = { "127.0.0.1:*" }'), port)
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(b"GET /where?x=1 HTTP/1.1\r\nHost: a\r\nX-Client: 1\r\n\r\n")
            status, headers, body, _ = read_response(s)
        assert (status, body) == (200, b"/where")          # answered by the redirect target
        replayed = downstream.requests[-1]
        assert replayed.target == "/where?x=1"
        assert replayed.header("X-Redirected-Via") == "r"
        assert replayed.header("X-Client") == "1"
    finally:
        first.close()


@pytest.mark.parametrize("rule_extra", ['allow-redirect = true',
                                        'allow-redirect = true  redirect-filter = { "10.*" }'],
                         ids=["no-filter", "filter-mismatch"])
def test_internal_redirect_refused_becomes_401(start_rproxy, port, downstream, rule_extra):
    first = redirecting_downstream(f"127.0.0.1:{downstream.port}")
    try:
        p = start_rproxy(redirect_conf(port, first.port, rule_extra), port)
        status, headers, body = get(p.port, b"/x")
        assert (status, body) == (401, b"moved inside")
        assert "x-internal-redirect" not in dict(headers)
        assert downstream.requests == []                   # never an open relay
        assert "refused" in p.read_log()
    finally:
        first.close()


def test_377_without_allow_redirect_is_relayed(start_rproxy, port, downstream):
    first = redirecting_downstream(f"127.0.0.1:{downstream.port}")
    try:
        p = start_rproxy(redirect_conf(port, first.port, ""), port)
        status, headers, body = get(p.port, b"/x")
        assert (status, body) == (377, b"moved inside")
        assert dict(headers)["x-internal-redirect"] == f"127.0.0.1:{downstream.port}"
        assert downstream.requests == []
    finally:
        first.close()
