"""Fixed memory of rproxy (master + workers) beside nginx, from /proc/PID/smaps_rollup.

    python benchmarks/memory_footprint.py                 # shipped rproxy.conf, 2 workers each
    python benchmarks/memory_footprint.py --config other.conf --label after

Starts, in a temporary directory:
  - a backend (nginx, 1 worker, static file), not counted;
  - rproxy on the shipped rproxy.conf (only its ports moved to free ones, so
    the run does not collide with anything on 8080/8081), `workers = 2`;
  - nginx with 2 workers proxying to the same backend (keepalive pool), as a
    plain nginx.conf would (worker_connections 1024, access_log off).
Sends a few requests through each (so both have touched their request path),
waits until idle, reads Rss / Pss / Private (= USS) of every process of each
tree, prints a table and writes JSON to benchmarks/results/.  Everything it
started is stopped by pid.

PSS (proportional set size) charges each shared page to the processes sharing
it, so the PSS of master + workers adds up to the memory the tree really
costs; RSS counts shared pages once per process and overstates it.  Memory
figures do not depend on how loaded the machine is, but the file part of PSS
(libpython, libc, extension modules) does depend on how many OTHER processes
on the machine map the same files (other Python programs share libpython's
pages and lower rproxy's share): PSS anon, the heap and the interpreter's
objects, is rproxy's alone and repeats to within ~0.2 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import children, free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(HERE)
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
          "Anonymous", "Swap")


def get(port: int, n: int = 20) -> int:
    """n keep-alive GETs on one connection; the number of 200s."""
    ok = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(n):
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status = f.readline()
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            ok += status.split()[1:2] == [b"200"]
    return ok


def rollup(pid: int) -> dict:
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m and m.group(1) in FIELDS:
                vals[m.group(1)] = int(m.group(2))
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    kb = {k.lower(): vals.get(k, 0) for k in FIELDS}
    return {"pid": pid, "title": title[:60], "rss_kb": kb["rss"], "pss_kb": kb["pss"],
            "uss_kb": kb["private_clean"] + kb["private_dirty"],
            "pss_anon_kb": kb["pss_anon"], "pss_file_kb": kb["pss_file"],
            "private_dirty_kb": kb["private_dirty"], "anon_kb": kb["anonymous"]}


def tree(root: int) -> list[dict]:
    return [rollup(root)] + [rollup(c) for c in children(root)]


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def nginx_conf(wd: str, name: str, port: int, workers: int, backend: int | None) -> str:
    if backend is None:
        body = f"root {wd}/www;"
        up = ""
    else:
        body = ("location / { proxy_pass http://be; proxy_http_version 1.1; "
                "proxy_set_header Connection \"\"; }")
        up = f"upstream be {{ server 127.0.0.1:{backend}; keepalive 8; }}"
    path = os.path.join(wd, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""daemon off;
worker_processes {workers};
pid {wd}/{name}.pid;
error_log {wd}/{name}.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {wd}/tmp_{name}_body;
  proxy_temp_path {wd}/tmp_{name}_proxy;
  fastcgi_temp_path {wd}/tmp_{name}_fcgi;
  uwsgi_temp_path {wd}/tmp_{name}_uwsgi;
  scgi_temp_path {wd}/tmp_{name}_scgi;
  {up}
  server {{ listen 127.0.0.1:{port}; {body} }}
}}
""")
    return path


def rproxy_conf(src: str, wd: str, port: int, backend: int, workers: int | None) -> str:
    """The shipped config with its listener and downstream ports moved."""
    with open(src) as f:
        text = f.read()
    ports = iter([port, backend])
    text = re.sub(r"(?m)^(\s*port\s*=\s*)\d+", lambda m: m.group(1) + str(next(ports)), text)
    if workers is not None:
        text = re.sub(r"(?m)^(\s*workers\s*=\s*)\d+", rf"\g<1>{workers}", text)
    path = os.path.join(wd, "rproxy.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def rproxy_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "rproxy")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "rproxy"]


def total(rows: list[dict], key: str) -> int:
    return sum(r[key] for r in rows)


def render(result: dict) -> str:
    lines = ["| server | process | RSS MB | PSS MB | PSS anon MB | PSS file MB | private (USS) MB |",
             "|---|---|---|---|---|---|---|"]
    for name in ("rproxy", "nginx"):
        rows = result[name]["processes"]
        for i, r in enumerate(rows):
            role = "master" if i == 0 else f"worker {i - 1}"
            lines.append(f"| {name} | {role} | " + " | ".join(
                f"{r[k] / 1024:.1f}" for k in ("rss_kb", "pss_kb", "pss_anon_kb", "pss_file_kb", "uss_kb")) + " |")
        lines.append(f"| **{name}** | **total** | " + " | ".join(
            f"**{total(rows, k) / 1024:.1f}**" if k == "pss_kb" else f"{total(rows, k) / 1024:.1f}"
            for k in ("rss_kb", "pss_kb", "pss_anon_kb", "pss_file_kb", "uss_kb")) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "rproxy.conf"),
                    help="rproxy configuration (default: the shipped rproxy.conf)")
    ap.add_argument("--workers", type=int, default=None,
                    help="override `workers` in the rproxy config (default: keep it; nginx gets the same)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading (default 2)")
    ap.add_argument("--label", default="", help="added to the JSON file name")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    wd = tempfile.mkdtemp(prefix="rproxy-mem-")
    os.chmod(wd, 0o755)         # nginx workers started by root run as nobody
    os.makedirs(f"{wd}/www")
    with open(f"{wd}/www/index.html", "w") as f:
        f.write("hello\n" * 10)
    be_port, rp_port, ng_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        be = subprocess.Popen([nginx, "-e", f"{wd}/be.err", "-p", wd, "-c",
                               nginx_conf(wd, "backend", be_port, 1, None)])
        procs.append(be)
        wait_port(be_port)
        conf = rproxy_conf(a.config, wd, rp_port, be_port, a.workers)
        with open(conf) as f:
            m = re.search(r"(?m)^\s*workers\s*=\s*(\d+)", f.read())
        nworkers = int(m.group(1)) if m else 1
        env = dict(os.environ)
        rp = subprocess.Popen(rproxy_command() + ["-c", conf], cwd=wd, env=env,
                              stdout=open(f"{wd}/rproxy.out", "wb"), stderr=subprocess.STDOUT)
        procs.append(rp)
        ng = subprocess.Popen([nginx, "-e", f"{wd}/nginx.err", "-p", wd, "-c",
                               nginx_conf(wd, "nginx", ng_port, nworkers, be_port)])
        procs.append(ng)
        wait_port(rp_port)
        wait_port(ng_port)
        deadline = time.monotonic() + 15
        while (len(children(rp.pid)) < nworkers or len(children(ng.pid)) < nworkers) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        # touch the request path of every worker: several connections, each a few requests
        oks = {"rproxy": 0, "nginx": 0}
        for _ in range(4 * nworkers):
            oks["rproxy"] += get(rp_port)
            oks["nginx"] += get(ng_port)
        time.sleep(a.settle)
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
                  "config": os.path.relpath(a.config, ROOT) if a.config.startswith(ROOT) else a.config,
                  "workers": nworkers,
                  "rproxy": {"processes": tree(rp.pid), "ok_requests": oks["rproxy"]},
                  "nginx": {"processes": tree(ng.pid), "ok_requests": oks["nginx"],
                            "version": subprocess.run([nginx, "-v"], capture_output=True,
                                                      text=True).stderr.strip()}}
        for name in ("rproxy", "nginx"):
            rows = result[name]["processes"]
            result[name]["total_pss_kb"] = total(rows, "pss_kb")
            result[name]["total_rss_kb"] = total(rows, "rss_kb")
            result[name]["total_uss_kb"] = total(rows, "uss_kb")
            result[name]["total_pss_anon_kb"] = total(rows, "pss_anon_kb")
        print(render(result))
        print(f"\nrproxy {oks['rproxy']} / nginx {oks['nginx']} requests answered 200 before measuring")
        os.makedirs(a.out, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
        path = os.path.join(a.out, f"memory-{stamp}{'-' + a.label if a.label else ''}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"written {os.path.relpath(path)}")
        return 0
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGQUIT if p is not procs[1] else signal.SIGTERM)
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
