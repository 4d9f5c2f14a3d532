"""The summary `rproxy -t` prints: what will listen, route and run, what was
accepted without being active yet, and where rproxy reads a value differently
from RProxy."""
from __future__ import annotations

from .directives import format_duration
from .model import Config, Downstream, Headers, Rule, Server, Vhost

_DIALECTS = {"1": "RProxy 1.x form", "2": "RProxy 2.x form", "mixed": "RProxy 1.x and 2.x forms"}
_WORKER_SOURCE = {"workers": "from `workers`", "threads": "from the largest `threads`", "cpus": "one per CPU"}


def shown(s: str) -> str:
    """A name or pattern as printable text: control characters (a config
    string may hold any) would corrupt the terminal, so they are escaped."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in s)


def format_size(n: int) -> str:
    for unit, size in (("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}b"


def _headers_text(h: Headers | None) -> str:
    if h is None:
        return "adds no headers"
    added = []
    if h.x_forwarded_for:
        added.append(f"X-Forwarded-For ({h.x_forwarded_for_mode})")
    for flag, name in (("x_real_ip", "X-Real-IP"), ("x_forwarded_proto", "X-Forwarded-Proto"),
                       ("x_forwarded_host", "X-Forwarded-Host"), ("x_forwarded_port", "X-Forwarded-Port"),
                       ("forwarded", "Forwarded"), ("via", "Via")):
        if getattr(h, flag):
            added.append(name)
    ssl = [flag[6:] for flag in ("x_ssl_subject", "x_ssl_issuer", "x_ssl_notbefore", "x_ssl_notafter",
                                 "x_ssl_serial", "x_ssl_sha1", "x_ssl_cipher", "x_ssl_certificate")
           if getattr(h, flag)]
    if ssl or h.x509_extensions:
        added.append("X-SSL-{" + ",".join(ssl) + "}" + "".join(f", {e.name}" for e in h.x509_extensions)
                     + " (TLS listeners)")
    return "adds " + ", ".join(added) if added else "adds no headers"


def _server_lines(srv: Server, mixed: bool) -> list[str]:
    tls = " TLS" if srv.ssl is not None and srv.ssl.enabled else ""
    form = f", {_DIALECTS[srv.dialect]}" if mixed else ""
    out = [f"server {srv.label}{tls} (backlog {srv.backlog}{form})"]
    out.append(f"  client timeouts: read {format_duration(srv.read_timeout)}, write "
               f"{format_duration(srv.write_timeout)}, keepalive {format_duration(srv.keepalive_timeout)}, "
               f"pending {format_duration(srv.pending_timeout)}; max-pending "
               f"{srv.max_pending or 'unlimited'}")
    body = format_size(srv.client_max_body_size) if srv.client_max_body_size else "unlimited"
    out.append(f"  limits: request line {format_size(srv.max_request_line)}, head "
               f"{format_size(srv.max_header_size)}, {srv.max_headers} headers, body {body}, "
               f"buffer {format_size(srv.buffer_size)}")
    if srv.http2 if srv.http2 is not None else bool(tls):
        out.append(f"  HTTP/2: {'ALPN h2' if tls else 'h2c prior knowledge'}; "
                   f"{srv.http2_max_concurrent_streams} streams, {srv.http2_max_resets_per_second} resets/s, "
                   f"{srv.http2_max_control_frames_per_second} control frames/s per connection, "
                   f"{srv.http2_max_continuations} CONTINUATION frames per header block")
    if srv.underscores_in_headers != "drop":
        out.append(f"  request header names with '_': {srv.underscores_in_headers}")
    for ds in srv.downstreams:
        out.append("  " + _downstream_text(ds))
    for vh in srv.vhosts:
        out.append("  " + _vhost_text(vh))
        for rule in vh.rules:
            out.append("    " + _rule_text(rule))
    return out


def _downstream_text(ds: Downstream) -> str:
    where = ds.addr if ds.addr.startswith("unix:") else (
        f"[{ds.addr}]:{ds.port}" if ":" in ds.addr else f"{ds.addr}:{ds.port}")
    state = "" if ds.enabled else " [disabled]"
    weight = f", weight {ds.weight}" if ds.weight != 1 else ""
    if ds.pipeline > 1:
        weight += f", up to {ds.pipeline} pipelined requests each"
    tls = ""
    if ds.tls:
        if ds.ssl is not None and not ds.ssl.verify_peer:
            tls = " over TLS (certificate not verified)"
        else:
            tls = f" over TLS (certificate verified for {shown(ds.tls_name or ds.addr)})"
    if ds.proxy_protocol != "off":
        pools = (f"PROXY protocol {ds.proxy_protocol}: private connections, one client each, opened on "
                 f"demand, up to {ds.max_connections or 4 * ds.connections} per worker{weight}, ")
    else:
        pools = (f"{ds.connections} connection(s) per worker "
                 f"(up to {ds.max_connections or 4 * ds.connections} while requests wait){weight}, ")
    return (f"downstream {shown(ds.name)} -> {where}{tls}: {pools}"
            f"connect {format_duration(ds.connect_timeout)}, read {format_duration(ds.read_timeout)}, "
            f"write {format_duration(ds.write_timeout)}, retry {format_duration(ds.retry)}{state}")


def _vhost_text(vh: Vhost) -> str:
    names = shown(vh.name) + (f" (aliases {shown(', '.join(vh.aliases))})" if vh.aliases else "")
    default = ", default" if vh.default else ""
    if vh.ssl is not None and vh.ssl.enabled:
        default += ", own TLS certificate"
    if vh.https_redirect:
        default += f", plain HTTP redirected to https (port {vh.https_redirect_port})"
    return f"vhost {names}{default}: {_headers_text(vh.headers)}"


def _rule_text(rule: Rule) -> str:
    target = shown(", ".join(rule.downstreams)) or "(no downstreams: 404)"
    rewrite = f", path rewritten to {rule.rewrite_dst!r}" if rule.rewrite_dst is not None else ""
    headers = f"; {_headers_text(rule.headers)}" if rule.headers is not None else ""
    comp = ""
    if rule.compress:
        comp = (f"; compresses {', '.join(rule.compress_types)} from {rule.compress_min_size} bytes "
                f"with {', '.join(rule.compress)}")
    edge = _edge_text(rule)
    if rule.redirect is not None:
        return f"rule {shown(rule.name)}: {rule.match} {rule.pattern!r} -> redirect {rule.status} {rule.redirect!r}{edge}"
    if rule.root is not None:
        fallback = f", misses to {shown(', '.join(rule.downstreams))}" if rule.downstreams else ""
        target = f"files in {rule.root}{' (autoindex)' if rule.autoindex else ''}{fallback}"
    return (f"rule {shown(rule.name)}: {rule.match} {rule.pattern!r} -> {target} [{rule.lb_method}]{rewrite}"
            f"{headers}{comp}{edge}")


def _edge_text(rule: Rule) -> str:
    """Issue 20's actions, as -t states them."""
    out = []
    if rule.sticky != "off":
        out.append(f"sticky {rule.sticky}" + (f" ({rule.sticky_cookie})" if rule.sticky == "cookie" else ""))
    for kind, what in (("request_ops", "request"), ("response_ops", "response")):
        ops = [o for o in getattr(rule, kind) if o[0] != "default"]
        if ops:
            out.append(f"{what} headers: " + ", ".join(f"{o[0]} {o[1]}" for o in ops))
    sec = [o[1] + (" (TLS only)" if o[3] else "") for o in rule.response_ops if o[0] == "default"]
    if sec:
        out.append("security headers: " + ", ".join(sec))
    return "; " + "; ".join(out) if out else ""


def _inactive_lines(cfg: Config) -> list[str]:
    grouped: dict[str, list] = {}
    for n in cfg.inactive:
        grouped.setdefault(n.message, []).append(n.pos)
    out = []
    for what, positions in grouped.items():
        shown = ", ".join(str(p) for p in positions[:3])
        more = f" and {len(positions) - 3} more" if len(positions) > 3 else ""
        out.append(f"  {what}: {shown}{more}")
    return out


def _status_lines(cfg: Config, workers: int) -> list[str]:
    out = []
    if cfg.status is not None:
        nrules = sum(len(vh.rules) for srv in cfg.servers for vh in srv.vhosts) + len(cfg.servers)
        nds = sum(len(srv.downstreams) for srv in cfg.servers)
        cap = lambda n: max(16, 2 * n)      # noqa: E731 (rproxy.metrics.zone.Zone's capacity rule)
        out.append(f"status {cfg.status.label}: GET /metrics (Prometheus), GET /status (JSON); allowed: "
                   f"{', '.join(cfg.status.allow)}; everyone else gets 403")
        out.append(f"  metrics zone: {max(8, 4 * workers)} worker slots; records for {len(cfg.servers)} "
                   f"listener(s), {nrules} rule(s) (with one per listener for unrouted requests), {nds} "
                   f"downstream(s); room for {cap(nrules)} rules and {cap(nds)} downstreams before a reload "
                   "needs a new zone")
    if cfg.reload_on_change:
        out.append("reload-on-change: the config file, its includes and certificate files are watched "
                   "(inotify); a change reloads as SIGHUP does")
    return out


def summary(cfg: Config) -> str:
    n, why = cfg.worker_count()
    lines = [f"configuration {cfg.path} ({_DIALECTS[cfg.dialect]})",
             f"workers: {n} ({_WORKER_SOURCE[why]})"]
    if not cfg.servers:
        lines.append("no server blocks: nothing will listen")
    for srv in cfg.servers:
        lines += _server_lines(srv, cfg.dialect == "mixed")
    lines += _status_lines(cfg, n)
    if cfg.inactive:
        lines.append("accepted, not yet active (checked, but this version does not act on them):")
        lines += _inactive_lines(cfg)
    if cfg.notes:
        lines.append("notes:")
        lines += [f"  {note}" for note in cfg.notes]
    return "\n".join(lines) + "\n"
