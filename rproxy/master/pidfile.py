"""The pidfile: written atomically, removed at exit, read by `rproxy -s`.

A pid alone can be stale (rproxy was killed) or recycled (another program
got the number), so readers also check that the process is an rproxy master
by its title before signalling it.
"""
from __future__ import annotations

import os
from typing import Optional

from .. import errorlog
from . import StartupError

MASTER_TITLE = "rproxy: master"


def write(path: str, owner: Optional[tuple[int, int]] = None) -> None:
    """Write our pid to `path` atomically (temp file in the same directory,
    fsync, rename): a reader sees the old content or the whole new one.

    `owner` (uid or -1, gid): the user the master is about to become gets the
    file, so that at exit it can at least empty it when the directory is
    root's (systemd's RuntimeDirectory is, without User=)."""
    import tempfile         # here: tempfile pulls in shutil, bz2, lzma and random

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rproxy-pid-", dir=directory)
    except OSError as e:
        raise StartupError(f"pidfile = {path}: cannot create a file in {directory}: "
                           f"{e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o644)            # first: once given away, root without CAP_FOWNER may not
        if owner is not None:
            try:
                os.fchown(fd, owner[0], owner[1])
            except OSError as e:
                errorlog.notice(f"pidfile = {path}: cannot give it to uid {owner[0]}: "
                                f"{e.strerror or e}; it may be left behind at exit")
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StartupError(f"pidfile = {path}: cannot write it: {e.strerror or e}") from None


def read(path: str) -> int:
    """The pid in `path`; FileNotFoundError, or ValueError when it holds no pid."""
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise ValueError(f"{path} is empty: rproxy is not running "
                         "(a master that cannot remove its pidfile empties it at exit)")
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{path} does not hold a process id ({text[:40]!r})")
    return int(text)


def process_title(pid: int) -> Optional[str]:
    """argv[0] of a live process (its title), None when there is no such
    process (or only a zombie is left of it)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if not raw:
        return None                 # a zombie has no command line
    return raw.split(b"\0")[0].decode("utf-8", "replace").strip()


def running_master(path: str) -> Optional[int]:
    """The pid in `path` if it is a running rproxy master, else None."""
    try:
        pid = read(path)
    except (OSError, ValueError):
        return None
    title = process_title(pid)
    if pid != os.getpid() and title and title.startswith(MASTER_TITLE):
        return pid
    return None


def refuse_if_running(path: Optional[str]) -> None:
    if not path:
        return
    pid = running_master(path)
    if pid is not None:
        raise StartupError(f"pidfile = {path}: rproxy is already running as pid {pid} "
                           f"({process_title(pid)}); stop it first (rproxy -s stop)")


def remove(path: Optional[str]) -> None:
    """At exit: remove `path` if it still names this process (a newer master
    may have taken it over)."""
    if not path:
        return
    try:
        if read(path) != os.getpid():
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except ValueError:
        pass
    except OSError as e:
        # typical after the privilege drop: the directory belongs to root.
        # Emptied, the file names no process: `rproxy -s` and the next
        # start see no master (systemd removes its RuntimeDirectory anyway).
        try:
            with open(path, "r+") as f:
                f.truncate(0)
        except OSError:
            errorlog.warn(f"cannot remove the pidfile {path}: {e.strerror or e} "
                          "(put it in a directory the rproxy user may write)")
        else:
            errorlog.info(f"pidfile {path} emptied, not removed: {e.strerror or e} in its directory")
