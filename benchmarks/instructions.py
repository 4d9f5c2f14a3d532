"""CPU instructions per request of ONE worker, for fixed workloads: a
regression guard that does not depend on wall-clock time.

    python benchmarks/instructions.py             # measure, compare with the baseline (report mode)
    python benchmarks/instructions.py --update    # measure and rewrite benchmarks/baseline/instructions.json

Why valgrind: hardware counters are not available on the machines this runs
on (`perf stat -e instructions true` prints "<not supported>" here), and
callgrind counts the instructions the worker executes exactly, the same
whatever else the machine does.

How: the configuration is parsed natively and handed to a small harness
run under `valgrind --tool=callgrind --collect-atstart=no
--toggle-collect=<the fast path's loop_run>`: only the instructions executed
inside the worker's event loop (everything it does per event: parsing,
forwarding, TLS, timers) are counted, not Python's start-up nor the build of
the worker's tables.  The harness binds the listeners once, then for each
workload forks a worker (built fresh, so each starts from the same state),
which serves that workload alone and writes its count when it exits.  An
idle worker, kept as long as the longest workload, gives the loop's cost of
doing nothing per second (timers), subtracted from each workload for its
duration.  Workloads (sequential requests on one keep-alive connection, to
a 1-worker nginx backend; all fixed counts):

  small      GET of a 100-byte file
  1k         GET of a 1 KiB file
  chunked    POST of a 4 KiB chunked body (4 chunks of 1 KiB)
  tls        GET of the 100-byte file over TLS (one handshake, then keep-alive)

Report mode exits 1 only when a workload grows by more than --tolerance
(15 %) over the baseline; shrinking is reported, never a failure.  The
baseline is updated deliberately (--update), in its own commit that says
why.  RPROXY_INSTR_SCALE=1.2 multiplies every measured count (to see the
guard fail: tests/unit/test_instructions_guard.py does).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import free_port, wait_port  # noqa: E402

BASELINE = os.path.join(HERE, "baseline", "instructions.json")
LOOP_FN = "__pyx_f_6rproxy_9_fastpath_loop_run"
WORKLOADS = {"small": 2000, "1k": 2000, "chunked": 1000, "tls": 1000}
TOLERANCE = 0.15


# ---- comparison (unit-tested) -------------------------------------------------------------

def compare(baseline: dict, measured: dict, tolerance: float = TOLERANCE) -> tuple[list[str], list[str]]:
    """(report lines, failures): a workload fails when it grew by more than
    `tolerance` over its baseline; one missing from the baseline is reported."""
    lines, failures = [], []
    for name, value in measured.items():
        base = baseline.get(name)
        if not base:
            lines.append(f"{name:8s} {value:12,.0f} instructions/request (no baseline)")
            continue
        change = value / base - 1
        verdict = "OK"
        if change > tolerance:
            verdict = f"FAIL: more than {tolerance:.0%} over the baseline"
            failures.append(f"{name}: {value:,.0f} instructions/request, {change:+.1%} over the baseline "
                            f"{base:,.0f} (limit {tolerance:+.0%})")
        lines.append(f"{name:8s} {value:12,.0f} instructions/request  baseline {base:12,.0f}  "
                     f"{change:+7.1%}  {verdict}")
    return lines, failures


# ---- the harness, under valgrind ----------------------------------------------------------

def inner(wd: str) -> int:
    """Bind, then on each line `run NAME` of stdin fork a worker and print its
    pid; `wait PID` waits for it and prints `done PID`."""
    from rproxy import tls, worker
    from rproxy.master.listeners import bind

    with open(os.path.join(wd, "cfg.pickle"), "rb") as f:
        cfg = pickle.load(f)
    bound = [bind(s) for s in cfg.servers]
    fds = [(bl.sock.fileno(), i) for i, bl in enumerate(bound)]
    if tls.needed(cfg):
        tls.load(cfg)
    sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "run":
            old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)     # the worker's signalfd takes them
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    w = worker.build(cfg, fds)
                    print(f"built {os.getpid()}", flush=True)
                    w.run()
                    code = 0
                finally:
                    os._exit(code)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        elif cmd == "wait":
            os.waitpid(int(arg), 0)
            print(f"done {arg}", flush=True)
    return 0


# ---- clients ------------------------------------------------------------------------------

def read_response(f) -> bytes:
    status = f.readline()
    length, chunked = 0, False
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
        elif k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int(f.readline().split(b";")[0], 16)
            f.read(size + 2)
            if size == 0:
                break
    else:
        f.read(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {status!r}")
    return status


def workload(name: str, n: int, port: int, tls_port: int) -> None:
    if name == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=60))
    else:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    if name == "chunked":
        chunk = b"400\r\n" + b"c" * 1024 + b"\r\n"
        req = (b"POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunk * 4 + b"0\r\n\r\n")
    else:
        path = b"/1k" if name == "1k" else b"/small"
        req = b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s.sendall(req)
        read_response(f)
    s.close()


# ---- the outer run ------------------------------------------------------------------------

def totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:totals|summary):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {path}")


def measure(scale: float, only=None) -> dict:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise SystemExit("instructions: needs valgrind (apt-get install valgrind)")
    wd = tempfile.mkdtemp(prefix="rproxy-instr-")
    os.chmod(wd, 0o755)
    os.makedirs(f"{wd}/www")
    with open(f"{wd}/www/small", "wb") as f:
        f.write(b"s" * 100)
    with open(f"{wd}/www/1k", "wb") as f:
        f.write(b"k" * 1024)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{wd}/key.pem", "-out", f"{wd}/cert.pem", "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    be_port, port, tls_port = free_port(), free_port(), free_port()
    with open(f"{wd}/backend.conf", "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {wd}/backend.pid;
error_log {wd}/backend.err warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {wd}/tmp_body;
  proxy_temp_path {wd}/tmp_proxy;
  fastcgi_temp_path {wd}/tmp_fcgi;
  uwsgi_temp_path {wd}/tmp_uwsgi;
  scgi_temp_path {wd}/tmp_scgi;
  server {{
    listen 127.0.0.1:{be_port};
    root {wd}/www;
    location = /upload {{ client_max_body_size 1m; return 200 "ok\\n"; }}
  }}
}}
""")
    conf_text = f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream {{
        addr = 127.0.0.1
        port = {be_port}
        connections = 2
    }}
}}
server {{
    addr = 127.0.0.1
    port = {tls_port}
    ssl {{
        enabled = true
        cert = "{wd}/cert.pem"
        key = "{wd}/key.pem"
    }}
    downstream {{
        addr = 127.0.0.1
        port = {be_port}
        connections = 2
    }}
}}
"""
    with open(f"{wd}/rproxy.conf", "w") as f:
        f.write(conf_text)
    from rproxy.config import load

    with open(f"{wd}/cfg.pickle", "wb") as f:
        pickle.dump(load(f"{wd}/rproxy.conf"), f)
    procs = []
    try:
        be = subprocess.Popen([nginx, "-e", f"{wd}/backend.err", "-p", wd, "-c", f"{wd}/backend.conf"])
        procs.append(be)
        wait_port(be_port, 60.0)
        h = subprocess.Popen([valgrind, "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={LOOP_FN}",
                              f"--callgrind-out-file={wd}/cg.%p", "--log-file=" + f"{wd}/valgrind.log",
                              sys.executable, "-P", os.path.abspath(__file__), "--inner", wd],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=wd)
        procs.append(h)
        if h.stdout.readline().strip() != "ready":
            raise RuntimeError(f"harness did not start; see {wd}/valgrind.log")

        def run_one(name):
            h.stdin.write(f"run {name}\n")
            h.stdin.flush()
            line = h.stdout.readline().split()
            if not line or line[0] != "built":
                raise RuntimeError(f"worker did not build: {line}")
            pid = int(line[1])
            wait_port(port, 60.0)        # a worker under callgrind starts slowly
            t0 = time.monotonic()
            if name == "idle":
                time.sleep(idle_s)
            else:
                workload(name, WORKLOADS[name], port, tls_port)
            elapsed = time.monotonic() - t0
            os.kill(pid, signal.SIGTERM)
            h.stdin.write(f"wait {pid}\n")
            h.stdin.flush()
            h.stdout.readline()
            return totals(f"{wd}/cg.{pid}"), elapsed

        names = [n for n in WORKLOADS if only is None or n in only]
        counts = {}
        for name in names:
            counts[name] = run_one(name)
        idle_s = max(e for _, e in counts.values())
        idle, idle_elapsed = run_one("idle")
        per_s = idle / idle_elapsed
        out = {}
        for name, (instr, elapsed) in counts.items():
            out[name] = round(max(instr - per_s * elapsed, 0) / WORKLOADS[name] * scale)
        out["_idle_instructions_per_s"] = round(per_s)
        return out
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(wd, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the baseline with this measurement")
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    ap.add_argument("--only", default=None, help="comma list of workloads (default: all)")
    ap.add_argument("--inner", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inner:
        return inner(a.inner)
    scale = float(os.environ.get("RPROXY_INSTR_SCALE", "1"))
    t0 = time.monotonic()
    measured = measure(scale, a.only.split(",") if a.only else None)
    idle = measured.pop("_idle_instructions_per_s")
    took = time.monotonic() - t0
    print(f"instructions per request of one worker (callgrind, "
          f"{', '.join(f'{k} x{WORKLOADS[k]}' for k in measured)}"
          f"; idle loop {idle:,} instructions/s subtracted; {took:.0f} s)")
    if a.update:
        os.makedirs(os.path.dirname(a.baseline), exist_ok=True)
        with open(a.baseline, "w") as f:
            json.dump({"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
                       "date": time.strftime("%Y-%m-%d", time.gmtime()),
                       "requests": WORKLOADS, "instructions_per_request": measured}, f, indent=1)
            f.write("\n")
        for k, v in measured.items():
            print(f"{k:8s} {v:12,} instructions/request")
        print(f"baseline written: {os.path.relpath(a.baseline)}")
        return 0
    try:
        with open(a.baseline) as f:
            baseline = json.load(f)["instructions_per_request"]
    except FileNotFoundError:
        baseline = {}
    lines, failures = compare(baseline, measured, a.tolerance)
    print("\n".join(lines))
    if failures:
        print("instructions: REGRESSION\n  " + "\n  ".join(failures)
              + "\n(if the growth is deliberate: python benchmarks/instructions.py --update, in its own "
                "commit saying why)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
