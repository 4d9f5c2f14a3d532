"""A real downstream HTTP/1.1 server for end-to-end tests.

It runs in a thread of the test process on a real 127.0.0.1 socket, parses
what rproxy sends it strictly enough to notice framing mistakes, records
every request exactly as received (raw head bytes, body, connection id), and
answers according to the path:

  /echo            200, JSON with the body's length and sha256, the method,
                   the path and the request headers as received
  /bytes/N         200, N bytes, Content-Length
  /chunked/N       200, N bytes, chunked
  /close/N         200, N bytes, close-delimited (no length), then close
  /status/N        status N, small body (HEAD-aware)
  /slow/MS         waits MS milliseconds, then 200 "slow"
  anything else    200, body = the path (so pipelined answers can be matched)

Any request whose path starts with /hold/NAME is held, unanswered, until the
test calls release(NAME); meanwhile the server keeps reading its connection,
so requests pipelined behind it are seen (depth_now / depth_max: requests
received on a connection and not yet answered).  Then it is answered as above
(or by the custom handler).

A custom handler (handler=...) may replace that behaviour: it gets the parsed
Request and the socket and returns False to close the connection.
With ssl_context=..., it speaks TLS (failed handshakes go to tls_errors).
"""
from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Request:
    conn_id: int
    method: str
    target: str
    version: str
    headers: list            # [(name, value)] as received
    raw_head: bytes
    body: bytes
    chunked: bool
    trailers: list = field(default_factory=list)    # [(name, value)] after a chunked body

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class ProtocolError(Exception):
    pass


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def fill(self) -> bool:
        d = self.sock.recv(65536)
        if not d:
            return False
        self.buf += d
        return True

    def line(self) -> Optional[bytes]:
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        i = self.buf.index(b"\r\n")
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def head(self) -> Optional[bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self.fill():
                if self.buf:
                    raise ProtocolError("connection closed inside a request head")
                return None
        i = self.buf.index(b"\r\n\r\n")
        out, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise ProtocolError("connection closed inside a body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_request(r: _Reader, conn_id: int) -> Optional[Request]:
    head = r.head()
    if head is None:
        return None
    lines = head[:-4].split(b"\r\n")
    method, target, version = lines[0].decode("latin-1").split(" ")
    headers = []
    for ln in lines[1:]:
        if b":" not in ln or ln[:1] in (b" ", b"\t"):
            raise ProtocolError(f"bad header line {ln!r}")
        k, v = ln.split(b":", 1)
        headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
    names = [k.lower() for k, _ in headers]
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    if te and cl:
        raise ProtocolError("both Transfer-Encoding and Content-Length")
    if len(cl) > 1:
        raise ProtocolError("duplicate Content-Length")
    body = b""
    chunked = False
    trailers = []
    if te:
        if te[-1].lower() != "chunked":
            raise ProtocolError(f"unsupported transfer-encoding {te}")
        chunked = True
        parts = []
        while True:
            size_line = r.line()
            if size_line is None:
                raise ProtocolError("closed inside chunked body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while True:                 # trailers
                    t = r.line()
                    if t is None:
                        raise ProtocolError("closed inside trailers")
                    if t == b"":
                        break
                    k, _, v = t.partition(b":")
                    trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                break
            parts.append(r.exactly(size))
            if r.exactly(2) != b"\r\n":
                raise ProtocolError("bad chunk terminator")
        body = b"".join(parts)
    elif cl:
        body = r.exactly(int(cl[0]))
    del names
    return Request(conn_id, method, target, version, headers, head, body, chunked, trailers)


def _response(status: int, body: bytes, headers=(), head_only=False) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return out if head_only else out + body


def _chunked(status: int, body: bytes, piece: int = 7000) -> bytes:
    out = [f"HTTP/1.1 {status} OK\r\nTransfer-Encoding: chunked\r\n\r\n".encode()]
    for i in range(0, len(body), piece):
        p = body[i:i + piece]
        out.append(b"%x\r\n" % len(p) + p + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def payload(n: int) -> bytes:
    """Deterministic, non-repeating-ish bytes of length n."""
    seed = hashlib.sha256(str(n).encode()).digest()
    reps = n // len(seed) + 1
    return (seed * reps)[:n]


Handler = Callable[[Request, socket.socket], bool]


def serve_raw(handle: Callable[[socket.socket], None], backlog: int = 16) -> socket.socket:
    """A bare listener on 127.0.0.1 (a free port) for tests that script a
    downstream byte by byte: each connection goes to handle(conn) in a
    thread of its own and is closed when handle returns (OSError from it
    ends that connection only).  Closing the returned socket stops it."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(backlog)

    def one(c: socket.socket) -> None:
        try:
            handle(c)
        except OSError:
            pass
        finally:
            c.close()

    def run() -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return ls


@dataclass
class Downstream:
    handler: Optional[Handler] = None
    host: str = "127.0.0.1"
    idle_timeout: Optional[float] = None     # close a keep-alive connection idle this long
    bind_port: int = 0                       # 0: any free port; else restart on that one
    ssl_context: Optional[ssl.SSLContext] = None     # speak TLS (server side)
    tls_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    depth_now: dict = field(default_factory=dict)   # conn id -> requests received, not yet answered
    depth_max: dict = field(default_factory=dict)   # conn id -> the most ever seen at once

    def __post_init__(self):
        if self.host.startswith("unix:"):            # a unix socket at that path; port is None
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(self.host[5:])
            self.port = None
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((self.host, self.bind_port))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(512)
        self.lock = threading.Lock()
        self._holds: dict = {}
        self._stop = False
        self._socks: list = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open_connections += 1
                cid = self.connections
                self._socks.append(s)
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _serve(self, s: socket.socket, cid: int):
        if self.ssl_context is not None:
            raw = s
            try:
                s = self.ssl_context.wrap_socket(s, server_side=True)
                with self.lock:
                    self._socks[self._socks.index(raw)] = s      # close() shuts the TLS socket
            except (ssl.SSLError, OSError) as e:
                with self.lock:
                    self.tls_errors.append(str(e))
                    self.open_connections -= 1
                s.close()
                return
        r = _Reader(s)
        try:
            while not self._stop:
                if self.idle_timeout is not None:
                    s.settimeout(self.idle_timeout)
                    try:
                        if not r.buf and not r.fill():
                            return
                    except socket.timeout:
                        return                   # idle too long: close, like nginx's keepalive_timeout
                    s.settimeout(None)
                req = read_request(r, cid)
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                self._note_depth(cid, r)
                if req.target.startswith("/hold/"):
                    if not self._hold(req.target.split("/")[2], s, r, cid):
                        return
                keep = (self.handler or self.default_handler)(req, s)
                with self.lock:
                    self.depth_now[cid] = 0
                if not keep:
                    return
        except ProtocolError as e:
            with self.lock:
                self.errors.append(str(e))
        except OSError:
            pass
        finally:
            with self.lock:
                self.open_connections -= 1
            try:
                s.close()
            except OSError:
                pass

    def _note_depth(self, cid: int, r: _Reader) -> None:
        # the request being served plus the complete heads already buffered
        # behind it (the tests pipeline only requests without a body)
        n = 1 + r.buf.count(b"\r\n\r\n")
        with self.lock:
            self.depth_now[cid] = n
            self.depth_max[cid] = max(n, self.depth_max.get(cid, 0))

    def _event(self, name: str) -> threading.Event:
        with self.lock:
            return self._holds.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        """Let the requests held under /hold/NAME be answered."""
        self._event(name).set()

    def _hold(self, name: str, s: socket.socket, r: _Reader, cid: int) -> bool:
        """Wait for release(name), reading whatever else arrives meanwhile.
        False: the connection ended (or the server stops)."""
        ev = self._event(name)
        s.settimeout(0.02)
        try:
            while not ev.is_set():
                if self._stop:
                    return False
                try:
                    if not r.fill():
                        return False
                    self._note_depth(cid, r)
                except socket.timeout:
                    pass
        finally:
            if not self._stop:
                s.settimeout(None)
        return True

    def wait_depth(self, n: int, timeout: float = 10.0) -> int:
        """Wait until some connection has n requests unanswered; its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for cid, d in self.depth_now.items():
                    if d >= n:
                        return cid
            time.sleep(0.01)
        raise TimeoutError(f"no connection reached {n} requests in flight: {self.depth_now}")

    @staticmethod
    def default_handler(req: Request, s: socket.socket) -> bool:
        head_only = req.method == "HEAD"
        path = req.target.split("?")[0]
        parts = path.strip("/").split("/")
        if parts[0] == "echo":
            info = {
                "method": req.method, "target": req.target, "length": len(req.body),
                "sha256": hashlib.sha256(req.body).hexdigest(), "chunked": req.chunked,
                "headers": req.headers, "conn": req.conn_id,
            }
            s.sendall(_response(200, json.dumps(info).encode(), [("Content-Type", "application/json")],
                                head_only))
        elif parts[0] == "bytes":
            s.sendall(_response(200, payload(int(parts[1])), head_only=head_only))
        elif parts[0] == "chunked":
            s.sendall(_chunked(200, payload(int(parts[1]))))
        elif parts[0] == "close":
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload(int(parts[1])))
            return False
        elif parts[0] == "status":
            s.sendall(_response(int(parts[1]), b"status\n", head_only=head_only))
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
            s.sendall(_response(200, b"slow", head_only=head_only))
        else:
            s.sendall(_response(200, path.encode(), [("X-Conn", str(req.conn_id))], head_only))
        return True

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
