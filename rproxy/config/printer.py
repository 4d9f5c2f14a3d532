"""The model printed back as configuration text that loads to the same model.

Every setting is written out explicitly (defaults included), so the text does
not depend on defaults staying what they are.  A server normalised from the
1.x form is printed in the 1.x form (untitled downstreams, `rewrite` blocks,
server-level `lb-method` and `headers`), because a 1.x rewrite has no 2.x
spelling; every other server is printed in the 2.x form.
"""
from __future__ import annotations

from decimal import Decimal

from .loader import untitled_downstream_name
from .model import (SSL, Config, Downstream, Headers, HealthCheck, Logging, LogStream, Rule, Server,
                    Vhost)


def quote(s: str) -> str:
    """A double-quoted string that decodes back to exactly `s` (no ${VAR})."""
    out = ['"']
    for ch in s:
        if ch in '\\"$':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def duration(x: float) -> str:
    """Seconds with a unit, digits exact: parsing it gives back the same float."""
    text = format(Decimal(repr(float(x))), "f")
    return text + "s"


def _bool(b: bool) -> str:
    return "true" if b else "false"


def _list(items) -> str:
    return "{ " + ", ".join(quote(i) for i in items) + " }" if items else "{}"


class _Out:
    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def set(self, name: str, value: str) -> None:
        self.line(f"{name} = {value}")

    def open(self, head: str) -> None:
        self.line(head + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.line("}")


def print_config(cfg: Config) -> str:
    o = _Out()
    o.line("# written by rproxy.config.printer")
    if cfg.workers is not None:
        o.set("workers", str(cfg.workers))
    o.set("daemonize", _bool(cfg.daemonize))
    o.set("rootdir", quote(cfg.rootdir))
    if cfg.user is not None:
        o.set("user", quote(cfg.user))
    if cfg.group is not None:
        o.set("group", quote(cfg.group))
    o.set("max-nofile", str(cfg.max_nofile))
    o.set("memtrim-sz", str(cfg.memtrim_sz))
    if cfg.pidfile is not None:
        o.set("pidfile", quote(cfg.pidfile))
    o.set("shutdown-timeout", duration(cfg.shutdown_timeout))
    if cfg.temp_dir is not None:
        o.set("temp-dir", quote(cfg.temp_dir))
    if cfg.state_dir != "/var/lib/rproxy":
        o.set("state-dir", quote(cfg.state_dir))
    o.set("error-log", quote(cfg.error_log))
    o.set("log-level", cfg.log_level)
    o.set("access-log-buffer", str(cfg.access_log_buffer))
    o.set("access-log-flush", duration(cfg.access_log_flush))
    for c in cfg.caches:
        o.open(f"cache {quote(c.name)}")
        o.set("path", quote(c.path))
        o.set("max-size", str(c.max_size))
        o.set("keys-zone", str(c.keys_zone))
        o.set("inactive", duration(c.inactive))
        o.close()
    for srv in cfg.servers:
        _server(o, srv)
    return "\n".join(o.lines) + "\n"


def _server(o: _Out, s: Server) -> None:
    o.open("server")
    o.set("addr", quote(s.addr))
    o.set("port", str(s.port))
    o.set("backlog", str(s.backlog))
    if s.threads is not None:
        o.set("threads", str(s.threads))
    for name in ("read-timeout", "write-timeout", "keepalive-timeout", "pending-timeout"):
        o.set(name, duration(getattr(s, name.replace("-", "_"))))
    for name in ("max-pending", "high-watermark", "max-request-line", "max-header-size", "max-headers",
                 "client-max-body-size", "buffer-size", "client-body-buffer-size", "response-buffer-size",
                 "max-temp-file-size", "underscores-in-headers"):
        o.set(name, str(getattr(s, name.replace("-", "_"))))
    for name in ("client-body-timeout", "send-timeout"):
        if getattr(s, name.replace("-", "_")) is not None:
            o.set(name, duration(getattr(s, name.replace("-", "_"))))
    for name in ("disable-server-nagle", "disable-client-nagle", "disable-downstream-nagle",
                 "request-buffering", "response-buffering"):
        o.set(name, _bool(getattr(s, name.replace("-", "_"))))
    if s.ssl is not None:
        _ssl(o, s.ssl)
    if s.logging is not None:
        _logging(o, s.logging)
    if s.dialect == "1":
        _legacy_body(o, s)
    else:
        for ds in s.downstreams:
            _downstream(o, ds, quote(ds.name))
        for vh in s.vhosts:
            _vhost(o, vh)
    o.close()


def _legacy_body(o: _Out, s: Server) -> None:
    if len(s.vhosts) != 1:
        raise ValueError("a 1.x-form server has exactly one (catch-all) vhost")
    vh = s.vhosts[0]
    rules = vh.rules
    if rules:
        o.set("lb-method", rules[0].lb_method)
    if vh.headers is not None:
        _headers(o, vh.headers)
    for i, ds in enumerate(s.downstreams):
        auto = untitled_downstream_name(ds.addr, ds.port, i)
        _downstream(o, ds, None if ds.name == auto else quote(ds.name))
    if len(rules) == 1 and rules[0].name == "default" and rules[0].rewrite_dst is None:
        return
    for r in rules:
        if r.match != "regex" or r.rewrite_dst is None:
            raise ValueError(f"rule {r.name!r} of a 1.x-form server is not a rewrite")
        o.open("rewrite")
        o.set("src", quote(r.pattern))
        o.set("dst", quote(r.rewrite_dst))
        o.close()


def _downstream(o: _Out, d: Downstream, title) -> None:
    o.open("downstream" + (f" {title}" if title else ""))
    o.set("addr", quote(d.addr))
    if not d.addr.startswith("unix:"):
        o.set("port", str(d.port))
    o.set("enabled", _bool(d.enabled))
    for name in ("connections", "high-watermark", "max-requests", "weight", "max-fails", "pipeline"):
        o.set(name, str(getattr(d, name.replace("-", "_"))))
    if d.max_connections is not None:
        o.set("max-connections", str(d.max_connections))
    for name in ("read-timeout", "write-timeout", "connect-timeout", "retry", "idle-timeout", "max-age",
                 "fail-timeout"):
        o.set(name, duration(getattr(d, name.replace("-", "_"))))
    o.set("tls", _bool(d.tls))
    if d.proxy_protocol != "off":
        o.set("proxy-protocol", d.proxy_protocol)
    if d.tls_name is not None:
        o.set("tls-name", quote(d.tls_name))
    if d.health_check is not None:
        _health_check(o, d.health_check)
    if d.ssl is not None:
        _ssl(o, d.ssl)
    o.close()


def _health_check(o: _Out, h: HealthCheck) -> None:
    o.open("health-check")
    o.set("path", quote(h.path))
    o.set("interval", duration(h.interval))
    o.set("timeout", duration(h.timeout))
    o.set("rise", str(h.rise))
    o.set("fall", str(h.fall))
    o.close()


def _vhost(o: _Out, v: Vhost) -> None:
    o.open(f"vhost {quote(v.name)}")
    o.set("aliases", _list(v.aliases))
    o.set("strip-headers", _list(v.strip_headers))
    o.set("default", _bool(v.default))
    o.set("https-redirect", _bool(v.https_redirect))
    o.set("https-redirect-port", str(v.https_redirect_port))
    if v.ssl is not None:
        _ssl(o, v.ssl)
    if v.headers is not None:
        _headers(o, v.headers)
    if v.logging is not None:
        _logging(o, v.logging)
    for r in v.rules:
        _rule(o, r)
    o.close()


_MATCH_DIRECTIVE = {"exact": "uri-match", "glob": "uri-gmatch", "regex": "uri-rmatch", "prefix": "uri-prefix"}


def _rule(o: _Out, r: Rule) -> None:
    if r.rewrite_dst is not None:
        raise ValueError(f"rule {r.name!r}: a 1.x rewrite exists only in a 1.x-form server")
    o.open(f"rule {quote(r.name)}")
    o.set(_MATCH_DIRECTIVE[r.match], quote(r.pattern))
    o.set("downstreams", _list(r.downstreams))
    o.set("lb-method", r.lb_method)
    if r.replace_path is not None:
        o.set("replace-path", quote(r.replace_path))
    o.set("passthrough", _bool(r.passthrough))
    o.set("allow-redirect", _bool(r.allow_redirect))
    o.set("redirect-filter", _list(r.redirect_filter))
    if r.request_buffering is not None:
        o.set("request-buffering", _bool(r.request_buffering))
    if r.response_buffering is not None:
        o.set("response-buffering", _bool(r.response_buffering))
    if r.upstream_read_timeout is not None:
        o.set("upstream-read-timeout", duration(r.upstream_read_timeout))
    if r.upstream_write_timeout is not None:
        o.set("upstream-write-timeout", duration(r.upstream_write_timeout))
    o.set("compress", _list(r.compress))
    o.set("compress-types", _list(r.compress_types))
    o.set("compress-min-size", str(r.compress_min_size))
    if r.cache is not None:
        o.set("cache", quote(r.cache))
    if r.headers is not None:
        _headers(o, r.headers)
    o.close()


_HEADER_FLAGS = ("x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
                 "forwarded", "via", "x-ssl-subject", "x-ssl-issuer", "x-ssl-notbefore", "x-ssl-notafter",
                 "x-ssl-serial", "x-ssl-sha1", "x-ssl-cipher", "x-ssl-certificate")


def _headers(o: _Out, h: Headers) -> None:
    o.open("headers")
    for name in _HEADER_FLAGS:
        o.set(name, _bool(getattr(h, name.replace("-", "_"))))
    o.set("x-forwarded-for-mode", h.x_forwarded_for_mode)
    for ext in h.x509_extensions:
        o.open("x509-extension")
        o.set("name", quote(ext.name))
        o.set("oid", quote(ext.oid))
        o.close()
    o.close()


def _ssl(o: _Out, s: SSL) -> None:
    o.open("ssl")
    o.set("enabled", _bool(s.enabled))
    for name in ("cert", "key", "ca", "capath", "ciphers"):
        value = getattr(s, name)
        if value is not None:
            o.set(name, quote(value))
    o.set("protocols-on", _list(s.protocols_on))
    o.set("protocols-off", _list(s.protocols_off))
    o.set("verify-peer", _bool(s.verify_peer))
    o.set("enforce-peer-cert", _bool(s.enforce_peer_cert))
    o.set("verify-depth", str(s.verify_depth))
    o.set("context-timeout", duration(s.context_timeout))
    o.set("cache-enabled", _bool(s.cache_enabled))
    o.set("cache-size", str(s.cache_size))
    o.set("cache-timeout", duration(s.cache_timeout))
    if s.crl is not None:
        o.open("crl")
        if s.crl.file is not None:
            o.set("file", quote(s.crl.file))
        if s.crl.dir is not None:
            o.set("dir", quote(s.crl.dir))
        o.set("reload", duration(s.crl.reload))
        o.close()
    o.close()


def _logging(o: _Out, lg: Logging) -> None:
    o.open("logging")
    _stream(o, "request", lg.request)
    _stream(o, "error", lg.error)
    o.close()


def _stream(o: _Out, name: str, s: LogStream) -> None:
    o.open(name)
    o.set("enabled", _bool(s.enabled))
    o.set("output", quote(s.output))
    o.set("level", s.level)
    o.set("format", quote(s.format))
    o.close()
