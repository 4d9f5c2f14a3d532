"""Static files: rproxy (`root`) beside nginx serving the same files, one
worker each, in the same run (interleaved rounds).

    python benchmarks/static_compare.py                  # small file and 1 MiB, 3 rounds of 3 s
    python benchmarks/static_compare.py --rounds 1 --seconds 1

Both servers are pinned to core 0 and wrk to core 1.  Per server and file:
req/s from wrk, and us/req = the server worker's CPU time (utime + stime
from /proc) over the requests it answered; cpuEff = nginx us/req / rproxy
us/req (>= 1.0: rproxy spends no more CPU per file than nginx).  Absolute
numbers move on a shared machine; the ratio from one run is the result.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import children, cpu_seconds, free_port, stop, wait_port  # noqa: E402



def wrk(url, seconds, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    return reqs, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args()
    rproxy = os.path.join(os.path.dirname(sys.executable), "rproxy")
    if not os.path.exists(rproxy):
        rproxy = shutil.which("rproxy") or "rproxy"
    tmp = tempfile.mkdtemp(prefix="static-bench-")
    root = os.path.join(tmp, "www")
    os.makedirs(root)
    with open(os.path.join(root, "small.html"), "wb") as f:
        f.write(b"<!doctype html><title>x</title><p>" + b"hello " * 100 + b"</p>\n")
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(1024 * 1024))
    rport, nport = free_port(), free_port()
    with open(os.path.join(tmp, "rproxy.conf"), "w") as f:
        f.write(f"""workers = 1
server {{ addr = 127.0.0.1  port = {rport}
  vhost "*" {{ default = true  rule files {{ uri-prefix = "/"  root = "{root}" }} }} }}
""")
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  include /etc/nginx/mime.types;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{nport}; root {root}; }} }}
""")
    procs = {
        "rproxy": subprocess.Popen(["taskset", "-c", "0", rproxy, "-c", os.path.join(tmp, "rproxy.conf")],
                                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "rproxy.err"), "w")),
        "nginx": subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", os.path.join(tmp, "nginx.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    ports = {"rproxy": rport, "nginx": nport}
    results = {}
    try:
        for name, port in ports.items():
            wait_port(port)
        time.sleep(0.5)
        workers = {name: children(p.pid) for name, p in procs.items()}
        for _ in range(args.rounds):
            for fname in ("small.html", "big.bin"):
                for name, port in ports.items():
                    c0 = cpu_seconds(workers[name])
                    reqs, rps = wrk(f"http://127.0.0.1:{port}/{fname}", args.seconds, args.conns)
                    cpu = cpu_seconds(workers[name]) - c0
                    r = results.setdefault(fname, {}).setdefault(name, {"reqs": 0, "cpu": 0.0, "rps": []})
                    r["reqs"] += reqs
                    r["cpu"] += cpu
                    r["rps"].append(rps)
    finally:
        stop(procs.values())
        shutil.rmtree(tmp, ignore_errors=True)
    print("| file | server | req/s (median) | us/req (CPU) | cpuEff |")
    print("|---|---|---|---|---|")
    for fname, by in results.items():
        us = {n: 1e6 * r["cpu"] / max(r["reqs"], 1) for n, r in by.items()}
        for n, r in by.items():
            rps = sorted(r["rps"])[len(r["rps"]) // 2]
            eff = f"{us['nginx'] / us['rproxy']:.2f}" if n == "rproxy" and us["rproxy"] else ""
            print(f"| {fname} | {n} | {rps:.0f} | {us[n]:.1f} | {eff} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
