"""Bind every listener once, in the master, before privileges are dropped.

Workers inherit the sockets across fork; reloads keep them open, so a
reload never re-binds a port (and a port below 1024 stays usable after the
master has dropped root).

accept-spread: with `exclusive` (the default) every worker polls the one
socket of a TCP listener with EPOLLEXCLUSIVE, so the kernel wakes one idle
worker per connection; with `reuseport` each worker index gets a socket of
its own, all bound with SO_REUSEPORT, and the kernel spreads connections over
them by a hash of the addresses (README: "Accept spreading" has the
measurements).  The sockets are bound at start-up; a reload that adds
workers binds more if it can (same user as at start), else the new ones
share sockets by index modulo the count.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass, field

from ..config.model import Server


@dataclass
class BoundListener:
    key: tuple                 # (family, address, port) identity across reloads
    sock: socket.socket
    label: str
    backlog: int = 0
    copies: list = field(default_factory=list)     # reuseport: the sockets of worker indexes 1..N-1
    reuseport: bool = False

    def socks(self) -> list:
        return [self.sock, *self.copies]

    def fileno_for(self, index: int) -> int:
        """The socket worker `index` accepts on."""
        socks = self.socks()
        return socks[index % len(socks)].fileno()

    def add_copies(self, server: Server, count: int) -> None:
        """reuseport: sockets up to `count` in all (fewer if binding fails,
        e.g. after the privilege drop: SO_REUSEPORT wants the same user)."""
        while self.reuseport and len(self.socks()) < count:
            try:
                self.copies.append(_bind_inet(server, self.key, reuseport=True))
            except OSError as e:
                from .. import errorlog

                errorlog.notice(f"accept-spread = reuseport: cannot bind another socket on {self.label} "
                                f"({e.strerror or e}); workers share the {len(self.socks())} there are")
                return

    def trim_copies(self, count: int) -> None:
        """reuseport: close the master's sockets beyond `count` (the draining
        workers' copies close as they exit; until then they still accept).
        The kernel moves the queued connections of a closed socket to the
        others of its group only with net.ipv4.tcp_migrate_req = 1."""
        while self.copies and len(self.socks()) > max(count, 1):
            self.copies.pop().close()

    def set_backlog(self, backlog: int) -> None:
        """A reload may change `backlog`: listen() again on the same socket
        changes it without closing anything."""
        if backlog != self.backlog:
            for s in self.socks():
                s.listen(backlog)
            self.backlog = backlog

    def close(self) -> None:
        """Close the master's copy (workers still holding one keep it open);
        a unix socket's path goes now so nothing new connects to it."""
        for s in self.socks():
            s.close()
        if self.key[0] == "unix":
            try:
                if stat.S_ISSOCK(os.stat(self.key[1]).st_mode):
                    os.unlink(self.key[1])
            except OSError:
                pass


def listener_key(server: Server) -> tuple:
    if server.addr.startswith("unix:"):
        return ("unix", server.addr[5:], 0)
    family = "inet6" if ":" in server.addr else "inet"
    return (family, server.addr, server.port)


def _bind_inet(server: Server, key: tuple, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if key[0] == "inet6" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if key[0] == "inet6":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((server.addr, server.port))
        sock.listen(server.backlog)
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), True)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(server: Server, spread: str = "exclusive", workers: int = 1) -> BoundListener:
    """The listener of `server`: one socket, or with spread = "reuseport"
    (TCP only) one SO_REUSEPORT socket per worker."""
    key = listener_key(server)
    if key[0] != "unix":
        reuseport = spread == "reuseport"
        bl = BoundListener(key, _bind_inet(server, key, reuseport), server.label, server.backlog,
                           reuseport=reuseport)
        try:
            while reuseport and len(bl.socks()) < workers:
                bl.copies.append(_bind_inet(server, key, True))
        except BaseException:
            bl.close()
            raise
        return bl
    path = key[1]
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            if _unix_socket_in_use(path):
                raise OSError(errno.EADDRINUSE, "Address already in use (a process listens on it)")
            os.unlink(path)       # a stale socket from an earlier run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(key[1])
        sock.listen(server.backlog)
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), True)
    except BaseException:
        sock.close()
        raise
    return BoundListener(key, sock, server.label, server.backlog)


def _unix_socket_in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False            # nobody listens: the file is stale
        except OSError:
            return True             # e.g. a full backlog: someone is there
        return True


def bind_error_message(server: Server, e: OSError) -> str:
    """Why binding `server` failed, with what to do about it.  After the
    privilege drop the master cannot bind ports below 1024 or create sockets
    where its user may not write: those need a restart."""
    msg = f"cannot listen on {server.label}: {e.strerror or e}"
    if e.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        if not server.addr.startswith("unix:") and server.port < 1024:
            msg += ("; ports below 1024 can only be bound at start-up, before the master "
                    "drops privileges: restart rproxy to add this listener")
        else:
            msg += "; the master no longer runs as root: restart rproxy to add this listener"
    return msg
