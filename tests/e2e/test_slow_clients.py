"""slowhttptest against the shipped configuration's shape (2 workers, one
downstream with 8 connections, defaults for everything else): 1,000 slow
connections of each kind (-B slow body, -X slow read, -H slowloris; opened
at 200 a second) for 10 s each, while a probe client keeps sending normal
requests, one new connection every 0.25 s.  Every probe must be answered 200.  The issue asks for "within
1 s"; on this shared 2-core machine (five agents building and testing at
once) the probe's bound is 3 s, and nothing else is timed.

slowhttptest is the Debian package of that name (run-tests.sh installs it).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import psutil
import pytest

from support.downstream import Downstream
from support.proc import read_response

pytestmark = pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="slowhttptest is not installed")

RUN_SECONDS = 10               # all 1,000 are open after 5 s: 5 s of probes under the full pile-up
PROBE_TIMEOUT = 3.0
MIB = 1024 * 1024


def shipped_like(port, ds_port, tmp, server="", ds=""):
    return f"""
workers = 2
temp-dir = "{tmp}"
server {{
    addr = 127.0.0.1
    port = {port}
    backlog = 1024
    {server}
    downstream {{ addr = 127.0.0.1  port = {ds_port}  connections = 8  {ds} }}
}}
"""


class Probe(threading.Thread):
    """A normal client: GET on a new connection every 0.25 s until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.results = []           # (status or error text, seconds)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=PROBE_TIMEOUT) as s:
                    s.settimeout(PROBE_TIMEOUT)
                    s.sendall(b"GET /probe HTTP/1.1\r\nHost: a\r\n\r\n")
                    st = read_response(s)[0]
            except OSError as e:
                st = f"{type(e).__name__}: {e}"
            self.results.append((st, time.monotonic() - t0))
            self.stop.wait(0.25)


def run_attack(proxy, port, args, path):
    """slowhttptest with `args` for RUN_SECONDS, a probe all along; returns
    the probe's results and the workers' peak RSS growth."""
    workers = [psutil.Process(w.pid) for w in proxy.workers()]
    base = sum(w.memory_info().rss for w in workers)
    peak = base
    probe = Probe(port)
    cmd = ["slowhttptest", "-c", "1000", "-r", "200", "-l", str(RUN_SECONDS), "-p", "3",
           "-u", f"http://127.0.0.1:{port}{path}", *args]
    attack = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)               # let the slow connections pile up first
        probe.start()
        deadline = time.monotonic() + RUN_SECONDS + 15
        while attack.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            peak = max(peak, sum(w.memory_info().rss for w in workers))
    finally:
        if attack.poll() is None:
            attack.kill()
        attack.wait(10)
        probe.stop.set()
        probe.join(PROBE_TIMEOUT + 2)
    return probe.results, peak - base


@pytest.mark.parametrize("mode,args", [
    ("slow body", ["-B", "-i", "2", "-s", "65536"]),
    ("slow read", ["-X", "-k", "2", "-n", "2", "-w", "64", "-y", "256", "-z", "32"]),
    ("slowloris", ["-H", "-i", "2"]),
], ids=["B", "X", "H"])
def test_normal_requests_keep_being_answered_under_slowhttptest(start_rproxy, port, tmp_path, mode, args):
    ds = Downstream()
    tmp = tmp_path / "bodies"
    tmp.mkdir()
    p = start_rproxy(shipped_like(port, ds.port, tmp), port, check_quiet=False)
    path = "/bytes/262144" if mode == "slow read" else "/echo"
    results, rss_growth = run_attack(p, port, args, path)
    bad = [r for r in results if r[0] != 200]
    print(f"{mode}: {len(results)} probes, worst {max(t for _, t in results):.2f} s, "
          f"RSS growth {rss_growth / MIB:.1f} MiB, failures {bad[:5]}")
    assert len(results) >= RUN_SECONDS           # the probe kept going all along
    assert not bad, f"{len(bad)} of {len(results)} probes failed during {mode}: {bad[:5]}"
    assert p.poll() is None
    ds.close()


def test_without_buffering_and_growth_slow_bodies_starve_the_probe(start_rproxy, port, tmp_path):
    """The control: the same slow-body run against the behaviour before
    (request bodies streamed, the pool fixed at `connections`) starves the
    probe, so the runs above can fail.  (A slow-read control would need
    responses larger than this machine's socket buffers, ~4 MiB each, times
    1,000; the 20-slow-readers test in test_buffering.py covers that case.)"""
    ds = Downstream()
    tmp = tmp_path / "bodies"
    tmp.mkdir()
    p = start_rproxy(shipped_like(port, ds.port, tmp, server="request-buffering = false",
                                  ds="max-connections = 8"), port, check_quiet=False)
    results, _ = run_attack(p, port, ["-B", "-i", "2", "-s", "65536"], "/echo")
    bad = [r for r in results if r[0] != 200]
    # on a quiet machine most probes starve; a loaded one answers fewer
    # probes in all, so the bar is a quarter of them (and at least two)
    assert len(bad) >= max(2, len(results) // 4), results
    ds.close()
