"""The status listener, served by the master in its own poll loop.

No thread and no extra process: the listener and its few connections are
non-blocking descriptors the master polls with its signal pipe.  A request
is one GET (HEAD) of at most 8 KiB of head; the answer is built at once
(reading the zones is a few hundred microseconds) and written as the
socket takes it.  A client that stays silent or does not read is dropped
after CLIENT_TIMEOUT seconds; at most MAX_CLIENTS are served at a time.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import Callable

from .. import errorlog

MAX_HEAD = 8192
MAX_CLIENTS = 64
CLIENT_TIMEOUT = 10.0
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error"}


def bind_status(addr: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr.strip("[]"), port))
        s.listen(64)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def allowed(peer: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks if n.version == ip.version)


class _Client:
    __slots__ = ("sock", "peer", "buf", "out", "deadline")

    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = peer
        self.buf = b""
        self.out = b""
        self.deadline = time.monotonic() + CLIENT_TIMEOUT


class StatusServer:
    """`handler(method, path) -> (status, content type, body bytes)`."""

    def __init__(self, sock: socket.socket, allow, handler: Callable, label: str):
        self.sock = sock
        self.label = label
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow]
        self.handler = handler
        self.clients: dict[int, _Client] = {}

    def set_allow(self, allow) -> None:
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow]

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._drop(c)
        self.sock.close()

    # ---- poll integration ----------------------------------------------------------

    def register(self, poller, select_mod) -> dict:
        """Add our descriptors to `poller`; returns {fd: self} for dispatch."""
        fds = {}
        if len(self.clients) < MAX_CLIENTS:
            poller.register(self.sock.fileno(), select_mod.POLLIN)
            fds[self.sock.fileno()] = self
        for fd, c in self.clients.items():
            poller.register(fd, select_mod.POLLOUT if c.out else select_mod.POLLIN)
            fds[fd] = self
        return fds

    def on_event(self, fd: int) -> None:
        if fd == self.sock.fileno():
            self._accept()
            return
        c = self.clients.get(fd)
        if c is None:
            return
        if c.out:
            self._write(c)
        else:
            self._read(c)

    def expire(self, now: float) -> None:
        for c in [c for c in self.clients.values() if now >= c.deadline]:
            self._drop(c)

    # ---- connections ------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(16):
            try:
                s, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    errorlog.warn(f"status listener {self.label}: accept: {e.strerror}")
                return
            s.setblocking(False)
            c = _Client(s, addr[0])
            self.clients[s.fileno()] = c
            if len(self.clients) >= MAX_CLIENTS:
                return

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        if not data:
            self._drop(c)
            return
        c.buf += data
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            end = c.buf.find(b"\n\n")
        if end < 0:
            if len(c.buf) > MAX_HEAD:
                self._respond(c, 400, "text/plain", b"400 Bad Request: head too large\n", head=False)
            return
        line = c.buf.split(b"\n", 1)[0].strip().split()
        if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
            self._respond(c, 400, "text/plain", b"400 Bad Request\n", head=False)
            return
        if not allowed(c.peer, self.networks):
            # (the head is read first: closing on unread bytes would reset the answer away)
            errorlog.info(f"status listener {self.label}: {c.peer} is not allowed: 403")
            self._respond(c, 403, "text/plain; charset=utf-8", b"403 Forbidden: this address is not "
                          b"in the status listener's allow list\n", head=False)
            return
        method, target = line[0].decode("latin-1"), line[1].decode("latin-1")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self._respond(c, 405, "text/plain", b"405 Method Not Allowed: GET or HEAD\n", head=False,
                          extra="Allow: GET, HEAD\r\n")
            return
        try:
            status, ctype, body = self.handler(method, path)
        except Exception as e:  # noqa: BLE001 - a bug here must not take the master down
            import traceback

            errorlog.error(f"status listener: {path}: {e!r}\n{traceback.format_exc()}")
            status, ctype, body = 500, "text/plain", b"500 Internal Server Error\n"
        self._respond(c, status, ctype, body, head=(method == "HEAD"))

    def _respond(self, c: _Client, status: int, ctype: str, body: bytes, head: bool, extra: str = "") -> None:
        hdr = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nServer: rproxy\r\n"
               f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nCache-Control: no-store\r\n"
               f"{extra}Connection: close\r\n\r\n").encode()
        c.out = hdr + (b"" if head else body)
        c.deadline = time.monotonic() + CLIENT_TIMEOUT
        self._write(c)

    def _write(self, c: _Client) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        c.out = c.out[n:]
        if not c.out:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(c)

    def _drop(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        try:
            c.sock.close()
        except OSError:
            pass
