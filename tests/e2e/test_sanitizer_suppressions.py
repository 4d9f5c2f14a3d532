"""The situation behind each suppression in tests/sanitize/asan.supp.

In the sanitizer stage these prove a suppression is still needed and still
enough (without it, the worker dies with a report; with it, a clean run); in
the normal suite they are plain behaviour tests.
"""
from __future__ import annotations

import socket

from support.proc import read_response


def test_regex_route_of_a_request_at_the_start_of_a_full_buffer(start_rproxy, downstream, port):
    """regexec(REG_STARTEND) on a path that is a span of the read buffer,
    followed by pipelined bytes up to the buffer's end and no NUL: GCC 12's
    interceptor strlen()s past the allocation (READ of size ~32 KiB in
    __interceptor_regexec <- rule_matches), glibc itself reads only the span.
    Both requests are routed by the regex and answered in order."""
    conf = f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d1 {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{ rule r {{ uri-rmatch = "^/r/[a-z]+$"  downstreams = {{ d1 }} }} }}
}}
"""
    p = start_rproxy(conf, port)
    worker = p.workers()[0].pid
    for i in range(3):
        first = b"GET /r/abc HTTP/1.1\r\nHost: h\r\n\r\n"
        second = b"POST /r/def HTTP/1.1\r\nHost: h\r\nContent-Length: 40000\r\n\r\n" + b"a" * 40000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(first + second)         # one write: the first read fills the buffer
            st1, _, body1, rest = read_response(s)
            st2, _, body2, _ = read_response(s, rest)
        assert (st1, body1, st2, body2) == (200, b"/r/abc", 200, b"/r/def")
    assert [r.target for r in downstream.requests] == ["/r/abc", "/r/def"] * 3
    assert [w.pid for w in p.workers()] == [worker]
