"""Ask the workers of a running rproxy for their counters (SIGUSR2)."""
from __future__ import annotations

import os
import re
import signal
import time

import psutil

STATS = re.compile(r"\[notice\] (\d+): stats: clients=(\d+) exchanges=(\d+) buffers=(\d+) pending=(\d+) "
                   r"requests=(\d+) pool_errors=(\d+)")


def worker_stats(proxy, timeout: float = 5.0) -> dict:
    """{worker pid: {clients, exchanges, buffers, pending, requests, pool_errors}}"""
    pids = [w.pid for w in proxy.workers()]
    start = len(proxy.read_log())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass                    # it exited meanwhile (a drained generation): it owes no report
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for m in STATS.finditer(proxy.read_log()[start:]):
            found[int(m.group(1))] = dict(zip(("clients", "exchanges", "buffers", "pending", "requests",
                                               "pool_errors"), map(int, m.groups()[1:])))
        # a worker of an older generation may finish draining and exit
        # before it answers: only the living owe a report
        alive = [pid for pid in pids if _alive(pid)]
        if set(found) >= set(alive):
            return {pid: found[pid] for pid in alive}
        time.sleep(0.05)
    raise TimeoutError("workers did not report their stats")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_quiet(proxy, timeout: float = 5.0) -> None:
    """Once every client has gone, every worker holds no exchange, no
    buffer, nothing pending, and its pools are consistent."""
    deadline = time.monotonic() + timeout
    while True:
        stats = worker_stats(proxy)
        busy = {pid: s for pid, s in stats.items()
                if s["clients"] or s["exchanges"] or s["buffers"] or s["pending"] or s["pool_errors"]}
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"workers not back to zero: {busy}")
        time.sleep(0.2)
