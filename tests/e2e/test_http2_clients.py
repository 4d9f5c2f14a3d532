"""Real HTTP/2 clients against rproxy (issue 16): curl, nghttp, h2load and a
headless Chromium, over TLS (ALPN h2) and prior-knowledge h2c.

One proxy (one worker) for the whole module, in front of one recording
HTTP/1.1 downstream (tests/support/downstream.py) that also serves a page
with 50 sub-resources for the browser.  Each client is a real process on
127.0.0.1 with a bounded run and a timeout, stopped by pid (its process
group) if it overruns.  What the proxy did is read from its access log:
`{SRC} {US_SPORT}` (the client's address and source port) names the client
connection a stream came over, `{PROTO}` its protocol.

RPROXY_H2_TEST_TARGETS=rproxy,nginx runs the same tests against nginx
(`listen ... ssl http2` / `listen ... http2`, Debian 12's 1.22) too, as a
reference for what the clients and the tests expect; CI runs rproxy only.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.downstream import Downstream, payload
from support.proc import Rproxy, free_port, lines_of, wait_port
from support.stats import assert_quiet

TARGETS = [t for t in os.environ.get("RPROXY_H2_TEST_TARGETS", "rproxy").split(",") if t]
TOOLS = ("curl", "nghttp", "h2load", "chromium")
LOG_FORMAT = "{SRC} {US_SPORT} {PROTO} {STATUS} {METH} {URI} {BODY_BYTES_SENT}"
NGINX_LOG_FORMAT = "$remote_addr $remote_port $server_protocol $status $request_method $uri $body_bytes_sent"
BIG = 8 * 1024 * 1024
SUBRESOURCES = 50                  # half scripts, half images
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs curl, nghttp2-client (nghttp, h2load) and chromium")


def page() -> bytes:
    half = SUBRESOURCES // 2
    scripts = "".join(f'<script src="/js/{i}.js"></script>' for i in range(half))
    imgs = "".join(f'<img src="/img/{i}.gif" onload="window.i=(window.i||0)+1;'
                   f'document.body.setAttribute(\'data-i\',String(window.i))">' for i in range(half))
    return f"<!doctype html><html><head><title>h2</title></head><body>{scripts}{imgs}</body></html>".encode()


JS = b"window.n=(window.n||0)+1;document.body.setAttribute('data-n',String(window.n));"


def handler(req, s: socket.socket) -> bool:
    """The default downstream, plus the browser's page and its sub-resources."""
    path = req.target.split("?")[0]
    if path == "/page.html":
        body, ctype = page(), "text/html; charset=utf-8"
    elif path.startswith("/js/"):
        body, ctype = JS, "application/javascript"
    elif path.startswith("/img/"):
        body, ctype = GIF, "image/gif"
    else:
        return Downstream.default_handler(req, s)
    s.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
              "Cache-Control: no-store\r\n\r\n".encode() + body)
    return True


@dataclass
class Entry:
    """One access log line."""
    src: str
    sport: str
    proto: str
    status: int
    method: str
    uri: str
    body_bytes: str

    @property
    def conn(self) -> tuple:
        return (self.src, self.sport)


class Target:
    """The server under test: a TLS listener (ALPN h2) and a plain one with
    prior-knowledge h2c, both in front of `ds`, logging to `log`."""

    def __init__(self, name: str, tmp: Path, pki, ds: Downstream):
        self.name, self.ds = name, ds
        self.tls_port, self.h2c_port = free_port(), free_port()
        self.log = tmp / "access.log"
        self.ca = pki["ca"].crt
        srv = pki["server"]
        self.proc = None
        if name == "rproxy":
            log = f'logging {{ request {{ enabled = true  output = "file:{self.log}"  format = "{LOG_FORMAT}" }} }}'
            ds_block = f"downstream app {{ addr = 127.0.0.1  port = {ds.port}  connections = 4 }}"
            vhost = 'vhost "*" { rule all { uri-prefix = "/"  downstreams = { app } } }'
            conf = f"""workers = 1
server {{
    addr = 127.0.0.1
    port = {self.tls_port}
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    {log}
    {ds_block}
    {vhost}
}}
server {{
    addr = 127.0.0.1
    port = {self.h2c_port}
    http2 = true
    {log}
    {ds_block}
    {vhost}
}}
"""
            self.proc = Rproxy(conf, tmp, port=self.tls_port, name="rproxy-h2")
            wait_port(self.h2c_port, proc=self.proc)
        elif name == "nginx":
            conf = tmp / "nginx.conf"
            temp = "".join(f"{k}_temp_path {tmp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            user = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(f"""{user}
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  log_format h2 '{NGINX_LOG_FORMAT}';
  access_log {self.log} h2;
  {temp}
  client_max_body_size 0;
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host:$server_port;
  upstream app {{ server 127.0.0.1:{ds.port}; keepalive 4; }}
  server {{ listen 127.0.0.1:{self.tls_port} ssl http2; ssl_certificate {srv.crt};
           ssl_certificate_key {srv.key}; location / {{ proxy_pass http://app; }} }}
  server {{ listen 127.0.0.1:{self.h2c_port} http2; location / {{ proxy_pass http://app; }} }}
}}
""")
            self.nginx = subprocess.Popen(["nginx", "-c", str(conf)], start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp / "nginx.out", "wb"))
            wait_port(self.tls_port)
            wait_port(self.h2c_port)
        else:
            raise ValueError(f"unknown target {name!r}")

    def mark(self) -> int:
        """How many access log lines exist now (the start of a test's own)."""
        return len(lines_of(self.log, 0, timeout=0)) if self.log.exists() else 0

    def entries(self, since: int, n: int, timeout: float = 10.0) -> list:
        """The access log lines after `since`, once there are at least n."""
        lines = lines_of(self.log, since + n, timeout=timeout)[since:]
        out = []
        for ln in lines:
            src, sport, proto, status, meth, uri, nbytes = ln.split(" ")
            out.append(Entry(src, sport, proto, int(status), meth, uri, nbytes))
        return out

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
        else:
            stop_process(self.nginx, signal.SIGQUIT)


def stop_process(p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop what we started, by pid: its process group (Chromium's helpers)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()


def clean_env(tmp: Path) -> dict:
    """No proxy from the environment (every client must talk to 127.0.0.1 itself)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(tmp)
    return env


def run(cmd, tmp: Path, timeout: float = 30.0, **kw) -> subprocess.CompletedProcess:
    """A client run, bounded: its process group is killed at the timeout."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env=clean_env(tmp), **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(p, signal.SIGKILL)
        raise AssertionError(f"{cmd[0]} did not finish within {timeout} s: {' '.join(map(str, cmd))}")
    try:
        os.killpg(p.pid, signal.SIGKILL)      # helpers left in its group (Chromium's crash handler)
    except (ProcessLookupError, PermissionError):
        pass
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture(scope="module", params=TARGETS)
def target(request, tmp_path_factory, test_pki):
    tmp = tmp_path_factory.mktemp(f"h2-{request.param}")
    ds = Downstream(handler=handler)
    t = Target(request.param, tmp, test_pki, ds)
    t.tmp = tmp
    try:
        yield t
        if t.proc is not None and t.proc.poll() is None:
            assert_quiet(t.proc)
    finally:
        t.stop()
        ds.close()


def ds_requests(ds: Downstream, since: int) -> list:
    with ds.lock:
        return list(ds.requests[since:])


def test_curl_over_tls_alpn_and_prior_knowledge_h2c(target):
    since, ds0 = target.mark(), len(target.ds.requests)
    fmt = "\n%{http_version} %{http_code}"
    r = run(["curl", "-sS", "--http2", "--cacert", target.ca, "-w", fmt,
             f"https://127.0.0.1:{target.tls_port}/bytes/5000"], target.tmp)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition(b"\n")
    assert tail == b"2 200" and body == payload(5000)
    r = run(["curl", "-sS", "--http2-prior-knowledge", "-w", fmt,
             f"http://127.0.0.1:{target.h2c_port}/h2c-path"], target.tmp)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition(b"\n")
    assert (tail, body) == (b"2 200", b"/h2c-path")
    # each stream reached the downstream as an ordinary HTTP/1.1 request
    reqs = ds_requests(target.ds, ds0)
    assert [(q.method, q.target, q.version) for q in reqs] == [
        ("GET", "/bytes/5000", "HTTP/1.1"), ("GET", "/h2c-path", "HTTP/1.1")]
    assert reqs[0].header("Host") == f"127.0.0.1:{target.tls_port}"
    assert reqs[1].header("Host") == f"127.0.0.1:{target.h2c_port}"
    got = [(e.proto, e.status, e.uri) for e in target.entries(since, 2)]
    assert got == [("HTTP/2.0", 200, "/bytes/5000"), ("HTTP/2.0", 200, "/h2c-path")]


def test_nghttp_shows_the_settings_exchange_and_the_response(target):
    since = target.mark()
    r = run(["nghttp", "-nv", f"https://127.0.0.1:{target.tls_port}/nghttp-path"], target.tmp)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out + r.stderr.decode("utf-8", "replace")
    assert "The negotiated protocol: h2" in out, out
    # the server's SETTINGS, and its ACK of ours
    assert re.search(r"recv SETTINGS frame <length=\d+, flags=0x00, stream_id=0>", out), out
    assert re.search(r"recv SETTINGS frame <length=0, flags=0x01, stream_id=0>", out), out
    # the request's stream (nghttp opens idle streams for priorities first)
    sid = re.search(r"send HEADERS frame <length=\d+, flags=0x[0-9a-f]+, stream_id=(\d+)>", out).group(1)
    assert re.search(rf"recv \(stream_id={sid}\) :status: 200", out), out
    assert re.search(rf"recv DATA frame <length=12, flags=0x0[01], stream_id={sid}>", out), out   # "/nghttp-path"
    assert re.search(rf"stream_id={sid}>\n\s+; END_STREAM", out), out
    [e] = target.entries(since, 1)
    assert (e.proto, e.status, e.uri, e.body_bytes) == ("HTTP/2.0", 200, "/nghttp-path", "12")


def h2load_counts(out: str) -> dict:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    assert m, out
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert s, out
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return {**dict(zip(keys, map(int, m.groups()))), "2xx": int(s.group(1))}


def test_h2load_bounded_run_all_succeed(target):
    since = target.mark()
    r = run(["h2load", "-n", "200", "-c", "4", "-m", "8", f"https://127.0.0.1:{target.tls_port}/bytes/100"],
            target.tmp, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out + r.stderr.decode("utf-8", "replace")
    assert "Application protocol: h2" in out, out
    c = h2load_counts(out)
    assert (c["done"], c["succeeded"], c["failed"], c["errored"], c["timeout"], c["2xx"]) == (200, 200, 0, 0, 0, 200), out
    entries = target.entries(since, 200)
    assert len(entries) == 200
    assert {(e.proto, e.status) for e in entries} == {("HTTP/2.0", 200)}
    assert len({e.conn for e in entries}) == 4          # h2load's four connections, 50 streams each


def test_concurrent_streams_of_one_connection_spread_over_downstream_connections(target):
    """40 streams at once on ONE client connection: the downstream sees them
    arrive on several of its connections at the same time."""
    since, ds0 = target.mark(), len(target.ds.requests)
    url = f"https://127.0.0.1:{target.tls_port}/hold/spread"
    load = subprocess.Popen(["h2load", "-n", "40", "-c", "1", "-m", "40", url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=clean_env(target.tmp))
    try:
        deadline = time.monotonic() + 15
        busy = set()
        while time.monotonic() < deadline:
            with target.ds.lock:
                busy = {q.conn_id for q in target.ds.requests[ds0:] if q.target == "/hold/spread"} & \
                       {cid for cid, d in target.ds.depth_now.items() if d > 0}
            if len(busy) >= 4:
                break
            time.sleep(0.02)
        # rproxy: all four pooled connections hold one of this client connection's streams at once
        assert len(busy) >= 4, f"streams of one connection on {len(busy)} downstream connection(s) at once"
    finally:
        target.ds.release("spread")
        try:
            out = load.communicate(timeout=30)[0].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            stop_process(load, signal.SIGKILL)
            raise
    c = h2load_counts(out)
    assert (c["succeeded"], c["2xx"], c["failed"], c["errored"]) == (40, 40, 0, 0), out
    reqs = [q for q in ds_requests(target.ds, ds0) if q.target == "/hold/spread"]
    assert len(reqs) == 40
    assert len({q.conn_id for q in reqs}) >= 4
    entries = target.entries(since, 40)
    assert len(entries) == 40 and len({e.conn for e in entries}) == 1      # one client connection
    assert {(e.proto, e.status) for e in entries} == {("HTTP/2.0", 200)}


def test_large_bodies_both_ways(target):
    """8 MiB up with curl, 8 MiB down with nghttp behind a small stream window
    and a slow reader: byte for byte."""
    since, ds0 = target.mark(), len(target.ds.requests)
    data = os.urandom(BIG)
    up = target.tmp / "upload.bin"
    up.write_bytes(data)
    r = run(["curl", "-sS", "--http2", "--cacert", target.ca, "--data-binary", f"@{up}",
             "-H", "Content-Type: application/octet-stream", "-w", "\n%{http_version} %{http_code}",
             f"https://127.0.0.1:{target.tls_port}/echo"], target.tmp, timeout=60)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition(b"\n")
    assert tail == b"2 200"
    info = json.loads(body)
    assert (info["method"], info["length"], info["sha256"]) == ("POST", BIG, hashlib.sha256(data).hexdigest())
    [q] = [q for q in ds_requests(target.ds, ds0) if q.target == "/echo"]
    assert q.body == data
    # the download: a 16 KiB stream window, and a reader that takes >= 0.5 s
    # for the 8 MiB, so the proxy holds a response its client cannot take yet
    dl = subprocess.Popen(["nghttp", "-w", "14", f"https://127.0.0.1:{target.tls_port}/bytes/{BIG}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                          env=clean_env(target.tmp))
    got = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            chunk = dl.stdout.read1(32768)
            if not chunk:
                break
            got += chunk
            time.sleep(0.002)
        dl.wait(max(1.0, deadline - time.monotonic()))
    finally:
        stop_process(dl, signal.SIGKILL)
    assert dl.returncode == 0, dl.stderr.read()
    assert len(got) == BIG and bytes(got) == payload(BIG)
    entries = target.entries(since, 2)
    assert [(e.proto, e.status, e.method) for e in entries] == [("HTTP/2.0", 200, "POST"), ("HTTP/2.0", 200, "GET")]
    assert entries[1].body_bytes == str(BIG)


def test_headless_chromium_loads_a_page_and_its_50_subresources_over_one_h2_connection(target):
    since = target.mark()
    profile = target.tmp / "chromium-profile"
    r = run(["chromium", "--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--no-proxy-server",
             "--disable-background-networking", "--disable-component-update", "--disable-extensions",
             "--disable-sync", "--mute-audio", f"--user-data-dir={profile}",
             "--dump-dom", f"https://127.0.0.1:{target.tls_port}/page.html"], target.tmp, timeout=60)
    dom = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, dom + r.stderr.decode("utf-8", "replace")[-2000:]
    # every script ran and every image loaded before the DOM was dumped
    half = SUBRESOURCES // 2
    assert f'data-n="{half}"' in dom and f'data-i="{half}"' in dom, dom[:2000]
    wanted = {"/page.html"} | {f"/js/{i}.js" for i in range(half)} | {f"/img/{i}.gif" for i in range(half)}
    entries = [e for e in target.entries(since, len(wanted)) if e.uri in wanted]
    assert sorted(e.uri for e in entries) == sorted(wanted)
    assert {(e.proto, e.status) for e in entries} == {("HTTP/2.0", 200)}
    conns = {e.conn for e in entries}
    assert len(conns) == 1, f"the page's {len(entries)} requests came over {len(conns)} connections: {conns}"
