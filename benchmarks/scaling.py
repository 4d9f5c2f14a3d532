"""Worker scaling: req/s through rproxy with 1 and 2 workers (and nginx with
1 and 2 workers for reference), against a 2-worker nginx backend so that
the downstream is not the bottleneck.  Nothing is pinned: on a 2-core
machine the proxy's workers share the cores with wrk and the backend, which
is the point of the question ("do 2 workers on 2 cores scale?").

    python benchmarks/scaling.py                  # ~1 min; prints a markdown table
    python benchmarks/scaling.py --duration 5 --rounds 3

Every process started here is stopped on exit.  Needs nginx and wrk.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import wait_port  # noqa: E402

BACKEND_PORT, PROXY_PORT = 18280, 18283


def nginx_conf(wd, port, workers, upstream=None):
    body = ("location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
            if upstream else f"root {wd}/html;")
    up = f"upstream be {{ server 127.0.0.1:{upstream}; keepalive 256; }}" if upstream else ""
    path = os.path.join(wd, f"nginx-{port}.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes {workers};
daemon off;
pid {wd}/nginx-{port}.pid;
error_log {wd}/nginx-{port}.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  {up}
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096; {body} }}
}}
""")
    return path


def wrk(port, duration, conns=100, threads=2):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", f"http://127.0.0.1:{port}/0"],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(out)
    return float(m.group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"scaling: {tool} is needed")
    rproxy = os.path.join(os.path.dirname(sys.executable), "rproxy")
    rproxy = rproxy if os.path.exists(rproxy) else "rproxy"
    wd = tempfile.mkdtemp(prefix="rproxy-scaling-")
    os.chmod(wd, 0o755)
    os.makedirs(os.path.join(wd, "html"))
    with open(os.path.join(wd, "html", "0"), "w") as f:
        f.write("ok\n")
    procs = []

    def start(cmd):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(p)
        return p

    def stop(p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    results = {}
    try:
        start(["nginx", "-c", nginx_conf(wd, BACKEND_PORT, 2)])
        wait_port(BACKEND_PORT)
        results["direct (backend, 2 workers)"] = [wrk(BACKEND_PORT, args.duration) for _ in range(args.rounds)]
        for workers in (1, 2):
            conf = os.path.join(wd, f"rproxy-{workers}.conf")
            with open(conf, "w") as f:
                f.write(f"workers = {workers}\nserver {{ addr = 127.0.0.1 port = {PROXY_PORT} backlog = 4096\n"
                        f"  downstream {{ addr = 127.0.0.1 port = {BACKEND_PORT} connections = 128 }} }}\n")
            for name, cmd in ((f"rproxy, {workers} worker(s)", [rproxy, "-c", conf]),
                              (f"nginx, {workers} worker(s)",
                               ["nginx", "-c", nginx_conf(wd, PROXY_PORT, workers, upstream=BACKEND_PORT)])):
                p = start(cmd)
                wait_port(PROXY_PORT)
                wrk(PROXY_PORT, 1)                               # warm-up
                results[name] = [wrk(PROXY_PORT, args.duration) for _ in range(args.rounds)]
                stop(p)
                time.sleep(0.5)
    finally:
        for p in procs:
            stop(p)
    print(f"| target | req/s (median of {args.rounds} x {args.duration}s, wrk -t2 -c100) |")
    print("|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
