"""Metrics: counters kept by the workers in a shared zone, summed and served
by the master on the status listener (/metrics, /status)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from support.proc import free_port, request

WORKERS = 2


def conf(port, ds_port, status_port, *, workers=WORKERS, allow="127.0.0.1, ::1", extra_rule="", main=""):
    return f"""workers = {workers}
{main}
status {{
    addr = 127.0.0.1
    port = {status_port}
    allow = {{ {allow} }}
}}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d1 {{ addr = 127.0.0.1  port = {ds_port}  connections = 2 }}
    downstream dead {{ addr = 127.0.0.1  port = {free_port()}  connections = 1  retry = 5s }}
    vhost "*" {{
        default = true
        rule api {{ uri-prefix = "/api/"  downstreams = {{ d1 }} }}
        rule gone {{ uri-prefix = "/gone/"  downstreams = {{ dead }}  pending-timeout-placeholder }}
        {extra_rule}
        rule rest {{ uri-prefix = "/"  downstreams = {{ d1 }} }}
    }}
}}
""".replace("  pending-timeout-placeholder", "")


def http_get(port, path, host="127.0.0.1", timeout=10.0):
    """(status, headers dict, body) of GET path on the status listener."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, body


def scrape(port) -> str:
    status, headers, body = http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def status_json(port) -> dict:
    status, headers, body = http_get(port, "/status")
    assert status == 200 and headers["content-type"] == "application/json"
    return json.loads(body)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(s: dict, name: str, **labels) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in s.items() if n == name and want <= set(ls)]
    assert found, f"no sample {name} {labels}"
    return sum(found)


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def keepalive_gets(port, paths):
    """GET each path on one connection; returns the statuses."""
    from support.proc import read_response

    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = b""
        for p in paths:
            s.sendall(f"GET {p} HTTP/1.1\r\nHost: a.example\r\n\r\n".encode())
            st, _, _, buf = read_response(s, buf)
            out.append(st)
    return out


@pytest.fixture
def proxy(start_rproxy, downstream, port):
    sport = free_port()
    p = start_rproxy(conf(port, downstream.port, sport), port, check_quiet=False)
    p.status_port = sport
    wait_until(lambda: status_json(sport)["process"]["workers"] == WORKERS, what="workers ready")
    return p


def test_exact_counts_after_a_known_workload(proxy, port):
    """Requests from many connections land on both workers; the sum is exact."""
    sport = proxy.status_port
    srv = f"127.0.0.1:{port}"
    accepted0 = value(samples(scrape(sport)), "rproxy_listener_accepted_total", server=srv)  # the start-up probe
    # 40 connections x 3 requests: the kernel spreads them over the workers
    for i in range(40):
        assert keepalive_gets(port, ["/api/a", "/status/404", "/x"]) == [200, 404, 200]
    # bytes: one request of known size
    raw = b"GET /api/one HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"
    st, _, body = request(port, raw)
    assert st == 200
    # requests with no route (400: no Host in HTTP/1.1)
    for _ in range(3):
        st, _, _ = request(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert st == 400
    # the counters are written when each exchange ends: already there
    s = samples(scrape(sport))
    assert value(s, "rproxy_requests_total", server=srv, rule="api", code="2xx") == 41
    assert value(s, "rproxy_requests_total", server=srv, rule="api") == 41
    assert value(s, "rproxy_requests_total", server=srv, rule="rest", code="2xx") == 40
    assert value(s, "rproxy_requests_total", server=srv, rule="rest", code="4xx") == 40
    assert value(s, "rproxy_requests_total", server=srv, rule="", vhost="", code="4xx") == 3
    assert value(s, "rproxy_downstream_responses_total", downstream="d1") == 121
    assert value(s, "rproxy_downstream_request_duration_seconds_count", downstream="d1") == 121
    assert value(s, "rproxy_downstream_first_byte_seconds_count", downstream="d1") == 121
    assert value(s, "rproxy_downstream_request_duration_seconds_bucket", downstream="d1", le="+Inf") == 121
    assert value(s, "rproxy_listener_accepted_total", server=srv) == accepted0 + 44
    assert value(s, "rproxy_workers") == WORKERS
    assert value(s, "rproxy_generation") == 1
    # per worker: the slots add up to the total
    served = [w["requests"] for w in status_json(sport)["workers"]]
    assert len(served) == WORKERS and sum(served) == 124
    # bytes in: the exact request head of /api/one is in there
    js = status_json(sport)
    api = next(r for r in js["rules"] if r["rule"] == "api")
    assert api["bytes_in"] == 40 * len(b"GET /api/a HTTP/1.1\r\nHost: a.example\r\n\r\n") + len(raw)
    assert api["bytes_out"] > 0


def test_http2_streams_are_counted(start_rproxy, downstream, port):
    """Three requests over one prior-knowledge h2c connection: three streams,
    one accepted connection."""
    sport = free_port()
    text = conf(port, downstream.port, sport).replace(f"    port = {port}\n", f"    port = {port}\n    http2 = true\n", 1)
    start_rproxy(text, port, check_quiet=False)
    wait_until(lambda: status_json(sport)["process"]["workers"] == WORKERS, what="workers ready")
    srv = f"127.0.0.1:{port}"
    accepted0 = value(samples(scrape(sport)), "rproxy_listener_accepted_total", server=srv)
    # (nghttp, not curl: curl 7.88 fails a second request on a reused h2c
    # prior-knowledge connection, against nginx too)
    urls = [f"http://127.0.0.1:{port}/api/h2-{i}" for i in range(3)]
    r = subprocess.run(["nghttp", "-n", "-s", "-t", "10", *urls], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.count(" 200 ") == 3, (r.stdout, r.stderr)
    s = samples(scrape(sport))
    assert value(s, "rproxy_listener_http2_streams_total", server=srv) == 3
    assert value(s, "rproxy_listener_accepted_total", server=srv) == accepted0 + 1
    assert value(s, "rproxy_requests_total", server=srv, rule="api", code="2xx") == 3
    assert next(x for x in status_json(sport)["servers"] if x["server"] == srv)["http2_streams"] == 3


def test_promtool_accepts_the_metrics(proxy, port, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian: prometheus) is not installed")
    keepalive_gets(port, ["/api/a", "/x"])
    text = scrape(proxy.status_port)
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    # every family has HELP and TYPE, and histograms have their +Inf bucket
    for fam in ("rproxy_requests_total", "rproxy_downstream_first_byte_seconds",
                "rproxy_downstream_connections", "rproxy_listener_tls_handshakes_total",
                "rproxy_reloads_total", "rproxy_workers"):
        assert f"# TYPE {fam} " in text


def test_gauges_connections_and_health(proxy, port):
    sport = proxy.status_port

    def pool():
        s = samples(scrape(sport))
        return (value(s, "rproxy_downstream_connections", downstream="d1", state="idle"),
                value(s, "rproxy_downstream_up", downstream="d1"),
                value(s, "rproxy_downstream_up", downstream="dead"),
                value(s, "rproxy_downstream_connect_failures_total", downstream="dead"))
    # 2 connections per worker to d1; the dead one is refused in each worker
    wait_until(lambda: pool() == (2 * WORKERS, 1, 0, pool()[3]) and pool()[3] >= WORKERS, what=f"gauges {pool()}")
    # an open client connection shows while it is open
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        c.recv(1000)
        wait_until(lambda: value(samples(scrape(sport)), "rproxy_listener_connections") == 1,
                   what="one open connection")
    wait_until(lambda: value(samples(scrape(sport)), "rproxy_listener_connections") == 0,
               what="no open connection")


def test_status_json_schema(proxy, port):
    keepalive_gets(port, ["/api/a"])
    js = status_json(proxy.status_port)
    assert js["version"] == 1
    assert set(js) >= {"version", "time", "process", "workers", "servers", "rules", "downstreams",
                       "certificates"}
    p = js["process"]
    assert set(p) >= {"pid", "generation", "workers", "workers_configured", "worker_restarts", "reloads",
                      "config_loaded_at", "started_at"}
    assert p["pid"] == proxy.pid and p["workers_configured"] == WORKERS
    for w in js["workers"]:
        assert set(w) >= {"index", "pid", "generation", "clients", "pending", "requests",
                          "heartbeat_age_seconds"}
    for r in js["rules"]:
        assert set(r) >= {"server", "vhost", "rule", "requests", "bytes_in", "bytes_out", "pending",
                          "pending_timeouts", "pending_rejected"}
        assert set(r["requests"]) == {"none", "1xx", "2xx", "3xx", "4xx", "5xx"}
    d1 = next(d for d in js["downstreams"] if d["downstream"] == "d1")
    assert set(d1) >= {"server", "downstream", "rules", "up", "health_check", "connections", "in_flight",
                       "pending", "rtt_seconds", "responses", "connect_failures", "replays", "ejections",
                       "pending_timeouts", "request_duration_seconds", "first_byte_seconds"}
    assert set(d1["connections"]) == {"idle", "busy", "connecting", "down"}
    assert ["*", "api"] in d1["rules"] and ["*", "rest"] in d1["rules"]
    h = d1["first_byte_seconds"]
    assert h["count"] >= 1 and h["buckets"][-1][1] <= h["count"]
    wait_until(lambda: next(d for d in status_json(proxy.status_port)["downstreams"]
                            if d["downstream"] == "d1")["rtt_seconds"] is not None, what="an rtt sample")


def test_other_paths_are_404(proxy):
    st, _, body = http_get(proxy.status_port, "/nope")
    assert st == 404
    st, _, _ = http_get(proxy.status_port, "/metrics/x")
    assert st == 404


# ---- totals across worker deaths and reloads ---------------------------------------

def total_requests(sport, rule=None) -> float:
    s = samples(scrape(sport))
    return value(s, "rproxy_requests_total", **({"rule": rule} if rule else {}))


def test_counters_survive_a_killed_worker_and_reloads(proxy, port):
    from support.master import wait_generation, wait_log

    sport = proxy.status_port
    for _ in range(10):
        keepalive_gets(port, ["/api/a", "/x"])
    assert total_requests(sport) == 20
    # a worker killed outright: its slot is folded into the retired totals
    victim = proxy.workers()[0]
    victim.send_signal(signal.SIGKILL)
    wait_log(proxy, "died (signal SIGKILL); starting a new one")
    wait_until(lambda: status_json(sport)["process"]["workers"] == WORKERS
               and victim.pid not in {w["pid"] for w in status_json(sport)["workers"]}, what="a respawn")
    assert total_requests(sport) == 20
    assert value(samples(scrape(sport)), "rproxy_worker_restarts_total") == 1
    for _ in range(5):
        keepalive_gets(port, ["/api/a"])
    assert total_requests(sport) == 25
    # a reload with the same configuration: a new generation, the same zone
    proxy.signal(signal.SIGHUP)
    wait_log(proxy, "reloaded ")
    wait_generation(proxy.pid, 2, WORKERS)
    wait_until(lambda: len(status_json(sport)["workers"]) == WORKERS, what="generation 1 gone")
    assert total_requests(sport) == 25
    for _ in range(5):
        keepalive_gets(port, ["/api/a"])
    assert total_requests(sport, "api") == 20
    s = samples(scrape(sport))
    assert value(s, "rproxy_generation") == 2
    assert value(s, "rproxy_reloads_total", result="ok") == 1


def test_a_reload_that_outgrows_the_zone_keeps_the_totals(start_rproxy, downstream, port):
    """Enough new rules that a new zone is needed: the old zone's totals are
    folded into it, by label, once its workers have drained."""
    from support.master import wait_generation, wait_log

    sport = free_port()
    p = start_rproxy(conf(port, downstream.port, sport), port, check_quiet=False)
    wait_until(lambda: status_json(sport)["process"]["workers"] == WORKERS, what="workers ready")
    for _ in range(7):
        keepalive_gets(port, ["/api/a", "/x"])
    many = "\n".join(f'rule extra{i} {{ uri-prefix = "/extra{i}/"  downstreams = {{ d1 }} }}' for i in range(40))
    with open(p.conf, "w") as f:
        f.write(conf(port, downstream.port, sport, extra_rule=many))
    p.signal(signal.SIGHUP)
    wait_log(p, "reloaded ")
    wait_generation(p.pid, 2, WORKERS)
    wait_until(lambda: len(status_json(sport)["workers"]) == WORKERS, what="generation 1 gone")
    assert total_requests(sport, "api") == 7
    assert total_requests(sport, "rest") == 7
    keepalive_gets(port, ["/extra39/x", "/api/b"])
    assert total_requests(sport, "extra39") == 1
    assert total_requests(sport, "api") == 8


# ---- the allow list ------------------------------------------------------------------

def test_allow_list_is_enforced(start_rproxy, downstream, port):
    sport = free_port()
    p = start_rproxy(conf(port, downstream.port, sport, allow="10.0.0.0/8"), port, check_quiet=False)
    for path in ("/metrics", "/status", "/nope"):
        st, _, body = http_get(sport, path)
        assert st == 403 and b"allow list" in body
    assert "127.0.0.1 is not allowed: 403" in p.read_log()
    # the proxy itself is unaffected
    assert keepalive_gets(port, ["/x"]) == [200]


def test_ipv6_loopback_allowed_by_default(start_rproxy, downstream, port):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    sport = free_port("::1")
    text = conf(port, downstream.port, sport).replace("status {\n    addr = 127.0.0.1", "status {\n    addr = ::1")
    text = text.replace("    allow = { 127.0.0.1, ::1 }\n", "")
    start_rproxy(text, port, check_quiet=False)
    st, _, body = http_get(sport, "/metrics", host="::1")
    assert st == 200 and b"rproxy_requests_total" in body


def test_the_status_port_must_be_free_at_start(start_rproxy, downstream, port):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        sport = busy.getsockname()[1]
        p = start_rproxy(conf(port, downstream.port, sport), None, check_quiet=False)
        assert p.proc.wait(15) == 1
        assert f"cannot listen on status 127.0.0.1:{sport}" in p.read_log()


# ---- shipped alert rules and dashboard -------------------------------------------------

BUILD = os.path.join(os.path.dirname(__file__), "..", "..", "build", "common")
METRIC = re.compile(r"\b(rproxy_[a-z0-9_]+)")


def test_alert_rules_pass_promtool_and_fire(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian: prometheus) is not installed")
    rules = os.path.abspath(os.path.join(BUILD, "rproxy-alerts.yml"))
    r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"SUCCESS: 8 rules found" in r.stdout
    # the rules do what they say, on synthetic series
    (tmp_path / "t.yml").write_text(f"""rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'rproxy_downstream_up{{server="s", downstream="d"}}'
        values: '1 1 0 0 0 0'
      - series: 'rproxy_certificate_expiry_timestamp_seconds{{name="a.example", where="s"}}'
        values: '{10 * 86400}x90'
      - series: 'rproxy_requests_total{{server="s", vhost="v", rule="r", code="2xx"}}'
        values: '0+60x10'
      - series: 'rproxy_requests_total{{server="s", vhost="v", rule="r", code="5xx"}}'
        values: '0+30x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: RproxyDownstreamDown
        exp_alerts:
          - exp_labels: {{severity: critical, server: s, downstream: d}}
            exp_annotations:
              summary: "rproxy downstream d on s is down"
              description: "No rproxy worker has been able to use downstream d for 1 minute."
      - eval_time: 1m
        alertname: RproxyDownstreamDown
        exp_alerts: []
      - eval_time: 70m
        alertname: RproxyCertificateExpiringVerySoon
        exp_alerts: []
      - eval_time: 10m
        alertname: RproxyHigh5xxRate
        exp_alerts:
          - exp_labels: {{severity: warning, server: s, vhost: v, rule: r}}
            exp_annotations:
              summary: "rproxy rule v/r: 33.33% 5xx"
              description: "More than 5% of the requests of rule r on s got a 5xx for 5 minutes."
""")
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "t.yml")], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_rules_and_dashboard_use_real_metric_names(proxy, port):
    keepalive_gets(port, ["/api/a"])
    # the rtt gauge appears with the first publish after a sample (once a second)
    wait_until(lambda: "rproxy_downstream_rtt_seconds" in {n for n, _ in samples(scrape(proxy.status_port))},
               what="an rtt gauge")
    exported = {n for n, _ in samples(scrape(proxy.status_port))}
    with open(os.path.join(BUILD, "rproxy-alerts.yml")) as f:
        used = set(METRIC.findall(f.read()))
    with open(os.path.join(BUILD, "rproxy-grafana.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for e in exprs:
        used |= set(METRIC.findall(e))
    # certificate expiry has no series without TLS; its name is checked in test_tls_metrics
    missing = used - exported - {"rproxy_certificate_expiry_timestamp_seconds"}
    assert not missing, missing
    assert len(dash["panels"]) >= 12 and dash["uid"] == "rproxy-overview"


def test_tls_handshakes_and_certificate_expiry(start_rproxy, downstream, port, test_pki):
    import ssl

    srv = test_pki["server"]
    sport = free_port()
    text = conf(port, downstream.port, sport, workers=1).replace(
        f"    port = {port}\n", f'    port = {port}\n    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}\n', 1)
    start_rproxy(text, port, check_quiet=False)
    ctx = ssl.create_default_context(cafile=test_pki["ca"].crt)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2       # a session to resume without waiting for tickets
    session = None
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass
                session = s.session
    with socket.create_connection(("127.0.0.1", port)) as raw:      # not TLS at all
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.recv(1000)
    s = samples(scrape(sport))
    label = f"127.0.0.1:{port}"
    assert value(s, "rproxy_listener_tls_handshakes_total", server=label, result="full") == 1
    assert value(s, "rproxy_listener_tls_handshakes_total", server=label, result="resumed") == 1
    assert value(s, "rproxy_listener_tls_handshakes_total", server=label, result="failed") == 1
    exp = value(s, "rproxy_certificate_expiry_timestamp_seconds", where=label)
    from cryptography import x509

    with open(srv.crt, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    assert exp == cert.not_valid_after_utc.timestamp()
    assert [(c["name"], c["where"]) for c in status_json(sport)["certificates"]] == [("localhost", label)]
