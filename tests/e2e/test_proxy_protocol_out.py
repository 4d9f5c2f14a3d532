"""PROXY protocol out (issue 19): `proxy-protocol = v1|v2` on a downstream.

The downstream here is written for the test: on every connection it reads
and parses the PROXY header (v1 or v2) before anything else, then serves
HTTP/1.1 keep-alive, answering each request with the connection's number
and the address its header named.  Each connection is private to one
client: its own header, reused for that client's keep-alive requests,
closed when the client goes.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import struct
import threading
import time

import pytest

from support.master import wait_log, wait_until
from support.proc import free_port, read_response

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class PPConn:
    def __init__(self, cid, header):
        self.id = cid
        self.header = header            # dict, or None when no valid header came
        self.requests = []              # paths
        self.closed = threading.Event()


def _read_exact(sock, n):
    b = b""
    while len(b) < n:
        d = sock.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b


def parse_pp(sock) -> dict:
    """Read exactly one PROXY header off `sock` (byte by byte for v1, so
    nothing after it is consumed)."""
    first = _read_exact(sock, 12)
    if first == V2_SIG:
        rest = _read_exact(sock, 4)
        ver_cmd, fam = rest[0], rest[1]
        body = _read_exact(sock, struct.unpack("!H", rest[2:4])[0])
        h = {"version": 2, "command": "LOCAL" if ver_cmd == 0x20 else "PROXY" if ver_cmd == 0x21 else ver_cmd}
        if fam == 0x11:
            h.update(family="TCP4", src=str(ipaddress.ip_address(body[0:4])),
                     dst=str(ipaddress.ip_address(body[4:8])), sport=struct.unpack("!H", body[8:10])[0],
                     dport=struct.unpack("!H", body[10:12])[0])
        elif fam == 0x21:
            h.update(family="TCP6", src=str(ipaddress.ip_address(body[0:16])),
                     dst=str(ipaddress.ip_address(body[16:32])), sport=struct.unpack("!H", body[32:34])[0],
                     dport=struct.unpack("!H", body[34:36])[0])
        else:
            h.update(family=fam, body=body.hex())
        return h
    line = first
    while not line.endswith(b"\r\n"):
        line += _read_exact(sock, 1)
        if len(line) > 107:
            raise ValueError("v1 line too long")
    parts = line[:-2].decode().split(" ")
    assert parts[0] == "PROXY", line
    if parts[1] == "UNKNOWN":
        return {"version": 1, "family": "UNKNOWN"}
    assert len(parts) == 6, line
    return {"version": 1, "family": parts[1], "src": parts[2], "dst": parts[3], "sport": int(parts[4]),
            "dport": int(parts[5])}


class PPDownstream:
    """A downstream that expects a PROXY header on every connection."""

    def __init__(self, ssl_context=None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ssl_context = ssl_context
        self.conns: list[PPConn] = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(30)
        with self.lock:
            c = PPConn(len(self.conns) + 1, None)
            self.conns.append(c)
        try:
            c.header = parse_pp(s)
            if self.ssl_context is not None:
                s = self.ssl_context.wrap_socket(s, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                c.requests.append(path)
                if path.startswith("/slow/"):
                    time.sleep(int(path.split("/")[2]) / 1000)
                body = json.dumps({"conn": c.id, **c.header}).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (OSError, EOFError, ValueError, AssertionError):
            pass
        finally:
            c.closed.set()
            s.close()

    def close(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def ppds():
    ds = PPDownstream()
    yield ds
    ds.close()


def conf(port, ds_port, *, ds_extra="", server_extra="", addr="127.0.0.1", port6=None, workers=1):
    servers = ""
    for a, p in [(addr, port)] + ([("::1", port6)] if port6 else []):
        servers += f"""
server {{
    addr = {a}
    port = {p}
    {server_extra}
    downstream one {{ addr = 127.0.0.1  port = {ds_port}  proxy-protocol = v1  {ds_extra} }}
    downstream two {{ addr = 127.0.0.1  port = {ds_port}  proxy-protocol = v2  {ds_extra} }}
    vhost "*" {{
        rule v1 {{ uri-prefix = "/v1/"  downstreams = {{ one }} }}
        rule v2 {{ uri-prefix = "/v2/"  downstreams = {{ two }} }}
    }}
}}"""
    return f"workers = {workers}\nlog-level = debug\n{servers}\n"


def ask(s, path, extra=b""):
    """One request on a kept connection: (status, the downstream's JSON)."""
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
    st, _, body, _ = read_response(s)
    return st, (json.loads(body) if st == 200 else body)


def client(port, host="127.0.0.1"):
    return socket.create_connection((host, port), timeout=10)


def test_v1_and_v2_name_the_client_over_ipv4_and_ipv6(start_rproxy, port, ppds):
    port6 = free_port("::1")
    start_rproxy(conf(port, ppds.port, port6=port6), port)
    for host, p, fam in (("127.0.0.1", port, "TCP4"), ("::1", port6, "TCP6")):
        for version in (1, 2):
            with client(p, host) as s:
                st, got = ask(s, f"/v{version}/x")
                assert st == 200
                me = s.getsockname()
                assert (got["version"], got["family"]) == (version, fam)
                assert (got["src"], got["sport"]) == (me[0], me[1])
                assert (got["dst"], got["dport"]) == (host, p)     # the listener the client reached


def test_clients_get_private_connections_kept_while_they_stay(start_rproxy, port, ppds):
    p = start_rproxy(conf(port, ppds.port), port)
    a, b = client(port), client(port)
    try:
        got_a = [ask(a, f"/v2/a{i}")[1] for i in range(3)]
        got_b = [ask(b, f"/v2/b{i}")[1] for i in range(2)]
        got_a.append(ask(a, "/v2/a3")[1])
        # one connection each, with its own client's header, reused for keep-alive
        assert len({g["conn"] for g in got_a}) == 1 and len({g["conn"] for g in got_b}) == 1
        assert got_a[0]["conn"] != got_b[0]["conn"]
        assert {g["sport"] for g in got_a} == {a.getsockname()[1]}
        assert {g["sport"] for g in got_b} == {b.getsockname()[1]}
        ca = ppds.conns[got_a[0]["conn"] - 1]
        cb = ppds.conns[got_b[0]["conn"] - 1]
        assert ca.requests == ["/v2/a0", "/v2/a1", "/v2/a2", "/v2/a3"]
        assert cb.requests == ["/v2/b0", "/v2/b1"]
        # the connection closes when its client goes, and only that one
        a.close()
        assert ca.closed.wait(10)
        assert not cb.closed.is_set()
        assert ask(b, "/v2/b2")[1]["conn"] == cb.id
        # a client using both downstreams has one private connection on each
        one, two = ask(b, "/v1/b3")[1], ask(b, "/v2/b4")[1]
        assert (one["version"], two["conn"]) == (1, cb.id) and one["conn"] not in (ca.id, cb.id)
        assert len(ppds.conns) == 3
    finally:
        a.close()
        b.close()
    wait_until(lambda: all(c.closed.is_set() for c in ppds.conns), what="private connections closed")
    assert all(c.header is not None for c in ppds.conns)
    assert "opening a private connection for a client" in p.read_log()


def test_proxy_protocol_in_is_forwarded_with_the_original_client(start_rproxy, port, ppds):
    start_rproxy(conf(port, ppds.port, server_extra="proxy-protocol = true  proxy-protocol-from = { 127.0.0.1 }"),
                 port)
    with client(port) as s:
        s.sendall(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n")
        st, got = ask(s, "/v2/in")
        assert st == 200
        assert got == {"conn": got["conn"], "version": 2, "command": "PROXY", "family": "TCP4",
                       "src": "203.0.113.7", "dst": "198.51.100.1", "sport": 40000, "dport": 443}
    hdr6 = (V2_SIG + bytes([0x21, 0x21]) + struct.pack("!H", 36) + ipaddress.ip_address("2001:db8::7").packed
            + ipaddress.ip_address("2001:db8::1").packed + struct.pack("!HH", 5555, 80))
    with client(port) as s:
        s.sendall(hdr6)
        st, got = ask(s, "/v1/in6")
        assert st == 200
        assert (got["family"], got["src"], got["sport"], got["dst"], got["dport"]) == \
            ("TCP6", "2001:db8::7", 5555, "2001:db8::1", 80)
    with client(port) as s:
        s.sendall(b"PROXY UNKNOWN\r\n")           # no address carried: the real one is named
        st, got = ask(s, "/v1/unknown")
        assert (got["family"], got["src"], got["sport"]) == ("TCP4", "127.0.0.1", s.getsockname()[1])


def test_max_connections_bounds_private_connections(start_rproxy, port, ppds):
    """With one slot, a client between requests gives its connection up to a
    waiting client; a busy one makes the other wait (pending queue)."""
    start_rproxy(conf(port, ppds.port, ds_extra="connections = 1  max-connections = 1"), port)
    a, b = client(port), client(port)
    try:
        first = ask(a, "/v2/a")[1]
        got_b = ask(b, "/v2/b")[1]                  # a's idle connection is closed for b
        assert got_b["conn"] != first["conn"] and got_b["sport"] == b.getsockname()[1]
        assert ppds.conns[first["conn"] - 1].closed.wait(10)
        # b busy on the only slot: a waits, then gets a fresh connection of its own
        out = {}
        t = threading.Thread(target=lambda: out.update(b=ask(b, "/v2/slow/400")[1]))
        t.start()
        wait_until(lambda: "/v2/slow/400" in ppds.conns[got_b["conn"] - 1].requests, what="slow request")
        got_a = ask(a, "/v2/a2")[1]
        t.join(10)
        assert out["b"]["conn"] == got_b["conn"]
        assert got_a["sport"] == a.getsockname()[1] and got_a["conn"] not in (first["conn"], got_b["conn"])
        assert ppds.conns[got_b["conn"] - 1].closed.wait(10)
        assert sum(not c.closed.is_set() for c in ppds.conns) == 1
    finally:
        a.close()
        b.close()


def test_a_passthrough_tunnel_stays_the_clients(start_rproxy, port, ppds):
    """A tunnel takes the private connection's socket (the slot is freed)
    and closes with its client."""
    text = conf(port, ppds.port, ds_extra="connections = 1  max-connections = 1").replace(
        'rule v1 { uri-prefix = "/v1/"', 'rule raw { uri-prefix = "/raw/"  downstreams = { two }  passthrough = true }\n'
        '        rule v1 { uri-prefix = "/v1/"', 1)
    start_rproxy(text, port)
    with client(port) as t:
        st, got = ask(t, "/raw/1")
        assert st == 200 and got["sport"] == t.getsockname()[1]
        st, again = ask(t, "/raw/2")                # raw bytes on the same downstream connection
        assert again["conn"] == got["conn"]
        with client(port) as s:                     # the slot is free for another client meanwhile
            other = ask(s, "/v2/x")[1]
            assert other["sport"] == s.getsockname()[1] and other["conn"] != got["conn"]
    assert ppds.conns[got["conn"] - 1].closed.wait(10)


def test_a_rule_spreads_clients_over_its_proxy_protocol_downstreams(start_rproxy, port, ppds):
    text = conf(port, ppds.port).replace(
        'rule v1 { uri-prefix = "/v1/"', 'rule both { uri-prefix = "/both/"  downstreams = { one, two }  '
        'lb-method = roundrobin }\n        rule v1 { uri-prefix = "/v1/"', 1)
    start_rproxy(text, port)
    clients = [client(port) for _ in range(4)]
    try:
        got = [ask(c, "/both/x")[1] for c in clients]
        assert sorted(g["version"] for g in got) == [1, 1, 2, 2]   # the fewest connections, in turn
        assert [g["sport"] for g in got] == [c.getsockname()[1] for c in clients]
        assert [ask(c, "/both/y")[1]["conn"] for c in clients] == [g["conn"] for g in got]
    finally:
        for c in clients:
            c.close()


def test_header_comes_before_tls(start_rproxy, port, test_pki):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(test_pki["server"].crt, test_pki["server"].key)
    ds = PPDownstream(ssl_context=ctx)
    try:
        start_rproxy(conf(port, ds.port, ds_extra=f'tls = true  tls-name = localhost  '
                                                  f'ssl {{ ca = "{test_pki["ca"].crt}" }}'), port)
        with client(port) as s:
            for _ in range(2):
                st, got = ask(s, "/v1/tls")
                assert st == 200 and got["src"] == "127.0.0.1" and got["sport"] == s.getsockname()[1]
        assert len(ds.conns) == 1
    finally:
        ds.close()


def test_down_downstream_502_then_health_checks_send_local(start_rproxy, port, ppds):
    dead = free_port()
    p = start_rproxy(conf(port, dead), port)
    with client(port) as s:
        st, _ = ask(s, "/v2/dead")
        assert st == 502
    wait_log(p, "downstream two (127.0.0.1:%d) is down" % dead)
    p2port = free_port()
    start_rproxy(conf(p2port, ppds.port, ds_extra='health-check { path = "/hc"  interval = 200ms  timeout = 100ms }'),
                 p2port)
    wait_until(lambda: any(c.requests[:1] == ["/hc"] and c.header.get("command") == "LOCAL"
                           for c in ppds.conns if c.header), what="a v2 LOCAL health check")
    wait_until(lambda: any(c.requests[:1] == ["/hc"] and c.header == {"version": 1, "family": "UNKNOWN"}
                           for c in ppds.conns if c.header), what="a v1 UNKNOWN health check")
    with client(p2port) as s:
        assert ask(s, "/v2/up")[0] == 200
