"""Edge policy through the real proxy (issue 19): rate limits in the shared
zone (exact across workers, per client address / header / route, reject,
delay, dry-run, zone full, kept across a reload), access rules and deny
rules."""
from __future__ import annotations

import signal
import re
import socket
import threading
import time

from support.master import wait_generation, wait_log
from support.proc import free_port, read_response


def conf(port, ds_port, vhost_body, workers=1, top=""):
    return f"""workers = {workers}
{top}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {ds_port} }}
    vhost "*" {{
{vhost_body}
    }}
}}
"""


def get(port, path=b"/", extra=b"", source="127.0.0.1", keep=None):
    """One request on a new connection from `source`: (status, headers dict, body)."""
    s = keep or socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
        st, hs, body, _ = read_response(s)
        return st, dict(hs), body
    finally:
        if keep is None:
            s.close()


def statuses(port, n, **kw):
    return [get(port, **kw)[0] for _ in range(n)]


# ---- rate limits -----------------------------------------------------------------------

def test_per_ip_limit_is_exact_across_workers(start_rproxy, port, downstream):
    """4 workers share one budget: burst = 10 admits exactly 10 of 40 new
    connections (spread over the workers by the kernel), the rest get 429
    with Retry-After and the RateLimit headers; another address has its own."""
    p = start_rproxy(conf(port, downstream.port, """
        rate-limit = { per-ip }
        rule all { uri-prefix = "/"  downstreams = { app } }""", workers=4,
        top="rate-limit per-ip { key = client-ip  rate = 1/h  burst = 10 }"), port)
    got = statuses(port, 40)
    assert got.count(200) == 10 and got.count(429) == 30, got
    assert got[:10] == [200] * 10
    st, hs, body = get(port)
    assert st == 429
    assert 3500 <= int(hs["retry-after"]) <= 3600       # one emission interval (1/h)
    assert hs["ratelimit-policy"] == '"per-ip";q=10;w=36000'
    assert hs["ratelimit"].startswith('"per-ip";r=0;t=')
    assert b"per-ip" in body
    assert statuses(port, 12, source="127.0.0.2").count(200) == 10     # its own budget
    assert len(downstream.requests) == 20
    log = wait_log(p, "rate limit 'per-ip' exceeded: 429")
    assert "client 127.0.0.1" in log


def test_header_key_and_missing_header(start_rproxy, port, downstream):
    start_rproxy(conf(port, downstream.port, """
        rule all { uri-prefix = "/"  downstreams = { app }  rate-limit = { per-key } }""", workers=2,
        top="rate-limit per-key { key = header:X-Api-Key  rate = 1/h  burst = 3 }"), port)
    assert statuses(port, 5, extra=b"X-Api-Key: alpha\r\n") == [200, 200, 200, 429, 429]
    assert statuses(port, 4, extra=b"x-api-key: beta\r\n") == [200, 200, 200, 429]
    assert statuses(port, 6) == [200] * 6          # no key: not limited (as nginx's empty key)


def test_route_key_is_one_budget_for_everyone(start_rproxy, port, downstream):
    start_rproxy(conf(port, downstream.port, """
        rule api { uri-prefix = "/api/"  downstreams = { app }  rate-limit = { whole } }
        rule rest { uri-prefix = "/"  downstreams = { app } }""", workers=2,
        top="rate-limit whole { key = route  rate = 1/h  burst = 4 }"), port)
    got = [get(port, b"/api/x", source=src)[0] for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3") * 2]
    assert got.count(200) == 4 and got.count(429) == 2, got
    assert statuses(port, 3, path=b"/other") == [200] * 3       # another rule: no limit


def test_dry_run_counts_and_logs_only(start_rproxy, port, downstream, tmp_path):
    alog = tmp_path / "access.log"
    p = start_rproxy(conf(port, downstream.port, f"""
        logging {{ request {{ enabled = true  output = "file:{alog}"  format = "{{STATUS}} {{RATE_LIMIT}}" }} }}
        rate-limit = {{ watch }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}""",
        top="rate-limit watch { rate = 1/h  burst = 2  mode = dry-run }"), port)
    assert statuses(port, 5) == [200] * 5
    log = wait_log(p, "rate limit 'watch' exceeded (dry-run: admitted)", 3)
    assert not re.search(r"(?<![\d:])429(?!\d)", log)     # no 429 answered (a port number may hold "429")
    from support.master import wait_until

    lines = wait_until(lambda: alog.exists() and len(alog.read_text().splitlines()) == 5 and alog.read_text(),
                       10, "5 access log lines").splitlines()
    assert lines == ["200 -", "200 -", "200 watch", "200 watch", "200 watch"]


def test_delay_mode_paces_requests_and_refuses_beyond_burst(start_rproxy, port, downstream):
    """rate 2/s, burst 2: one passes now, two wait their turn (0.5 s, 1 s),
    the others get 429 at once; the loop keeps serving meanwhile."""
    start_rproxy(conf(port, downstream.port, """
        rule paced { uri-prefix = "/paced"  downstreams = { app }  rate-limit = { pace } }
        rule rest { uri-prefix = "/"  downstreams = { app } }""",
        top="rate-limit pace { rate = 2/s  burst = 2  mode = delay }"), port)
    results = []
    lock = threading.Lock()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]

    def one(s):
        t0 = time.monotonic()
        st = get(port, b"/paced", keep=s)[0]
        with lock:
            results.append((st, time.monotonic() - t0))

    threads = [threading.Thread(target=one, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    assert get(port, b"/fast")[0] == 200           # not held behind them
    for t in threads:
        t.join(10)
    for s in socks:
        s.close()
    ok = sorted(d for st, d in results if st == 200)
    assert len(ok) == 3 and sum(1 for st, _ in results if st == 429) == 2, results
    assert ok[1] >= 0.4 and ok[2] >= 0.9           # held for their turn (lower bounds only)


def test_zone_full_reuses_slots_and_keeps_serving(start_rproxy, port, downstream):
    """A 4k zone holds 512 keys: 1,500 distinct keys overflow it (the states
    closest to expiry are taken over); the proxy keeps limiting exactly."""
    start_rproxy(conf(port, downstream.port, """
        rule all { uri-prefix = "/"  downstreams = { app }  rate-limit = { tiny } }""",
        top="rate-limit-zone = 4k\nrate-limit tiny { key = header:K  rate = 1/h  burst = 2 }"), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    for i in range(1500):
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nK: k%d\r\n\r\n" % i)
        assert read_response(s)[0] == 200
    s.close()
    assert statuses(port, 3, extra=b"K: fresh\r\n") == [200, 200, 429]


def test_limits_survive_a_reload(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, """
        rate-limit = { r }
        rule all { uri-prefix = "/"  downstreams = { app } }""", workers=2,
        top="rate-limit r { rate = 1/h  burst = 3 }"), port)
    wait_generation(p.pid, 1, 2)
    assert statuses(port, 2) == [200, 200]
    p.signal(signal.SIGHUP)
    wait_generation(p.pid, 2, 2)
    assert statuses(port, 3) == [200, 429, 429]


# ---- access and deny rules -----------------------------------------------------------------

def test_access_rules_first_match_wins(start_rproxy, port, downstream):
    """allow / deny are checked in file order, first match wins, no match
    is allowed; CIDR edges (/31) and `all`."""
    p = start_rproxy(conf(port, downstream.port, """
        access { deny = { 127.0.0.3, 10.0.0.0/8 }  allow = { 127.0.0.2/31, ::1 } }
        rule all { uri-prefix = "/"  downstreams = { app } }"""), port)
    assert get(port, source="127.0.0.2")[0] == 200          # 127.0.0.2/31 holds .2 and .3
    assert get(port, source="127.0.0.3")[0] == 403          # but the deny comes first
    assert get(port, source="127.0.0.1")[0] == 200          # no match: allowed
    wait_log(p, "client 127.0.0.3")
    p.stop()
    port2 = free_port()
    p2 = start_rproxy(conf(port2, downstream.port, """
        access { allow = { 127.0.0.2/31 }  deny = { all } }
        rule all { uri-prefix = "/"  downstreams = { app } }"""), port2)
    assert [get(port2, source=f"127.0.0.{i}")[0] for i in (1, 2, 3, 4)] == [403, 200, 200, 403]
    assert len(downstream.requests) == 4
    log = wait_log(p2, "denied by the access rules of vhost '*': 403", 2)
    assert "client 127.0.0.4" in log


def test_deny_rules_block_paths(start_rproxy, port, downstream):
    p = start_rproxy(conf(port, downstream.port, """
        rule admin { uri-prefix = "/admin/"  deny = true }
        rule hidden { uri-prefix = "/.git"  deny = true  status = 404 }
        rule all { uri-prefix = "/"  downstreams = { app } }"""), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert get(port, b"/admin/users", keep=s)[0] == 403
    assert get(port, b"/.git/config", keep=s)[0] == 404     # same connection: kept alive
    assert get(port, b"/ok", keep=s)[0] == 200
    s.close()
    assert [r.target for r in downstream.requests] == ["/ok"]
    wait_log(p, "rule 'hidden' denies: 404")


# ---- PROXY protocol in ------------------------------------------------------------------------

def pp_conf(port, ds_port, trusted="127.0.0.0/8", vhost_extra="", server_extra=""):
    return f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    proxy-protocol = true
    proxy-protocol-from = {{ {trusted} }}
    {server_extra}
    downstream app {{ addr = 127.0.0.1  port = {ds_port} }}
    vhost "*" {{
        {vhost_extra}
        headers {{ x-forwarded-for = true  x-forwarded-for-mode = replace }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
"""


def v2_header(src, dst, sport, dport, command=1):
    import ipaddress
    import struct

    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def pp_get(port, header, pieces=1, path=b"/"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = header + b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        s.sendall(data[i:i + step])
        if pieces > 1:
            time.sleep(0.02)            # separate reads on the proxy's side
    try:
        return read_response(s)[0]
    finally:
        s.close()


def closed_without_answer(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True
    finally:
        s.close()


def test_proxy_protocol_v1_and_v2_carry_the_client_address(start_rproxy, port, downstream):
    p = start_rproxy(pp_conf(port, downstream.port, vhost_extra="access { deny = { 198.51.100.0/24 } }"), port)
    assert pp_get(port, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n") == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "203.0.113.7"
    assert pp_get(port, v2_header("2001:db8::42", "::1", 40000, 443), pieces=5) == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "2001:db8::42"
    assert pp_get(port, b"PROXY TCP6 2001:db8::9 ::1 1 2\r\n", pieces=4) == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "2001:db8::9"
    # LOCAL (v2) and UNKNOWN (v1): the connection's own address
    assert pp_get(port, v2_header("10.9.9.9", "10.0.0.1", 1, 2, command=0)) == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "127.0.0.1"
    assert pp_get(port, b"PROXY UNKNOWN\r\n") == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "127.0.0.1"
    # access rules see the carried address, an IPv4-mapped IPv6 one as IPv4
    assert pp_get(port, b"PROXY TCP4 198.51.100.5 127.0.0.1 1 2\r\n") == 403
    assert pp_get(port, v2_header("::ffff:198.51.100.6", "::1", 1, 2)) == 403
    wait_log(p, "client 198.51.100.5")


def test_proxy_protocol_with_curl(start_rproxy, port, downstream):
    import subprocess

    start_rproxy(pp_conf(port, downstream.port), port)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--haproxy-protocol",
                        f"http://127.0.0.1:{port}/curl"], capture_output=True, text=True, timeout=20)
    assert r.stdout == "200"
    assert downstream.requests[-1].header("X-Forwarded-For") == "127.0.0.1"


def test_proxy_protocol_refusals_close_and_log(start_rproxy, port, downstream):
    p = start_rproxy(pp_conf(port, downstream.port), port)
    assert closed_without_answer(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")       # never read as HTTP
    assert closed_without_answer(port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\nGET / HTTP/1.1\r\n\r\n")
    assert closed_without_answer(port, b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n")
    assert closed_without_answer(port, b"PROXY " + b"X" * 200)                     # no end in 107 bytes
    assert closed_without_answer(port, v2_header("1.2.3.4", "5.6.7.8", 1, 2)[:14] + b"\xff\xff" + b"x" * 40)
    log = p.read_log()
    assert "no PROXY protocol header: connection closed" in log
    assert log.count("malformed PROXY protocol header: connection closed") == 4
    assert pp_get(port, b"PROXY TCP4 203.0.113.1 127.0.0.1 1 2\r\n") == 200        # still serving
    assert len(downstream.requests) == 1


def test_proxy_protocol_from_an_untrusted_source_is_closed(start_rproxy, port, downstream):
    p = start_rproxy(pp_conf(port, downstream.port, trusted="10.0.0.0/8"), port)
    assert closed_without_answer(port, b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_log(p, "client 127.0.0.1")
    assert "not in proxy-protocol-from: connection closed" in p.read_log()
    assert downstream.requests == []


def test_proxy_protocol_comes_before_tls(start_rproxy, port, downstream, test_pki):
    import ssl

    cert = test_pki["server"]
    start_rproxy(pp_conf(port, downstream.port, server_extra=f'ssl {{ enabled = true  cert = "{cert.crt}"  '
                                                              f'key = "{cert.key}" }}'), port)
    ctx = ssl.create_default_context(cafile=test_pki["ca"].crt)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(v2_header("192.0.2.33", "127.0.0.1", 5000, 443))
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(s)[0] == 200
    assert downstream.requests[-1].header("X-Forwarded-For") == "192.0.2.33"


def test_haproxy_send_proxy_v2_in_front_of_two_nodes(start_rproxy, downstream, tmp_path):
    """HAProxy in TCP mode balances over two rproxy nodes (separate masters)
    with send-proxy-v2: the backend sees HAProxy's client, on both nodes."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("haproxy") is None:
        pytest.skip("haproxy (Debian package) is not installed")
    ports = [free_port(), free_port()]
    for pt in ports:
        start_rproxy(pp_conf(pt, downstream.port), pt)
    front = free_port()
    cfgf = tmp_path / "haproxy.cfg"
    cfgf.write_text(f"""global
    log stderr local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend f
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    balance roundrobin
    server n1 127.0.0.1:{ports[0]} send-proxy-v2
    server n2 127.0.0.1:{ports[1]} send-proxy-v2
""")
    h = subprocess.Popen(["haproxy", "-db", "-f", str(cfgf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from support.proc import wait_port

        wait_port(front)
        for _ in range(4):
            assert get(front, source="127.0.0.5")[0] == 200
    finally:
        h.terminate()
        h.wait(10)
    assert [r.header("X-Forwarded-For") for r in downstream.requests] == ["127.0.0.5"] * 4
    assert downstream.connections >= 2          # both nodes served (each has its own pool)


def test_limit_counts_reach_the_metrics(start_rproxy, port, downstream):
    import json
    import urllib.request

    sport = free_port()
    start_rproxy(conf(port, downstream.port, """
        rate-limit = { counted }
        rule all { uri-prefix = "/"  downstreams = { app } }""", workers=2,
        top=f"status {{ port = {sport} }}\nrate-limit counted {{ rate = 1/h  burst = 3 }}"), port)
    assert statuses(port, 5) == [200, 200, 200, 429, 429]
    text = urllib.request.urlopen(f"http://127.0.0.1:{sport}/metrics", timeout=10).read().decode()
    assert 'rproxy_rate_limit_requests_total{limit="counted",outcome="admitted"} 3' in text
    assert 'rproxy_rate_limit_requests_total{limit="counted",outcome="limited"} 2' in text
    st = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sport}/status", timeout=10).read())
    assert st["rate_limits"][0]["limited"] == 2


def test_access_rules_ipv6(start_rproxy, port, downstream):
    """An IPv6 listener; a prefix cut inside a byte (::1/127 holds ::0 and ::1)."""
    p = start_rproxy(f"""workers = 1
server {{
    addr = ::1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{
        access {{ allow = {{ ::2/127 }}  deny = {{ ::1/127 }} }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
""", port, host="::1")
    s = socket.create_connection(("::1", port), timeout=10)
    assert get(port, keep=s)[0] == 403
    s.close()
    wait_log(p, "denied by the access rules")
