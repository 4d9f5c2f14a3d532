"""End to end: HTTP/2 toward clients (rproxy/fastpath/h2.pxi), frame level,
with the `h2` package (and hyperframe/hpack for frames h2 refuses to send)
over real sockets to the real `rproxy` command: ALPN h2 on TLS, prior
knowledge (h2c) on a plain listener, streams spread over the HTTP/1.1
downstream pools, flow control, the protections (rapid reset, CONTINUATION
and control frame floods, bad pseudo-headers), GOAWAY when idle and on a
graceful stop.  Every proxy is checked at teardown to hold no client,
exchange or buffer (conftest)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame,
                              SettingsFrame)

from support.downstream import Downstream, payload
from support.master import wait_until


def h2c_conf(port, ds_port, extra="", connections=2):
    return f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    http2 = true
    {extra}
    downstream {{
        addr = 127.0.0.1
        port = {ds_port}
        connections = {connections}
    }}
}}
"""


class H2Client:
    """An HTTP/2 client connection driven by hand: send, then pump() the
    socket into h2's state machine and collect its events per stream."""

    def __init__(self, port, tls_ctx=None, strict=True, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname="localhost")
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=strict, normalize_outbound_headers=strict)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.streams: dict = {}
        self.settings: dict = {}
        self.terminated = None          # the GOAWAY's event
        self.closed = False
        self.auto_ack = True

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="localhost", flush=True):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", authority), *headers]
        self.conn.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        if flush:
            self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        while body:
            n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n == 0:
                self.pump(0.5)
                continue
            self.conn.send_data(sid, body[:n])
            body = body[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def st(self, sid):
        return self.streams.setdefault(sid, {"status": None, "headers": [], "body": b"", "ended": False,
                                              "reset": None, "informational": [], "trailers": None})

    def pump(self, timeout=0.2) -> bool:
        """Read once (up to timeout); False when nothing came."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self.on_event(ev)
        self.flush()
        return True

    def on_event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            s = self.st(ev.stream_id)
            s["headers"] = ev.headers
            s["status"] = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self.st(ev.stream_id)["informational"].append(int(dict(ev.headers)[":status"]))
        elif isinstance(ev, h2.events.TrailersReceived):
            self.st(ev.stream_id)["trailers"] = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            self.st(ev.stream_id)["body"] += ev.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.st(ev.stream_id)["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            self.st(ev.stream_id)["reset"] = ev.error_code
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings.update({k: v.new_value for k, v in ev.changed_settings.items()})
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    def wait(self, cond, timeout=5.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.streams}")
            if self.closed:
                if cond():
                    return
                raise AssertionError(f"connection closed waiting for {what} (GOAWAY: {self.terminated})")
            self.pump(0.2)

    def response(self, sid, timeout=5.0):
        self.wait(lambda: self.st(sid)["ended"] or self.st(sid)["reset"] is not None, timeout, f"stream {sid}")
        return self.st(sid)

    def expect_goaway(self, code, timeout=5.0):
        """Send what is queued (the peer may close first), then the connection
        must end with a GOAWAY carrying `code`."""
        try:
            self.flush()
        except OSError:
            pass
        self.wait_closed(timeout)
        assert self.terminated is not None and self.terminated.error_code == code, self.terminated

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(0.2)
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def get(port, path, **kw):
    c = H2Client(port, **kw)
    try:
        return c.response(c.request(path))
    finally:
        c.close()


# ---- prior knowledge, methods, bodies -----------------------------------------------------------

def test_h2c_preface_settings_get_post_head_and_trailers(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port, extra="max-header-size = 8k"), port)
    c = H2Client(port)
    sid = c.request("/hello?x=1", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-test", "yes")])
    r = c.response(sid)
    assert r["status"] == 200 and r["body"] == b"/hello"
    # our SETTINGS: concurrency and the header list size (= max-header-size)
    assert c.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert c.settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 8192
    seen = downstream.requests[-1]
    assert seen.method == "GET" and seen.target == "/hello?x=1"
    assert seen.header("Host") == "localhost"
    assert seen.header_all("Cookie") == ["a=1; b=2"]          # crumbs joined for HTTP/1.1
    assert seen.header("x-test") == "yes"
    # a body with a content-length, and one without (chunked toward the downstream) with trailers
    body = payload(200000)
    sid = c.request("/echo", method="POST", headers=[("content-length", str(len(body)))], body=body)
    info = json.loads(c.response(sid)["body"])
    assert (info["length"], info["sha256"], info["chunked"]) == (len(body), hashlib.sha256(body).hexdigest(), False)
    sid = c.request("/echo", method="PUT", headers=[("te", "trailers")], body=body[:70000], end=False)
    c.conn.send_headers(sid, [("x-digest", "abc")], end_stream=True)
    c.flush()
    info = json.loads(c.response(sid)["body"])
    assert (info["length"], info["chunked"]) == (70000, True)
    # HEAD and 204: headers only
    sid = c.request("/bytes/5000", method="HEAD")
    r = c.response(sid)
    assert r["status"] == 200 and r["body"] == b"" and dict(r["headers"])["content-length"] == "5000"
    r = c.response(c.request("/status/204"))
    assert r["status"] == 204 and r["body"] == b""
    # a chunked response arrives whole, with no transfer-encoding or connection fields
    r = c.response(c.request("/chunked/50000"))
    assert r["body"] == payload(50000)
    names = {k for k, _ in r["headers"]}
    assert not names & {"transfer-encoding", "connection", "keep-alive"}
    c.close()


def test_head_over_max_header_size_is_431_and_the_connection_goes_on(start_rproxy, port, downstream):
    p = start_rproxy(h2c_conf(port, downstream.port, extra="max-header-size = 4k"), port)
    c = H2Client(port)
    r = c.response(c.request("/big", headers=[("x-big", "a" * 6000)]))
    assert r["status"] == 431
    assert c.response(c.request("/after"))["status"] == 200
    assert not [q for q in downstream.requests if q.target == "/big"]
    assert "max-header-size: 431" in p.read_log()
    c.close()


def test_upgrade_h2c_is_not_honoured_or_forwarded(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
              b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    data = b""
    while b"/up" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200")
    seen = downstream.requests[-1]
    assert seen.header("Upgrade") is None and seen.header("HTTP2-Settings") is None


def test_plain_listener_without_http2_speaks_only_http11(start_rproxy, port, downstream):
    conf = h2c_conf(port, downstream.port).replace("http2 = true", "")
    start_rproxy(conf, port)
    c = H2Client(port)
    assert not c.pump(2.0) or c.terminated is None
    # the preface is not HTTP/1.1: a 400 and a close, no HTTP/2
    c.close()
    assert get_http11(port, "/plain").startswith(b"HTTP/1.1 200")


def get_http11(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


# ---- TLS: ALPN -------------------------------------------------------------------------------------

def tls_conf(port, ds_port, pki, extra="", log=""):
    srv = pki["server"]
    return f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    {extra}
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    downstream app {{ addr = 127.0.0.1  port = {ds_port}  connections = 2 }}
    vhost "localhost" {{
        aliases = {{ "127.0.0.1" }}
        default = true
        {log}
        headers {{ x-forwarded-proto = true }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
"""


def client_ctx(pki, protos):
    ctx = ssl.create_default_context(cafile=pki["ca"].crt)
    ctx.set_alpn_protocols(protos)
    return ctx


def test_tls_alpn_h2_by_default_then_http11_and_http2_off(start_rproxy, port, downstream, test_pki, tmp_path):
    log = tmp_path / "access.log"
    p = start_rproxy(tls_conf(port, downstream.port, test_pki,
                              log=f'logging {{ request {{ enabled = true  output = "file:{log}"  '
                                  'format = "{PROTO} {STATUS} {URI} {TLS_PROTO} {US_SPORT}" } }'), port)
    c = H2Client(port, tls_ctx=client_ctx(test_pki, ["h2", "http/1.1"]))
    assert c.sock.selected_alpn_protocol() == "h2"
    r = c.response(c.request("/tls", authority="localhost"))
    assert r["status"] == 200 and r["body"] == b"/tls"
    assert downstream.requests[-1].header("X-Forwarded-Proto") == "https"
    assert c.response(c.request("/tls2", authority="localhost"))["status"] == 200
    sport = c.sock.getsockname()[1]
    c.close()
    # a client offering only http/1.1 gets it
    s = client_ctx(test_pki, ["http/1.1"]).wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                                        server_hostname="localhost")
    assert s.selected_alpn_protocol() == "http/1.1"
    s.sendall(b"GET /one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    wait_until(lambda: "HTTP/2.0 200 /tls TLSv1.3" in log.read_text() if log.exists() else False, 5,
               "the h2 access log line")
    assert "HTTP/1.1 200 /one" in log.read_text()
    wait_until(lambda: "/tls2" in log.read_text(), 5, "the second h2 line")
    # the streams of one connection carry its client port
    assert {ln.split()[-1] for ln in log.read_text().splitlines() if ln.startswith("HTTP/2.0")} == {str(sport)}
    p.stop()
    # http2 = false: h2 is not offered, http/1.1 is chosen
    port2 = port
    start_rproxy(tls_conf(port2, downstream.port, test_pki, extra="http2 = false"), port2)
    s = client_ctx(test_pki, ["h2", "http/1.1"]).wrap_socket(socket.create_connection(("127.0.0.1", port2)),
                                                              server_hostname="localhost")
    assert s.selected_alpn_protocol() == "http/1.1"
    s.close()


# ---- many streams, flow control, resets --------------------------------------------------------------

def test_many_concurrent_streams_spread_over_downstream_connections(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port, connections=4), port)
    c = H2Client(port)
    sids = [c.request("/hold/many") for _ in range(40)]
    wait_until(lambda: len([q for q in downstream.requests if q.target == "/hold/many"]) >= 4, 5,
               "the held requests")
    downstream.release("many")
    conns = set()
    for sid in sids:
        r = c.response(sid, timeout=10)
        assert r["status"] == 200 and r["body"] == b"/hold/many"
        conns.add(dict(r["headers"])["x-conn"])
    assert len(conns) >= 2, conns              # several downstream connections served one client connection
    c.close()


def test_flow_control_window_zero_pauses_then_resumes(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port), port)
    c = H2Client(port)
    c.auto_ack = False                         # a slow reader: no WINDOW_UPDATE
    sid = c.request("/bytes/400000")
    c.wait(lambda: len(c.st(sid)["body"]) >= 65535, 5, "the first window")
    for _ in range(5):
        c.pump(0.1)
    got = len(c.st(sid)["body"])
    assert got == 65535 and not c.st(sid)["ended"]     # window 0: rproxy waits
    c.auto_ack = True
    c.conn.acknowledge_received_data(got, sid)
    c.flush()
    r = c.response(sid, timeout=10)
    assert r["body"] == payload(400000)
    # a large upload: the client's window opens only as rproxy takes the bytes
    body = os.urandom(600000)
    info = json.loads(c.response(c.request("/echo", method="POST", body=body), timeout=10)["body"])
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    c.close()


def test_client_reset_mid_response_and_the_connection_goes_on(start_rproxy, port, downstream):
    # (with response buffering the downstream would be read to its end and kept: no buffering here)
    start_rproxy(h2c_conf(port, downstream.port, extra="response-buffering = false"), port)
    c = H2Client(port)
    c.auto_ack = False
    wait_until(lambda: downstream.connections >= 2, 5, "the pool")
    before = downstream.connections
    sid = c.request("/bytes/3000000")
    c.wait(lambda: len(c.st(sid)["body"]) > 0, 5, "the first bytes")
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    # the downstream connection was mid-body: closed, not reused (the pool opens a fresh one)
    wait_until(lambda: downstream.connections > before, 5, "a fresh downstream connection")
    c.auto_ack = True
    c.conn.acknowledge_received_data(len(c.st(sid)["body"]), sid)
    for i in range(3):
        r = c.response(c.request(f"/after{i}"))
        assert r["status"] == 200 and r["body"] == f"/after{i}".encode()
    c.close()


def test_rapid_reset_flood_gets_goaway_enhance_your_calm(start_rproxy, port, downstream):
    p = start_rproxy(h2c_conf(port, downstream.port, extra="http2-max-resets-per-second = 50"), port)
    other = H2Client(port)
    c = H2Client(port)
    c.pump(0.3)
    for _ in range(300):
        sid = c.request("/rr", flush=False)
        c.conn.reset_stream(sid)
    c.expect_goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert "GOAWAY sent" in p.read_log()
    # another client is not concerned
    assert other.response(other.request("/other"))["status"] == 200
    other.close()
    c.close()


def test_control_frame_flood_gets_goaway(start_rproxy, port, downstream):
    p = start_rproxy(h2c_conf(port, downstream.port, extra="http2-max-control-frames-per-second = 100"), port)
    c = H2Client(port)
    for i in range(400):
        c.conn.ping(i.to_bytes(8, "big"))
    c.expect_goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert "control frames in a second" in p.read_log()
    assert get(port, "/still")["status"] == 200
    c.close()


def test_continuation_flood_closes_the_connection(start_rproxy, port, downstream):
    p = start_rproxy(h2c_conf(port, downstream.port), port)
    c = H2Client(port)
    c.pump(0.3)
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/c"), (":scheme", "http"), (":authority", "x")])
    frames = HeadersFrame(1, data=block, flags=[]).serialize()          # no END_HEADERS
    for _ in range(50):
        frames += ContinuationFrame(1, data=enc.encode([("x-pad", "p" * 100)]), flags=[]).serialize()
    try:
        c.sock.sendall(frames)
    except OSError:
        pass
    assert c.wait_closed(5)
    assert "HTTP/2 client" in p.read_log()
    assert get(port, "/fine")["status"] == 200
    c.close()


@pytest.mark.parametrize("limit,closed", [(None, False), (2, True)])
def test_max_continuations_is_the_configured_limit(start_rproxy, port, downstream, limit, closed):
    """A header block in HEADERS + 3 CONTINUATION frames (a few hundred bytes):
    served under the default (8), the connection closed under 2."""
    extra = "" if limit is None else f"http2-max-continuations = {limit}"
    p = start_rproxy(h2c_conf(port, downstream.port, extra=extra), port)
    c = H2Client(port)
    c.pump(0.3)
    enc = hpack.Encoder()
    frames = HeadersFrame(1, data=enc.encode([(":method", "GET"), (":path", "/cont"), (":scheme", "http"),
                                              (":authority", "x")]), flags=["END_STREAM"]).serialize()
    for i in range(3):
        frames += ContinuationFrame(1, data=enc.encode([(f"x-part-{i}", "v" * 20)]),
                                    flags=["END_HEADERS"] if i == 2 else []).serialize()
    c.sock.sendall(frames)
    if closed:
        assert c.wait_closed(5)
        assert "HTTP/2 client" in p.read_log()
        assert not [q for q in downstream.requests if q.target == "/cont"]
    else:
        deadline = time.monotonic() + 5
        while not [q for q in downstream.requests if q.target == "/cont"] and time.monotonic() < deadline:
            time.sleep(0.05)        # (no pump: h2's state machine never saw this stream opened)
        [q] = [q for q in downstream.requests if q.target == "/cont"]
        assert q.header("x-part-2") == "v" * 20
    c.close()


@pytest.mark.parametrize("headers,why", [
    ([(":method", "GET"), (":scheme", "http"), (":authority", "x")], "no :path"),
    ([(":method", "GET"), (":path", "/p"), (":scheme", "http"), (":authority", "x"), (":bogus", "1")],
     "unknown pseudo-header"),
    ([(":method", "GET"), (":path", "/p"), (":scheme", "http"), (":authority", "x"), ("X-Upper", "1")],
     "uppercase name"),
    ([(":method", "GET"), (":path", "/p"), (":scheme", "http"), (":authority", "x"), ("connection", "close")],
     "connection-specific field"),
])
def test_bad_request_headers_are_a_stream_protocol_error(start_rproxy, port, downstream, headers, why):
    p = start_rproxy(h2c_conf(port, downstream.port), port)
    c = H2Client(port, strict=False)
    c.pump(0.3)
    c.conn.send_headers(1, headers, end_stream=True)
    c.flush()
    r = c.response(1)
    assert r["reset"] == h2.errors.ErrorCodes.PROTOCOL_ERROR, why
    assert "HTTP/2 client" in p.read_log()
    # the connection goes on
    sid = c.request("/ok")
    assert c.response(sid)["status"] == 200
    assert not [q for q in downstream.requests if q.target == "/p"]
    c.close()


# ---- GOAWAY: idle, graceful stop ---------------------------------------------------------------------

def test_idle_connection_gets_goaway(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port, extra="keepalive-timeout = 1"), port)
    c = H2Client(port)
    assert c.response(c.request("/idle"))["status"] == 200
    assert c.wait_closed(5)
    assert c.terminated is not None and c.terminated.error_code == 0 and c.terminated.last_stream_id == 1
    c.close()


def read_frames(sock, timeout=10.0):
    """The frames a peer sends until it closes (h2's state machine refuses
    frames after a GOAWAY, so this reads them by hand)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        while len(buf) >= 9:
            f, n = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + n:
                break
            f.parse_body(memoryview(buf[9:9 + n]))
            buf = buf[9 + n:]
            yield f
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk


def test_sigquit_goaway_lets_streams_in_flight_finish(start_rproxy, port, downstream):
    p = start_rproxy(h2c_conf(port, downstream.port), port, check_quiet=False)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    enc, dec = hpack.Encoder(), hpack.Decoder()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    sids = [1, 3, 5]
    for sid in sids:
        block = enc.encode([(":method", "GET"), (":path", "/hold/quit"), (":scheme", "http"), (":authority", "x")])
        out += HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    s.sendall(out)
    wait_until(lambda: len([q for q in downstream.requests if q.target == "/hold/quit"]) == 3, 5, "held")
    p.signal(signal.SIGQUIT)
    goaway, status, body, ended = None, {}, {}, set()
    for f in read_frames(s):
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            s.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(f, GoAwayFrame):
            goaway = (f.last_stream_id, f.error_code)
            downstream.release("quit")         # the streams in flight may finish now
        elif isinstance(f, HeadersFrame):
            status[f.stream_id] = dict(dec.decode(f.data))[":status"]
        elif isinstance(f, DataFrame):
            body[f.stream_id] = body.get(f.stream_id, b"") + f.data
        if "END_STREAM" in f.flags:
            ended.add(f.stream_id)
    s.close()
    assert goaway == (5, 0)                     # NO_ERROR, the last stream id
    assert ended == set(sids) and set(status.values()) == {"200"}
    assert all(body[sid] == b"/hold/quit" for sid in sids)
    wait_until(lambda: p.poll() is not None, 10, "the master to exit")


# ---- the HTTP/1.1 features, through streams -----------------------------------------------------

def features_handler(req, s):
    path = req.target.split("?")[0]
    if path.startswith("/gz/"):
        body = b"hello h2 " * 3000
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    elif path.startswith("/c/"):
        with COUNT_LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        body = b"cached"
        s.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-Count: %d\r\nContent-Length: %d\r\n\r\n"
                  % (n, len(body)) + body)
    elif path == "/trailers":
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n")
    else:
        return Downstream.default_handler(req, s)
    return True


COUNT = [0]
COUNT_LOCK = threading.Lock()


def test_static_cache_compression_trailers_and_expect_over_h2(start_rproxy, port, tmp_path):
    ds = Downstream(handler=features_handler)
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(payload(150000))
    log = tmp_path / "access.log"
    conf = f"""
workers = 1
cache main {{ path = "{tmp_path / 'cache'}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    http2 = true
    downstream d {{ addr = 127.0.0.1  port = {ds.port}  connections = 2 }}
    vhost "*" {{
        logging {{ request {{ enabled = true  output = "file:{log}"  format = "{{PROTO}} {{STATUS}} {{URI}} {{CACHE}}" }} }}
        rule files {{ uri-prefix = "/static/"  root = "{www}" }}
        rule gz {{ uri-prefix = "/gz/"  downstreams = {{ d }}  compress = {{ gzip }} }}
        rule c {{ uri-prefix = "/c/"  downstreams = {{ d }}  cache = main }}
        rule all {{ uri-prefix = "/"  downstreams = {{ d }} }}
    }}
}}
"""
    try:
        start_rproxy(conf, port)
        c = H2Client(port)
        # a static file (read into buffers: no sendfile on a stream)
        r = c.response(c.request("/static/f.bin"))
        assert r["status"] == 200 and r["body"] == payload(150000)
        # compression
        r = c.response(c.request("/gz/a", headers=[("accept-encoding", "gzip")]))
        assert dict(r["headers"]).get("content-encoding") == "gzip"
        assert gzip.decompress(r["body"]) == b"hello h2 " * 3000
        # the cache: the second answer is the stored one
        first = c.response(c.request("/c/x"))
        second = c.response(c.request("/c/x"))
        assert first["body"] == second["body"] == b"cached"
        assert dict(first["headers"])["x-count"] == dict(second["headers"])["x-count"] == "1"
        # response trailers
        r = c.response(c.request("/trailers", headers=[("te", "trailers")]))
        assert r["body"] == b"hello world" and r["trailers"] == [("x-checksum", "abc")]
        # Expect: 100-continue: the interim answer comes before the body is sent
        body = payload(30000)
        sid = c.request("/echo", method="POST", headers=[("content-length", str(len(body))),
                                                          ("expect", "100-continue")], end=False)
        c.wait(lambda: 100 in c.st(sid)["informational"], 5, "100 Continue")
        c.send_body(sid, body)
        assert json.loads(c.response(sid)["body"])["length"] == len(body)
        c.close()
        wait_until(lambda: log.exists() and log.read_text().count("HTTP/2.0") >= 6, 5, "the access log")
        text = log.read_text()
        assert "HTTP/2.0 200 /c/x HIT" in text and "HTTP/2.0 200 /static/f.bin" in text
    finally:
        ds.close()


def test_streams_beyond_max_concurrent_are_refused(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port, extra="http2-max-concurrent-streams = 5"), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    enc, dec = hpack.Encoder(), hpack.Decoder()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    for sid in range(1, 13, 2):                 # six streams, one more than allowed
        block = enc.encode([(":method", "GET"), (":path", "/hold/cc"), (":scheme", "http"), (":authority", "x")])
        out += HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    s.sendall(out)
    resets, ended = {}, set()
    for f in read_frames(s, timeout=5):
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            s.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(f, RstStreamFrame):
            resets[f.stream_id] = f.error_code
            downstream.release("cc")
        elif isinstance(f, HeadersFrame):
            dec.decode(f.data)
        if "END_STREAM" in f.flags:
            ended.add(f.stream_id)
        if len(ended) == 5:
            break
    s.close()
    assert resets == {11: 7}                     # REFUSED_STREAM: the client may retry it
    assert ended == {1, 3, 5, 7, 9}


def test_early_answer_then_the_rest_of_the_request_is_refused(start_rproxy, port, downstream):
    start_rproxy(h2c_conf(port, downstream.port, extra="client-max-body-size = 1k"), port)
    c = H2Client(port)
    sid = c.request("/up", method="POST", headers=[("content-length", "100000")], end=False)
    c.wait(lambda: c.st(sid)["ended"] or c.st(sid)["reset"] is not None, 5, "the 413")
    assert c.st(sid)["status"] == 413                   # the whole answer first,
    c.wait(lambda: c.st(sid)["reset"] is not None, 5, "RST_STREAM")
    assert c.st(sid)["reset"] == 0                      # then NO_ERROR: the body is not wanted
    assert c.response(c.request("/next"))["status"] == 200
    c.close()
