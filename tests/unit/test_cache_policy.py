"""RFC 9111 shared-cache rules of the fast path (rproxy/fastpath/cachepolicy.pxi),
checked without processes through cache_policy()."""
from __future__ import annotations

import calendar
import time

import pytest

from rproxy.fastpath import cache_policy, http_date_parse

T0 = calendar.timegm(time.strptime("1994-11-06 08:49:37", "%Y-%m-%d %H:%M:%S"))
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("text,want", [
    ("Sun, 06 Nov 1994 08:49:37 GMT", T0),
    ("Sunday, 06-Nov-94 08:49:37 GMT", T0),
    ("Sun Nov  6 08:49:37 1994", T0),
    ("  Sun, 06 Nov 1994 08:49:37 GMT ", T0),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
    ("Tue, 29 Feb 2028 23:59:59 GMT", calendar.timegm((2028, 2, 29, 23, 59, 59))),
    ("Sun, 06 Nov 1994 08:49:37 UTC", -1),
    ("Sun, 06 Foo 1994 08:49:37 GMT", -1),
    ("Sun, 06 Nov 1994 25:49:37 GMT", -1),
    ("0", -1),
    ("", -1),
    ("-1", -1),
    ("Sun, 06 Nov 1994", -1),
])
def test_http_date(text, want):
    assert http_date_parse(text) == want


def policy(resp, req=(), status=200, method="GET", **kw):
    return cache_policy(method, list(req), status, list(resp), **kw)


@pytest.mark.parametrize("resp,req,status,method,why", [
    ([("Cache-Control", "max-age=60")], [], 200, "GET", "ok"),
    ([("Cache-Control", "max-age=60")], [], 200, "POST", "method"),
    ([("Cache-Control", "max-age=60")], [], 200, "HEAD", "method"),
    ([("Cache-Control", "max-age=60")], [], 206, "GET", "partial"),
    ([("Cache-Control", "max-age=60")], [], 500, "GET", "ok"),    # any final status with explicit freshness
    ([("Cache-Control", "max-age=60")], [], 299, "GET", "ok"),
    ([], [], 500, "GET", "no-freshness"),
    ([("Cache-Control", "max-age=60, must-understand")], [], 599, "GET", "status"),
    ([("Cache-Control", "max-age=60, must-understand, no-store")], [], 200, "GET", "ok"),
    ([("Cache-Control", "max-age=60")], [], 304, "GET", "status"),
    ([("Cache-Control", "max-age=60")], [], 103, "GET", "status"),
    ([("Cache-Control", "max-age=60, no-store")], [], 200, "GET", "no-store"),
    ([("Cache-Control", "max-age=60")], [("Cache-Control", "no-store")], 200, "GET", "no-store"),
    ([("Cache-Control", "private, max-age=60")], [], 200, "GET", "private"),
    ([("Cache-Control", 'private="set-cookie", max-age=60')], [], 200, "GET", "private"),
    ([("Cache-Control", "max-age=60")], [("Authorization", "Basic x")], 200, "GET", "authorization"),
    ([("Cache-Control", "max-age=60, public")], [("Authorization", "Basic x")], 200, "GET", "ok"),
    ([("Cache-Control", "s-maxage=60")], [("Authorization", "Basic x")], 200, "GET", "ok"),
    ([("Cache-Control", "max-age=60, must-revalidate")], [("Authorization", "x")], 200, "GET", "ok"),
    ([("Cache-Control", "max-age=60"), ("Vary", "*")], [], 200, "GET", "vary-star"),
    ([("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], [], 200, "GET", "ok"),
    ([], [], 302, "GET", "no-freshness"),                           # not heuristically cacheable
    ([("Expires", DATE)], [], 302, "GET", "ok"),
    ([], [], 200, "GET", "ok"),                                     # heuristically cacheable
    ([("Cache-Control", "no-cache")], [], 307, "GET", "ok"),        # stored, validated before each use
])
def test_storable(resp, req, status, method, why):
    assert policy(resp, req, status, method)["storable"] == why


@pytest.mark.parametrize("resp,lifetime", [
    ([("Cache-Control", "max-age=60")], 60),
    ([("Cache-Control", "max-age=60, s-maxage=10")], 10),            # s-maxage first for a shared cache
    ([("Cache-Control", "max-age=60"), ("Expires", "Sun, 06 Nov 1994 09:49:37 GMT"), ("Date", DATE)], 60),
    ([("Expires", "Sun, 06 Nov 1994 09:49:37 GMT"), ("Date", DATE)], 3600),
    ([("Expires", "0"), ("Date", DATE)], 0),                          # invalid Expires: already expired
    ([("Expires", "Sun, 06 Nov 1994 07:49:37 GMT"), ("Date", DATE)], 0),
    ([("Cache-Control", "max-age=\"30\"")], 30),
    ([("Cache-Control", "max-age=99999999999999")], 2147483648),   # delta-seconds saturate
    ([("Cache-Control", "max-age=abc")], 0),                          # invalid: ignored
    ([("Cache-Control", "max-age=60, max-age=10")], 10),              # conflicting: the shorter
    ([("Cache-Control", "max-age=10"), ("Cache-Control", "max-age=60")], 10),
    ([("Last-Modified", "Sun, 06 Nov 1994 06:49:37 GMT"), ("Date", DATE)], 720),   # 10 % of 2 h
    ([("Last-Modified", "Sun, 06 Nov 1984 06:49:37 GMT"), ("Date", DATE)], 86400), # at most a day
    ([], 0),
])
def test_freshness_lifetime(resp, lifetime):
    assert policy(resp, response_time=T0)["lifetime"] == lifetime


def test_current_age_rfc9111_4_2_3():
    # Date 10 s before the response arrived, Age 3, request took 2 s, 5 s since
    r = policy([("Date", DATE), ("Age", "3"), ("Cache-Control", "max-age=60")],
               request_time=T0 + 8, response_time=T0 + 10, now=T0 + 15)
    assert r["age"] == max(10, 3 + 2) + 5
    r = policy([("Date", DATE), ("Age", "30")], request_time=T0, response_time=T0 + 1, now=T0 + 1)
    assert r["age"] == 31


@pytest.mark.parametrize("ages", [["abc"], ["-7200"], ["0, 0"], ["7200;foo=1"], ["0", "0"], ["1.5"]])
def test_an_invalid_or_repeated_age_makes_the_response_stale(ages):
    r = policy([("Cache-Control", "max-age=3600")] + [("Age", a) for a in ages],
               request_time=T0, response_time=T0, now=T0)
    assert r["age"] >= 2147483648


def test_directives_are_case_insensitive_and_flags_parsed():
    r = policy([("Cache-Control", "Public, MUST-REVALIDATE, No-Transform, immutable, proxy-revalidate")])
    assert set(r["flags"]) == {"public", "must-revalidate", "no-transform", "immutable", "proxy-revalidate"}
    r = policy([], [("Cache-Control", "max-stale, min-fresh=5")])
    assert r["req_max_stale"] > 10 ** 12 and r["req_min_fresh"] == 5
    r = policy([("Cache-Control", 'no-cache="Set-Cookie, X-A", max-age=5')])
    assert "no-cache" in r["flags"] and r["max_age"] == 5
    assert policy([("ETag", '"x"')])["has_validator"]
