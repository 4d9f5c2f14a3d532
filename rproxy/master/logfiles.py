"""Log outputs: opened by the master while still privileged, inherited by
the workers it forks, reopened by every process that holds them on SIGUSR1
(logrotate renames a file, then signals us).

An output is one descriptor: a file (opened O_APPEND), a standard stream,
or a datagram socket connected to syslog.  Reopening puts the new file on
the *same descriptor number* (dup2), so nothing that writes to it -- the fast
path's C code above all -- ever needs to learn a new one.

Outputs are keyed by what they are for: an access log output by its spec
(`file:/var/log/rproxy/access.log`), shared by every server and vhost that
names it; an error log output by spec and level, because the fast path
filters error lines by descriptor (rp_util.h), so two levels need two
descriptors even on one file.

Permissions: files are opened (created if missing, mode 0640) by the master
before it drops privileges, then chowned to the `user` it drops to, so the
dropped master and its workers can open the same path again on SIGUSR1.
After logrotate has renamed a file, the new one is created by whoever
reopens: either the log directory is writable by `user`, or logrotate
creates the file itself (`create 0640 rproxy adm`, see build/common/rproxy.logrotate).
A file that cannot be reopened keeps its old descriptor (nothing is lost:
lines go on into the renamed file) and the reason goes to the error log.

Besides its outputs, the master's stderr: when it was redirected to a
regular file by whoever started rproxy, its path is remembered at start-up
(after logrotate renamed it, /proc/self/fd/2 would name the *rotated* file)
and it is reopened like the rest.  When `error-log` is a file, stderr is
pointed at it instead (stray output, a Python traceback, lands there too).
"""
from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from typing import Iterable, Optional

from .. import errorlog

DEFAULT_SYSLOG_SOCKET = "/dev/log"
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
              "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, **{f"local{i}": 16 + i for i in range(8)}}


@dataclass
class Output:
    spec: str                   # as configured: file:PATH | syslog:FACILITY[:SOCKET] | stderr | stdout
    fd: int
    kind: str                   # "file" (regular file), "stream" (pipe, terminal, ...) or "syslog"
    path: Optional[str] = None  # file path, or the syslog socket's
    facility: int = -1          # syslog: facility code << 3, else -1
    dup_of: Optional[int] = None    # a duplicate of stdout/stderr (1 or 2)
    owned: bool = True          # the fd is ours to close and reopen (not 1 or 2 themselves)


_outputs: dict[tuple, Output] = {}
_stderr_path: Optional[str] = None
_stderr_is_error_log = False


class LogOpenError(Exception):
    pass


def parse(spec: str) -> tuple[str, Optional[str], int]:
    """(kind, path, facility code) of an output spec; kind is "file",
    "stderr", "stdout" or "syslog"."""
    if spec in ("stderr", "file:/dev/stderr"):
        return "stderr", None, -1
    if spec in ("stdout", "file:/dev/stdout"):
        return "stdout", None, -1
    scheme, _, rest = spec.partition(":")
    if scheme == "syslog":
        facility, _, sock = rest.partition(":")
        return "syslog", sock or DEFAULT_SYSLOG_SOCKET, FACILITIES[facility] << 3
    return "file", rest, -1


def _above_stdio(fd: int) -> int:
    """Log descriptors never take 0-2 (the fast path reads 0 as "the
    worker's error log", and 1 and 2 are the standard streams)."""
    if fd > 2:
        return fd
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return high


def _open_file(path: str, owner: Optional[tuple[int, int]]) -> int:
    created = not os.path.exists(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = _above_stdio(os.open(path, flags, 0o640))
    except PermissionError:
        if owner is None or os.geteuid() != 0 or owner[0] < 0:
            raise
        # root without CAP_DAC_OVERRIDE (the packaged unit's bounding set)
        # cannot write into a log directory that belongs to the drop user:
        # open it as that user, who will own the file anyway
        fd = _above_stdio(_open_as(path, flags, owner))
    if owner is not None and os.geteuid() == 0:
        uid, gid = owner
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and ((uid >= 0 and st.st_uid != uid) or created):
            # the dropped master and its workers reopen this path on SIGUSR1
            os.fchown(fd, uid, gid if created else -1)
            if not st.st_mode & stat.S_IWUSR:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
    return fd


def _open_as(path: str, flags: int, owner: tuple[int, int]) -> int:
    """os.open with the effective ids of `owner` for the call (the master is
    single-threaded while it opens its logs)."""
    uid, gid = owner
    os.setegid(gid if gid >= 0 else os.getegid())
    try:
        os.seteuid(uid)
        try:
            return os.open(path, flags, 0o640)
        finally:
            os.seteuid(0)
    finally:
        os.setegid(0)


def _syslog_socket(path: str, fd: Optional[int] = None) -> int:
    """A non-blocking datagram socket connected to `path` (on `fd` if given).
    A socket that cannot connect yet is kept: the writers reconnect on each
    send until the syslog daemon is there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        if fd is not None:
            s.close()
            raise
        errorlog.warn(f"syslog socket {path}: {e.strerror or e}; lines are dropped until it can be reached")
    if fd is None:
        return _above_stdio(s.detach())
    os.dup2(s.fileno(), fd, inheritable=False)
    s.close()
    return fd


def _open(spec: str, for_error: bool, owner) -> Output:
    kind, path, facility = parse(spec)
    if kind == "file":
        fd = _open_file(path, owner)
        return Output(spec, fd, "file" if stat.S_ISREG(os.fstat(fd).st_mode) else "stream", path)
    if kind == "syslog":
        return Output(spec, _syslog_socket(path), "syslog", path, facility)
    std = 2 if kind == "stderr" else 1
    if for_error:
        # its own descriptor: error lines are filtered by descriptor
        return Output(spec, _above_stdio(os.dup(std)), _stream_kind(std), dup_of=std)
    return Output(spec, std, _stream_kind(std), owned=False)


def _stream_kind(fd: int) -> str:
    return "file" if stat.S_ISREG(os.fstat(fd).st_mode) else "stream"


def needed(cfg) -> list[tuple]:
    """Keys of every output `cfg` writes to: ("access", spec) and
    ("error", spec, level), the worker-wide error log first."""
    keys = [("error", cfg.error_log, cfg.log_level)]
    for srv in cfg.servers:
        for lg in [srv.logging] + [vh.logging for vh in srv.vhosts]:
            if lg is None:
                continue
            if lg.request.enabled:
                keys.append(("access", lg.request.output))
            if lg.error.enabled:
                keys.append(("error", lg.error.output, lg.error.level))
    return list(dict.fromkeys(keys))


def open_all(cfg, owner: Optional[tuple[int, int]] = None) -> None:
    """Open what `cfg` writes to and is not open yet.  owner: (uid, gid)
    the files are handed to (the account the master drops to).  Raises
    LogOpenError naming the output; nothing opened by this call is left
    open then."""
    opened = []
    for key in needed(cfg):
        if key in _outputs:
            continue
        what = "error log" if key[0] == "error" else "access log"
        try:
            if key == ("error", cfg.error_log, cfg.log_level) and parse(cfg.error_log)[0] == "stderr":
                out = Output(cfg.error_log, 2, _stream_kind(2), owned=False)   # the process's own stderr
            else:
                out = _open(key[1], key[0] == "error", owner)
        except OSError as e:
            for k in opened:
                _close(_outputs.pop(k))
            raise LogOpenError(f"{what} {key[1]}: {e.strerror or e}") from None
        _outputs[key] = out
        opened.append(key)


def retain(cfgs: Iterable) -> None:
    """Close the outputs none of `cfgs` writes to (after a reload, or in a
    worker: what it inherited for another generation)."""
    keep = set()
    for cfg in cfgs:
        keep.update(needed(cfg))
    for key in [k for k in _outputs if k not in keep]:
        _close(_outputs.pop(key))


def _close(out: Output) -> None:
    if out.owned:
        try:
            os.close(out.fd)
        except OSError:
            pass


def access_output(spec: str) -> Output:
    return _outputs[("access", spec)]


def error_output(spec: str, level: str) -> Output:
    return _outputs[("error", spec, level)]


def fds() -> list[int]:
    """Every descriptor held for logs (kept when daemonizing closes the rest)."""
    return [o.fd for o in _outputs.values() if o.owned]


def use_error_log(cfg) -> None:
    """Make `cfg`'s error-log the one this process writes to (errorlog.py,
    and through errorlog.fd() the fast path's g_errfd); point stderr at it
    when it is a file."""
    global _stderr_is_error_log
    out = _outputs[("error", cfg.error_log, cfg.log_level)]
    errorlog.configure(out.fd, cfg.log_level, facility=out.facility,
                       sock=out.path if out.kind == "syslog" else None)
    _stderr_is_error_log = out.kind == "file" and out.fd != 2
    if _stderr_is_error_log:
        os.dup2(out.fd, 2)


def remember_stderr() -> None:
    """Record the path of stderr if it is a regular file that is not the
    error log (inherited by workers)."""
    global _stderr_path
    _stderr_path = None
    if _stderr_is_error_log:
        return
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):
            return
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return
    if path.startswith("/") and not path.endswith(" (deleted)"):
        _stderr_path = path


def reopen() -> list[str]:
    """Reopen every log output this process holds; returns error messages
    (an output that cannot be reopened keeps its old descriptor)."""
    problems = []
    if _stderr_path is not None:
        try:
            fd = os.open(_stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            problems.append(f"cannot reopen {_stderr_path}: {e.strerror or e}")
        else:
            os.dup2(fd, 2)
            os.close(fd)
    for out in _outputs.values():
        try:
            if out.kind == "syslog":
                _syslog_socket(out.path, out.fd)
            elif out.path is not None:
                fd = os.open(out.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
                os.dup2(fd, out.fd, inheritable=False)
                os.close(fd)
        except OSError as e:
            problems.append(f"cannot reopen {out.spec}: {e.strerror or e}")
    if _stderr_is_error_log:
        os.dup2(errorlog.fd(), 2)
    for out in _outputs.values():
        if out.dup_of is not None:
            os.dup2(out.dup_of, out.fd, inheritable=False)     # follows a reopened stderr
    return problems
