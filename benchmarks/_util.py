"""Helpers the benchmark scripts share: ports, waiting for a listener, a
process's children.  Standard library only (the scripts run outside pytest,
also as `python -P`, so each puts this directory on sys.path itself)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick, released again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Until something accepts on 127.0.0.1:port; TimeoutError after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def children(pid: int) -> list[int]:
    """The pids whose parent is pid (from /proc), sorted."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


def cpu_seconds(pids) -> float:
    """utime + stime of these processes (from /proc), in seconds; a process
    gone meanwhile counts nothing."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])
        except OSError:
            pass
    return total / TICK


def stop(procs) -> None:
    """SIGTERM to each process still running, then wait; kill what does not
    end within 10 s."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
