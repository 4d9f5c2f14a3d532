"""Syscalls, wakeups and CPU per response of one proxy worker, for one body size.

Counts, not wall-clock: usable on a busy machine.  Starts an nginx backend
(sendfile, keep-alive) serving a body of --size bytes, the proxy under test
(rproxy with benchmarks/rproxy.conf.tmpl, or nginx configured as in the
shared harness), drives it with wrk for --duration seconds, and reports:

  - CPU us per response (utime+stime of the worker from /proc, a run without tracing)
  - syscalls per response by name, with errors (EAGAIN), from `perf trace -s -p WORKER`
    over a second run (the tracer slows the worker; the counts stay meaningful)
  - epoll_wait calls per response (wakeups) and body bytes per splice/read/write call

    python benchmarks/relay_syscalls.py --size 1m            # rproxy
    python benchmarks/relay_syscalls.py --size 64k --proxy nginx
    python benchmarks/relay_syscalls.py --size 1m --conf my.conf.tmpl   # {listen_port} {backend_port} {workdir}

Linux only; needs nginx, wrk and perf (linux-perf) on PATH.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import children, free_port, wait_port  # noqa: E402

SIZES = {"1k": 1024, "64k": 65536, "256k": 262144, "1m": 1048576}


def backend_conf(wd: str, port: int) -> str:
    return f"""daemon off; master_process off; worker_processes 1; pid {wd}/backend.pid;
error_log {wd}/backend.err warn; events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 300s;
  keepalive_requests 1000000; default_type application/octet-stream; types {{ }} etag off;
  client_body_temp_path {wd}/bb; proxy_temp_path {wd}/bp;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {wd}/www; location / {{ }} }} }}
"""


def nginx_proxy_conf(wd: str, port: int, backend: int) -> str:
    # as the shared harness configures nginx (../shared/bench/compare.py)
    return f"""daemon off; master_process on; worker_processes 1; pid {wd}/nginx.pid;
error_log {wd}/nginx.err warn; events {{ worker_connections 1024; }}
http {{ access_log off; tcp_nodelay on; keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path {wd}/nb; proxy_temp_path {wd}/np;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; keepalive_requests 1000000;
    keepalive_timeout 300s; }}
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffer_size 16k; proxy_buffers 8 16k; proxy_busy_buffers_size 32k;
      proxy_max_temp_file_size 0; }} }} }}
"""


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wrk(port: int, path: str, conns: int, duration: int, cpus: str | None, trace: str | None = None) -> int:
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{duration}s", f"http://127.0.0.1:{port}{path}"]
    if trace:
        cmd = ["perf", "trace", "-s", "-o", trace, "--"] + cmd
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m or "Non-2xx" in out or "Socket errors" in out:
        sys.stderr.write(out)
    return int(m.group(1)) if m else 0


def parse_perf_summary(text: str) -> dict[str, tuple[int, int]]:
    """perf trace -s: 'syscall calls errors total ...' rows, summed over threads."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = re.match(r"\s+(\w+)\s+(\d+)\s+(\d+)\s+[\d.]+", line)
        if m:
            c, e = out.get(m.group(1), (0, 0))
            out[m.group(1)] = (c + int(m.group(2)), e + int(m.group(3)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1m", choices=sorted(SIZES))
    ap.add_argument("--proxy", default="rproxy", choices=["rproxy", "nginx", "none"],
                    help="none: wrk straight at the backend (the lower bound of wrk's and the backend's cost)")
    ap.add_argument("--conf", default=os.path.join(HERE, "rproxy.conf.tmpl"), help="rproxy config template")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--proxy-cpus", default="0", help="taskset for the proxy ('' = no pinning)")
    ap.add_argument("--load-cpus", default="1", help="taskset for wrk and the backend")
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    wd = tempfile.mkdtemp(prefix="relay-syscalls-")
    procs: list[subprocess.Popen] = []

    def pin(cpus: str, cmd: list[str]) -> list[str]:
        return ["taskset", "-c", cpus] + cmd if cpus else cmd

    try:
        os.makedirs(f"{wd}/www")
        with open(f"{wd}/www/body", "wb") as f:
            f.write(b"x" * size)
        bport, pport = free_port(), free_port()
        with open(f"{wd}/backend.conf", "w") as f:
            f.write(backend_conf(wd, bport))
        procs.append(subprocess.Popen(pin(args.load_cpus, ["nginx", "-c", f"{wd}/backend.conf", "-p", wd]),
                                      stderr=subprocess.DEVNULL))
        wait_port(bport)
        if args.proxy == "none":
            pport = bport
            cmd = []
        elif args.proxy == "nginx":
            with open(f"{wd}/proxy.conf", "w") as f:
                f.write(nginx_proxy_conf(wd, pport, bport))
            cmd = ["nginx", "-c", f"{wd}/proxy.conf", "-p", wd]
        else:
            with open(args.conf) as f:
                conf = f.read()
            for k, v in {"listen_port": pport, "backend_port": bport, "workdir": wd, "max_conns": 1024}.items():
                conf = conf.replace("{" + k + "}", str(v))
            with open(f"{wd}/proxy.conf", "w") as f:
                f.write(conf)
            exe = os.path.join(os.path.dirname(sys.executable), "rproxy")
            cmd = [exe if os.path.exists(exe) else "rproxy", "-c", f"{wd}/proxy.conf"]
        if cmd:
            master = subprocess.Popen(pin(args.proxy_cpus, cmd), stderr=open(f"{wd}/proxy.err", "w"))
            procs.append(master)
            wait_port(pport)
            time.sleep(0.5)
            kids = children(master.pid)
            worker = kids[0] if kids else master.pid
        else:
            worker = procs[0].pid       # no proxy: its figures repeat the backend's
        wrk(pport, "/body", args.connections, 1, args.load_cpus)     # warm-up: pools, pipes, buffers

        hz = os.sysconf("SC_CLK_TCK")
        backend = procs[0].pid
        t0, b0, w0 = cpu_ticks(worker), cpu_ticks(backend), os.times()
        n_plain = wrk(pport, "/body", args.connections, args.duration, args.load_cpus)
        w1 = os.times()
        cpu = {"proxy worker": (cpu_ticks(worker) - t0) / hz, "backend": (cpu_ticks(backend) - b0) / hz,
               "wrk": (w1.children_user - w0.children_user) + (w1.children_system - w0.children_system)}

        perfs = [subprocess.Popen(["perf", "trace", "-s", "-p", str(pid), "-o", f"{wd}/perf-{pid}.txt"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid in (worker, backend)]
        time.sleep(1.0)
        n_traced = wrk(pport, "/body", args.connections, args.duration, args.load_cpus,
                       trace=f"{wd}/perf-wrk.txt")
        for perf in perfs:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
        print(f"{args.proxy} {args.size}: {n_plain} responses in {args.duration} s untraced "
              f"({n_plain / args.duration:.0f}/s, busy-machine wall clock); traced run {n_traced} responses")
        print("  CPU us/response: " + ", ".join(f"{k} {v * 1e6 / max(n_plain, 1):.1f}" for k, v in cpu.items()))
        n = max(n_traced, 1)
        for who, path in (("proxy worker", f"{wd}/perf-{worker}.txt"), ("backend", f"{wd}/perf-{backend}.txt"),
                          ("wrk", f"{wd}/perf-wrk.txt")):
            with open(path) as f:
                calls = parse_perf_summary(f.read())
            total = sum(c for c, _ in calls.values())
            body_calls = sum(calls.get(k, (0, 0))[0] - calls.get(k, (0, 0))[1]
                             for k in ("splice", "read", "readv", "recvfrom", "write", "writev", "sendto",
                                       "sendmsg", "sendfile"))
            print(f"  {who}: syscalls/response {total / n:.1f}, epoll_wait/response "
                  f"{calls.get('epoll_wait', (0, 0))[0] / n:.2f}, body bytes per data call "
                  f"{(2 if who == 'proxy worker' else 1) * size * n / max(body_calls, 1):,.0f}")
            print("    " + ", ".join(f"{name} {c / n:.2f}" + (f" ({e / n:.2f} err)" if e else "")
                                     for name, (c, e) in sorted(calls.items(), key=lambda kv: -kv[1][0])
                                     if c / n >= 0.05))
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGTERM if p is not procs[0] else signal.SIGQUIT)
                p.wait(10)
            except Exception:
                p.kill()
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
