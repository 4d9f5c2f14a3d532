"""accept-spread: EPOLLEXCLUSIVE on one shared socket against SO_REUSEPORT
(one socket per worker), with 2 workers.

    python benchmarks/accept_spread.py                      # ~2 min
    python benchmarks/accept_spread.py --rounds 1 --duration 3

For each mode and scenario (interleaved round by round) it runs wrk against
rproxy (the shipped rproxy.conf with its ports moved, `workers = 2`, plus
`accept-spread = MODE`) in front of a 1-worker nginx serving a small file, and
reads from each worker (SIGUSR2 writes its counters to the error log):
`requests` served (so, with `Connection: close`, connections accepted) and,
halfway through a keep-alive run, `clients` open.  Reported: req/s, p50/p99
(wrk --latency) and the share of the busiest worker (50 % = even).

Nothing is pinned: wrk, nginx and both workers share the machine's cores, so
req/s and latency are noisy on a shared machine (say so with every figure);
the split between workers is what this measures.  Every process started
here is stopped by pid.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _util import children, free_port, wait_port  # noqa: E402
from memory_footprint import nginx_conf, rproxy_command, rproxy_conf, stop  # noqa: E402

SCENARIOS = {
    # name: (wrk connections, extra wrk args)
    "keepalive-c64": (64, []),
    "keepalive-c8": (8, []),
    "close-c32": (32, ["-H", "Connection: close"]),
}
STATS = re.compile(r"\] (\d+): stats: clients=(\d+) .*?requests=(\d+)")


def parse_wrk(out: str) -> dict:
    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    d = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    d["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        d[f"p{pct}_ms"] = round(ms(*m.groups()), 3) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    d["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    d["socket_errors"] = m.group(1).strip() if m else ""
    return d


def worker_stats(log: str, pids: list[int], offset: int) -> tuple[dict, int]:
    """SIGUSR2 each worker and read its stats line from the log after `offset`."""
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 5
    while True:
        with open(log, errors="replace") as f:
            f.seek(offset)
            text = f.read()
        lines = [ln for ln in text.splitlines() if "stats: clients=" in ln]
        if len(lines) >= len(pids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out = {}
    for ln in lines:
        m = STATS.search(ln)
        if m and int(m.group(1)) in pids:
            out[pids.index(int(m.group(1)))] = {"clients": int(m.group(2)), "requests": int(m.group(3))}
    return out, offset + len(text.encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    ap.add_argument("--modes", default="exclusive,reuseport")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    modes = a.modes.split(",")
    scen = a.scenarios.split(",")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("needs wrk (apt-get install wrk)")
    wd = tempfile.mkdtemp(prefix="rproxy-spread-")
    os.chmod(wd, 0o755)
    os.makedirs(f"{wd}/www")
    with open(f"{wd}/www/index.html", "w") as f:
        f.write("x" * 100)
    procs = []
    runs = {m: {s: [] for s in scen} for m in modes}
    try:
        be_port = free_port()
        be = subprocess.Popen([nginx, "-e", f"{wd}/be.err", "-p", wd, "-c",
                               nginx_conf(wd, "backend", be_port, 1, None)])
        procs.append(be)
        wait_port(be_port)
        for rnd in range(a.rounds):
            for mode in modes:
                port = free_port()
                conf = rproxy_conf(os.path.join(ROOT, "rproxy.conf"), wd, port, be_port, 2)
                with open(conf, "a") as f:
                    f.write(f"\naccept-spread = {mode}\n")
                log = f"{wd}/rproxy-{mode}-{rnd}.log"
                rp = subprocess.Popen(rproxy_command() + ["-c", conf], cwd=wd,
                                      stdout=open(log, "wb"), stderr=subprocess.STDOUT)
                procs.append(rp)
                wait_port(port)
                deadline = time.monotonic() + 10
                while len(children(rp.pid)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.5)
                pids = children(rp.pid)
                offset = os.path.getsize(log)
                for s in scen:
                    conns, extra = SCENARIOS[s]
                    before, offset = worker_stats(log, pids, offset)
                    w = subprocess.Popen([wrk, "-t2", f"-c{conns}", f"-d{a.duration}s", "--latency", *extra,
                                          f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
                    time.sleep(a.duration / 2)
                    mid, offset = worker_stats(log, pids, offset)
                    out, _ = w.communicate(timeout=a.duration + 30)
                    after, offset = worker_stats(log, pids, offset)
                    r = parse_wrk(out)
                    reqs = {i: after[i]["requests"] - before.get(i, {"requests": 0})["requests"]
                            for i in after}
                    r["requests_per_worker"] = [reqs[i] for i in sorted(reqs)]
                    r["clients_per_worker_mid"] = [mid[i]["clients"] for i in sorted(mid)]
                    total = sum(reqs.values()) or 1
                    r["busiest_share"] = round(max(reqs.values(), default=0) / total, 3)
                    runs[mode][s].append(r)
                    print(f"round {rnd + 1} {mode:9s} {s:14s} {r['rps'] or 0:9.0f} req/s  "
                          f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  requests/worker "
                          f"{r['requests_per_worker']}  open clients/worker {r['clients_per_worker_mid']}",
                          flush=True)
                stop(rp)
                procs.remove(rp)
        summary = {}
        for mode in modes:
            for s in scen:
                rs = [r for r in runs[mode][s] if r["rps"]]
                if not rs:
                    continue

                def med(k, rs=rs):
                    vals = [r[k] for r in rs if r.get(k) is not None]
                    return round(statistics.median(vals), 3) if vals else None

                summary[f"{mode}/{s}"] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
                                          "busiest_share": med("busiest_share"),
                                          "requests_per_worker": [r["requests_per_worker"] for r in rs],
                                          "clients_per_worker_mid": [r["clients_per_worker_mid"] for r in rs]}
        print("\n| scenario | accept-spread | req/s | p50 ms | p99 ms | busiest worker's share of requests |")
        print("|---|---|---|---|---|---|")
        for s in scen:
            for mode in modes:
                d = summary.get(f"{mode}/{s}")
                if d:
                    print(f"| {s} | {mode} | {d['rps']:.0f} | {d['p50_ms']} | {d['p99_ms']} | "
                          f"{d['busiest_share'] * 100:.0f} % |")
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
                  "rounds": a.rounds, "duration_s": a.duration, "summary": summary, "runs": runs}
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, f"accept-spread-{time.strftime('%Y%m%dT%H%M', time.gmtime())}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"written {os.path.relpath(path)}")
        return 0
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGQUIT if p is be else signal.SIGTERM)
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
