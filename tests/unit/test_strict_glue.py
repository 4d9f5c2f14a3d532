"""The strictness checks of the fast path (http.pxi), without sockets: the
Host / authority grammar, Transfer-Encoding codings, the request-target
forms, and what admission + head re-emission make of a request
(rproxy._fastpath.testhook_strict and parse_request run the loop's own code)."""
from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy._fastpath import parse_request
from rproxy._fastpath import testhook_strict as strict  # not test*: pytest would try to collect it

# RFC 3986 host [ ":" port ] as rproxy takes it: reg-name without ',', at
# most 255 bytes; the port at most 5 digits and 65535.
_REG = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+")


def reference_host_valid(v: bytes) -> bool:
    host, port = v, None
    if v.startswith(b"["):
        i = v.find(b"]")
        if i < 0:
            return False
        inner, rest = v[1:i], v[i + 1:]
        if b"%" in inner or not inner:
            return False
        try:
            ipaddress.IPv6Address(inner.decode("ascii"))
        except ValueError:
            return False
        host = v[:i + 1]
        if rest:
            if not rest.startswith(b":"):
                return False
            port = rest[1:]
    else:
        if b":" in v:
            host, port = v.split(b":", 1)
        if not _REG.fullmatch(host):
            return False
    if len(host) > 255:
        return False
    if port is not None:
        if not re.fullmatch(rb"[0-9]{0,5}", port) or (port and int(port) > 65535):
            return False
    return True


HOSTS = {
    b"a": True, b"a.example": True, b"A.Example.COM.": True, b"127.0.0.1": True, b"127.0.0.1:80": True,
    b"[::1]": True, b"[::1]:8080": True, b"[::ffff:192.0.2.1]": True, b"[2001:db8::1]:0": True,
    b"a_b-c~d.e": True, b"%41%62": True, b"a!$&'()*+;=": True, b"a:": True, b"a:65535": True,
    b"a" * 255: True,
    b"": False, b"a b": False, b"a@b": False, b"a/b": False, b"x, y": False, b"x,y": False, b"[::1": False,
    b"[::1]x": False, b"[::1]:x": False, b"[]": False, b"[::g]": False, b"[fe80::1%25eth0]": False,
    b"[v1.x]": False, b"::1": False, b"a:b:c": False, b"a:65536": False, b"a:000001": False, b":80": False,
    b"caf\xc3\xa9": False, b"a%2": False, b"a%zz": False, b"a\\b": False, b"a\x00": False, b"a?b": False,
    b"a#b": False, b"a" * 256: False, b"a\"b": False, b"a[b]": False,
}


@pytest.mark.parametrize("value", sorted(HOSTS), ids=[repr(h[:20]) for h in sorted(HOSTS)])
def test_host_grammar(value):
    assert strict("host", value) is HOSTS[value]
    assert reference_host_valid(value) is HOSTS[value]      # the reference agrees with the table


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=24) | st.text("ab1.-_~%:[]@/, \t9fF!;=*\x7f\u00e9", max_size=16).map(
    lambda s: s.encode("utf-8")))
def test_host_grammar_agrees_with_a_reference(value):
    assert strict("host", value) is reference_host_valid(value), value


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6), st.one_of(st.none(), st.integers(0, 65535)))
def test_every_ipv6_literal_is_a_host(addr, port):
    for text in (addr.compressed, addr.exploded):
        v = f"[{text}]" + ("" if port is None else f":{port}")
        assert strict("host", v.encode()), v


TE = {
    b"chunked": 0, b"Chunked": 0, b"  chunked  ": 0, b"gzip, chunked": 0, b"x-gzip,chunked": 0,
    b"deflate , compress,x-compress, chunked": 0, b"GZIP\t,\tCHUNKED": 0,
    b"": 400, b",chunked": 400, b"chunked,": 400, b"chunked, ": 400, b"gzip,,chunked": 400,
    b"identity, chunked": 400, b"identity": 400, b"chunked, gzip": 400, b"gzip": 400,
    b"chunked, chunked": 400, b"chunked;q=1": 400, b"chunked x": 400, b"xchunked": 400, b"chunked\x00": 400,
    b"foo, chunked": 501, b"br, chunked": 501,
}


@pytest.mark.parametrize("value", sorted(TE), ids=[repr(v) for v in sorted(TE)])
def test_transfer_encoding_codings(value):
    assert strict("te", value) == TE[value]


AUTHORITY = {
    b"/": None, b"/a?b": None, b"*": None,
    b"http://a": b"a", b"http://a/b": b"a", b"HTTP://A:8/b?c": b"A:8", b"https://[::1]:8/x": b"[::1]:8",
    b"http://a?x": b"a", b"http://a#f": b"a", b"http:///x": b"", b"http://u@h/": b"u@h",
    b"ftp://a/": False, b"http:/a": False, b"a": False, b"//a/b": None, b"httpx://a": False,
}


@pytest.mark.parametrize("target", sorted(AUTHORITY), ids=[repr(t) for t in sorted(AUTHORITY)])
def test_request_target_authority(target):
    assert strict("authority", target) == AUTHORITY[target]


# ---- admission and re-emission ----------------------------------------------------------------

def fields(head: bytes):
    out = []
    for ln in head.split(b"\r\n")[1:]:
        if not ln:
            break
        k, v = ln.split(b":", 1)
        out.append((k.strip().lower(), v.strip()))
    return out


def test_absolute_form_authority_replaces_host_in_place():
    kind, head, _ = parse_request(b"GET http://b.example:81/x?y HTTP/1.1\r\nX-A: 1\r\nHost: a\r\nX-B: 2\r\n\r\n",
                                  policy=["x_forwarded_host", "forwarded"])
    assert kind == "forward"
    assert head.startswith(b"GET /x?y HTTP/1.1\r\n")
    f = fields(head)
    assert [k for k, _ in f][:3] == [b"x-a", b"host", b"x-b"]
    assert dict(f)[b"host"] == b"b.example:81"
    assert dict(f)[b"x-forwarded-host"] == b"b.example:81"
    assert dict(f)[b"forwarded"].endswith(b';host="b.example:81"')


def test_refusals_and_their_statuses():
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == ("reject", 400)
    assert parse_request(b"GET http://a@b/ HTTP/1.1\r\nHost: a\r\n\r\n") == ("reject", 400)
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n") == ("reject", 417)
    assert parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n") == ("reject", 501)
    assert parse_request(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") == ("reject", 400)
    assert parse_request(b"GET /\r\n\r\n") == ("reject", 400)
    assert parse_request(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n") == ("reject", 505)
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nA_B: 1\r\n\r\n", underscores="reject") == ("reject", 400)


def test_known_codings_before_chunked_are_forwarded_as_sent():
    kind, head, _ = parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert kind == "forward"
    assert dict(fields(head))[b"transfer-encoding"] == b"gzip, chunked"


@pytest.mark.parametrize("mode,kept", [("drop", []), ("allow", [b"a_b"])])
def test_underscore_names(mode, kept):
    kind, head, _ = parse_request(
        b"GET / HTTP/1.1\r\nHost: a\r\nA_B: 1\r\nX_SSL_Subject: f\r\nX_Forwarded_For: f\r\nContent_Length: 1\r\n"
        b"Transfer_Encoding: chunked\r\nX_Real_Ip: x\r\nhttp2_settings: x\r\nX-Ok: 1\r\n\r\n",
        underscores=mode)
    assert kind == "forward"
    names = [k for k, _ in fields(head)]
    assert [k for k in names if b"_" in k] == kept
    assert b"x-ok" in names


def test_h2c_upgrade_is_not_an_upgrade():
    kind, head, _ = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                  b"Upgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n")
    assert kind == "forward"
    names = [k for k, _ in fields(head)]
    assert b"upgrade" not in names and b"connection" not in names and b"http2-settings" not in names
    kind, head, _ = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: H2C , websocket\r\n\r\n")
    f = dict(fields(head))
    assert (f[b"upgrade"], f[b"connection"]) == (b"websocket", b"upgrade")
