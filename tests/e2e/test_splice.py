"""The splice(2) relay of Content-Length bodies (rproxy/fastpath/splice.pxi).

Bodies of 64 KiB and more go socket -> pipe -> socket (below that they are
copied); the pipe the worker then keeps pooled shows in /proc/PID/fd.  With
response buffering off the client socket also gets TCP_NOTSENT_LOWAT, so the
worker writes the body in steps as the client's window opens: a client that
stalls mid-body and then reads must still get every byte, in order, on a
connection that stays usable.  With response buffering on (the default) the
mark applies too, but a client that leaves a pipe step unsent for 20 ms
loses it and, once its socket is full, has the rest of the body buffered:
it must not hold the downstream connection.
"""
from __future__ import annotations

import socket
import time

import pytest

from support.confs import one_rule
from support.downstream import Downstream, payload
from support.proc import open_fds

KIB = 1024
MIB = 1024 * 1024


def conf(port, ds_port, rule="", **kw):
    return one_rule(port, ds_port, rule=rule, **kw)


def pipe_fds(proxy) -> int:
    return sum(t.startswith("pipe:") for w in proxy.workers() for t in open_fds(w.pid))


def get(s, n, stall=0.0, during=None) -> tuple:
    """GET /bytes/n on keep-alive socket s: (status, body); with stall, the
    client reads nothing for that long after the first bytes, and then
    calls `during` (if given) before it reads on."""
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed before the head"
        buf += d
    if stall:
        time.sleep(stall)
    if during is not None:
        during()
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


@pytest.mark.parametrize("buffering", ["true", "false"])
def test_buffered_splice_to_a_stalled_client_frees_the_downstream(start_rproxy, port, tmp_path, buffering):
    """Response buffering on (the default): the body is spliced under the
    low-water mark, the client stops reading, and after its grace the body
    moves to the response buffer and the temp file.  The only downstream
    connection must then serve another client (held, that one would wait
    for pending-timeout and get 503), and the stalled client must still get
    every byte, and the next response, on the same connection.  The
    control, buffering off: the connection stays held, the other gets 503."""
    ds = Downstream()
    tdir = tmp_path / "bodies"
    tdir.mkdir()
    p = start_rproxy(conf(port, ds.port, main=f'temp-dir = "{tdir}"', server="pending-timeout = 2s",
                          ds="max-connections = 1", rule=f"response-buffering = {buffering}"), port,
                     check_quiet=False)
    other = []

    def another_client():
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s2:
            other.append(get(s2, 1 * MIB + 5))

    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        assert get(s, 8 * MIB, stall=0.5, during=another_client) == (200, payload(8 * MIB))
        if buffering == "true":
            assert other == [(200, payload(1 * MIB + 5))]
        else:
            assert [st for st, _ in other] == [503]
        assert get(s, 1 * MIB + 3) == (200, payload(1 * MIB + 3))
    if buffering == "true":
        assert "error" not in p.read_log().lower()
    ds.close()


def test_buffered_splice_to_a_client_that_reads_in_slow_sips(start_rproxy, port, tmp_path):
    """A client that keeps reading, a little at a time with pauses, spends
    its grace mid-body: the rest of the body switches from the pipe to the
    response buffer while the client is between reads.  Every byte must
    arrive in order, and the connection serve the next request."""
    ds = Downstream()
    tdir = tmp_path / "bodies"
    tdir.mkdir()
    p = start_rproxy(conf(port, ds.port, main=f'temp-dir = "{tdir}"'), port)
    n = 4 * MIB + 7
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        body = buf[buf.index(b"\r\n\r\n") + 4:]
        while len(body) < n:
            d = s.recv(min(256 * KIB, n - len(body)))
            assert d, f"connection closed after {len(body)} of {n} body bytes"
            body += d
            if len(body) < 2 * MIB:
                time.sleep(0.01)            # ~0.1 s of pauses in all: past the grace
        assert bytes(body) == payload(n)
        assert get(s, 64 * KIB + 1) == (200, payload(64 * KIB + 1))
    assert "error" not in p.read_log().lower()
    ds.close()
