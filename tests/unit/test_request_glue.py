"""The fast path's request glue (llhttp + cdef callbacks + admission + head
re-emission), run without sockets through rproxy._fastpath.parse_request.

- a smuggling corpus: every ambiguous message is refused, never forwarded;
- hypothesis fuzzing: any input parses or is refused with a proper status,
  never crashes, and what is forwarded is a clean HTTP/1.1 head;
- agreement with llhttp's own Python binding on accept/reject.
"""
from __future__ import annotations

import llhttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy._fastpath import parse_request

OK_STATUSES = {400, 404, 405, 413, 414, 417, 431, 501, 505}   # 404: no rule for that path
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"trailer"}


def head_fields(head: bytes):
    lines = head.split(b"\r\n")
    fields = []
    for ln in lines[1:]:
        if not ln:
            break
        k, v = ln.split(b":", 1)
        fields.append((k.strip().lower(), v.strip()))
    return lines[0], fields


# ---- smuggling corpus -------------------------------------------------------------

SMUGGLING = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE.CL": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
    "TE.TE xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE.TE chunked then identity": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                   b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE.TE space before colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "TE.TE obs-fold": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "TE.TE vertical tab": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "TE gzip without chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    "duplicate CL same": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "duplicate CL different": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
    "CL list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "CL with sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "CL with space inside": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabc",
    "CL hex": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "bare LF in head": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare CR in head": b"GET / HTTP/1.1\rHost: a\r\r",
    "NUL in header value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "control char in header value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
    "bad token in header name": b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "missing Host (HTTP/1.1)": b"GET / HTTP/1.1\r\n\r\n",
    "duplicate Host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "CONNECT": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "unknown version": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "HTTP/0.9 style": b"GET /\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_ambiguous_requests_are_refused(name):
    result = parse_request(SMUGGLING[name])
    assert result[0] == "reject", (name, result)
    assert result[1] in OK_STATUSES


def test_limits_give_their_statuses():
    assert parse_request(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n") == ("reject", 414)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n") == ("reject", 431)
    big = b"X-Big: " + b"v" * 17000 + b"\r\n"
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")[1] == 431
    assert parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n",
                         client_max_body_size=999) == ("reject", 413)
    assert parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999\r\n\r\n",
                         client_max_body_size=999)[0] == "forward"


def test_hop_by_hop_and_owned_headers_are_not_forwarded():
    kind, head, _ = parse_request(
        b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: close\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"X-SSL-Subject: /CN=forged\r\nx-ssl-cipher: RC4\r\nX-Kept: yes\r\n\r\n")
    assert kind == "forward"
    line, fields = head_fields(head)
    assert line == b"GET /p?q=1 HTTP/1.1"
    names = [k for k, _ in fields]
    assert names == [b"host", b"x-kept"]


def test_header_policy():
    req = (b"GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-Forwarded-For: 10.0.0.1\r\n"
           b"X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nForwarded: for=10.0.0.1\r\n\r\n")
    _, head, _ = parse_request(req, policy=["x_forwarded_for", "x_real_ip", "x_forwarded_proto",
                                            "x_forwarded_host", "x_forwarded_port", "forwarded", "via"])
    _, fields = head_fields(head)
    d = {}
    for k, v in fields:
        d.setdefault(k, []).append(v)
    assert d[b"x-forwarded-for"] == [b"10.0.0.1, 192.0.2.1"]
    assert d[b"x-real-ip"] == [b"192.0.2.1"]            # the client's forged value is gone
    assert d[b"x-forwarded-proto"] == [b"http"]
    assert d[b"x-forwarded-host"] == [b"example.com:8080"]
    assert d[b"x-forwarded-port"] == [b"8080"]
    assert d[b"forwarded"] == [b"for=10.0.0.1", b'for=192.0.2.1;proto=http;host="example.com:8080"']
    assert d[b"via"] == [b"1.1 rproxy"]
    # replace mode (RProxy 2.x): the client's chain is dropped
    _, head, _ = parse_request(req, policy=["x_forwarded_for", "x_forwarded_for_replace"])
    _, fields = head_fields(head)
    assert [v for k, v in fields if k == b"x-forwarded-for"] == [b"192.0.2.1"]
    # no policy: the client's X-Forwarded-For passes untouched, nothing added
    _, head, _ = parse_request(req)
    _, fields = head_fields(head)
    assert [v for k, v in fields if k == b"x-forwarded-for"] == [b"10.0.0.1"]
    assert not [k for k, _ in fields if k in (b"via", b"x-forwarded-port")]


# ---- fuzzing -------------------------------------------------------------------------

def llhttp_accepts_head(data: bytes) -> bool | None:
    """True/False: llhttp's Python binding (strict) accepts/refuses the head;
    None: the head is incomplete."""
    state = {"head": False}

    class P(llhttp.Request):
        def on_headers_complete(self):
            state["head"] = True
            return 0

    p = P()
    try:
        p.execute(data)
    except llhttp.Error:
        return True if state["head"] else False
    return True if state["head"] else None


TOKENS = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "X-SSL-Subject", "Upgrade",
          "X-Forwarded-For", "Keep-Alive", "TE", "Expect", "X-A", "x-b"]
name_st = st.one_of(st.sampled_from(TOKENS), st.text("abcXYZ-_!~(:@ \t\x00", min_size=0, max_size=8))
value_st = st.one_of(st.sampled_from(["5", "chunked", "close", "a, b", "", " x ", "0", "-1", "1 2",
                                      "keep-alive, X-A", "100-continue", "websocket"]),
                     st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=12))
eol_st = st.sampled_from(["\r\n"] * 8 + ["\n", "\r", "\r\n "])
request_st = st.builds(
    lambda m, t, v, hs, e: (f"{m} {t} {v}{e}" + "".join(f"{k}:{val}{e}" for k, val in hs) + e)
    .encode("latin-1"),
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "get", "G T", "PRI"]),
    st.sampled_from(["/", "/a?b=c", "*", "http://h/x", "/%00", "/a b", "", "//x"]),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/1", "http/1.1"]),
    st.lists(st.tuples(name_st, value_st), max_size=8),
    eol_st,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(request_st, st.binary(max_size=300)))
def test_fuzz_parse_or_refuse_and_agree_with_llhttp(data):
    result = parse_request(data)
    assert result[0] in ("forward", "reject", "incomplete")
    binding = llhttp_accepts_head(data)
    if result[0] == "reject":
        assert result[1] in OK_STATUSES
    if binding is False:
        # whatever llhttp's strict mode refuses, rproxy refuses
        assert result[0] == "reject", (data, result)
    if result[0] == "forward":
        assert binding is True, (data, result)
        head = result[1]
        # what goes downstream is itself a clean, strict HTTP/1.1 head
        assert llhttp_accepts_head(head) is True, head
        line, fields = head_fields(head)
        assert line.endswith(b" HTTP/1.1")
        names = [k for k, _ in fields]
        assert names.count(b"host") == 1
        assert not (b"content-length" in names and b"transfer-encoding" in names)
        assert names.count(b"content-length") <= 1
        assert not any(n.startswith(b"x-ssl-") for n in names)
        assert not (HOP_BY_HOP - {b"upgrade"}) & set(names)
