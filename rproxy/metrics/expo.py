"""What /status (JSON) and /metrics (Prometheus text 0.0.4) say.

`snapshot()` reads the zones into one JSON-able dict; `prometheus()`
renders the same dict as Prometheus text, so both always agree.  Labels are
bounded: listener, vhost, rule, downstream, status class, certificate name
-- never a path or a client address.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from .zone import KINDS, labels_of, layout

CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
SCHEMA_VERSION = 1


def _classes(rec: list, at: int) -> dict:
    return {c: rec[at + i] for i, c in enumerate(CLASSES)}


def _histogram(rec: list, at: int) -> dict:
    bounds = layout()["histogram"]["bounds_us"]
    nb = len(bounds)
    cum, buckets = 0, []
    for i, b in enumerate(bounds):
        cum += rec[at + i]
        buckets.append([b / 1e6, cum])
    cum += rec[at + nb]
    return {"buckets": buckets, "count": cum, "sum": rec[at + nb + 1] / 1e6}


def _gather(zones) -> tuple:
    """Counters and gauges summed by label over every zone; per-slot
    downstream gauges (for averages); workers' own gauges."""
    counters = {k: {} for k in KINDS}
    gauges = {k: {} for k in KINDS}
    rtts: dict = {}
    workers = []
    lay = layout()
    wg = lay["worker_gauges"]
    dg = lay["ds_gauges"]
    for z in zones:
        total = z.counters()
        for k in KINDS:
            for lab in z.catalog[k]:
                rec = z.record(total, k, lab)
                acc = counters[k].get(lab)
                counters[k][lab] = rec if acc is None else [a + b for a, b in zip(acc, rec)]
        for slot in sorted(z.used):
            w = z.worker_gauges(slot)
            if w[wg["pid"]]:
                workers.append({"index": w[wg["index"]], "pid": w[wg["pid"]],
                                "generation": w[wg["generation"]], "clients": w[wg["clients"]],
                                "pending": w[wg["pending"]], "heartbeat_ms": w[wg["heartbeat_ms"]],
                                "requests": z.slot_requests(slot)})
            area = z.slot_gauges(slot)
            for k in KINDS:
                for lab in z.catalog[k]:
                    rec = z.record(area, k, lab, gauges=True)
                    acc = gauges[k].get(lab)
                    gauges[k][lab] = rec if acc is None else [a + b for a, b in zip(acc, rec)]
                    if k == "ds" and rec[dg["rtt_valid"]]:
                        rtts.setdefault(lab, []).append(rec[dg["rtt_us"]])
    return counters, gauges, workers, rtts


def snapshot(cfg, zones, process: dict, certificates: list) -> dict:
    """The state of the proxy serving `cfg`, as /status returns it."""
    lay = layout()
    sc, sg = lay["server_counters"], lay["server_gauges"]
    rc, rg = lay["rule_counters"], lay["rule_gauges"]
    dc, dg = lay["ds_counters"], lay["ds_gauges"]
    counters, gauges, workers, rtts = _gather(zones)
    labels = labels_of(cfg)
    zero = {k: [0] * (lay[n]["words"]) for k, n in
            (("server", "server_counters"), ("rule", "rule_counters"), ("ds", "ds_counters"))}
    gzero = {k: [0] * (lay[n]["words"]) for k, n in
             (("server", "server_gauges"), ("rule", "rule_gauges"), ("ds", "ds_gauges"))}
    now_ms = time.monotonic() * 1000

    servers = []
    for (label,) in labels["server"]:
        c = counters["server"].get((label,), zero["server"])
        g = gauges["server"].get((label,), gzero["server"])
        servers.append({"server": label, "accepted": c[sc["accepted"]], "open": g[sg["open"]],
                        "tls_handshakes": {"full": c[sc["tls_full"]], "resumed": c[sc["tls_resumed"]],
                                           "failed": c[sc["tls_failed"]]},
                        "http2_streams": c[sc["h2_streams"]]})
    rules = []
    ds_rules: dict = {}
    cached = {(srv.label, vh.name, rule.name): rule.cache for srv in cfg.servers for vh in srv.vhosts
              for rule in vh.rules if getattr(rule, "cache", None)}
    for srv in cfg.servers:
        for vh in srv.vhosts:
            for rule in vh.rules:
                for name in rule.downstreams:
                    ds_rules.setdefault((srv.label, name), []).append([vh.name, rule.name])
    for lab in labels["rule"]:
        c = counters["rule"].get(lab, zero["rule"])
        g = gauges["rule"].get(lab, gzero["rule"])
        rules.append({"server": lab[0], "vhost": lab[1], "rule": lab[2],
                      "requests": _classes(c, rc["class"]), "bytes_in": c[rc["bytes_in"]],
                      "bytes_out": c[rc["bytes_out"]], "pending": g[rg["pending"]],
                      "pending_timeouts": c[rc["pending_timeouts"]],
                      "pending_rejected": c[rc["pending_rejected"]]})
        if lab in cached:           # what the response cache did (X-Cache), rules with `cache` only
            rules[-1]["cache"] = {"name": cached[lab], "results": {
                n: c[rc["cache"] + i] for i, n in enumerate(rc["cache_names"]) if n}}
    enabled = {(srv.label, ds.name): ds for srv in cfg.servers for ds in srv.downstreams}
    downstreams = []
    for lab in labels["ds"]:
        c = counters["ds"].get(lab, zero["ds"])
        g = gauges["ds"].get(lab, gzero["ds"])
        ds = enabled.get(lab)
        rtt = rtts.get(lab)
        downstreams.append({
            "server": lab[0], "downstream": lab[1], "address": f"{ds.addr}:{ds.port}" if ds else "",
            "enabled": bool(ds and ds.enabled), "rules": ds_rules.get(lab, []),
            "up": g[dg["usable"]] > 0,
            "health_check": None if not (ds and ds.health_check) else ("down" if g[dg["hc_down"]] else "up"),
            "ejected_in_workers": g[dg["ejected"]],
            "connections": {s: g[dg[s]] for s in ("idle", "busy", "connecting", "down")},
            "in_flight": g[dg["in_flight"]], "pending": g[dg["pending"]],
            "rtt_seconds": (sum(rtt) / len(rtt) / 1e6) if rtt else None,
            "responses": _classes(c, dc["class"]),
            "connect_failures": c[dc["connect_failures"]],
            "connection_failures": c[dc["connection_failures"]],
            "replays": c[dc["replays"]], "ejections": c[dc["ejections"]],
            "pending_timeouts": c[dc["pending_timeouts"]],
            "request_duration_seconds": _histogram(c, dc["duration"]),
            "first_byte_seconds": _histogram(c, dc["ttfb"]),
        })
    for w in workers:
        w["heartbeat_age_seconds"] = round(max(0.0, now_ms - w.pop("heartbeat_ms")) / 1000, 3)
    workers.sort(key=lambda w: (w["generation"], w["index"]))
    return {"version": SCHEMA_VERSION, "time": time.time(), "process": process, "workers": workers,
            "servers": servers, "rules": rules, "downstreams": downstreams, "certificates": certificates,
            "rate_limits": _rate_limits(cfg), "caches": _caches(cfg)}


def _caches(cfg) -> list:
    """Each cache's keys zone (the shared index): keys, bytes, slots, loaded,
    skipped (lookups answered without the file system), full_evictions."""
    from ..cache_manager import index_stats

    return index_stats(cfg)


def _rate_limits(cfg) -> list:
    """Counts of each configured rate limit, from the master's rate limit zone (rproxy/limits.py)."""
    from .. import limits

    z = limits._zone
    out = []
    for lim in cfg.rate_limits:
        c = z.counters(lim.name) if z is not None else None
        out.append({"limit": lim.name, "store": lim.store, "mode": lim.mode,
                    **(c or {k: 0 for k in ("admitted", "limited", "delayed", "dry_run_limited", "evictions")})})
    return out


# ---- Prometheus text format 0.0.4 ----------------------------------------------

def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw) -> str:
    if not kw:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kw.items()) + "}"


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)


class _Out:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples) -> None:
        samples = list(samples)
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def histogram(self, name: str, help_: str, items) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, h in items:
            for le, cum in h["buckets"]:
                self.lines.append(f"{name}_bucket{_labels(**labels, le=repr(le))} {cum}")
            self.lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {h['count']}")
            self.lines.append(f"{name}_sum{_labels(**labels)} {_num(float(h['sum']))}")
            self.lines.append(f"{name}_count{_labels(**labels)} {h['count']}")


def prometheus(s: dict) -> str:
    o = _Out()
    p = s["process"]
    o.family("rproxy_requests_total", "counter", "Requests (exchanges) ended, by rule and status class "
             "(none: no status was sent)",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"], code=c), n)
              for r in s["rules"] for c, n in r["requests"].items()))
    o.family("rproxy_received_bytes_total", "counter", "Request bytes received from clients (head and body)",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"]), r["bytes_in"]) for r in s["rules"]))
    o.family("rproxy_sent_bytes_total", "counter", "Response bytes sent to clients",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"]), r["bytes_out"]) for r in s["rules"]))
    o.family("rproxy_rule_pending", "gauge", "Requests of the rule waiting for a downstream connection",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"]), r["pending"]) for r in s["rules"]))
    o.family("rproxy_rule_pending_rejected_total", "counter", "Requests refused with 503 because max-pending "
             "was reached", ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"]), r["pending_rejected"])
                             for r in s["rules"]))
    o.family("rproxy_rule_pending_timeouts_total", "counter", "Requests answered 503 after pending-timeout",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"]), r["pending_timeouts"])
              for r in s["rules"]))
    o.family("rproxy_cache_requests_total", "counter", "Requests of a rule with a response cache, by what "
             "the cache did (X-Cache: HIT, MISS, EXPIRED, REVALIDATED, STALE, UPDATING, BYPASS)",
             ((dict(server=r["server"], vhost=r["vhost"], rule=r["rule"], cache=r["cache"]["name"], result=k), n)
              for r in s["rules"] if "cache" in r for k, n in r["cache"]["results"].items()))
    d = s["downstreams"]

    def dl(x, **kw):
        return dict(server=x["server"], downstream=x["downstream"], **kw)

    o.family("rproxy_downstream_responses_total", "counter", "Exchanges ended after using the downstream, by "
             "status class sent to the client", ((dl(x, code=c), n) for x in d for c, n in x["responses"].items()))
    o.histogram("rproxy_downstream_request_duration_seconds", "Request duration (first request byte to "
                "response complete) of the exchanges the downstream served",
                ((dl(x), x["request_duration_seconds"]) for x in d))
    o.histogram("rproxy_downstream_first_byte_seconds", "Time from sending the request to the downstream's "
                "response head", ((dl(x), x["first_byte_seconds"]) for x in d))
    o.family("rproxy_downstream_connections", "gauge", "Pool connections by state, summed over workers",
             ((dl(x, state=st), n) for x in d for st, n in x["connections"].items()))
    o.family("rproxy_downstream_in_flight", "gauge", "Exchanges in flight on the downstream",
             ((dl(x), x["in_flight"]) for x in d))
    o.family("rproxy_downstream_pending", "gauge", "Requests waiting for a connection that this downstream "
             "could serve (a request waits for any downstream of its rule)", ((dl(x), x["pending"]) for x in d))
    o.family("rproxy_downstream_pending_timeouts_total", "counter", "Requests that gave up waiting for a "
             "connection this downstream could have served", ((dl(x), x["pending_timeouts"]) for x in d))
    o.family("rproxy_downstream_connect_failures_total", "counter", "Failed connects (refused, timed out)",
             ((dl(x), x["connect_failures"]) for x in d))
    o.family("rproxy_downstream_connection_failures_total", "counter", "Established connections that broke",
             ((dl(x), x["connection_failures"]) for x in d))
    o.family("rproxy_downstream_replays_total", "counter", "Requests sent again on another connection after "
             "this downstream's failed", ((dl(x), x["replays"]) for x in d))
    o.family("rproxy_downstream_ejections_total", "counter", "Times the downstream was ejected after max-fails",
             ((dl(x), x["ejections"]) for x in d))
    o.family("rproxy_downstream_up", "gauge", "1 when at least one worker can use the downstream (connected, "
             "healthy, not ejected); enabled downstreams only", ((dl(x), x["up"]) for x in d if x["enabled"]))
    o.family("rproxy_downstream_health_check_up", "gauge", "Active health check verdict (downstreams with a "
             "health-check only)", ((dl(x), x["health_check"] == "up") for x in d if x["health_check"]))
    o.family("rproxy_downstream_ejected_workers", "gauge", "Workers that currently eject the downstream",
             ((dl(x), x["ejected_in_workers"]) for x in d))
    o.family("rproxy_downstream_rtt_seconds", "gauge", "EWMA of time to first response byte, averaged over "
             "workers", ((dl(x), x["rtt_seconds"]) for x in d if x["rtt_seconds"] is not None))
    rl = s.get("rate_limits", [])
    o.family("rproxy_rate_limit_requests_total", "counter", "Requests checked by each rate limit, by outcome "
             "(limited: refused with 429, or 503 by a store = redis limit failing closed; dry_run_limited: "
             "would have been refused)", ((dict(limit=x["limit"], outcome=k), x[k]) for x in rl
                                          for k in ("admitted", "delayed", "limited", "dry_run_limited")))
    o.family("rproxy_rate_limit_evictions_total", "counter", "Live states taken over because the rate limit "
             "zone was full where the key landed", ((dict(limit=x["limit"]), x["evictions"]) for x in rl))
    sv = s["servers"]
    o.family("rproxy_listener_connections", "gauge", "Open client connections",
             ((dict(server=x["server"]), x["open"]) for x in sv))
    o.family("rproxy_listener_accepted_total", "counter", "Client connections accepted",
             ((dict(server=x["server"]), x["accepted"]) for x in sv))
    o.family("rproxy_listener_tls_handshakes_total", "counter", "Client TLS handshakes by result",
             ((dict(server=x["server"], result=r), n) for x in sv for r, n in x["tls_handshakes"].items()))
    o.family("rproxy_listener_http2_streams_total", "counter", "HTTP/2 streams clients opened",
             ((dict(server=x["server"]), x["http2_streams"]) for x in sv))
    o.family("rproxy_workers", "gauge", "Worker processes of the serving generation that are running",
             [({}, p["workers"])])
    o.family("rproxy_workers_configured", "gauge", "Worker processes the configuration asks for",
             [({}, p["workers_configured"])])
    o.family("rproxy_worker_restarts_total", "counter", "Workers that died and were replaced",
             [({}, p["worker_restarts"])])
    cs = s.get("caches", [])
    o.family("rproxy_cache_index_keys", "gauge", "Entries in the cache's shared index (keys-zone)",
             ((dict(cache=c["name"]), c["keys"]) for c in cs))
    o.family("rproxy_cache_index_bytes", "gauge", "Bytes of the entries the cache's index holds (header and body)",
             ((dict(cache=c["name"]), c["bytes"]) for c in cs))
    o.family("rproxy_cache_index_capacity", "gauge", "Keys the cache's index can hold (keys-zone / 32 bytes)",
             ((dict(cache=c["name"]), c["slots"]) for c in cs))
    o.family("rproxy_cache_index_loaded", "gauge", "1 once the loader has read the cache's entry files into the "
             "index (until then a lookup the index cannot answer asks the file system)",
             ((dict(cache=c["name"]), int(c["loaded"])) for c in cs))
    o.family("rproxy_cache_index_misses_total", "counter", "Lookups the index answered as a miss without opening "
             "a file", ((dict(cache=c["name"]), c["skipped"]) for c in cs))
    o.family("rproxy_cache_index_full_evictions_total", "counter", "Entries evicted because the index had no "
             "free slot for a new key (the least recently used of its probe window)",
             ((dict(cache=c["name"]), c["full_evictions"]) for c in cs))
    o.family("rproxy_generation", "gauge", "Configuration generation being served", [({}, p["generation"])])
    o.family("rproxy_reloads_total", "counter", "Reloads by result",
             [({"result": "ok"}, p["reloads"]["ok"]), ({"result": "failed"}, p["reloads"]["failed"])])
    o.family("rproxy_config_load_timestamp_seconds", "gauge", "When the serving configuration was loaded",
             [({}, float(p["config_loaded_at"]))])
    o.family("rproxy_start_time_seconds", "gauge", "When the master started", [({}, float(p["started_at"]))])
    o.family("rproxy_certificate_expiry_timestamp_seconds", "gauge", "notAfter of each configured certificate",
             ((dict(name=c["name"], where=c["where"]), float(c["not_after"])) for c in s["certificates"]))
    return "\n".join(o.lines) + "\n"


def certificates(cfg) -> list:
    """notAfter of every certificate file of `cfg` (listeners, vhosts,
    downstream client certificates), labelled by the certificate's name."""
    out = []
    seen = set()

    def add(ssl, where):
        if ssl is None or not ssl.cert or (ssl.cert, where) in seen:
            return
        seen.add((ssl.cert, where))
        info = cert_info(ssl.cert)
        if info is not None:
            out.append({"name": info[0], "where": where, "file": ssl.cert, "not_after": info[1]})

    from ..acme.store import effective_ssl      # managed certificates: their files in state-dir

    for si, srv in enumerate(cfg.servers):
        if srv.ssl and srv.ssl.enabled:
            add(effective_ssl(cfg, srv.ssl, si, -1), srv.label)
        for vi, vh in enumerate(srv.vhosts):
            if vh.ssl and vh.ssl.enabled:
                add(effective_ssl(cfg, vh.ssl, si, vi), f"{srv.label} {vh.name}")
        for ds in srv.downstreams:
            if ds.tls and ds.ssl and ds.ssl.cert:
                add(ds.ssl, f"{srv.label} downstream {ds.name}")
    return out


def cert_info(path: str) -> Optional[tuple[str, float]]:
    from cryptography import x509      # here: only a configuration with TLS pays for it
    from cryptography.x509.oid import NameOID

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            pass
    try:
        not_after = cert.not_valid_after_utc.timestamp()
    except AttributeError:
        import calendar

        not_after = float(calendar.timegm(cert.not_valid_after.timetuple()))
    return (str(names[0]) if names else os.path.basename(path)), not_after
