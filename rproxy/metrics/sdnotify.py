"""systemd's readiness protocol (sd_notify), without libsystemd.

When NOTIFY_SOCKET is set (a unit with Type=notify), the master sends
datagrams such as READY=1, RELOADING=1, STOPPING=1 and STATUS=... to it.
A path starting with '@' is an abstract socket.  Failures are ignored: the
protocol is advisory, and a proxy must not stop because systemd went away.
"""
from __future__ import annotations

import os
import socket
import time

_sock = None
_addr = None


def _target():
    global _sock, _addr
    if _addr is None:
        path = os.environ.get("NOTIFY_SOCKET")
        if not path or path[0] not in "/@":
            return None
        _addr = "\0" + path[1:] if path[0] == "@" else path
        try:
            _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError:
            _addr = ""
            return None
    return _addr or None


def enabled() -> bool:
    return _target() is not None


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=serving") as one datagram."""
    addr = _target()
    if addr is None:
        return False
    msg = "\n".join(fields).encode()
    try:
        _sock.sendto(msg, addr)
        return True
    except OSError:
        return False


def ready(status: str) -> None:
    notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading(status: str) -> None:
    # MONOTONIC_USEC: systemd >= 253 wants it with RELOADING=1 (Type=notify-reload)
    notify("RELOADING=1", f"STATUS={status}", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping(status: str) -> None:
    notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> None:
    notify(f"STATUS={text}")


def forget() -> None:
    """In a forked worker: the socket is the master's business."""
    global _sock, _addr
    if _sock is not None:
        try:
            _sock.close()
        except OSError:
            pass
    _sock = None
    _addr = ""
