"""End to end: access and error logs of the real `rproxy` command.

Every token against a known exchange; escaping of hostile bytes; IPv6;
syslog datagrams on a test socket; one line per request whatever happened
to it (rproxy's own 4xx/5xx, pending timeouts, tunnels, client aborts);
error-log levels and per-server error logs; reopen after rename under load
and graceful stop / reload without a lost line.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support.downstream import Downstream, payload
from support.master import wait_until
from support.proc import free_port, lines_of, read_response, request, rproxy_command

ROOT = Path(__file__).resolve().parents[2]

FIELDS = ("SRC US_SPORT PROXY DS_SPORT TS UA METH URI PROTO STATUS REF HOST US_HDR DS_HDR RULE VHOST "
          "QUERY REQUEST_URI REQUEST BYTES_SENT BODY_BYTES_SENT BYTES_RECEIVED REQUEST_TIME DS_TIME "
          "DS_HEADER_TIME DS_ADDR TLS_PROTO TLS_CIPHER REQUEST_ID TS_ISO MSEC").split()
ALL_TOKENS = "|".join("{%s}:'X-A'" % f if f == "US_HDR" else "{%s}:'Content-Type'" % f if f == "DS_HDR"
                      else "{%s}" % f for f in FIELDS)


def parse_line(line):
    return dict(zip(FIELDS, line.split("|")))


def two_x(port, ds_port, log, fmt, extra="", server_extra="", vhost_extra="", ds_extra=""):
    return f"""
workers = 1
access-log-flush = 20ms
{extra}
server {{
    addr = 127.0.0.1
    port = {port}
    {server_extra}
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{fmt}" }} }}
    downstream app {{ addr = 127.0.0.1  port = {ds_port}  connections = 2  {ds_extra} }}
    vhost "example.test" {{
        {vhost_extra}
        rule api {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
"""


def one_x(port, ds_port, log, top, fmt="{URI}", ds_extra=""):
    """A 1.x server with an access log (`top`: the top-level directives)."""
    return f"""{top}
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{fmt}" }} }}
    downstream {{ addr = 127.0.0.1  port = {ds_port}  {ds_extra} }}
}}
"""


def test_every_token_against_a_known_exchange(start_rproxy, port, tmp_path):
    peers = []

    def handler(req, s):
        peers.append(s.getpeername()[1])
        time.sleep(0.05)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/x-test\r\nContent-Length: 5\r\n\r\nhello")
        return True

    ds = Downstream(handler=handler)
    log = tmp_path / "access.log"
    try:
        start_rproxy(two_x(port, ds.port, log, ALL_TOKENS.replace('"', '\\"')), port)
        raw = (f"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.test:{port}\r\nUser-Agent: ua/1.0\r\n"
               f"Referer: http://ref.test/page\r\nX-A: hello\r\n\r\n").encode()
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", port)) as c:
            client_port = c.getsockname()[1]
            c.sendall(raw)
            got = b""
            while not got.endswith(b"hello"):
                got += c.recv(65536)
        t1 = time.time()
        line, = lines_of(log)
    finally:
        ds.close()
    f = parse_line(line)
    assert f["SRC"] == "127.0.0.1" and f["US_SPORT"] == str(client_port)
    assert f["PROXY"] == f"127.0.0.1:{ds.port}" and f["DS_ADDR"] == f"127.0.0.1:{ds.port}"
    assert f["DS_SPORT"] == str(peers[0])
    began = datetime.datetime.strptime(f["TS"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert int(t0) - 1 <= began <= t1
    iso = datetime.datetime.strptime(f["TS_ISO"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    assert t0 - 0.05 <= iso <= t1 and int(iso) == int(began)
    assert t0 <= float(f["MSEC"]) <= t1 + 0.05
    assert (f["UA"], f["METH"], f["URI"], f["PROTO"], f["STATUS"]) == ("ua/1.0", "GET", "/a/b", "HTTP/1.1", "200")
    assert (f["REF"], f["HOST"], f["US_HDR"], f["DS_HDR"]) == ("http://ref.test/page", f"example.test:{port}",
                                                                "hello", "text/x-test")
    assert (f["RULE"], f["VHOST"], f["QUERY"]) == ("api", "example.test", "x=1&y=2")
    assert f["REQUEST_URI"] == "/a/b?x=1&y=2" and f["REQUEST"] == "GET /a/b?x=1&y=2 HTTP/1.1"
    assert int(f["BYTES_SENT"]) == len(got) and int(f["BODY_BYTES_SENT"]) == 5
    assert int(f["BYTES_RECEIVED"]) == len(raw)
    total, ds_time, ds_head = float(f["REQUEST_TIME"]), float(f["DS_TIME"]), float(f["DS_HEADER_TIME"])
    assert 50 <= ds_head <= ds_time <= total <= (t1 - t0) * 1000 + 5
    assert re.fullmatch(r"\d+\.\d{3}", f["REQUEST_TIME"])
    assert (f["TLS_PROTO"], f["TLS_CIPHER"]) == ("-", "-")
    assert re.fullmatch(r"[0-9a-f]{32}", f["REQUEST_ID"])


def test_missing_values_print_a_dash_and_request_ids_differ(start_rproxy, downstream, port, tmp_path):
    log = tmp_path / "access.log"
    fmt = "{UA}|{REF}|{QUERY}|{US_HDR}:'X-None'|{DS_HDR}:'X-None'|{REQUEST_ID}|{PROTO}"
    start_rproxy(two_x(port, downstream.port, log, fmt), port)
    for _ in range(2):
        request(port, b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
    a, b = lines_of(log, 2)
    assert a.split("|")[:5] == ["-"] * 5 and a.split("|")[6] == "HTTP/1.1"
    assert a.split("|")[5] != b.split("|")[5]
    assert int(b.split("|")[5][16:], 16) == int(a.split("|")[5][16:], 16) + 1    # same worker: sequence


def test_ipv6_client_and_downstream(start_rproxy, port, tmp_path):
    ds = Downstream(host="::1")
    log = tmp_path / "access.log"
    conf = f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = ::1
    port = {port}
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{{SRC}} {{US_SPORT}} {{DS_ADDR}} {{PROXY}}" }} }}
    downstream {{ addr = ::1  port = {ds.port} }}
}}
"""
    try:
        start_rproxy(conf, port, host="::1")
        with socket.create_connection(("::1", port)) as c:
            sport = c.getsockname()[1]
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_response(c)[0] == 200
        line, = lines_of(log)
    finally:
        ds.close()
    assert line == f"::1 {sport} [::1]:{ds.port} [::1]:{ds.port}"


def test_tls_protocol_and_cipher_and_tls_failures_logged(start_rproxy, downstream, port, tmp_path, test_pki):
    import ssl

    log, err = tmp_path / "access.log", tmp_path / "server-error.log"
    srv = test_pki["server"]
    conf = f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    logging {{
        request {{ enabled = true  output = "file:{log}"  format = "{{TLS_PROTO}} {{TLS_CIPHER}} {{STATUS}} {{URI}}" }}
        error {{ enabled = true  output = "file:{err}"  level = info }}
    }}
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "localhost" {{ rule all {{ uri-prefix = "/"  downstreams = {{ app }} }} }}
}}
"""
    start_rproxy(conf, port, check_quiet=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(test_pki["ca"].crt)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx.minimum_version = ctx.maximum_version = version
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname="localhost") as c:
            c.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(c)[0] == 200
            expected = (c.version(), c.cipher()[0])
        line = lines_of(log, 1 if version == ssl.TLSVersion.TLSv1_2 else 2)[-1]
        assert line == f"{expected[0]} {expected[1]} 200 /tls"
    # plain HTTP to the TLS port: refused, and said in the server's own error log
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            assert c.recv(4096).startswith(b"HTTP/1.1 400")
        except ConnectionResetError:
            pass                        # closed with our request unread: a reset may beat the 400
    deadline = time.monotonic() + 10
    while "plain HTTP to a TLS port" not in (err.read_text() if err.exists() else "") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(r"\[info\] \d+: client 127\.0\.0\.1 sent plain HTTP to a TLS port", err.read_text())


def test_hostile_user_agent_and_uri_are_escaped(start_rproxy, downstream, port, tmp_path):
    log = tmp_path / "access.log"
    start_rproxy(two_x(port, downstream.port, log, '{STATUS} \\"{REQUEST}\\" \\"{UA}\\" \\"{US_HDR}:\'X-A\'\\"'), port)
    forged = b'x" 200 "GET /forged HTTP/1.1" "\\'
    st, _, _ = request(port, b'GET /a"b\\c HTTP/1.1\r\nHost: example.test\r\nUser-Agent: ' + forged
                       + b"\xff\xc3\xa9\t!\r\nX-A: \x80\r\n\r\n")
    assert st == 200
    # not HTTP: refused, and still logged, escaped
    st, _, _ = request(port, b"GET /caf\xc3\xa9\x01 HTTP/1.1\r\nHost: example.test\r\n\r\n")
    assert st == 400
    lines = lines_of(log, 2)
    raw = log.read_bytes()
    assert raw.count(b"\n") == 2 and all(0x20 <= c < 0x7f for c in raw.replace(b"\n", b""))
    assert lines[0] == ('200 "GET /a\\x22b\\x5cc HTTP/1.1" "x\\x22 200 \\x22GET /forged HTTP/1.1\\x22 '
                        '\\x22\\x5c\\xff\\xc3\\xa9\\x09!" "\\x80"')
    assert lines[1] == '400 "GET /caf\\xc3\\xa9\\x01 HTTP/1.1" "-" "-"'  # the line as received


def test_syslog_datagrams_on_a_test_socket(start_rproxy, downstream, port, tmp_path):
    sock_path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(5)
    conf = f"""
workers = 1
access-log-flush = 20ms
error-log = syslog:daemon:{sock_path}
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ request {{ enabled = true  output = "syslog:local3:{sock_path}"  format = "{{STATUS}} {{URI}}" }} }}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}
}}
"""
    try:
        p = start_rproxy(conf, port, check_quiet=False)
        for i in range(3):
            assert request(port, f"GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())[0] == 200
        got = []
        deadline = time.monotonic() + 10
        while len([g for g in got if g.startswith(b"<158>")]) < 3 and time.monotonic() < deadline:
            got.append(rx.recv(65536))
        downstream.close()          # its pooled connection breaks: "is down", an error
        rx.settimeout(1)
        while not any(b"is down" in g for g in got) and time.monotonic() < deadline:
            try:
                got.append(rx.recv(65536))
            except TimeoutError:    # (a loaded machine: a request finds the downstream down for sure)
                request(port, b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        p.stop()
    finally:
        rx.close()
    head = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d rproxy\[(\d+)\]: "
    access = [g.decode() for g in got if g.startswith(b"<158>")]      # local3 (19) * 8 + info (6)
    assert [re.fullmatch("<158>" + head + r"(.*)", a).group(2) for a in access][:3] == ["200 /n0", "200 /n1", "200 /n2"]
    worker_pid = int(re.match("<158>" + head, access[0]).group(1))
    started = [g.decode() for g in got if b"rproxy started" in g]
    assert re.fullmatch("<29>" + head + r"\[notice\] rproxy started: .*", started[0])     # daemon(3)*8 + notice
    down = [g.decode() for g in got if b"is down" in g]
    m = re.fullmatch("<27>" + head + r"\[error\] downstream .* is down: .*", down[0])       # daemon*8 + error
    assert m and int(m.group(1)) == worker_pid


# ---- every request, with the status it was sent -----------------------------------------

@pytest.fixture
def statuses(start_rproxy, port, tmp_path):
    """A proxy whose access log shows `{STATUS} {REQUEST_URI} {BYTES_SENT}`
    for every request, in front of: `app` (normal, 300 ms read timeout),
    `one` (a single connection, for pending timeouts), `ws` (answers
    Upgrade with 101 and echoes) and `dead` (a closed port)."""
    def ws_handler(req, s):
        if req.header("Upgrade"):
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            while True:
                d = s.recv(4096)
                if not d:
                    return False
                s.sendall(d.upper())
        return Downstream.default_handler(req, s)

    app, one, ws = Downstream(), Downstream(), Downstream(handler=ws_handler)
    log = tmp_path / "access.log"
    conf = f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    pending-timeout = 300ms
    client-max-body-size = 100
    max-request-line = 1k
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{{STATUS}} {{REQUEST_URI}} {{BYTES_SENT}}" }} }}
    downstream app {{ addr = 127.0.0.1  port = {app.port}  read-timeout = 300ms }}
    downstream one {{ addr = 127.0.0.1  port = {one.port}  connections = 1  max-connections = 1 }}
    downstream ws {{ addr = 127.0.0.1  port = {ws.port} }}
    downstream dead {{ addr = 127.0.0.1  port = {free_port()}  retry = 10s }}
    vhost "a" {{
        rule dead {{ uri-prefix = "/dead/"  downstreams = {{ dead }} }}
        rule one {{ uri-prefix = "/one/"  replace-path = "/"  downstreams = {{ one }} }}
        rule ws {{ uri-prefix = "/ws"  downstreams = {{ ws }} }}
        rule norule {{ uri-prefix = "/norule"  downstreams = {{ }} }}
        rule app {{ uri-prefix = "/app/"  replace-path = "/"  downstreams = {{ app }} }}
    }}
}}
"""
    p = start_rproxy(conf, port)
    yield p, log
    for d in (app, one, ws):
        d.close()


def logged(log, n):
    return [tuple(ln.split(" ")) for ln in lines_of(log, n)]


def test_proxy_made_responses_are_logged_with_their_status(statuses, port):
    p, log = statuses
    cases = [
        (b"GET /app/ok HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        (b"GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n", 404),               # no rule
        (b"GET /app/x HTTP/1.1\r\nHost: nowhere\r\n\r\n", 404),             # no vhost
        (b"GET /app/nohost HTTP/1.1\r\n\r\n", 400),                         # HTTP/1.1 without Host
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"POST /app/big HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"x" * 101, 413),
        (b"GET /app/" + b"l" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET /app/v HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET /dead/x HTTP/1.1\r\nHost: a\r\n\r\n", 502),
        (b"GET /norule HTTP/1.1\r\nHost: a\r\n\r\n", 503),                  # a rule with no downstreams
        (b"GET /app/slow/1000 HTTP/1.1\r\nHost: a\r\n\r\n", 504),           # read-timeout 300ms
    ]
    for raw, want in cases:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(raw)
            assert read_response(c)[0] == want, raw[:40]
    lines = logged(log, len(cases))
    assert [int(ln[0]) for ln in lines] == [want for _, want in cases]
    assert lines[1][1] == "/elsewhere" and lines[6][1].startswith("/app/llll")
    assert all(int(ln[2]) > 0 for ln in lines)


def test_canned_response_bytes_are_counted_exactly(statuses, port):
    p, log = statuses
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /elsewhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            got += d
    line, = logged(log, 1)
    assert line[0] == "404" and int(line[2]) == len(got)


def test_pending_timeout_is_a_logged_503(statuses, port):
    p, log = statuses
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"GET /one/slow/800 HTTP/1.1\r\nHost: a\r\n\r\n")   # holds the only connection
    time.sleep(0.1)
    st, _, _ = request(port, b"GET /one/waits HTTP/1.1\r\nHost: a\r\n\r\n")
    assert st == 503
    assert read_response(slow)[0] == 200
    slow.close()
    lines = logged(log, 2)
    assert ("503", "/one/waits") in [ln[:2] for ln in lines] and ("200", "/one/slow/800") in [ln[:2] for ln in lines]


def test_tunnel_is_logged_at_completion_with_101_and_both_byte_counts(start_rproxy, port, tmp_path):
    def ws_handler(req, s):
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while True:
            d = s.recv(4096)
            if not d:
                return False
            s.sendall(d.upper())

    ds = Downstream(handler=ws_handler)
    log = tmp_path / "access.log"
    try:
        start_rproxy(two_x(port, ds.port, log, "{STATUS} {URI} {BYTES_SENT} {BYTES_RECEIVED} {UA}"), port)
        head = b"GET /chat HTTP/1.1\r\nHost: example.test\r\nUser-Agent: wsc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(head)
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(4096)
        data = b"tunnel bytes " * 10000           # more than a read buffer: the client buffer is reused
        threading.Thread(target=c.sendall, args=(data,), daemon=True).start()
        while len(got) < got.index(b"\r\n\r\n") + 4 + len(data):
            got += c.recv(65536)
        time.sleep(0.1)
        assert not log.exists() or log.read_bytes() == b""      # still open: not logged yet
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
        c.close()
        line, = lines_of(log)
    finally:
        ds.close()
    st, uri, sent, received, ua = line.split(" ")
    assert (st, uri, ua) == ("101", "/chat", "wsc")
    assert int(sent) == len(got) and int(received) == len(head) + len(data)


def test_raw_relays_log_the_status_the_client_got(start_rproxy, downstream, port, tmp_path):
    """Passthrough rules and internal redirects relay the downstream's bytes
    unparsed: the status logged is the one those bytes start with (`-` when
    they are not HTTP), never the 377 that asked for the redirect."""
    def raw(first_bytes):
        def handler(req, s):
            s.sendall(first_bytes)
            return False
        return Downstream(handler=handler)

    teapot = raw(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntea")
    junk = raw(b"NOT-HTTP-AT-ALL\n")
    redirects = raw(b"HTTP/1.1 377 X\r\nX-Internal-Redirect: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n"
                    % downstream.port)
    log = tmp_path / "access.log"
    conf = f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{{STATUS}} {{URI}} {{BYTES_SENT}} {{DS_ADDR}}" }} }}
    downstream teapot {{ addr = 127.0.0.1  port = {teapot.port} }}
    downstream junk {{ addr = 127.0.0.1  port = {junk.port} }}
    downstream redirects {{ addr = 127.0.0.1  port = {redirects.port} }}
    vhost "a" {{
        rule tea {{ uri-prefix = "/tea"  passthrough = true  downstreams = {{ teapot }} }}
        rule junk {{ uri-prefix = "/junk"  passthrough = true  downstreams = {{ junk }} }}
        rule moved {{ uri-prefix = "/moved"  downstreams = {{ redirects }}  allow-redirect = true
                     redirect-filter = {{ "127.0.0.1:*" }} }}
        rule refused {{ uri-prefix = "/refused"  downstreams = {{ redirects }}  allow-redirect = true
                       redirect-filter = {{ "10.*" }} }}
    }}
}}
"""
    try:
        start_rproxy(conf, port, check_quiet=False)
        got = {}
        for path in ("/tea", "/junk", "/moved/x", "/refused"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    data += d
                    if path == "/moved/x" and data.endswith(b"/moved/x"):
                        break           # the redirect target keeps its connection open
                got[path] = data
        lines = lines_of(log, 4)
    finally:
        for d in (teapot, junk, redirects):
            d.close()
    assert got["/tea"].startswith(b"HTTP/1.1 418") and got["/junk"] == b"NOT-HTTP-AT-ALL\n"
    assert got["/moved/x"].startswith(b"HTTP/1.1 200") and got["/refused"].startswith(b"HTTP/1.1 401")
    by_uri = {ln.split(" ")[1]: ln.split(" ") for ln in lines}
    assert [by_uri[u][0] for u in ("/tea", "/junk", "/moved/x", "/refused")] == ["418", "-", "200", "401"]
    assert all(int(by_uri[u][2]) == len(got[u]) for u in ("/tea", "/junk", "/moved/x", "/refused"))
    # {DS_ADDR}: where the client's answer came from, the redirect target for /moved/x
    assert [by_uri[u][3] for u in ("/tea", "/moved/x", "/refused")] == [
        f"127.0.0.1:{teapot.port}", f"127.0.0.1:{downstream.port}", f"127.0.0.1:{redirects.port}"]


def test_client_abort_is_499(statuses, port):
    p, log = statuses
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET /app/slow/200 HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.05)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()                                   # RST: gone before any response
    line, = logged(log, 1)
    assert line[:3] == ("499", "/app/slow/200", "0")


def test_pipelined_requests_get_one_line_each(statuses, port):
    p, log = statuses
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"".join(f"GET /app/p{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5)))
        buf = b""
        for i in range(5):
            st, _, body, buf = read_response(c, buf)
            assert (st, body) == (200, f"/p{i}".encode())
    assert [ln[:2] for ln in logged(log, 5)] == [("200", f"/app/p{i}") for i in range(5)]


def exchange(port, raw):
    """(response head, body) exactly as received, for a Content-Length response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(raw)
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(65536)
        head, rest = got.split(b"\r\n\r\n", 1)
        head += b"\r\n\r\n"
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            rest += c.recv(1 << 20)
        return head, rest


def test_large_bodies_both_ways_keep_request_values_and_exact_counts(start_rproxy, downstream, port, tmp_path):
    """A request body larger than the read buffer reuses the buffer the
    request head was in; a large response reuses (or splices around) the
    downstream's: the line still has the head's values and exact counts."""
    log = tmp_path / "access.log"
    fmt = "{METH} {URI} {UA} {US_HDR}:'X-A' {DS_HDR}:'Content-Length' {BYTES_SENT} {BODY_BYTES_SENT} {BYTES_RECEIVED}"
    start_rproxy(two_x(port, downstream.port, log, fmt), port)
    body = payload(300_000)
    head = (b"POST /echo HTTP/1.1\r\nHost: example.test\r\nUser-Agent: big-uploader\r\nX-A: kept\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    responses = [exchange(port, raw) for raw in (
        head + body,
        b"GET /bytes/100000 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: r1\r\n\r\n",
        b"GET /bytes/1048576 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: r2\r\n\r\n")]
    lines = lines_of(log, 3)
    meth, uri, ua, xa, _, sent, body_sent, received = lines[0].split(" ")
    assert (meth, uri, ua, xa) == ("POST", "/echo", "big-uploader", "kept")
    assert int(received) == len(head) + len(body)
    assert (int(sent), int(body_sent)) == (len(responses[0][0]) + len(responses[0][1]), len(responses[0][1]))
    for line, (resp_head, resp_body), size, ua in ((lines[1], responses[1], 100000, "r1"),
                                                   (lines[2], responses[2], 1048576, "r2")):
        meth, uri, got_ua, _, cl, sent, body_sent, received = line.split(" ")
        assert (meth, got_ua, cl) == ("GET", ua, str(size))
        assert (int(sent), int(body_sent)) == (len(resp_head) + size, size) and len(resp_body) == size


def test_vhost_log_replaces_the_server_log(start_rproxy, downstream, port, tmp_path):
    srv_log, vh_log = tmp_path / "server.log", tmp_path / "vhost.log"
    conf = f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ request {{ enabled = true  output = "file:{srv_log}"  format = "server {{URI}}" }} }}
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "own" {{
        logging {{ request {{ enabled = true  output = "file:{vh_log}"  format = "vhost {{URI}} {{VHOST}}" }} }}
        rule r {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
    vhost "plain" {{ rule r {{ uri-prefix = "/"  downstreams = {{ app }} }} }}
}}
"""
    start_rproxy(conf, port)
    for host, path in (("own", "/1"), ("plain", "/2"), ("none", "/3")):
        request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert lines_of(vh_log, 1) == ["vhost /1 own"]
    assert lines_of(srv_log, 2) == ["server /2", "server /3"]


def test_1x_logging_block(start_rproxy, downstream, port, tmp_path):
    log, err = tmp_path / "access.log", tmp_path / "error.log"
    conf = f"""
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    threads = 1
    logging {{
        enabled = true
        type = file
        filename = {log}
        format = '{{SRC}} "{{METH}} {{URI}} {{PROTO}}" {{STATUS}}'
        errorlog = {err}
    }}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}
}}
"""
    start_rproxy(conf, port)
    request(port, b"GET /one HTTP/1.0\r\n\r\n")
    assert lines_of(log) == ['127.0.0.1 "GET /one HTTP/1.0" 200']
    downstream.close()
    deadline = time.monotonic() + 10
    while "is down" not in (err.read_text() if err.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(r"\[error\] \d+: downstream .* is down", err.read_text())


# ---- error log ----------------------------------------------------------------------------

ELINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} \[(\w+)\] (\d+): (.*)")


@pytest.mark.parametrize("level, warn_kept", [("error", False), ("warn", True), ("warning", True)])
def test_error_log_level_filters_in_master_and_workers(start_rproxy, downstream, port, tmp_path, level,
                                                         warn_kept):
    err = tmp_path / "error.log"
    conf = f"""
workers = 1
error-log = file:{err}
log-level = {level}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}
}}
"""
    p = start_rproxy(conf, port, check_quiet=False)
    worker, = [w.pid for w in p.workers()]
    request(port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")     # warn: bad request (400)
    downstream.close()                                                        # error: downstream is down
    deadline = time.monotonic() + 10
    while "is down" not in (err.read_text() if err.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.read_log() == ""                               # nothing went to stderr
    p.stop()
    lines = err.read_text().splitlines()
    parsed = [ELINE.fullmatch(ln) for ln in lines]
    assert all(parsed), lines
    kept = {m.group(1) for m in parsed}
    assert "error" in kept and ("warn" in kept) == warn_kept
    assert not kept & {"notice", "info", "debug"}           # "rproxy started" (notice) filtered in the master
    assert any("bad request" in m.group(3) for m in parsed) == warn_kept
    down, = [m for m in parsed if "is down" in m.group(3)]
    assert (down.group(1), int(down.group(2))) == ("error", worker)


def test_server_error_log_takes_its_downstream_and_client_errors(start_rproxy, downstream, port, tmp_path):
    main, own = tmp_path / "main.log", tmp_path / "server.log"
    conf = f"""
workers = 1
error-log = file:{main}
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ error {{ enabled = true  output = "file:{own}"  level = warn }} }}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}
}}
"""
    start_rproxy(conf, port, check_quiet=False)
    request(port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    downstream.close()
    deadline = time.monotonic() + 10
    while "is down" not in (own.read_text() if own.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    text = own.read_text()
    assert "bad request (400)" in text and "is down" in text
    main_text = main.read_text()
    assert "rproxy started" in main_text and "is down" not in main_text and "bad request" not in main_text


# ---- reopen, reload, stop: nothing lost ----------------------------------------------------------

def _load(port, stop, sent, errors, prefix):
    """Requests on a keep-alive connection, one at a time, until `stop`;
    sent[prefix] counts those answered."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        buf = b""
        i = 0
        while not stop.is_set():
            c.sendall(f"GET /{prefix}/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            st, _, _, buf = read_response(c, buf)
            if st != 200:
                errors.append(st)
            i += 1
            sent[prefix] = i
        c.close()
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


def test_reopen_after_rename_under_load_loses_no_line(start_rproxy, downstream, port, tmp_path):
    log, err, pid = tmp_path / "access.log", tmp_path / "error.log", tmp_path / "rproxy.pid"
    conf = one_x(port, downstream.port, log, f"""workers = 2
pidfile = {pid}
error-log = file:{err}
access-log-flush = 50ms""", fmt="{URI} {STATUS}", ds_extra="connections = 8")
    start_rproxy(conf, port, check_quiet=False)
    errors, sent, stop = [], {}, threading.Event()
    threads = [threading.Thread(target=_load, args=(port, stop, sent, errors, f"t{k}")) for k in range(4)]
    for t in threads:
        t.start()
    rotated = []
    for k in range(3):
        before = sum(sent.values())
        while sum(sent.values()) < before + 500:           # under load between rotations
            time.sleep(0.01)
        dest = tmp_path / f"access.log.{k}"
        os.rename(log, dest)
        os.rename(err, tmp_path / f"error.log.{k}")
        rotated.append(dest)
        r = subprocess.run(rproxy_command() + ["-s", "reopen", "-p", str(pid)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    before = sum(sent.values())
    while sum(sent.values()) < before + 500:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    time.sleep(0.3)                     # > access-log-flush: every line is out
    seen = []
    for path in [*rotated, log]:
        seen += path.read_text().splitlines()
    expected = {f"/t{k}/{i} 200" for k in range(4) for i in range(sent[f"t{k}"])}
    assert len(seen) == len(expected) and set(seen) == expected
    assert all(path.read_text() for path in rotated[1:]) and log.read_text()   # every file got lines
    # every process reopened its error log too: the newest one has their notices
    deadline = time.monotonic() + 5
    while err.read_text().count("log files reopened") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert err.read_text().count("log files reopened") >= 3     # master + 2 workers


def test_graceful_stop_and_reload_lose_no_line(start_rproxy, downstream, port, tmp_path):
    log = tmp_path / "access.log"
    conf = one_x(port, downstream.port, log, """workers = 1
access-log-flush = 60s
access-log-buffer = 1m""")
    p = start_rproxy(conf, port, check_quiet=False)
    for i in range(50):
        request(port, f"GET /before/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    time.sleep(0.2)
    assert not log.exists() or log.read_text() == ""            # buffered: no timer for a minute
    p.signal(signal.SIGHUP)                                     # the old generation drains, and flushes
    assert len(lines_of(log, 50)) == 50
    for i in range(30):
        request(port, f"GET /after/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    p.signal(signal.SIGQUIT)
    p.proc.wait(15)
    lines = lines_of(log, 80)
    assert lines == [f"/before/{i}" for i in range(50)] + [f"/after/{i}" for i in range(30)]


@pytest.mark.skipif(not shutil.which("logrotate"), reason="needs logrotate")
def test_the_shipped_logrotate_snippet_rotates_without_losing_a_line(start_rproxy, downstream, port, tmp_path):
    """build/common/rproxy.logrotate, run by the real logrotate with its
    paths pointed at a temporary directory: the rotated file keeps what was
    written before, the new file gets what comes after the reopen."""
    import grp
    import pwd

    logdir, pid = tmp_path / "log", tmp_path / "rproxy.pid"
    logdir.mkdir()
    log, err = logdir / "access.log", logdir / "error.log"
    snippet = (ROOT / "build" / "common" / "rproxy.logrotate").read_text()
    me = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    for old, new in (("/var/log/rproxy", str(logdir)), ("/run/rproxy/rproxy.pid", str(pid)),
                     ("/usr/bin/rproxy", rproxy_command()[0]), ("rproxy adm", me)):
        assert old in snippet
        snippet = snippet.replace(old, new)
    (tmp_path / "logrotate.conf").write_text(snippet)
    conf = one_x(port, downstream.port, log, f"""workers = 2
pidfile = {pid}
error-log = file:{err}
access-log-flush = 20ms""")
    p = start_rproxy(conf, port, check_quiet=False)
    for i in range(20):
        request(port, f"GET /before/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert len(lines_of(log, 20)) == 20
    r = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: err.exists() and err.read_text().count("log files reopened") >= 3,
               what="the master and both workers to reopen")
    for i in range(20):
        request(port, f"GET /after/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    # two workers, each writing its own batches: compare as sets
    assert sorted(lines_of(log, 20)) == sorted(f"/after/{i}" for i in range(20))
    assert sorted((logdir / "access.log.1").read_text().splitlines()) == sorted(f"/before/{i}" for i in range(20))
    assert oct(os.stat(log).st_mode & 0o777) == "0o640"
    assert p.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_log_files_belong_to_the_drop_user_and_reopen_works_after_the_drop(start_rproxy, downstream, port):
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="rproxy-logs-"))
    os.chmod(top, 0o755)                                # pytest's tmp_path is root's alone
    logdir = top / "logs"
    logdir.mkdir()
    os.chown(logdir, nobody.pw_uid, nobody.pw_gid)     # the log directory is the user's
    log, err, pid = logdir / "access.log", logdir / "error.log", top / "rproxy.pid"
    err.write_text("")                                 # exists, root's: handed over at start-up
    conf = one_x(port, downstream.port, log, f"""workers = 1
user = nobody
pidfile = {pid}
error-log = file:{err}
access-log-flush = 20ms""")
    try:
        p = start_rproxy(conf, port, check_quiet=False)
        assert os.stat(log).st_uid == nobody.pw_uid and os.stat(err).st_uid == nobody.pw_uid
        request(port, b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert lines_of(log) == ["/1"]
        os.rename(log, logdir / "access.log.1")
        os.rename(err, logdir / "error.log.1")
        p.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not err.exists()
                                               or err.read_text().count("log files reopened") < 2):
            time.sleep(0.02)
        request(port, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert lines_of(log) == ["/2"]
        for path in (log, err):
            assert os.stat(path).st_uid == nobody.pw_uid    # created by the dropped processes
        assert "cannot reopen" not in err.read_text()
    finally:
        shutil.rmtree(top, ignore_errors=True)
