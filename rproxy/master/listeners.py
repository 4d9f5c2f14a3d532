"""Bind every listener once, in the master, before privileges are dropped.

Workers inherit the sockets across fork; reloads keep them open, so a
reload never re-binds a port (and a port below 1024 stays usable after the
master has dropped root).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from ..config.model import Server


@dataclass
class BoundListener:
    key: tuple                 # (family, address, port) identity across reloads
    sock: socket.socket
    label: str
    backlog: int = 0

    def set_backlog(self, backlog: int) -> None:
        """A reload may change `backlog`: listen() again on the same socket
        changes it without closing anything."""
        if backlog != self.backlog:
            self.sock.listen(backlog)
            self.backlog = backlog

    def close(self) -> None:
        """Close the master's copy (workers still holding one keep it open);
        a unix socket's path goes now so nothing new connects to it."""
        self.sock.close()
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


def bind(server: Server) -> BoundListener:
    key = listener_key(server)
    if key[0] == "unix":
        path = key[1]
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                if _unix_socket_in_use(path):
                    raise OSError(errno.EADDRINUSE, "Address already in use (a process listens on it)")
                os.unlink(path)       # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        family = socket.AF_INET6 if key[0] == "inet6" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if key[0] == "unix":
            sock.bind(key[1])
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if key[0] == "inet6":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((server.addr, server.port))
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
