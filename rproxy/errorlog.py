"""The error log of the master and of the Python side of workers.

Lines have the same shape as those the fast path writes (rp_util.h):
`2026-11-23T12:00:00.123+0000 [warn] 1234: message`, one write(2) per line so
lines of several processes never interleave.
"""
from __future__ import annotations

import os
import time

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
# syslog spellings accepted as synonyms
ALIASES = {"err": "error", "warning": "warn", "panic": "emerg", "critical": "crit"}

_fd = 2
_level = LEVELS.index("info")


def level_number(name: str) -> int:
    name = ALIASES.get(name.lower(), name.lower())
    return LEVELS.index(name)


def configure(fd: int = 2, level: str = "info") -> None:
    global _fd, _level
    _fd = fd
    _level = level_number(level)


def fd() -> int:
    return _fd


def log(level: str, message: str) -> None:
    n = level_number(level)
    if n > _level:
        return
    now = time.time()
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
