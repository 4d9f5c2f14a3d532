"""daemonize = true: detach from the terminal the classic way, done right
(the original forked once, kept its stdio and never applied rootdir).

    original ──fork──> child: setsid() ──fork──> daemon (not a session leader,
    (waits)            (exits at once)            so it can never acquire a
                                                  controlling terminal again)

The original process waits on a pipe until the daemon reports that start-up
finished (pidfile written, privileges dropped) and exits 0, or 1 when the
daemon died first; so `rproxy -c FILE` in a script or a systemd
Type=forking unit fails visibly.  Until that report the daemon keeps the
original stderr, so start-up errors still reach the terminal; then stderr
goes to /dev/null like stdin and stdout, unless it is a regular file (the
operator redirected the error log to a file on purpose: it is kept, and
reopened on SIGUSR1).
"""
from __future__ import annotations

import os
import stat
import sys

from . import StartupError


class Readiness:
    """The daemon's end of the start-up report pipe."""

    def __init__(self, fd: int):
        self.fd = fd

    def done(self) -> None:
        """Start-up succeeded: release the waiting original process, and let
        go of the terminal's stderr."""
        try:
            os.write(self.fd, b"1")
        finally:
            os.close(self.fd)
        if not stat.S_ISREG(os.fstat(2).st_mode):
            _to_dev_null(2)


def detach(rootdir: str, keep_fds=()) -> Readiness:
    """Become a daemon.  Returns only in the daemon; the original process
    exits with the daemon's start-up status.

    keep_fds: descriptors the daemon owns (listeners, ...).  Every other
    inherited descriptor above stderr is closed: a pipe the launching shell
    or script left open would otherwise stay open for the daemon's life
    (and its workers'), and whoever waits for that pipe's EOF would hang."""
    sys.stdout.flush()
    sys.stderr.flush()
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first > 0:
        os.close(report_w)
        os.waitpid(first, 0)            # the intermediate child exits right away: no zombie
        os._exit(_wait_for_daemon(report_r))
    os.close(report_r)
    os.setsid()                         # new session: no controlling terminal
    if os.fork() > 0:
        os._exit(0)                     # the session leader goes; its child is the daemon
    try:
        os.chdir(rootdir)               # do not keep the start directory's mount busy
    except OSError as e:
        raise StartupError(f"rootdir = {rootdir}: cannot chdir there: {e.strerror or e}") from None
    _to_dev_null(0)
    _to_dev_null(1)
    _close_inherited({*keep_fds, report_w})
    return Readiness(report_w)


def _close_inherited(keep: set) -> None:
    low = 3
    for fd in sorted(f for f in keep if f >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _fd_limit())


def _fd_limit() -> int:
    try:
        return max(int(name) for name in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return os.sysconf("SC_OPEN_MAX")


def _wait_for_daemon(report_r: int) -> int:
    while True:
        try:
            got = os.read(report_r, 1)
            break
        except InterruptedError:
            continue
    if got == b"1":
        return 0
    sys.stderr.write("rproxy: the daemon exited during start-up (see the messages above)\n")
    sys.stderr.flush()
    return 1


def _to_dev_null(target: int) -> None:
    fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(fd, target)
    os.close(fd)
