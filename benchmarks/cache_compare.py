"""Compression and cache hits: rproxy beside nginx in the same run
(issue 21), interleaved rounds.

    python -P benchmarks/cache_compare.py                          # 3 rounds of 4 s
    python -P benchmarks/cache_compare.py --rounds 1 --seconds 2   # quick
    python -P benchmarks/cache_compare.py --out benchmarks/results/cache-compare.json

Scenarios (one worker per proxy, both and the backend pinned to core 0,
wrk -t1 on core 1):

  gzip64k   64 KiB of JSON from the backend, compressed per request:
            rproxy `compress = { gzip }` (level 6) against nginx `gzip on;
            gzip_comp_level 6` (no cache on either side), wrk with
            Accept-Encoding: gzip
  hit1k     cache hits of a 1 KiB response: rproxy `cache = main` against
  hit1m     nginx `proxy_cache` (1 MiB likewise), both warmed first

The backend is a separate nginx (one worker) serving the files with
`Cache-Control: max-age=3600`.  Per proxy and scenario: req/s from wrk
(median of the rounds) and us/req = the proxy worker's CPU time (utime +
stime from /proc) over the requests it answered; cpuEff = nginx us/req /
rproxy us/req (>= 1.0: rproxy spends no more CPU per request than nginx).
Before measuring, each proxy's answer is checked: the gzip bodies decode
to the backend's bytes, the hits say HIT.  Absolute numbers move on a
shared machine; the ratio from one run is the result.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

SCENARIOS = {"gzip64k": "/data.json", "hit1k": "/f1k", "hit1m": "/f1m"}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import children, cpu_seconds, free_port, stop, wait_port  # noqa: E402


def workers_of(pid, must=None):
    """The child processes of pid (those whose command line has `must`)."""
    out = []
    for c in children(pid):
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if must is None or must in cmd:
            out.append(c)
    return out


def wrk(url, seconds, conns, headers=()):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} error responses")
    return reqs, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def fetch(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def json_body(n: int) -> bytes:
    rnd = random.Random(1)
    out = bytearray(b"[")
    i = 0
    while len(out) < n - 2:
        out += b'{"id": %d, "name": "item-%d", "value": %d, "tags": ["a", "b"]},\n' % (
            i, rnd.randrange(10 ** 6), rnd.randrange(10 ** 9))
        i += 1
    return bytes(out[:n - 1]) + b"]"


def nginx_conf(tmp, name, servers):
    return f"""worker_processes 1; daemon off; pid {tmp}/{name}.pid; error_log {tmp}/{name}.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  include /etc/nginx/mime.types;
  client_body_temp_path {tmp}/{name}-body; proxy_temp_path {tmp}/{name}-proxy; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
{servers} }}
"""


def configs(tmp, www, bport, rport, nport):
    backend = nginx_conf(tmp, "backend", f"""  server {{ listen 127.0.0.1:{bport}; root {www};
           add_header Cache-Control "max-age=3600"; }}""")
    proxy = nginx_conf(tmp, "nginx", f"""  upstream b {{ server 127.0.0.1:{bport}; keepalive 32; }}
  proxy_cache_path {tmp}/nginx-cache levels=1:2 keys_zone=main:10m max_size=1g inactive=10m;
  server {{ listen 127.0.0.1:{nport};
    proxy_http_version 1.1; proxy_set_header Connection "";
    location = /data.json {{ proxy_pass http://b; gzip on; gzip_comp_level 6; gzip_proxied any;
                             gzip_types application/json; gzip_min_length 256; }}
    location / {{ proxy_pass http://b; proxy_cache main; proxy_cache_lock on;
                 add_header X-Cache $upstream_cache_status; }} }}""")
    rproxy = f"""workers = 1
cache main {{ path = "{tmp}/rproxy-cache"  max-size = 1g  keys-zone = 10m  inactive = 10m }}
server {{ addr = 127.0.0.1  port = {rport}
  downstream b {{ addr = 127.0.0.1  port = {bport} }}
  vhost "*" {{ default = true
    rule gz {{ uri-prefix = "/data.json"  downstreams = {{ b }}  compress = {{ gzip }}
              compress-types = {{ application/json }}  compress-min-size = 256 }}
    rule app {{ uri-prefix = "/"  downstreams = {{ b }}  cache = main  cache-lock = true }} }} }}
"""
    return backend, proxy, rproxy


def check(name, port, want):
    """Each proxy answers as the scenario says, before it is measured."""
    r, body = fetch(port, "/data.json", {"Accept-Encoding": "gzip"})
    if r.getheader("Content-Encoding") != "gzip" or zlib.decompress(body, 16 + zlib.MAX_WBITS) != want["gzip64k"]:
        raise RuntimeError(f"{name}: /data.json is not the backend's body gzipped")
    for scen in ("hit1k", "hit1m"):
        fetch(port, SCENARIOS[scen])
        r, body = fetch(port, SCENARIOS[scen])
        if r.getheader("X-Cache") != "HIT" or body != want[scen]:
            raise RuntimeError(f"{name}: {SCENARIOS[scen]} is not a cache hit ({r.getheader('X-Cache')})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="these scenarios only")
    ap.add_argument("--out", default=None, help="write the JSON results here (e.g. benchmarks/results/...)")
    args = ap.parse_args()
    rproxy = os.path.join(os.path.dirname(sys.executable), "rproxy")
    if not os.path.exists(rproxy):
        rproxy = shutil.which("rproxy") or "rproxy"
    tmp = tempfile.mkdtemp(prefix="cache-bench-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    want = {"gzip64k": json_body(65536), "hit1k": os.urandom(1024), "hit1m": os.urandom(1 << 20)}
    for scen, path in SCENARIOS.items():
        with open(www + path, "wb") as f:
            f.write(want[scen])
    bport, rport, nport = free_port(), free_port(), free_port()
    backend, nginx_conf, rproxy_conf = configs(tmp, www, bport, rport, nport)
    for name, text in (("backend.conf", backend), ("nginx.conf", nginx_conf), ("rproxy.conf", rproxy_conf)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    procs = {}
    results = {"setup": {"rounds": args.rounds, "seconds": args.seconds, "conns": args.conns,
                         "load_before": os.getloadavg()[0]}}
    scens = args.only or list(SCENARIOS)
    try:
        procs["backend"] = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", os.path.join(tmp, "backend.conf")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["nginx"] = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", os.path.join(tmp, "nginx.conf")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["rproxy"] = subprocess.Popen(["taskset", "-c", "0", rproxy, "-c", os.path.join(tmp, "rproxy.conf")],
                                           stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(tmp, "rproxy.err"), "w"))
        ports = {"rproxy": rport, "nginx": nport}
        for port in (bport, rport, nport):
            wait_port(port)
        time.sleep(0.5)
        workers = {"rproxy": workers_of(procs["rproxy"].pid), "nginx": workers_of(procs["nginx"].pid, "worker")}
        for name, port in ports.items():
            check(name, port, want)
        for rnd in range(args.rounds):
            for scen in scens:
                order = list(ports.items()) if rnd % 2 == 0 else list(ports.items())[::-1]
                for name, port in order:
                    hdrs = ("Accept-Encoding: gzip",) if scen == "gzip64k" else ()
                    c0 = cpu_seconds(workers[name])
                    reqs, rps = wrk(f"http://127.0.0.1:{port}{SCENARIOS[scen]}", args.seconds, args.conns, hdrs)
                    cpu = cpu_seconds(workers[name]) - c0
                    r = results.setdefault(scen, {}).setdefault(name, {"reqs": 0, "cpu": 0.0, "rps": []})
                    r["reqs"] += reqs
                    r["cpu"] += cpu
                    r["rps"].append(rps)
    finally:
        stop(procs.values())
        shutil.rmtree(tmp, ignore_errors=True)
    results["setup"]["load_after"] = os.getloadavg()[0]
    print("| scenario | server | req/s (median) | us/req (CPU) | cpuEff | req/s ratio |")
    print("|---|---|---|---|---|---|")
    for scen in scens:
        by = results[scen]
        us = {n: 1e6 * r["cpu"] / max(r["reqs"], 1) for n, r in by.items()}
        med = {n: sorted(r["rps"])[len(r["rps"]) // 2] for n, r in by.items()}
        for n in ("nginx", "rproxy"):
            by[n]["us_per_req"] = round(us[n], 2)
            by[n]["rps_median"] = med[n]
            eff = f"{us['nginx'] / us['rproxy']:.2f}" if n == "rproxy" and us["rproxy"] else ""
            ratio = f"{med['rproxy'] / med['nginx']:.2f}x" if n == "rproxy" and med["nginx"] else ""
            if n == "rproxy":
                by["cpuEff"] = round(us["nginx"] / us["rproxy"], 3) if us["rproxy"] else None
                by["rps_ratio"] = round(med["rproxy"] / med["nginx"], 3) if med["nginx"] else None
            print(f"| {scen} | {n} | {med[n]:.0f} | {us[n]:.1f} | {eff} | {ratio} |")
    print(f"load average {results['setup']['load_before']:.1f} before, {results['setup']['load_after']:.1f} after")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
