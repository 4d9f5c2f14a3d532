"""The error log of the master and of the Python side of workers.

Lines have the same shape as those the fast path writes (rp_util.h):
`2026-11-23T12:00:00.123+0000 [warn] 1234: message`, one write(2) per line so
lines of several processes never interleave; or, when the error log is
syslog, the datagram glibc's syslog(3) would send:
`<PRI>Nov 23 12:00:00 rproxy[1234]: [warn] message` (RFC 3164, local form).
Messages above the configured level are dropped.
"""
from __future__ import annotations

import errno
import os
import socket
import time
from typing import Optional

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
# syslog spellings accepted as synonyms
ALIASES = {"err": "error", "warning": "warn", "panic": "emerg", "critical": "crit"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_fd = 2
_level = LEVELS.index("info")
_facility = -1                      # syslog facility code << 3, or -1 for plain lines
_sock: Optional[str] = None         # the syslog socket's path (to reconnect)
_RECONNECT = {errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EDESTADDRREQ}


def level_number(name: str) -> int:
    name = ALIASES.get(name.lower(), name.lower())
    return LEVELS.index(name)


def configure(fd: int = 2, level: str = "info", facility: int = -1, sock: Optional[str] = None) -> None:
    global _fd, _level, _facility, _sock
    _fd = fd
    _level = level_number(level)
    _facility = facility
    _sock = sock


def fd() -> int:
    return _fd


def level() -> int:
    return _level


def syslog_line(pri: int, message: str, now: float, pid: int) -> bytes:
    t = time.localtime(now)
    return (f"<{pri}>{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} "
            f"rproxy[{pid}]: {message}").encode("utf-8", "backslashreplace")


def _send_syslog(data: bytes) -> None:
    for attempt in (1, 2):
        try:
            os.write(_fd, data)
            return
        except BlockingIOError:
            return                  # the daemon is behind: never wait for it
        except OSError as e:
            if attempt == 2 or _sock is None or e.errno not in _RECONNECT:
                return
        try:                        # the syslog daemon restarted: its socket is a new one
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            s.connect(_sock)
            os.dup2(s.fileno(), _fd, inheritable=False)
            s.close()
        except OSError:
            return


def log(level: str, message: str) -> None:
    n = level_number(level)
    if n > _level:
        return
    now = time.time()
    if _facility >= 0:
        _send_syslog(syslog_line(_facility | n, f"[{LEVELS[n]}] {message}", now, os.getpid()))
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    ms = int((now % 1) * 1000)
    tz = time.strftime("%z", time.localtime(now))
    line = f"{stamp}.{ms:03d}{tz} [{LEVELS[n]}] {os.getpid()}: {message}\n"
    try:
        os.write(_fd, line.encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def error(message: str) -> None:
    log("error", message)


def warn(message: str) -> None:
    log("warn", message)


def notice(message: str) -> None:
    log("notice", message)


def info(message: str) -> None:
    log("info", message)


def debug(message: str) -> None:
    log("debug", message)
