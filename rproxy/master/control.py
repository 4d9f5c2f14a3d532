"""`rproxy -s reload|stop|quit|reopen`: signal the running master through
its pidfile, as nginx does.  The commands and their signals come from the
master's own SIGNAL_TABLE."""
from __future__ import annotations

import os
import sys

from . import pidfile
from .arbiter import SIGNAL_TABLE

COMMANDS = {a.command: a for a in SIGNAL_TABLE if a.command}


def send(command: str, pidfile_path: str) -> int:
    """Send `command`'s signal to the master named in `pidfile_path`;
    returns the exit code for the command line."""
    action = COMMANDS[command]

    def fail(message: str) -> int:
        sys.stderr.write(f"rproxy: -s {command}: {message}\n")
        return 1

    try:
        pid = pidfile.read(pidfile_path)
    except FileNotFoundError:
        return fail(f"{pidfile_path} does not exist: is rproxy running?")
    except PermissionError:
        return fail(f"cannot read {pidfile_path}: permission denied")
    except (OSError, ValueError) as e:
        return fail(str(e))
    title = pidfile.process_title(pid)
    if title is None:
        return fail(f"no process {pid} (from {pidfile_path}): rproxy is not running "
                    "(the pidfile is stale)")
    if not title.startswith(pidfile.MASTER_TITLE):
        return fail(f"process {pid} (from {pidfile_path}) is not an rproxy master "
                    f"(it is {title!r}); not signalling it")
    try:
        os.kill(pid, action.signum)
    except ProcessLookupError:
        return fail(f"process {pid} exited just now")
    except PermissionError:
        return fail(f"not allowed to signal process {pid} ({title}): run this as its user or root")
    return 0
