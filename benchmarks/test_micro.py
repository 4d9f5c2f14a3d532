"""Micro-benchmarks of the fast path's hot pieces (pytest-benchmark).

Each benchmark calls a hook of rproxy._fastpath that loops in C over the
very functions the event loop runs, so the timing is of compiled code, not
of Python calls.  Run:  python -P -m pytest benchmarks/test_micro.py
(add --benchmark-only --benchmark-columns=min,median,ops to read numbers).
"""
from __future__ import annotations

import pytest

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy import _fastpath as fp
from rproxy.accesslog import DEFAULT_FORMAT, parse_format

ROUNDS = 10000

REQUEST = (b"GET /index.html?page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n"
           b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nX-Request-Id: 1234\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 12:00:00 GMT\r\n"
            b"Content-Type: text/html\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n"
            b"ETag: \"abc\"\r\n\r\n")


def per_call(benchmark, fn, *args):
    result = benchmark(fn, *args)
    benchmark.extra_info["rounds_per_call"] = ROUNDS
    return result


def test_request_head_parse_and_rewrite(benchmark):
    assert per_call(benchmark, fp.bench_parse_request, REQUEST, ROUNDS) == ROUNDS


def test_request_head_with_forwarding_headers(benchmark):
    policy = ("x_forwarded_for", "x_real_ip", "x_forwarded_proto", "forwarded", "via")
    assert per_call(benchmark, fp.bench_parse_request, REQUEST, ROUNDS, policy) == ROUNDS


def test_response_head_parse_and_rewrite(benchmark):
    assert per_call(benchmark, fp.bench_parse_response, RESPONSE, ROUNDS) > 0


@pytest.mark.parametrize("method", ["rtt", "roundrobin", "most-idle", "none", "random", "least-pending"])
def test_balancer_pick(benchmark, method):
    picks = per_call(benchmark, fp.bench_lb_pick, method, 4, 8, ROUNDS)
    assert sum(picks) == ROUNDS


def test_access_log_line_default_format(benchmark):
    """One access log line of a fixed exchange, RProxy's default format
    ({SRC} {HOST} {URI} {HOST}), rendered by the ops the worker runs."""
    items = parse_format(DEFAULT_FORMAT)
    line = per_call(benchmark, fp.bench_accesslog, REQUEST, items, ROUNDS)
    assert line == b"192.0.2.1 example.com /index.html example.com\n"


def test_access_log_line_combined_format(benchmark):
    """The same with an nginx "combined"-like format plus timings: a
    timestamp, the request line, escaping of header values."""
    items = parse_format('{SRC} - - [{TS}] "{REQUEST}" {STATUS} {BODY_BYTES_SENT} "{REF}" "{UA}" '
                         '{REQUEST_TIME} {DS_ADDR} {REQUEST_ID}')
    line = per_call(benchmark, fp.bench_accesslog, REQUEST, items, ROUNDS)
    assert b'"GET /index.html?page=2 HTTP/1.1" 200 1024 "-" "curl/8.5.0" 2.500 10.0.0.2:8081 ' in line


def test_metrics_exchange_end(benchmark):
    """What metrics add per request: one ended exchange counted into its
    rule, its downstream and both histograms (x_free's m_request_done)."""
    assert per_call(benchmark, fp.bench_metrics_exchange, ROUNDS) == ROUNDS
