"""Strictness end to end (issue 14): requests whose Host, request target,
framing, Expect or header names are invalid or ambiguous are refused with
their status and a log line before a byte reaches the downstream; valid ones
reach it exactly as they should (Host replaced by an absolute-form
authority, no h2c upgrade, no header name with `_`); the same framing rules
hold for what a downstream answers.  Raw sockets through the real rproxy to
a recording downstream."""
from __future__ import annotations

import socket
import time

import pytest

from support.downstream import Downstream, serve_raw
from support.proc import Rproxy, free_port, read_response, request
from support.stats import assert_quiet


def conf(port, ds_port, server_extra=""):
    """Two vhosts over one recording downstream: b.example's rule rewrites
    the path to /via-b/..., so the target tells which vhost was chosen."""
    return f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    {server_extra}
    downstream rec {{ addr = 127.0.0.1  port = {ds_port}  connections = 2 }}
    vhost "b.example" {{
        headers {{ x-forwarded-host = true  forwarded = true }}
        rule b {{ uri-prefix = "/"  replace-path = "/via-b/"  downstreams = {{ rec }} }}
    }}
    vhost "*" {{
        headers {{ x-forwarded-host = true  forwarded = true }}
        rule all {{ uri-prefix = "/"  downstreams = {{ rec }} }}
    }}
}}
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """One proxy (default settings: underscores-in-headers = drop) and its
    recording downstream for the whole corpus; it must end quiet."""
    ds = Downstream()
    port = free_port()
    p = Rproxy(conf(port, ds.port), tmp_path_factory.mktemp("strict"), port=port)
    try:
        yield p, ds
        if p.poll() is None:
            assert_quiet(p)
    finally:
        p.stop()
        ds.close()


def exchange(port, raw: bytes, timeout=5.0):
    """Send raw bytes on a new connection; the status of the answer (None:
    closed without one) and whether the proxy closed the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        try:
            status, headers, body, rest = read_response(s)
        except (ConnectionError, OSError):
            return None, True
        return status, dict(headers).get("connection") == "close"


def wait_log(p, start: int, needle: str, timeout=3.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = p.read_log()[start:]
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


def still_serving(port, tag: str):
    status, _, body = request(port, b"GET /after-" + tag.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, body) == (200, b"/after-" + tag.encode())


# ---- refused: (id, raw request with {T} for a marker path, status, reason in the log) ----------

BAD = [
    # Host: RFC 3986 host [ ":" port ]
    ("host-space", b"GET {T} HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"),
    ("host-userinfo", b"GET {T} HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, "invalid Host"),
    ("host-slash", b"GET {T} HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host"),
    ("host-list", b"GET {T} HTTP/1.1\r\nHost: x, y\r\n\r\n", 400, "invalid Host"),
    ("host-comma", b"GET {T} HTTP/1.1\r\nHost: x,y\r\n\r\n", 400, "invalid Host"),
    ("host-backslash", b"GET {T} HTTP/1.1\r\nHost: a\\b\r\n\r\n", 400, "invalid Host"),
    ("host-v6-unclosed", b"GET {T} HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "invalid Host"),
    ("host-v6-trailing", b"GET {T} HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400, "invalid Host"),
    ("host-v6-bad", b"GET {T} HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400, "invalid Host"),
    ("host-v6-zone", b"GET {T} HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 400, "invalid Host"),
    ("host-v6-unbracketed", b"GET {T} HTTP/1.1\r\nHost: ::1\r\n\r\n", 400, "invalid Host"),
    ("host-two-colons", b"GET {T} HTTP/1.1\r\nHost: a:b:c\r\n\r\n", 400, "invalid Host"),
    ("host-port-letters", b"GET {T} HTTP/1.1\r\nHost: a:8o\r\n\r\n", 400, "invalid Host"),
    ("host-port-too-big", b"GET {T} HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400, "invalid Host"),
    ("host-port-too-long", b"GET {T} HTTP/1.1\r\nHost: a:000080\r\n\r\n", 400, "invalid Host"),
    ("host-non-ascii", b"GET {T} HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", 400, "invalid Host"),
    ("host-bad-pct", b"GET {T} HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400, "invalid Host"),
    ("host-empty", b"GET {T} HTTP/1.1\r\nHost:\r\n\r\n", 400, "invalid Host"),
    ("host-blank", b"GET {T} HTTP/1.1\r\nHost:   \r\n\r\n", 400, "invalid Host"),
    ("host-port-only", b"GET {T} HTTP/1.1\r\nHost: :80\r\n\r\n", 400, "invalid Host"),
    ("host-too-long", b"GET {T} HTTP/1.1\r\nHost: " + b"a" * 256 + b"\r\n\r\n", 400, "invalid Host"),
    ("host-missing", b"GET {T} HTTP/1.1\r\nX-A: b\r\n\r\n", 400, "no Host"),
    ("host-duplicate", b"GET {T} HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "more than one Host"),
    ("host-empty-http10", b"GET {T} HTTP/1.0\r\nHost:\r\n\r\n", 400, "invalid Host"),
    # absolute-form: its authority is checked as Host is
    ("abs-userinfo", b"GET http://u@b.example{T} HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "invalid authority in the request target"),
    ("abs-empty-authority", b"GET http://{T} HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "invalid authority in the request target"),
    ("abs-v6-unclosed", b"GET http://[::1{T} HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "invalid authority in the request target"),
    ("abs-bad-port", b"GET http://b.example:x{T} HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "invalid authority in the request target"),
    ("abs-other-scheme", b"GET ftp://b.example{T} HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "neither a path nor an http(s) absolute URI"),
    ("abs-but-bad-host", b"GET http://b.example{T} HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"),
    # Transfer-Encoding: known codings, chunked once and last, no empty element
    ("te-leading-comma", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
     400, "malformed Transfer-Encoding"),
    ("te-identity", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
     400, "malformed Transfer-Encoding"),
    ("te-trailing-comma", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, \r\n\r\n0\r\n\r\n",
     400, "Transfer-Encoding"),
    ("te-empty-element", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n0\r\n\r\n",
     400, "malformed Transfer-Encoding"),
    ("te-chunked-twice", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
     400, "Transfer-Encoding"),                  # llhttp's own refusal, or ours
    ("te-parameter", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n",
     400, "Transfer-Encoding"),
    ("te-unknown", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
     501, "unknown transfer coding"),
    ("te-two-lines", b"POST {T} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400, "more than one Transfer-Encoding"),
    ("te-http10", b"POST {T} HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "Transfer-Encoding in an HTTP/1.0 request"),
    # Expect: only 100-continue
    ("expect-other", b"GET {T} HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417, "unsupported Expect"),
    ("expect-list", b"PUT {T} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\nContent-Length: 1\r\n\r\nx",
     417, "unsupported Expect"),
    ("expect-twice", b"GET {T} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
     417, "unsupported Expect"),
    # the request line
    ("no-version", b"GET {T}\r\nHost: a\r\n\r\n", 400, "no HTTP version in the request line"),
    ("version-2", b"GET {T} HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_refused_with_status_and_log_and_never_forwarded(rig, case):
    p, ds = rig
    name, raw, status, reason = case
    marker = f"/bad-{name}"
    start = len(p.read_log())
    seen_before = len(ds.requests)
    got, closed = exchange(p.port, raw.replace(b"{T}", marker.encode()))
    assert got == status
    log = wait_log(p, start, reason)
    assert f"bad request ({status}): " in log and reason in log, log
    still_serving(p.port, name)
    new = ds.requests[seen_before:]
    assert [r.target for r in new] == [f"/after-{name}"]
    assert not ds.errors
    if b"Transfer-Encoding" in raw or b"Content-Length" in raw or status == 505:
        assert closed                   # a body the proxy will not read: never skipped, closed


def test_a_refused_bodyless_request_keeps_the_connection(rig):
    """Like a missing Host today: the next request on the connection is served."""
    p, ds = rig
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /k1 HTTP/1.1\r\nHost: a b\r\n\r\nGET /k2 HTTP/1.1\r\nHost: a\r\n\r\n")
        st1, _, _, buf = read_response(s)
        st2, _, b2, _ = read_response(s, buf)
    assert (st1, st2, b2) == (400, 200, b"/k2")
    assert "/k1" not in [r.target for r in ds.requests]


# ---- accepted: exactly what the downstream sees -----------------------------------------------

def forwarded(rig, raw: bytes, expect_status=200):
    p, ds = rig
    n = len(ds.requests)
    status, headers, body = request(p.port, raw)
    assert status == expect_status, (status, body)
    assert len(ds.requests) == n + 1
    assert not ds.errors
    return ds.requests[-1]


GOOD_HOSTS = [
    b"127.0.0.1",
    b"127.0.0.1:8080",
    b"[::1]",
    b"[::1]:8080",
    b"[2001:db8::ffff:192.0.2.1]:443",
    b"example.com.",
    b"a-b.c_d~e%41!$&'()*+;=",
    b"xn--caf-dma.example:1",
    b"a:",                              # RFC 3986: port = *DIGIT
    b"a:65535",
]


@pytest.mark.parametrize("host", GOOD_HOSTS, ids=[h.decode() for h in GOOD_HOSTS])
def test_valid_host_is_forwarded_unchanged(rig, host):
    r = forwarded(rig, b"GET /h HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert r.target == "/h"
    assert r.header_all("Host") == [host.decode()]
    assert r.header("X-Forwarded-Host") == host.decode()


def test_host_blanks_around_the_value_are_not_part_of_it(rig):
    r = forwarded(rig, b"GET /h HTTP/1.1\r\nHost: \t a.example  \r\n\r\n")
    assert b"\r\nHost: a.example\r\n" in r.raw_head


def test_absolute_form_authority_replaces_host(rig):
    r = forwarded(rig, b"GET http://b.example:81/x?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert r.target == "/via-b/x?q=1"                   # routed by the authority: vhost b.example
    assert r.raw_head.startswith(b"GET /via-b/x?q=1 HTTP/1.1\r\n")
    assert r.header_all("Host") == ["b.example:81"]
    assert r.header("X-Forwarded-Host") == "b.example:81"
    assert r.header("Forwarded").endswith(';host="b.example:81"')
    # and the other way round: Host says b.example, the authority does not
    r = forwarded(rig, b"GET http://a.example/y HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert r.target == "/y"
    assert r.header_all("Host") == ["a.example"]


def test_absolute_form_scheme_is_case_insensitive_and_may_be_https(rig):
    r = forwarded(rig, b"GET HTTPS://B.EXAMPLE/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.target == "/via-b/"
    assert r.header_all("Host") == ["B.EXAMPLE"]


def test_absolute_form_gives_an_http10_request_its_host(rig):
    r = forwarded(rig, b"GET http://[::1]:8080/z HTTP/1.0\r\n\r\n")
    assert r.target == "/z"
    assert r.header_all("Host") == ["[::1]:8080"]


def test_h2c_upgrade_is_removed_and_the_request_goes_on_as_http11(rig):
    p, ds = rig
    n = len(ds.requests)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        st1, h1, b1, buf = read_response(s)
        # not an upgrade: the connection carries on with another request
        s.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        st2, _, b2, _ = read_response(s, buf)
    assert (st1, b1, st2, b2) == (200, b"/h2c", 200, b"/next")
    assert dict(h1).get("connection") != "close"
    r = ds.requests[n]
    assert r.raw_head.startswith(b"GET /h2c HTTP/1.1\r\n")
    names = [k.lower() for k, _ in r.headers]
    assert "upgrade" not in names and "http2-settings" not in names and "connection" not in names
    # with a body: llhttp is told it is no upgrade, so the body is read as one
    # and the connection goes on
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /h2c-body HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMA\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET /after-body HTTP/1.1\r\nHost: a\r\n\r\n")
        st1, _, b1, buf = read_response(s)
        st2, _, b2, _ = read_response(s, buf)
    assert (st1, b1, st2, b2) == (200, b"/h2c-body", 200, b"/after-body")
    r = [r for r in ds.requests if r.target == "/h2c-body"][0]
    assert r.body == b"hello" and r.header("Upgrade") is None
    # HTTP2-Settings alone (not listed in Connection) is dropped too
    r = forwarded(rig, b"GET /s HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMA\r\n\r\n")
    assert r.header("HTTP2-Settings") is None


def test_h2c_is_taken_out_of_an_upgrade_offering_more(rig):
    r = forwarded(rig, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n"
                       b"Sec-WebSocket-Key: x\r\n\r\n")
    assert r.header_all("Upgrade") == ["websocket"]
    assert r.header("Connection").lower() == "upgrade"


def test_underscore_header_names_are_dropped_by_default(rig):
    r = forwarded(rig, b"GET /u HTTP/1.1\r\nHost: a\r\nX_SSL_Subject: /CN=forged\r\nX_Forwarded_For: 6.6.6.6\r\n"
                       b"X-Real_IP: 6.6.6.6\r\nMy_Header: v\r\nX-Kept: yes\r\n\r\n")
    names = [k.lower() for k, _ in r.headers]
    assert not [k for k in names if "_" in k]
    assert r.header("X-Kept") == "yes"
    assert r.header_all("X-Forwarded-For") == ["127.0.0.1"]


def test_transfer_encoding_chunked_and_expect_100_continue_still_pass(rig):
    r = forwarded(rig, b"POST /echo-te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
                       b"3\r\nabc\r\n0\r\n\r\n")
    assert r.chunked and r.body == b"abc"
    r = forwarded(rig, b"PUT /ex HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi")
    assert r.body == b"hi"


# ---- underscores-in-headers = allow | reject -------------------------------------------------

def test_underscores_allow_forwards_them_but_never_a_proxy_owned_spelling(start_rproxy, downstream, port):
    start_rproxy(conf(port, downstream.port, "underscores-in-headers = allow"), port)
    status, _, _ = request(port, b"GET /ua HTTP/1.1\r\nHost: a\r\nMy_Header: v\r\nX_SSL_Subject: /CN=forged\r\n"
                                 b"X_Forwarded_For: 6.6.6.6\r\nx_ssl_cipher: RC4\r\nContent_Length: 5\r\n"
                                 b"Transfer_Encoding: chunked\r\nX_Forwarded_Host: evil\r\n\r\n")
    assert status == 200
    r = downstream.requests[-1]
    assert r.header("My_Header") == "v"
    assert [k for k, _ in r.headers if "_" in k] == ["My_Header"]
    assert r.header_all("X-Forwarded-For") == ["127.0.0.1"]


def test_underscores_reject_answers_400_with_a_log_line(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, "underscores-in-headers = reject"), port)
    start = len(p.read_log())
    assert request(port, b"GET /ur HTTP/1.1\r\nHost: a\r\nMy_Header: v\r\n\r\n")[0] == 400
    assert "underscores-in-headers = reject" in wait_log(p, start, "underscores-in-headers")
    status, _, body = request(port, b"GET /ok HTTP/1.1\r\nHost: a\r\nMy-Header: v\r\n\r\n")
    assert (status, body) == (200, b"/ok")
    assert [r.target for r in downstream.requests] == ["/ok"]


# ---- what downstreams send back --------------------------------------------------------------

def raw_downstream(answer: bytes):
    """A downstream that answers every request head with `answer`, then closes."""
    def one(c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        c.sendall(answer)
        time.sleep(0.2)

    return serve_raw(one)


BAD_RESPONSES = [
    ("leading-comma", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "malformed Transfer-Encoding in the response"),
    ("identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "malformed Transfer-Encoding in the response"),
    ("trailing-comma", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "Transfer-Encoding"),
    ("chunked-twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "malformed Transfer-Encoding in the response"),
    ("not-last", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
     "malformed Transfer-Encoding in the response"),
    ("unknown", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: foo, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "unknown transfer coding in the response"),
    ("two-lines", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", "more than one Transfer-Encoding in the response"),
    ("http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "Transfer-Encoding in an HTTP/1.0 response"),
]


@pytest.mark.parametrize("case", BAD_RESPONSES, ids=[c[0] for c in BAD_RESPONSES])
def test_malformed_transfer_encoding_from_a_downstream_is_502(start_rproxy, port, case):
    name, answer, reason = case
    ls = raw_downstream(answer)
    try:
        p = start_rproxy(conf(port, ls.getsockname()[1]), port)
        status, headers, body = request(port, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 502
        assert body.startswith(b"502 ")
        assert b"hello" not in body
        log = wait_log(p, 0, reason)
        assert reason in log and "-> 502" in log, log
        # the proxy carries on: the next request is answered (502 again, same downstream)
        assert request(port, b"GET /r2 HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 502
    finally:
        ls.close()


def test_well_formed_chunked_response_still_passes(start_rproxy, port):
    ls = raw_downstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    try:
        start_rproxy(conf(port, ls.getsockname()[1]), port)
        status, _, body = request(port, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (status, body) == (200, b"hello")
    finally:
        ls.close()
