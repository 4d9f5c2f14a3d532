"""On-the-fly compression (gzip, brotli, zstd) through the real proxy.

The downstream's answer is described by the query string (type, length,
framing, headers to add); every compressed body is decoded with Python's
zlib / brotli / zstandard (and curl --compressed) and compared byte for byte
with what the downstream sent.
"""
from __future__ import annotations

import http.client
import random
import socket
import subprocess
import threading
import time
import urllib.parse
import zlib

import brotli
import pytest
import zstandard

from support.codings import decode
from support.downstream import Downstream
from support.proc import Rproxy, free_port, read_until_close
from support.stats import assert_quiet

GATES: dict[str, threading.Event] = {}


def body_for(n: int, seed: int = 1) -> bytes:
    """Compressible but not trivial: JSON-ish records with random numbers."""
    rnd = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b'{"id": %d, "name": "item-%d", "value": %d, "tags": ["a", "b"]},\n' % (
            i, rnd.randrange(10 ** 6), rnd.randrange(10 ** 9))
        i += 1
    return bytes(out[:n])


def handler(req, s):
    """/r?len=N&mode=cl|chunked|close&ct=TYPE&status=N&h=Name:Value...&gate=NAME"""
    u = urllib.parse.urlsplit(req.target)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    n = int(q.get("len", ["1000"])[0])
    mode = q.get("mode", ["cl"])[0]
    status = int(q.get("status", ["200"])[0])
    ct = q.get("ct", ["application/json"])[0]
    body = body_for(n, int(q.get("seed", ["1"])[0]))
    if "rand" in q:
        body = random.Random(n).randbytes(n)
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {ct}"] if ct else [f"HTTP/1.1 {status} X"]
    head += q.get("h", [])
    if status in (204, 304):
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        return True
    if mode == "cl":
        head.append(f"Content-Length: {n}")
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if req.method == "HEAD" else body))
        return True
    if mode == "close":
        s.sendall(("\r\n".join(head) + "\r\nConnection: close\r\n\r\n").encode() + body)
        return False
    # chunked, in pieces of `piece` bytes; with gate=NAME the second half waits for the test
    piece = int(q.get("piece", ["7000"])[0])
    s.sendall(("\r\n".join(head) + "\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    gate = q.get("gate", [None])[0]
    for i in range(0, n, piece):
        if gate and i >= n // 2 and i - piece < n // 2:
            GATES[gate].wait(10)
        part = body[i:i + piece]
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    s.sendall(b"0\r\n\r\n")
    return True


CONF = """
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {dport}  connections = 2 }}
    vhost "*" {{
        rule plain {{ uri-prefix = "/plain/"  downstreams = {{ d }} }}
        rule gz {{ uri-prefix = "/gz/"  downstreams = {{ d }}  compress = {{ gzip }} }}
        rule buf {{ uri-prefix = "/buf/"  downstreams = {{ d }}  compress = {{ zstd }}  response-buffering = true }}
        rule app {{ uri-prefix = "/"  downstreams = {{ d }}
                   compress = {{ br, zstd, gzip }}
                   compress-types = {{ text/*, application/json, application/javascript, image/svg+xml }}
                   compress-min-size = 256 }}
    }}
}}
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """One proxy for the module (each test's requests stand alone); at the
    end its worker must hold no exchange, buffer or client."""
    ds = Downstream(handler=handler)
    port = free_port()
    p = Rproxy(CONF.format(port=port, dport=ds.port), tmp_path_factory.mktemp("compress"), port=port,
               name="rproxy-compress")
    try:
        yield p, port
        assert_quiet(p)
    finally:
        p.stop()
        ds.close()


def get(port, target, ae=None, method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if ae is not None:
        h["Accept-Encoding"] = ae
    c.request(method, target, headers=h)
    r = c.getresponse()
    data = r.read()
    hdrs = r.headers
    c.close()
    return r.status, hdrs, data


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
def test_each_coding_decodes_to_the_original_bytes(proxy, coding):
    _, port = proxy
    for n, mode, piece in [(300, "cl", 0), (1 << 20, "cl", 0), (200_000, "chunked", 7000),
                           (100_000, "chunked", 1), (50_000, "close", 0), (0, "chunked", 7000)]:
        target = f"/r?len={n}&mode={mode}&seed={n}" + (f"&piece={piece}" if piece else "") \
            + "&h=ETag:%20%22v1%22"
        status, h, data = get(port, target, ae=coding)
        assert status == 200
        assert h["Content-Encoding"] == coding, (n, mode)
        assert h["Content-Length"] is None
        assert h["Vary"] == "Accept-Encoding"
        assert h["ETag"] == 'W/"v1"'
        if mode != "close":
            assert h["Transfer-Encoding"] == "chunked"
        assert decode(coding, data) == body_for(n, n), (n, mode)
        if n >= 300 and piece != 1:
            # every downstream read is flushed at once (nothing held back), so
            # a body that arrives a byte per chunk compresses only as well as
            # the reads happen to group it: its size is not bounded here
            assert len(data) < n


@pytest.mark.parametrize("ae,expected", [
    ("gzip, deflate, br, zstd", "br"),              # equal q: the configured order
    ("gzip", "gzip"),
    ("GZIP", "gzip"),
    ("x-gzip", "gzip"),
    ("zstd, gzip", "zstd"),
    ("br;q=0.5, gzip;q=0.8, zstd;q=0.1", "gzip"),   # q-values first
    ("br;q=0, gzip", "gzip"),
    ("br;q=0, zstd;q=0, gzip;q=0", None),
    ("*", "br"),
    ("*;q=0.5, br;q=0", "zstd"),
    ("identity", None),
    ("deflate", None),
    ("", None),
    (None, None),
    ("gzip;q=0.001", "gzip"),
    ("identity;q=0, gzip", "gzip"),
    ("br ; q=0.9 , gzip ; q=1.0", "gzip"),
])
def test_negotiation(proxy, ae, expected):
    _, port = proxy
    status, h, data = get(port, "/r?len=5000", ae=ae)
    assert status == 200
    assert h["Content-Encoding"] == expected
    assert h["Vary"] == "Accept-Encoding"       # eligible, whatever the client accepted
    assert decode(expected, data) == body_for(5000)
    if expected is None:
        assert h["Content-Length"] == "5000"


def test_configured_codings_only(proxy):
    _, port = proxy
    status, h, data = get(port, "/gz/r?len=5000", ae="br, zstd, gzip;q=0.1")
    assert h["Content-Encoding"] == "gzip"
    assert decode("gzip", data) == body_for(5000)
    status, h, data = get(port, "/gz/r?len=5000", ae="br, zstd")
    assert h["Content-Encoding"] is None and data == body_for(5000)
    status, h, data = get(port, "/plain/r?len=5000", ae="br, zstd, gzip")
    assert h["Content-Encoding"] is None and h["Vary"] is None and data == body_for(5000)


@pytest.mark.parametrize("target,method,headers,vary", [
    ("/r?len=255", "GET", {}, False),                                     # below compress-min-size
    ("/r?len=5000&ct=image/png", "GET", {}, False),                       # type not listed
    ("/r?len=5000&ct=", "GET", {}, False),                                # no type
    ("/r?len=5000&ct=application/jsonx", "GET", {}, False),
    ("/r?len=5000&h=Content-Encoding:%20gzip", "GET", {}, False),         # already encoded
    ("/r?len=5000&h=Content-Encoding:%20br", "GET", {}, False),
    ("/r?len=5000&h=Cache-Control:%20public,%20no-transform", "GET", {}, False),
    ("/r?len=5000&status=206&h=Content-Range:%20bytes%200-4999/9999", "GET", {"Range": "bytes=0-4999"}, False),
    ("/r?len=5000", "HEAD", {}, False),
    ("/r?len=5000&status=204", "GET", {}, False),
    ("/r?len=5000&status=304", "GET", {}, False),
])
def test_exclusions(proxy, target, method, headers, vary):
    _, port = proxy
    status, h, data = get(port, target, ae="br, zstd, gzip", method=method, headers=headers)
    assert h["Content-Encoding"] in (None, "gzip", "br")
    if "Content-Encoding" not in target:
        assert h["Content-Encoding"] is None
    assert (h["Vary"] == "Accept-Encoding") == vary
    if method == "GET" and status not in (204, 304):
        n = int(urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["len"][0])
        assert data == body_for(n)
        assert h["Content-Length"] == str(n)


def test_text_wildcard_type_with_parameters(proxy):
    _, port = proxy
    status, h, data = get(port, "/r?len=5000&ct=text/html;%20charset=utf-8", ae="zstd")
    assert h["Content-Encoding"] == "zstd" and decode("zstd", data) == body_for(5000)
    status, h, data = get(port, "/r?len=5000&ct=TEXT/CSS", ae="gzip")
    assert h["Content-Encoding"] == "gzip" and decode("gzip", data) == body_for(5000)
    # Unknown length (chunked): compressed whatever its size
    status, h, data = get(port, "/r?len=10&mode=chunked", ae="gzip")
    assert h["Content-Encoding"] == "gzip" and decode("gzip", data) == body_for(10)


def test_existing_vary_is_extended_not_duplicated(proxy):
    _, port = proxy
    _, h, _ = get(port, "/r?len=5000&h=Vary:%20Origin", ae="gzip")
    assert h.get_all("Vary") == ["Origin", "Accept-Encoding"]
    _, h, _ = get(port, "/r?len=5000&h=Vary:%20accept-encoding", ae="gzip")
    assert h.get_all("Vary") == ["accept-encoding"]


def raw_exchange(port, req: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        return read_until_close(s)


def test_http10_client_gets_a_close_delimited_body(proxy):
    _, port = proxy
    for mode in ("cl", "chunked"):
        raw = raw_exchange(port, b"GET /r?len=100000&mode=%s HTTP/1.0\r\nHost: a\r\nAccept-Encoding: gzip\r\n"
                           b"Connection: keep-alive\r\n\r\n" % mode.encode())
        head, body = raw.split(b"\r\n\r\n", 1)
        assert b"Content-Encoding: gzip" in head
        assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
        assert b"Connection: close" in head
        assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == body_for(100000)


def test_keepalive_and_pipelining_after_compressed_responses(proxy):
    _, port = proxy
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i, (ae, n) in enumerate([("br", 70000), ("gzip", 3000), ("zstd", 200), (None, 9000), ("zstd", 1 << 18)]):
        c.request("GET", f"/r?len={n}&mode={'chunked' if i % 2 else 'cl'}&seed={i}",
                  headers={"Accept-Encoding": ae} if ae else {})
        r = c.getresponse()
        data = r.read()
        coding = r.headers["Content-Encoding"]
        assert coding == (ae if n >= 256 or i % 2 else None)
        assert decode(coding, data) == body_for(n, i)
    c.close()
    # pipelined on one connection: answered in order
    reqs = b"".join(b"GET /r?len=%d HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n" % n
                    for n in (1000, 2000, 3000))
    reqs += b"GET /r?len=4000 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(port, reqs)
    for n in (1000, 2000, 3000, 4000):
        head, raw = raw.split(b"\r\n\r\n", 1)
        assert b"Content-Encoding: gzip" in head
        comp = b""
        while True:
            line, raw = raw.split(b"\r\n", 1)
            size = int(line, 16)
            if size == 0:
                raw = raw[2:]
                break
            comp += raw[:size]
            raw = raw[size + 2:]
        assert zlib.decompress(comp, 16 + zlib.MAX_WBITS) == body_for(n)
    assert raw == b""


def test_curl_compressed(proxy, tmp_path):
    _, port = proxy
    for ae, n in (("br", 300000), ("gzip", 50000), ("zstd", 4000)):
        out = tmp_path / "out"
        r = subprocess.run(["curl", "-s", "--compressed", "-H", f"Accept-Encoding: {ae}", "-D", "-", "-o", str(out),
                            f"http://127.0.0.1:{port}/r?len={n}&mode=chunked"],
                           capture_output=True, timeout=20)
        if r.returncode == 61 and ae != "gzip":
            continue            # this curl was built without that decoder
        assert r.returncode == 0, r.stderr
        assert f"content-encoding: {ae}".encode() in r.stdout.lower()
        assert out.read_bytes() == body_for(n)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_streaming_is_flushed_not_held(proxy, coding):
    """The first half of a streamed response reaches the client, decodable,
    while the downstream is still holding back the second half."""
    _, port = proxy
    name = f"g-{coding}"
    GATES[name] = threading.Event()
    n = 20000
    dec = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
           "br": lambda: brotli.Decompressor(),
           "zstd": lambda: zstandard.ZstdDecompressor().decompressobj()}[coding]()
    feed = dec.decompress if coding != "br" else dec.process
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /r?len=%d&mode=chunked&piece=1000&gate=%s&ct=text/event-stream HTTP/1.1\r\n"
                  b"Host: a\r\nAccept-Encoding: %s\r\nConnection: close\r\n\r\n" % (n, name.encode(), coding.encode()))
        raw = b""
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < n // 2:
            assert time.monotonic() < deadline, f"only {len(got)} bytes decoded before the gate"
            raw += s.recv(65536)
            if b"\r\n\r\n" not in raw:
                continue
            head, rest = raw.split(b"\r\n\r\n", 1)
            # de-chunk what is complete
            comp = b""
            while b"\r\n" in rest:
                line, tail = rest.split(b"\r\n", 1)
                size = int(line, 16)
                if len(tail) < size + 2:
                    break
                comp += tail[:size]
                rest = tail[size + 2:]
            raw = head + b"\r\n\r\n" + rest
            got += feed(comp)
        assert got == body_for(n)[:len(got)]
        GATES[name].set()
        while True:
            d = s.recv(65536)
            if not d:
                break
            raw += d
        _, rest = raw.split(b"\r\n\r\n", 1)
        while True:
            line, rest = rest.split(b"\r\n", 1)
            size = int(line, 16)
            if size == 0:
                break
            got += feed(rest[:size])
            rest = rest[size + 2:]
        assert got == body_for(n)


def test_slow_client_backpressure(proxy):
    """A large compressed response read slowly still arrives whole (the
    encoder resumes when the client drains)."""
    _, port = proxy
    n = 4 << 20
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /r?len=%d&seed=7&ct=text/plain HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n"
                  b"Connection: close\r\n\r\n" % n)
        raw = b""
        while True:
            d = s.recv(8192)
            if not d:
                break
            raw += d
            if len(raw) < 300_000:
                time.sleep(0.002)       # slower than the proxy writes: its socket fills
    head, rest = raw.split(b"\r\n\r\n", 1)
    comp = b""
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            break
        comp += rest[:size]
        rest = rest[size + 2:]
    assert zlib.decompress(comp, 16 + zlib.MAX_WBITS) == body_for(n, 7)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_incompressible_body_larger_than_a_buffer(proxy, coding):
    """Random bytes grow a little when encoded: one read's output does not
    fit one buffer, so input waits in the downstream's buffer while the
    client drains; every byte still arrives, in order."""
    _, port = proxy
    n = 1 << 20
    for mode in ("cl", "chunked", "close"):
        status, h, data = get(port, f"/r?len={n}&rand=1&mode={mode}&ct=text/plain", ae=coding)
        assert h["Content-Encoding"] == coding
        assert decode(coding, data) == random.Random(n).randbytes(n)


def test_over_tls(start_rproxy, port, test_pki, tmp_path):
    """A TLS client: the encoder's buffers go through OpenSSL (which holds a
    pointer until a record is out) and large bodies still decode."""
    ds = Downstream(handler=handler)
    srv = test_pki["server"]
    start_rproxy(f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  compress = {{ zstd, gzip }} }} }}
}}
""", port)
    try:
        for ae, n, rand in (("gzip", 3 << 20, ""), ("zstd", 1 << 20, "&rand=1")):
            out = tmp_path / "o"
            r = subprocess.run(["curl", "-sS", "--cacert", test_pki["ca"].crt, "-H", f"Accept-Encoding: {ae}",
                                "-D", "-", "-o", str(out),
                                f"https://localhost:{port}/r?len={n}&mode=chunked&ct=text/plain{rand}"],
                               capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr
            assert f"content-encoding: {ae}".encode() in r.stdout.lower()
            want = random.Random(n).randbytes(n) if rand else body_for(n)
            assert decode(ae, out.read_bytes()) == want
    finally:
        ds.close()


def test_with_response_buffering_on_the_rule(proxy):
    """A rule that buffers responses for slow clients: a compressed one keeps
    the encoder's own backpressure and still arrives whole."""
    _, port = proxy
    n = 3 << 20
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.sendall(b"GET /buf/r?len=%d&rand=1&ct=text/plain HTTP/1.1\r\nHost: a\r\nAccept-Encoding: zstd\r\n"
                  b"Connection: close\r\n\r\n" % n)
        raw = b""
        while True:
            d = s.recv(16384)
            if not d:
                break
            raw += d
            if len(raw) < 1 << 20:
                time.sleep(0.002)
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert b"Content-Encoding: zstd" in head
    comp = b""
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            break
        comp += rest[:size]
        rest = rest[size + 2:]
    assert decode("zstd", comp) == random.Random(n).randbytes(n)
    status, h, data = get(port, "/buf/r?len=5000", ae="zstd")
    assert h["Content-Encoding"] == "zstd" and decode("zstd", data) == body_for(5000)
