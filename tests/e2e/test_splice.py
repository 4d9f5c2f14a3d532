"""The splice(2) relay of Content-Length bodies (rproxy/fastpath/splice.pxi).

Bodies of 64 KiB and more go socket -> pipe -> socket (below that they are
copied); the pipe the worker then keeps pooled shows in /proc/PID/fd.  With
response buffering off the client socket also gets TCP_NOTSENT_LOWAT, so the
worker writes the body in steps as the client's window opens: a client that
stalls mid-body and then reads must still get every byte, in order, on a
connection that stays usable.
"""
from __future__ import annotations

import os
import socket
import time

import pytest

from support.downstream import Downstream, payload

KIB = 1024
MIB = 1024 * 1024


def conf(port, ds_port, rule=""):
    return f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds_port}  connections = 1 }}
    vhost "*" {{ rule all {{ uri-prefix = "/"  downstreams = {{ d }}  {rule} }} }}
}}
"""


def pipe_fds(proxy) -> int:
    n = 0
    for w in proxy.workers():
        for fd in os.listdir(f"/proc/{w.pid}/fd"):
            try:
                if os.readlink(f"/proc/{w.pid}/fd/{fd}").startswith("pipe:"):
                    n += 1
            except OSError:
                pass
    return n


def get(s, n, stall=0.0) -> tuple:
    """GET /bytes/n on keep-alive socket s: (status, body); with stall, the
    client reads nothing for that long after the first bytes."""
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed before the head"
        buf += d
    if stall:
        time.sleep(stall)
    i = buf.index(b"\r\n\r\n")
    head = bytes(buf[:i]).decode()
    length = int([ln.split(":")[1] for ln in head.split("\r\n") if ln.lower().startswith("content-length")][0])
    body = buf[i + 4:]
    while len(body) < length:
        d = s.recv(1 << 20)
        assert d, f"connection closed after {len(body)} of {length} body bytes"
        body += d
    return int(head.split()[1]), bytes(body)


@pytest.mark.parametrize("buffering", ["true", "false"])
def test_bodies_from_64k_are_spliced_and_arrive_intact(start_rproxy, port, buffering):
    ds = Downstream()
    p = start_rproxy(conf(port, ds.port, f"response-buffering = {buffering}"), port)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        assert get(s, 64 * KIB - 1) == (200, payload(64 * KIB - 1))
        assert pipe_fds(p) == 0                     # copied: below the splice threshold
        assert get(s, 64 * KIB) == (200, payload(64 * KIB))
        assert pipe_fds(p) == 2                     # spliced: its pipe is back in the worker's pool
        for n in (64 * KIB + 1, 3 * MIB + 17):
            assert get(s, n) == (200, payload(n))
        assert pipe_fds(p) == 2                     # the same pipe, reused
    ds.close()


def test_unbuffered_splice_to_a_client_that_stalls_then_reads(start_rproxy, port):
    """Response buffering off: the body waits in the pipe and the client
    socket (at most TCP_NOTSENT_LOWAT unsent) while the client reads
    nothing, then arrives whole; the next response on the same connection
    too."""
    ds = Downstream()
    p = start_rproxy(conf(port, ds.port, "response-buffering = false"), port)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        assert get(s, 8 * MIB, stall=1.0) == (200, payload(8 * MIB))
        assert get(s, 1 * MIB + 3) == (200, payload(1 * MIB + 3))
    assert "error" not in p.read_log().lower()
    ds.close()
