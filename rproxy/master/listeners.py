"""Bind every listener once, in the master, before privileges are dropped.

Workers inherit the sockets across fork; reloads keep them open, so a
reload never re-binds a port (and a port below 1024 stays usable after the
master has dropped root).
"""
from __future__ import annotations

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
                os.unlink(path)       # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    else:
        family = socket.AF_INET6 if key[0] == "inet6" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((server.addr, server.port))
    sock.listen(server.backlog)
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), True)
    return BoundListener(key, sock, server.label)
