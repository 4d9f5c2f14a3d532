"""Log files reopened on SIGUSR1 (logrotate moves a file, then signals us).

Today the only log file is the error log when stderr was redirected to a
file.  Its path is remembered at start-up: after logrotate renamed it,
/proc/self/fd/2 names the *rotated* file, so it cannot be asked then.  The
new file is dup2'ed onto fd 2, which every writer (the master, the Python
side of workers, the fast path's error lines) already uses.

Issue 7 (access and error logs) adds its files here: opened by the master
while still privileged, reopened by whoever holds them.
"""
from __future__ import annotations

import os
import stat
from typing import Optional

_stderr_path: Optional[str] = None


def remember_stderr() -> None:
    """Record the path of stderr if it is a regular file (inherited by workers)."""
    global _stderr_path
    _stderr_path = None
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):
            return
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return
    if path.startswith("/") and not path.endswith(" (deleted)"):
        _stderr_path = path


def reopen() -> list[str]:
    """Reopen every log file this process holds; returns error messages
    (the old descriptor is kept when a file cannot be reopened)."""
    problems = []
    if _stderr_path is not None:
        try:
            fd = os.open(_stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            problems.append(f"cannot reopen {_stderr_path}: {e.strerror or e}")
        else:
            os.dup2(fd, 2)
            os.close(fd)
    return problems
