"""Crashes found by the fuzz harness (tests/fuzz/fuzz_proxy.py), minimised.

Each test names the seed and case that found it.  They matter most in the
sanitizer stage (tests/sanitize/run.sh), where an out-of-bounds read that
the normal build survives is a report that fails the run.
"""
from __future__ import annotations

import socket

from support.downstream import serve_raw
from support.proc import lines_of, read_response

FMT = "{STATUS}|{UA}|{REF}|{US_HDR}:'X-Abcdefgh'|{HOST}|{REQUEST}"


def _proxy(start_rproxy, port, ds_port, log):
    return start_rproxy(f"""
workers = 1
access-log-flush = 20ms
server {{
    addr = 127.0.0.1
    port = {port}
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{FMT}" }} }}
    downstream {{ addr = 127.0.0.1  port = {ds_port}  max-fails = 0 }}
}}
""", port)


class _SwallowingDownstream:
    """Reads each request up to the end of its chunked body (the empty line
    after the trailers), then closes without answering."""

    def __init__(self):
        self.got: list[bytes] = []
        self.sock = serve_raw(self._one, backlog=8)
        self.port = self.sock.getsockname()[1]

    def _one(self, c):
        data = b""
        c.settimeout(10)
        try:
            while not (b"\r\n0\r\n" in data and data.endswith(b"\r\n\r\n")):
                d = c.recv(65536)
                if not d:
                    break
                data += d
        except OSError:
            pass
        self.got.append(data)

    def close(self):
        self.sock.close()


def _chunks(n: int, piece: int = 4000) -> bytes:
    out = []
    for i in range(0, n, piece):
        d = b"c" * min(piece, n - i)
        out.append(b"%x;ext=1\r\n" % len(d) + d + b"\r\n")
    return b"".join(out)


def test_trailers_after_a_large_body_then_a_failed_exchange(start_rproxy, port, tmp_path):
    """Found by the fuzz (seed 1, 60 s, before the trailer fix): a chunked request whose body
    outgrew the 32 KiB buffer, trailers named like looked-up headers, and a
    downstream that closes without answering.  The 502's access-log line is
    written from the failure path (x_drop), which looked the trailers up as
    request headers past the kept copy of the head: ASan heap-buffer-overflow
    in w_request_header.  Now: 502, a clean log line, the same worker."""
    ds = _SwallowingDownstream()
    log = tmp_path / "access.log"
    try:
        p = _proxy(start_rproxy, port, ds.port, log)
        worker = p.workers()[0].pid
        for size in (1000, 40000, 100000):
            raw = (b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunks(size)
                   + b"0\r\nX-Pad: " + b"p" * 600 + b"\r\nX-Abcdefgh: 1\r\nTeferer: 2\r\nT-Ab: 3\r\n\r\n")
            with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
                c.sendall(raw)
                status = read_response(c)[0]
            assert status == 502, size
        lines = lines_of(log, 3)
        assert lines == ["502|-|-|-|h|POST /t HTTP/1.1"] * 3
        assert all(g.endswith(b"T-Ab: 3\r\n\r\n") for g in ds.got)     # the trailers did reach it
        assert [w.pid for w in p.workers()] == [worker]
    finally:
        ds.close()
