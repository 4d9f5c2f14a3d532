"""HTTP/2 to clients: rproxy beside nginx, one worker each, TLS with the same
certificate, in front of the same backend, with h2load (issue 16).

    python benchmarks/h2_compare.py                        # 3 rounds of 5 s per scenario (~2 min)
    python benchmarks/h2_compare.py --rounds 1 --seconds 2 # a quick check (~30 s)
    python benchmarks/h2_compare.py --candidate nginx      # nginx against nginx: checks the script itself

Both proxies are pinned to core 0; h2load, the backend (nginx, 1 worker,
a 100-byte file) and this script to core 1.  nginx is Debian 12's 1.22
(`listen ... ssl http2`; `http2 on` is 1.25.1+); rproxy negotiates h2 by
ALPN (`http2 = true` is the default on a TLS server).  Scenarios, run in
interleaved rounds (the order of the two proxies alternates every round):

  c8-m16    h2load -c 8 -m 16    8 connections, 16 streams in flight on each
  c100-m1   h2load -c 100 -m 1   100 connections, 1 stream each

Per scenario and proxy: req/s (median of the rounds) and us/req = the proxy
WORKER's CPU time (utime + stime from /proc/PID/stat) over the requests
h2load saw succeed (TLS handshakes included: the same few for both);
cpuEff = nginx us/req / rproxy us/req (>= 1.0: rproxy spends no more CPU
per request than nginx).  Memory per idle h2 connection, measured first
(after 16 requests, before the load rounds): N TLS
connections (ALPN h2) each complete the SETTINGS exchange (preface and
SETTINGS sent, the server's SETTINGS received and acknowledged, our SETTINGS'
ACK received) and stay open; the worker's Rss and Pss (/proc/PID/smaps_rollup)
growth over N is the figure.  Before them, and kept open meanwhile, N TLS
connections with ALPN http/1.1 after the handshake alone give what TLS costs
without h2.  Absolute numbers move on a shared machine: the
ratios from one run are the result.  Every process started is stopped by pid;
every load is bounded (h2load -D, timeouts).  JSON goes to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PROXY_CPU, LOAD_CPU = "0", "1"
SCENARIOS = {"c8-m16": (8, 16), "c100-m1": (100, 1)}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

sys.path.insert(0, HERE)
from _util import children, cpu_seconds, free_port, stop, wait_port  # noqa: E402


def memory_kb(pids) -> dict:
    """Rss and Pss (kB) of the processes, from smaps_rollup."""
    tot = {"Rss": 0, "Pss": 0, "Pss_Anon": 0}
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in tot:
                    tot[k] += int(rest.split()[0])
    return tot


def h2load(port: int, conns: int, streams: int, seconds: int) -> dict:
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(conns), "-m", str(streams), "-t", "1",
           "-D", str(seconds), f"https://127.0.0.1:{port}/small"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    if "Application protocol: h2" not in out:
        raise RuntimeError(f"h2load did not negotiate h2 with 127.0.0.1:{port}:\n{out}")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    rps = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and rps and codes):
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return {"succeeded": int(m.group(4)), "failed": int(m.group(5)), "errored": int(m.group(6)),
            "2xx": int(codes.group(1)), "rps": float(rps.group(2))}


def frame(ftype: int, flags: int = 0, payload: bytes = b"", stream: int = 0) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def idle_connection(port: int, ctx: ssl.SSLContext, alpn: str, timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS connection with ALPN h2 that has completed the SETTINGS exchange
    (alpn "h2"), or one with ALPN http/1.1 that has only completed the
    handshake (the reference: what TLS alone costs)."""
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    if s.selected_alpn_protocol() != alpn:
        raise RuntimeError(f"127.0.0.1:{port} chose ALPN {s.selected_alpn_protocol()!r}, not {alpn}")
    if alpn != "h2":
        return s
    s.sendall(PREFACE + frame(4))                  # our SETTINGS: none, defaults
    buf, theirs, acked = b"", False, False
    while not (theirs and acked):
        data = s.recv(65536)
        if not data:
            raise RuntimeError("connection closed during the SETTINGS exchange")
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            buf = buf[9 + length:]
            if ftype == 4 and flags & 1:
                acked = True
            elif ftype == 4:
                theirs = True
                s.sendall(frame(4, 1))             # ACK theirs
    return s


def measure_idle(port: int, pids: list, n: int, alpn: str, keep: list) -> dict:
    """The worker's memory growth over n idle connections, which stay open
    in `keep` (closing them would leave freed memory in the worker's
    allocator for the next batch to reuse)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    time.sleep(0.5)
    before = memory_kb(pids)
    for _ in range(n):
        keep.append(idle_connection(port, ctx, alpn))
    time.sleep(1.0)
    after = memory_kb(pids)
    return {"connections": n, "rss_before_kb": before["Rss"], "rss_after_kb": after["Rss"],
            "pss_before_kb": before["Pss"], "pss_after_kb": after["Pss"],
            "rss_bytes_per_conn": round((after["Rss"] - before["Rss"]) * 1024 / n),
            "pss_bytes_per_conn": round((after["Pss"] - before["Pss"]) * 1024 / n),
            "pss_anon_bytes_per_conn": round((after["Pss_Anon"] - before["Pss_Anon"]) * 1024 / n)}


def make_cert(tmp: str) -> tuple:
    crt, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    os.chmod(key, 0o644)
    return crt, key


def nginx_conf(tmp: str, name: str, body: str) -> str:
    path = os.path.join(tmp, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 8192;
pid {tmp}/{name}.pid; error_log {tmp}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; tcp_nodelay on; keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path {tmp}/tmp-{name}; proxy_temp_path {tmp}/tmp-{name};
  fastcgi_temp_path {tmp}/tmp-{name}; uwsgi_temp_path {tmp}/tmp-{name}; scgi_temp_path {tmp}/tmp-{name};
{body}
}}
""")
    return path


def nginx_proxy(tmp: str, name: str, port: int, backend: int, crt: str, key: str) -> str:
    return nginx_conf(tmp, name, f"""  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256;
    keepalive_requests 1000000; keepalive_timeout 300s; }}
  http2_max_concurrent_streams 128;
  server {{
    listen 127.0.0.1:{port} ssl http2 backlog=4096;
    ssl_certificate {crt}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffer_size 16k; proxy_buffers 8 16k; proxy_busy_buffers_size 32k; proxy_max_temp_file_size 0; }}
  }}""")


def rproxy_conf(tmp: str, port: int, backend: int, crt: str, key: str) -> str:
    path = os.path.join(tmp, "rproxy.conf")
    with open(path, "w") as f:
        f.write(f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    backlog = 4096
    ssl {{ enabled = true  cert = "{crt}"  key = "{key}" }}
    downstream {{ addr = 127.0.0.1  port = {backend}  connections = 128 }}
}}
""")
    return path


def rproxy_command() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "rproxy")
    return local if os.path.exists(local) else (shutil.which("rproxy") or "rproxy")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="h2load -D per scenario, proxy and round")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="from " + ",".join(SCENARIOS))
    ap.add_argument("--mem-conns", type=int, default=500, help="idle h2 connections for the memory figure (0: none)")
    ap.add_argument("--candidate", choices=("rproxy", "nginx"), default="rproxy",
                    help="nginx: a second nginx in rproxy's place (checks the script)")
    ap.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/<date>-h2-compare.json)")
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    for tool in ("h2load", "nginx", "taskset", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"h2_compare: {tool} not found (Debian: nghttp2-client, nginx-light, util-linux, openssl)")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * args.mem_conns + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * args.mem_conns + 64), hard))
    tmp = tempfile.mkdtemp(prefix="h2-bench-")
    os.chmod(tmp, 0o755)             # nginx workers run as nobody when started by root
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"x" * 99 + b"\n")
    crt, key = make_cert(tmp)
    bport, rport, nport = free_port(), free_port(), free_port()
    backend = nginx_conf(tmp, "backend", f"""  sendfile on; etag off; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{bport} backlog=4096; root {www}; location / {{ }} }}""")
    procs = {"backend": subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-p", tmp, "-c", backend],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    if args.candidate == "rproxy":
        cand = [rproxy_command(), "-c", rproxy_conf(tmp, rport, bport, crt, key)]
    else:
        cand = ["nginx", "-p", tmp, "-c", nginx_proxy(tmp, "candidate", rport, bport, crt, key)]
    procs["rproxy"] = subprocess.Popen(["taskset", "-c", PROXY_CPU, *cand], stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(tmp, "rproxy.err"), "w"))
    procs["nginx"] = subprocess.Popen(["taskset", "-c", PROXY_CPU, "nginx", "-p", tmp, "-c",
                                       nginx_proxy(tmp, "nginx", nport, bport, crt, key)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports = {"rproxy": rport, "nginx": nport}
    results = {"meta": {"started": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv,
                        "candidate": args.candidate, "cpus": os.cpu_count(), "kernel": os.uname().release,
                        "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU, "response_bytes": 100},
               "scenarios": {}, "memory": {}}
    try:
        wait_port(bport)
        for port in ports.values():
            wait_port(port)
        time.sleep(0.5)
        workers = {name: children(procs[name].pid) for name in ports}
        for name, pids in workers.items():
            if len(pids) != 1:
                raise RuntimeError(f"{name}: expected one worker, found {pids}")
        # memory first, on workers that have served one small h2 run only: after the
        # load rounds their allocators hold the freed memory of 100 connections,
        # which idle connections would reuse (growth ~0, a false figure)
        for name, port in ports.items():
            run = subprocess.run(["taskset", "-c", LOAD_CPU, "h2load", "-n", "16", "-c", "1", "-m", "4",
                                  f"https://127.0.0.1:{port}/small"], capture_output=True, text=True, timeout=30)
            if "16 succeeded" not in run.stdout:
                raise RuntimeError(f"{name}: the first h2 requests failed:\n{run.stdout}{run.stderr}")
        if args.mem_conns > 0:
            for name, port in ports.items():
                keep = []
                try:           # TLS alone first, then h2 on top, all open until both are measured
                    for alpn in ("http/1.1", "h2"):
                        results["memory"].setdefault(name, {})[alpn] = measure_idle(
                            port, workers[name], args.mem_conns, alpn, keep)
                finally:
                    for sock in keep:
                        sock.close()
        for name, port in ports.items():       # warm-up: handshakes, pools, allocators
            h2load(port, 8, 16, 1)
        order = list(ports)
        for rnd in range(args.rounds):
            for sc in scenarios:
                conns, streams = SCENARIOS[sc]
                for name in (order if rnd % 2 == 0 else order[::-1]):
                    c0 = cpu_seconds(workers[name])
                    r = h2load(ports[name], conns, streams, args.seconds)
                    cpu = cpu_seconds(workers[name]) - c0
                    d = results["scenarios"].setdefault(sc, {}).setdefault(
                        name, {"succeeded": 0, "failed": 0, "errored": 0, "non2xx": 0, "cpu_s": 0.0, "rps": []})
                    d["succeeded"] += r["succeeded"]
                    d["failed"] += r["failed"]
                    d["errored"] += r["errored"]
                    d["non2xx"] += r["succeeded"] - r["2xx"]
                    d["cpu_s"] += cpu
                    d["rps"].append(r["rps"])
    finally:
        stop(list(procs.values()))
        shutil.rmtree(tmp, ignore_errors=True)
    for sc, by in results["scenarios"].items():
        for d in by.values():
            d["us_per_req"] = round(1e6 * d["cpu_s"] / max(d["succeeded"], 1), 2)
            d["rps_median"] = sorted(d["rps"])[len(d["rps"]) // 2]
        if by["rproxy"]["us_per_req"]:
            by["cpu_eff"] = round(by["nginx"]["us_per_req"] / by["rproxy"]["us_per_req"], 2)
    label = "rproxy" if args.candidate == "rproxy" else "nginx (as candidate)"
    print("| scenario | server | req/s (median) | us/req (worker CPU) | cpuEff | failed+errored |")
    print("|---|---|---:|---:|---:|---:|")
    for sc, by in results["scenarios"].items():
        for name in ports:
            d = by[name]
            eff = f"{by['cpu_eff']:.2f}" if name == "rproxy" and "cpu_eff" in by else ""
            print(f"| {sc} | {label if name == 'rproxy' else name} | {d['rps_median']:,.0f} | "
                  f"{d['us_per_req']:.1f} | {eff} | {d['failed'] + d['errored']} |")
    if results["memory"]:
        print("\n| idle TLS connections | server | Rss bytes/conn | Pss bytes/conn | Pss anon bytes/conn |")
        print("|---|---|---:|---:|---:|")
        for alpn, what in (("http/1.1", "http/1.1, handshake only"), ("h2", "h2, after SETTINGS")):
            for name, by in results["memory"].items():
                m = by[alpn]
                print(f"| {m['connections']} {what} | {label if name == 'rproxy' else name} | "
                      f"{m['rss_bytes_per_conn']:,} | {m['pss_bytes_per_conn']:,} | {m['pss_anon_bytes_per_conn']:,} |")
    out = args.out or os.path.join(RESULTS, datetime.datetime.now().strftime("%Y-%m-%d-%H%M") + "-h2-compare.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
