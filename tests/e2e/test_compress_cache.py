"""Cached compressed variants (issue 21): a response compressed for a client
is stored compressed, keyed by the coding chosen (Vary: Accept-Encoding
normalised to br, gzip, zstd or identity), and a hit sends the stored bytes
with their Content-Length and Content-Encoding.  Every body is decoded
with Python's zlib / brotli / zstandard and compared byte for byte."""
from __future__ import annotations

import collections
import http.client
import random
import threading
import urllib.parse

import pytest

from support.codings import decode
from support.downstream import Downstream
from support.proc import Rproxy, free_port
from support.stats import assert_quiet

SEEN: collections.Counter = collections.Counter()
LOCK = threading.Lock()
BODY = bytes(random.Random(7).choice(b'{"id": 12, "name": "x"},\n abcdefgh') for _ in range(65536))


def handler(req, s):
    """/p?mode=cl|chunked&cc=...: the 64 KiB JSON body, counted per target;
    a 304 to If-None-Match "v1" (weak or strong)."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(req.target).query)
    with LOCK:
        SEEN[req.target] += 1
    if req.header("If-None-Match") in ('"v1"', 'W/"v1"'):
        s.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nCache-Control: max-age=0\r\n\r\n')
        return True
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", 'ETag: "v1"',
            f"Cache-Control: {q.get('cc', ['max-age=60'])[0]}"]
    if q.get("mode", ["cl"])[0] == "chunked":
        head.append("Transfer-Encoding: chunked")
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if req.method != "HEAD":
            for i in range(0, len(BODY), 20000):
                part = BODY[i:i + 20000]
                s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        return True
    head.append(f"Content-Length: {len(BODY)}")
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if req.method == "HEAD" else BODY))
    return True


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ds = Downstream(handler=handler)
    tmp = tmp_path_factory.mktemp("czcache")
    port = free_port()
    p = Rproxy(f"""
workers = 1
cache c {{ path = "{tmp / 'c'}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c
                            compress = {{ br, zstd, gzip }}  compress-types = {{ application/json }} }} }}
}}
""", tmp, port=port, name="rproxy-czcache")
    try:
        yield port
        assert_quiet(p)
    finally:
        p.stop()
        ds.close()


def get(port, target, ae, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, target, headers={"Accept-Encoding": ae} if ae is not None else {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.headers, data


@pytest.mark.parametrize("mode", ["cl", "chunked"])
def test_each_coding_is_its_own_variant(env, mode):
    port, t = env, f"/p?mode={mode}"
    sent = {}
    for ae, coding in (("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), (None, None)):
        st, h, data = get(port, t, ae)
        assert (st, h["X-Cache"], h["Content-Encoding"]) == (200, "MISS", coding)
        assert h["Vary"] == "Accept-Encoding" and decode(coding, data) == BODY
        assert h["ETag"] == ('W/"v1"' if coding else '"v1"')
        sent[coding] = data
    assert SEEN[t] == 4
    # the same codings however the clients spell them: hits, the stored bytes with their length
    for ae, coding in (("gzip;q=1.0, deflate", "gzip"), ("br, gzip;q=0.5", "br"), ("zstd, *;q=0", "zstd"),
                       ("identity", None), ("deflate", None)):
        st, h, data = get(port, t, ae)
        assert (st, h["X-Cache"], h["Content-Encoding"]) == (200, "HIT", coding)
        assert h["Content-Length"] == str(len(data)) and h["Transfer-Encoding"] is None
        assert h["Vary"] == "Accept-Encoding" and h.get_all("Vary") == ["Accept-Encoding"]
        assert data == sent[coding] and decode(coding, data) == BODY
    st, h, data = get(port, t, "br", method="HEAD")
    assert (h["X-Cache"], h["Content-Encoding"], h["Content-Length"], data) == ("HIT", "br", str(len(sent["br"])), b"")
    assert SEEN[t] == 4


def test_a_stale_compressed_variant_is_revalidated(env):
    """A stale gzip variant is validated with its (weak) ETag; the 304 keeps
    the stored compressed bytes."""
    port, t = env, "/p?cc=max-age=0"
    st, h, first = get(port, t, "gzip")
    assert (h["X-Cache"], h["Content-Encoding"]) == ("MISS", "gzip")
    for _ in range(2):
        st, h, data = get(port, t, "gzip")
        assert (st, h["X-Cache"], h["Content-Encoding"]) == (200, "REVALIDATED", "gzip")
        assert h["Content-Length"] == str(len(first)) and data == first and decode("gzip", data) == BODY
    assert SEEN[t] == 3
