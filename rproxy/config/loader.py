"""Collected blocks -> the frozen model, normalising the 1.x dialect into the 2.x shape.

A server without `vhost` blocks is read as RProxy 1.x wrote it: its untitled
downstreams get 1.x defaults, its `rewrite` blocks become regex rules (in file
order) of one catch-all default vhost over all its downstreams with the
server's `lb-method`, and its `headers { }` policy always exists (1.x always
added X-Forwarded-For unless told not to).  A server with vhosts is 2.x: no
headers block anywhere means no added headers.
"""
from __future__ import annotations

import dataclasses
import difflib
import grp
import os
import pwd
import re
from typing import Mapping, Optional

from . import directives as D
from .directives import Block
from .errors import ConfigError, ConfigErrors
from .edge import edge_ops, edge_rule
from .model import (CRL, Acme, LEGACY_TLS_PROTOCOLS, SSL, TLS_PROTOCOLS, Cache, Config, Downstream, Headers, RateLimit,
                    Redis,
                    HealthCheck, Logging, LogStream, Note, Position, Rule, Server, Status, Vhost,
                    X509Extension)
from .parser import Parsed, parse_file_collecting, parse_text_collecting

LB_METHODS = D.LB_METHODS
NAME_MAX = 63     # the fast path keeps downstream and rule names in 64-byte C strings

# rule match directives, in RProxy's precedence order, and the model's kind for each
_MATCHES = (("uri_match", "uri-match", "exact"), ("uri_gmatch", "uri-gmatch", "glob"),
            ("uri_rmatch", "uri-rmatch", "regex"), ("uri_prefix", "uri-prefix", "prefix"))


def opt(blk: Block, name: str, legacy: bool = False):
    """The value of option `name` in `blk`, or its default."""
    d = D.lookup(blk.context, name, False)
    if d is None:
        raise KeyError((blk.context, name))
    if d.key in blk.values:
        return blk.values[d.key]
    return d.default_for(legacy)


def untitled_downstream_name(addr: str, port: int, index: int) -> str:
    """The name an untitled (1.x) downstream gets: its address, and from the
    second downstream block of a server on, its 1-based block number."""
    base = addr if addr.startswith("unix:") else f"{addr}:{port}"
    return f"{base}#{index + 1}" if index else base


def _managed(server) -> bool:
    ssl = server.ssl
    return bool(ssl and ssl.enabled) and (ssl.mode != "files" or any(
        v.ssl is not None and v.ssl.mode != "files" for v in server.vhosts))


class _Normaliser:
    def __init__(self, path: str, notes: list[Note]):
        self.path = path
        self.errors: list[ConfigError] = []
        self.notes = notes

    def error(self, message: str, pos: Optional[Position], hint: Optional[str] = None) -> None:
        self.errors.append(ConfigError(message, pos, hint))

    def note(self, pos: Optional[Position], message: str) -> None:
        self.notes.append(Note(pos, message))

    # ---- top level -------------------------------------------------------

    def config(self, main: Block) -> Config:
        caches = self.caches(main)
        self.cache_names = {c.name for c in caches}
        self.limits = {}
        for lb in main.sub("rate-limit"):
            lim = self.rate_limit(lb)
            if lim is not None:
                self.limits[lim.name] = lim
        self.limit_names = {lb.title for lb in main.sub("rate-limit")}
        servers = tuple(s for s in (self.server(b) for b in main.sub("server")) if s is not None)
        self.check_listeners(servers)
        status = self.status(main.sub("status")[0]) if main.sub("status") else None
        if status is not None:
            for s in servers:
                if (s.addr, s.port) == (status.addr, status.port):
                    self.error(f"the status listener {status.label} is also server {s.label}'s listener",
                               main.sub("status")[0].pos)
        for key in ("user", "group"):
            self.check_account(main, key)
        acme = self.acme(main.sub("acme")[0]) if main.sub("acme") else None
        if acme is None and any(_managed(s) for s in servers):
            acme = Acme()
        forms = {s.dialect for s in servers}
        dialect = "mixed" if len(forms) > 1 else (forms.pop() if forms else "2")
        return Config(
            path=os.path.abspath(self.path) if not self.path.startswith("<") else self.path,
            servers=servers,
            workers=opt(main, "workers"),
            accept_spread=opt(main, "accept-spread"),
            daemonize=opt(main, "daemonize"),
            rootdir=opt(main, "rootdir"),
            user=opt(main, "user"),
            group=opt(main, "group"),
            max_nofile=opt(main, "max-nofile"),
            memtrim_sz=opt(main, "memtrim-sz"),
            pidfile=opt(main, "pidfile"),
            shutdown_timeout=opt(main, "shutdown-timeout"), temp_dir=opt(main, "temp-dir"),
            state_dir=opt(main, "state-dir"),
            error_log=opt(main, "error-log"),
            dialect=dialect,
            log_level=opt(main, "log-level"),
            access_log_buffer=opt(main, "access-log-buffer"),
            access_log_flush=opt(main, "access-log-flush"),
            status=status,
            reload_on_change=opt(main, "reload-on-change"),
            caches=caches,
            acme=acme,
            rate_limits=tuple(self.limits.values()), rate_limit_zone=opt(main, "rate-limit-zone"),
            redis=self.redis(main),
        )

    def caches(self, main: Block) -> tuple:
        out = []
        for b in main.sub("cache"):
            if b.title is None or not b.title:
                self.error("a cache block needs a name: cache NAME { path = ... }", b.pos)
                continue
            if any(c.name == b.title for c in out):
                self.error(f"cache '{b.title}' is defined twice", b.pos)
                continue
            path = opt(b, "path")
            if path is None:
                self.error(f"cache '{b.title}' has no 'path'", b.pos)
                continue
            out.append(Cache(name=b.title, path=path, max_size=opt(b, "max-size"), keys_zone=opt(b, "keys-zone"),
                             inactive=opt(b, "inactive")))
        return tuple(out)

    def redis(self, main: Block) -> Optional[Redis]:
        uses = any(lim.store == "redis" for lim in self.limits.values())
        if not main.sub("redis"):
            return Redis() if uses else None
        b = main.sub("redis")[0]
        addr = opt(b, "addr")
        if addr.startswith("unix:") or D._ip(addr) is None:
            self.error("redis 'addr' must be an IPv4 or IPv6 address (a name would be resolved in the loop)",
                       b.pos_of("addr"))
        if not uses:
            self.note(b.pos, "a redis block with no rate-limit using store = redis: it is not used")
        return Redis(addr=addr, port=opt(b, "port"), timeout=opt(b, "timeout"), fail=opt(b, "fail"))

    def rate_limit(self, b: Block) -> Optional[RateLimit]:
        if len(b.title.encode()) > NAME_MAX or not re.fullmatch(r"[A-Za-z0-9_.-]+", b.title):
            self.error(f"rate-limit name {b.title!r}: letters, digits, '.', '_' and '-' only, at most "
                       f"{NAME_MAX} bytes", b.title_pos)
            return None
        if not b.has("rate"):
            if not b.given("rate"):
                self.error(f"rate-limit '{b.title}' has no 'rate'", b.pos, hint="rate = 100/s")
            return None
        return RateLimit(name=b.title, rate=opt(b, "rate"), burst=opt(b, "burst"), key=opt(b, "key"),
                         mode=opt(b, "mode"), store=opt(b, "store"))

    def limit_refs(self, b: Block, what: str) -> tuple:
        names = opt(b, "rate-limit")
        positions = b.items.get("rate_limit", ())
        for i, n in enumerate(names):
            if n not in self.limit_names:
                pos = positions[i] if i < len(positions) else b.pos_of("rate_limit")
                self.error(f"{what}: unknown rate-limit '{n}'", pos, hint=_did_you_mean(n, self.limit_names))
        return tuple(dict.fromkeys(names))

    def check_limit_count(self, b: Block, refs: tuple, vhost_limits: tuple) -> tuple:
        if len(set(refs) | set(vhost_limits)) > 8:          # EDGE_MAX_LIMITS in limits.pxi
            self.error(f"rule '{b.title}': at most 8 rate limits per request (its vhost's and its own)",
                       b.pos_of("rate_limit"))
        return refs

    def access(self, b: Block) -> tuple:
        """allow / deny in file order: [(network, allowed)]."""
        parts = []
        for key, allowed in (("allow", True), ("deny", False)):
            if b.has(key):
                parts.append((_order(b.pos_of(key)), [(n, allowed) for n in opt(b, key)]))
        parts.sort(key=lambda p: p[0])
        out = tuple(x for _, items in parts for x in items)
        if len(out) > 64:               # EDGE_MAX_ACCESS in limits.pxi (`all` counts twice)
            self.error(f"at most 64 access entries per vhost ({len(out)} given; `all` counts as two)", b.pos)
        return out

    def acme(self, b: Block) -> Acme:
        text = opt(b, "renew-before").strip()
        renew = None
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                renew = int(num) / int(den)
            elif re.fullmatch(r"0?\.\d+", text):
                renew = float(text)
            else:
                parts = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
                if parts and text:
                    d, h, m, sec = (int(x or 0) for x in parts.groups())
                    renew = float(d * 86400 + h * 3600 + m * 60 + sec)
        except (ValueError, ZeroDivisionError):
            renew = None
        if renew is None or renew <= 0 or (0 < renew < 1 and "/" not in text and "." not in text):
            self.error(f"renew-before {text!r}: give a duration (30d) or a fraction of the lifetime "
                       "below 1 (1/3, 0.25)", b.pos_of("renew_before"))
            renew = 1 / 3
        directory = opt(b, "directory")
        if not directory.startswith(("https://", "http://")):
            self.error(f"acme directory {directory!r} is not an http(s) URL", b.pos_of("directory"))
        self.check_path(b, "acme", "ca", "CA file", os.path.isfile)
        return Acme(directory=directory, email=opt(b, "email"), state_dir=opt(b, "state-dir"),
                    challenge=opt(b, "challenge"), ca=opt(b, "ca"), renew_before=renew, pos=b.pos)

    def status(self, b: Block) -> Status:
        addr = opt(b, "addr")
        if addr.startswith("unix:"):
            self.error("the status listener takes an IPv4 or IPv6 address", b.pos_of("addr"))
        return Status(addr=addr, port=opt(b, "port"), allow=tuple(opt(b, "allow")))

    def check_account(self, main: Block, key: str) -> None:
        name = main.get(key)
        if name is None:
            return
        if not name:
            self.error(f"'{key}' cannot be empty", main.pos_of(key))
            return
        if name.isdigit():
            return
        try:
            (pwd.getpwnam if key == "user" else grp.getgrnam)(name)
        except KeyError:
            # A note, not an error: -t may run on another machine than the proxy.
            self.note(main.pos_of(key), f"{key} '{name}' does not exist on this machine; "
                                        "rproxy will not start here")

    def check_listeners(self, servers) -> None:
        seen: dict[tuple, Server] = {}
        for s in servers:
            key = ("unix", s.addr) if s.addr.startswith("unix:") else (s.addr, s.port)
            if key in seen:
                first = seen[key]
                self.error(f"listener {s.label} is defined twice (first at "
                           f"{D.where_text(first.pos, s.pos)})", s.pos)
            else:
                seen[key] = s

    # ---- server ----------------------------------------------------------

    def server(self, b: Block) -> Optional[Server]:
        legacy = not b.sub("vhost")
        if not legacy:
            self.reject_1x_only(b)
        dss: list[Downstream] = []
        for i, db in enumerate(b.sub("downstream")):
            if db.title is None and not legacy:
                self.error("a downstream in a server with vhosts needs a name: downstream NAME { ... }",
                           db.pos, hint="rules refer to downstreams by name")
                continue
            ds = self.downstream(db, i, legacy=db.title is None)
            if ds is None:
                continue
            if any(x.name.lower() == ds.name.lower() for x in dss):
                ds = Downstream(**{**ds.__dict__, "name": f"{ds.name}#{i + 1}"})
            dss.append(ds)
        # Rules may name a downstream whose block had errors: that is not also
        # an unknown name.
        names = {d.name for d in dss} | {db.title for db in b.sub("downstream") if db.title is not None}
        all_names = [d.name for d in dss]
        ssl = self.ssl(b.sub("ssl")[0], "server") if b.sub("ssl") else None
        tls = bool(ssl and ssl.enabled)
        logging = self.logging(b.sub("logging")[0]) if b.sub("logging") else None
        if legacy:
            vhosts = (self.legacy_vhost(b, all_names),)
        else:
            vhosts = tuple(v for v in (self.vhost(vb, names, tls) for vb in b.sub("vhost")) if v is not None)
            self.check_default_vhosts(b, vhosts)
        if tls and ssl.mode == "files" and ssl.cert is None:
            if any(v.ssl is not None and v.ssl.mode != "files" for v in vhosts):
                # the certificate of clients that send no (or an unknown) name
                ssl = dataclasses.replace(ssl, mode="self-signed")
            else:
                self.error("ssl is enabled but has no 'cert'", b.sub("ssl")[0].pos)
        addr = opt(b, "addr")
        if addr.startswith("unix:") and b.has("port"):
            self.note(b.pos_of("port"), "'port' is ignored for a unix: listener")
        if opt(b, "proxy-protocol") and not opt(b, "proxy-protocol-from"):
            self.error("proxy-protocol = true needs proxy-protocol-from (the balancers allowed to send it)",
                       b.pos_of("proxy_protocol"), hint="proxy-protocol-from = { 10.0.0.0/8 }")
        return Server(
            addr=addr, port=opt(b, "port"), backlog=opt(b, "backlog"), threads=opt(b, "threads"),
            proxy_protocol=opt(b, "proxy-protocol"), proxy_protocol_from=opt(b, "proxy-protocol-from"),
            read_timeout=opt(b, "read-timeout"), write_timeout=opt(b, "write-timeout"),
            keepalive_timeout=opt(b, "keepalive-timeout"), pending_timeout=opt(b, "pending-timeout"),
            max_pending=opt(b, "max-pending"), high_watermark=opt(b, "high-watermark"),
            disable_server_nagle=opt(b, "disable-server-nagle"),
            disable_client_nagle=opt(b, "disable-client-nagle"),
            disable_downstream_nagle=opt(b, "disable-downstream-nagle"),
            max_request_line=opt(b, "max-request-line"), max_header_size=opt(b, "max-header-size"),
            max_headers=opt(b, "max-headers"), client_max_body_size=opt(b, "client-max-body-size"),
            http2=opt(b, "http2"), http2_max_concurrent_streams=opt(b, "http2-max-concurrent-streams"),
            http2_max_resets_per_second=opt(b, "http2-max-resets-per-second"),
            http2_max_control_frames_per_second=opt(b, "http2-max-control-frames-per-second"),
            http2_max_continuations=opt(b, "http2-max-continuations"),
            buffer_size=opt(b, "buffer-size"), underscores_in_headers=opt(b, "underscores-in-headers"),
            ssl=ssl, logging=logging,
            client_body_buffer_size=opt(b, "client-body-buffer-size"),
            request_buffering=opt(b, "request-buffering"), response_buffering=opt(b, "response-buffering"),
            response_buffer_size=opt(b, "response-buffer-size"), max_temp_file_size=opt(b, "max-temp-file-size"),
            client_body_timeout=opt(b, "client-body-timeout"), send_timeout=opt(b, "send-timeout"),
            downstreams=tuple(dss), vhosts=vhosts, dialect="1" if legacy else "2", pos=b.pos)

    def reject_1x_only(self, b: Block) -> None:
        for rb in b.sub("rewrite"):
            self.error("'rewrite' is RProxy 1.x syntax, for servers without vhosts", rb.pos,
                       hint="in a server with vhosts, write a rule with uri-rmatch")
        if b.has("lb_method"):
            self.error("server-level 'lb-method' is RProxy 1.x syntax, for servers without vhosts",
                       b.pos_of("lb_method"), hint="set lb-method in each rule")
        for hb in b.sub("headers"):
            self.error("server-level 'headers' is RProxy 1.x syntax, for servers without vhosts", hb.pos,
                       hint="put headers { } in a vhost or a rule")

    def check_default_vhosts(self, b: Block, vhosts) -> None:
        first = None
        for v in vhosts:
            if v.default:
                if first is not None:
                    self.error(f"vhost '{v.name}' is the second default vhost of this server (the first is "
                               f"'{first.name}' at {D.where_text(first.pos, v.pos)})", v.pos)
                else:
                    first = v

    def legacy_vhost(self, b: Block, ds_names: list[str]) -> Vhost:
        lb = opt(b, "lb-method")
        rules = []
        for i, rb in enumerate(b.sub("rewrite"), start=1):
            src, dst = rb.get("src"), rb.get("dst")
            for key, val in (("src", src), ("dst", dst)):
                if val is None and not rb.given(key):
                    self.error(f"rewrite needs '{key}'", rb.pos, hint='rewrite { src = "^(/dir/).*"  dst = "/new/" }')
            if src is None or dst is None:
                continue
            rules.append(Rule(name=f"rewrite{i}", match="regex", pattern=src, rewrite_dst=dst,
                              downstreams=tuple(ds_names), lb_method=lb, pos=rb.pos))
        if not b.sub("rewrite"):
            rules.append(Rule(name="default", match="prefix", pattern="/", downstreams=tuple(ds_names),
                              lb_method=lb, pos=b.pos))
        headers = self.headers(b.sub("headers")[0]) if b.sub("headers") else Headers()
        return Vhost(name="*", rules=tuple(rules), default=True, headers=headers, pos=b.pos)

    # ---- downstream ------------------------------------------------------

    def downstream(self, b: Block, index: int, legacy: bool) -> Optional[Downstream]:
        addr, port = opt(b, "addr", legacy), opt(b, "port", legacy)
        what = f"downstream '{b.title}'" if b.title is not None else "downstream"
        ok = True
        if addr is None:
            if not b.given("addr"):
                self.error(f"{what} has no 'addr'", b.pos)
            ok = False
        elif addr.startswith("unix:"):
            if b.has("port"):
                self.note(b.pos_of("port"), "'port' is ignored for a unix: downstream")
            port = 0
        elif port is None:
            if not b.given("port"):
                self.error(f"{what} has no 'port'", b.pos)
            ok = False
        retry = opt(b, "retry", legacy)
        retry_pos = b.where.get("retry")
        for rb in b.sub("retry_block"):
            if retry_pos is None or (rb.pos.file, rb.pos.line, rb.pos.column) > \
                    (retry_pos.file, retry_pos.line, retry_pos.column):
                retry = opt(rb, "seconds") + opt(rb, "useconds") / 1e6
        hc = self.health_check(b.sub("health-check")[0]) if b.sub("health-check") else None
        ssl = self.ssl(b.sub("ssl")[0], "downstream", force=opt(b, "tls")) if b.sub("ssl") else None
        if not ok:
            return None
        max_conns = opt(b, "max-connections")
        if max_conns is not None and max_conns < opt(b, "connections", legacy):
            self.error(f"{what}: max-connections ({max_conns}) is below connections "
                       f"({opt(b, 'connections', legacy)})", b.pos_of("max_connections"))
        if opt(b, "proxy-protocol") != "off" and opt(b, "pipeline") > 1:
            self.note(b.pos_of("pipeline"), f"{what}: 'pipeline' is not used with proxy-protocol (each "
                      f"connection is one client's, and a client sends one request at a time)")
        name = b.title if b.title is not None else untitled_downstream_name(addr, port, index)
        if b.title is not None and len(name.encode()) > NAME_MAX:
            self.error(f"downstream name is longer than {NAME_MAX} bytes", b.title_pos)
        return Downstream(
            name=name, addr=addr, port=port, enabled=opt(b, "enabled"),
            connections=opt(b, "connections", legacy), high_watermark=opt(b, "high-watermark"),
            read_timeout=opt(b, "read-timeout"), write_timeout=opt(b, "write-timeout"),
            connect_timeout=opt(b, "connect-timeout"), retry=retry, idle_timeout=opt(b, "idle-timeout"),
            max_requests=opt(b, "max-requests"), max_age=opt(b, "max-age"), weight=opt(b, "weight"),
            max_fails=opt(b, "max-fails"), fail_timeout=opt(b, "fail-timeout"),
            pipeline=opt(b, "pipeline"), max_connections=max_conns, health_check=hc, tls=bool(opt(b, "tls") or (ssl and ssl.enabled)),
            ssl=ssl, tls_name=opt(b, "tls-name"), pos=b.pos, proxy_protocol=opt(b, "proxy-protocol"))

    def health_check(self, b: Block) -> HealthCheck:
        hc = HealthCheck(path=opt(b, "path"), interval=opt(b, "interval"), timeout=opt(b, "timeout"),
                         rise=opt(b, "rise"), fall=opt(b, "fall"))
        if hc.timeout >= hc.interval:
            self.error(f"health-check timeout ({D.format_duration(hc.timeout)}) must be shorter than its "
                       f"interval ({D.format_duration(hc.interval)})", b.pos_of("timeout"))
        return hc

    # ---- vhost and rule --------------------------------------------------

    def vhost(self, b: Block, ds_names: set, server_tls: bool) -> Optional[Vhost]:
        if any(c.isspace() for c in b.title):
            self.error(f"vhost name {b.title!r} contains blanks", b.title_pos)
        ssl = self.ssl(b.sub("ssl")[0], "vhost") if b.sub("ssl") else None
        if ssl is not None and ssl.enabled and not server_tls:
            self.note(b.sub("ssl")[0].pos, f"vhost '{b.title}' has TLS settings but its server does not "
                                           "speak TLS: they are never used")
        if ssl is not None and ssl.mode == "acme":
            for name in (b.title, *opt(b, "aliases")):
                if "*" in name or "?" in name or "[" in name:
                    self.error(f"vhost '{b.title}': {name!r} is a wildcard; ACME issues wildcards only through "
                               "DNS-01, which rproxy does not do: list the names, or use mode = files",
                               b.sub("ssl")[0].pos_of("mode"))
        vlimits = tuple(opt(b, "rate-limit"))
        vedge = edge_ops(self, b, None)
        rules = tuple(r for r in (self.rule(rb, ds_names, vlimits, vedge) for rb in b.sub("rule")) if r is not None)
        return Vhost(
            name=b.title, aliases=opt(b, "aliases"), strip_headers=opt(b, "strip-headers"), ssl=ssl,
            headers=self.headers(b.sub("headers")[0]) if b.sub("headers") else None,
            logging=self.logging(b.sub("logging")[0]) if b.sub("logging") else None,
            rules=rules, default=opt(b, "default"), https_redirect=opt(b, "https-redirect"),
            https_redirect_port=opt(b, "https-redirect-port"),
            rate_limit=self.limit_refs(b, f"vhost '{b.title}'"),
            access=self.access(b.sub("access")[0]) if b.sub("access") else (), pos=b.pos)

    def deny_status(self, b: Block) -> int:
        """`status` of a `deny = true` rule (403 when not given).  The same
        directive is a redirect's status (config/edge.py checks that one)."""
        status = opt(b, "status")
        if not opt(b, "deny") or status is None:
            return 403
        if status not in (403, 404, 410, 451):
            self.error(f"'status' of a deny rule must be 403, 404, 410 or 451, not {status}", b.pos_of("status"))
        return status

    def rule(self, b: Block, ds_names: set, vhost_limits: tuple = (), vedge=None) -> Optional[Rule]:
        ok = True
        if len(b.title.encode()) > NAME_MAX:
            self.error(f"rule name is longer than {NAME_MAX} bytes", b.title_pos)
            ok = False
        given = [(key, name, kind) for key, name, kind in _MATCHES if b.given(key)]
        kind = None
        if not given:
            self.error(f"rule '{b.title}' has no match: give one of uri-match, uri-gmatch, uri-rmatch, "
                       "uri-prefix", b.pos)
            ok = False
        elif len(given) > 1:
            second = sorted(given, key=lambda g: _order(b.pos_of(g[0])))[1]
            self.error(f"rule '{b.title}' has more than one match ({', '.join(g[1] for g in given)}): "
                       "give exactly one", b.pos_of(second[0]))
            ok = False
        elif given[0][0] not in b.values:      # the pattern itself was rejected (already reported)
            ok = False
        else:
            key, _, kind = given[0]
        dss = opt(b, "downstreams")
        positions = b.items.get("downstreams", ())
        seen = set()
        for i, n in enumerate(dss):
            pos = positions[i] if i < len(positions) else b.pos_of("downstreams")
            if n in seen:
                self.error(f"rule '{b.title}': downstream '{n}' is listed twice", pos)
                ok = False
            seen.add(n)
            if n not in ds_names:
                self.error(f"rule '{b.title}': unknown downstream '{n}'", pos, hint=_did_you_mean(n, ds_names))
                ok = False
        replace = opt(b, "replace-path")
        if replace is not None and kind == "glob":
            self.error("'replace-path' needs uri-prefix, uri-match or uri-rmatch, not uri-gmatch",
                       b.pos_of("replace_path"))
            ok = False
        if b.has("redirect_filter") and not opt(b, "allow-redirect"):
            self.note(b.pos_of("redirect_filter"), "'redirect-filter' has no effect without allow-redirect = true")
        headers = self.headers(b.sub("headers")[0]) if b.sub("headers") else None
        if not ok:
            return None
        cache = opt(b, "cache")
        if cache is not None and cache not in getattr(self, "cache_names", set()):
            self.error(f"rule '{b.title}': no cache named '{cache}'", b.pos_of("cache"),
                       hint="define it at the top level: cache NAME { path = /var/cache/rproxy/NAME }")
            cache = None
        return Rule(
            name=b.title, match=kind, pattern=b.values[key], downstreams=dss, lb_method=opt(b, "lb-method"),
            replace_path=replace, passthrough=opt(b, "passthrough"), allow_redirect=opt(b, "allow-redirect"),
            redirect_filter=opt(b, "redirect-filter"),
            upstream_read_timeout=opt(b, "upstream-read-timeout"),
            upstream_write_timeout=opt(b, "upstream-write-timeout"), headers=headers,
            compress=opt(b, "compress"), compress_types=opt(b, "compress-types"),
            compress_min_size=opt(b, "compress-min-size"), cache=cache,
            cache_lock=opt(b, "cache-lock"), cache_use_stale=opt(b, "cache-use-stale"),
            request_buffering=opt(b, "request-buffering") if b.has("request_buffering") else None,
            response_buffering=opt(b, "response-buffering") if b.has("response_buffering") else None,
            rate_limit=self.check_limit_count(b, self.limit_refs(b, f"rule '{b.title}'"), vhost_limits),
            deny=opt(b, "deny"), deny_status=self.deny_status(b),
            pos=b.pos, **edge_rule(self, b, vedge, dss))

    # ---- headers, ssl, logging -------------------------------------------

    def headers(self, b: Block) -> Headers:
        exts = []
        for xb in b.sub("x509-extension"):
            name, oid = xb.get("name"), xb.get("oid")
            for key in ("name", "oid"):
                if not xb.given(key):
                    self.error(f"x509-extension needs '{key}'", xb.pos,
                               hint='x509-extension { name = "X-Client-Id"  oid = "1.3.6.1.4.1.99999.1" }')
            if name is not None and oid is not None:
                exts.append(X509Extension(name=name, oid=oid))
        flags = {d.key: opt(b, d.name) for d in D.TABLE if D.HEADERS in d.where and d.type == "bool"}
        return Headers(**flags, x_forwarded_for_mode=opt(b, "x-forwarded-for-mode"), x509_extensions=tuple(exts))

    def ssl(self, b: Block, role: str, force: bool = False) -> SSL:
        """role: "server", "vhost" or "downstream".  Paths are checked when the
        block is in force: enabled, or (downstream) with tls = true."""
        mode = opt(b, "mode")
        if mode != "files" and role == "downstream":
            self.error(f"mode = {mode} is for a listener or a vhost, not a downstream", b.pos_of("mode"))
            mode = "files"
        enabled = opt(b, "enabled") or mode != "files"
        in_force = enabled or force
        on = self.protocols_on(b)
        off = self.protocols_off(b)
        if not (set(on) - set(off)):
            self.error("no TLS protocol is left: protocols-off disables every protocol protocols-on enables",
                       b.pos_of("protocols_off"))
        crl = None
        if b.sub("crl"):
            cb = b.sub("crl")[0]
            crl = CRL(file=cb.get("file"), dir=cb.get("dir"), reload=opt(cb, "reload"))
            if crl.file is None and crl.dir is None:
                self.error("crl needs 'file' or 'dir'", cb.pos)
            if in_force:
                self.check_path(cb, "crl", "file", "CRL file", os.path.isfile)
                self.check_path(cb, "crl", "dir", "CRL directory", os.path.isdir)
        if in_force:
            if role == "vhost" and mode == "files" and b.get("cert") is None:
                self.error("ssl is enabled but has no 'cert'", b.pos,
                           hint="give cert (and key), or mode = acme / mode = self-signed")
            if mode != "files" and b.get("cert") is not None:
                self.note(b.pos_of("cert"), f"'cert' is not used with mode = {mode}")
            self.check_path(b, "ssl", "cert", "certificate file", os.path.isfile)
            self.check_path(b, "ssl", "key", "key file", os.path.isfile)
            self.check_path(b, "ssl", "ca", "CA file", os.path.isfile)
            self.check_path(b, "ssl", "capath", "CA directory", os.path.isdir)
            if opt(b, "enforce-peer-cert") and not opt(b, "verify-peer"):
                self.note(b.pos_of("enforce_peer_cert"), "'enforce-peer-cert' has no effect without "
                                                         "verify-peer = true")
        return SSL(
            enabled=enabled, cert=b.get("cert"), key=b.get("key"), ca=b.get("ca"), capath=b.get("capath"),
            ciphers=b.get("ciphers"), protocols_on=tuple(p for p in TLS_PROTOCOLS if p in on),
            protocols_off=tuple(p for p in TLS_PROTOCOLS if p in off),
            # a downstream's certificate is verified unless the block opts out
            verify_peer=opt(b, "verify-peer") if role != "downstream" or b.given("verify_peer") else True,
            enforce_peer_cert=opt(b, "enforce-peer-cert"),
            verify_depth=opt(b, "verify-depth"), context_timeout=opt(b, "context-timeout"),
            cache_enabled=opt(b, "cache-enabled"), cache_size=opt(b, "cache-size"),
            cache_timeout=opt(b, "cache-timeout"), crl=crl, mode=mode)

    def protocols_on(self, b: Block) -> set:
        if not b.has("protocols_on"):
            return set(TLS_PROTOCOLS)
        on: set = set()
        legacy: list = []
        for name, pos in zip(b.values["protocols_on"], b.items.get("protocols_on", ())):
            if name == "ALL":
                on |= set(TLS_PROTOCOLS)
            elif name in LEGACY_TLS_PROTOCOLS:
                legacy.append((name, pos))
            else:
                on.add(name)
        if legacy:
            names = ", ".join(n for n, _ in legacy)
            if on:
                self.note(legacy[0][1], f"{names}: never enabled, rproxy speaks TLSv1.2 and TLSv1.3 only")
            else:
                # RProxy could not turn TLS 1.1/1.2 off through protocols-on: they stayed on.
                self.note(legacy[0][1], f"{names}: never enabled, rproxy speaks TLSv1.2 and TLSv1.3 only; "
                                        "as in RProxy, the modern protocols stay on")
                on = set(TLS_PROTOCOLS)
        return on

    @staticmethod
    def protocols_off(b: Block) -> set:
        off = set(b.get("protocols_off", ()))
        if "ALL" in off:
            off |= set(TLS_PROTOCOLS)
        return off & set(TLS_PROTOCOLS)

    def check_path(self, b: Block, block: str, key: str, what: str, test) -> None:
        path = b.get(key)
        if path is None or test(path):
            return
        if os.path.exists(path):
            self.error(f"{block} {key}: {path} is not a {what.split()[-1]}", b.pos_of(key))
        else:
            self.error(f"{block} {key}: {what} {path} does not exist", b.pos_of(key))

    def logging(self, b: Block) -> Logging:
        keys_1x = [k for k in D.LOGGING_1X_KEYS if b.given(k)]
        subs = [k for k in ("request", "error", "general") if b.sub(k)]
        if keys_1x and subs:
            first = min(keys_1x, key=lambda k: _order(b.pos_of(k)))
            self.error(f"this logging block mixes the 1.x form ('{first}') with the 2.x form "
                       f"('{subs[0]} {{ }}')", b.pos_of(first),
                       hint="1.x: enabled, type, filename, format, facility, errorlog; "
                            "2.x: request { }, error { }")
            return Logging()
        if not keys_1x:
            return Logging(
                request=self.log_stream(b.sub("request")[0], "request") if b.sub("request") else LogStream(),
                error=self.log_stream(b.sub("error")[0], "error") if b.sub("error") else Logging().error)
        kind = opt(b, "type")
        enabled = opt(b, "enabled")
        output = {"file": "file:" + opt(b, "filename"), "syslog": "syslog:" + opt(b, "facility")}.get(kind)
        if kind == "fd":
            self.note(b.pos_of("type"), "'type = fd' wrote nothing in RProxy 1.x; this access log stays off")
            enabled, output = False, LogStream().output
        request = LogStream(enabled=enabled, output=output, format=opt(b, "format"))
        errorlog = b.get("errorlog")
        error = LogStream(enabled=True, output="file:" + errorlog) if errorlog else Logging().error
        return Logging(request=request, error=error)

    def log_stream(self, b: Block, kind: str) -> LogStream:
        if kind == "error" and b.given("format"):
            self.note(b.pos_of("format"), "'format' is not used in an error block: rproxy's error lines "
                                          "name the client or downstream themselves (RProxy prefixed "
                                          "request errors with this format)")
        if kind == "request" and b.given("level"):
            self.note(b.pos_of("level"), "'level' is not used in a request block: every request is "
                                         "logged (RProxy logged them at 'alert', so only 'emerg' "
                                         "silenced them)")
        return LogStream(enabled=opt(b, "enabled"), output=opt(b, "output"), level=opt(b, "level"),
                         format=opt(b, "format"))


def _order(p: Position) -> tuple:
    return (p.file, p.line, p.column)


def _did_you_mean(name: str, names) -> Optional[str]:
    exact_case = [n for n in names if n.lower() == name.lower()]
    if exact_case:
        return f"did you mean '{exact_case[0]}'? (downstream names are case-sensitive)"
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if names:
        return "this server's downstreams: " + ", ".join(sorted(names))
    return "this server has no named downstreams"


def _build(parsed: Parsed, path: str) -> Config:
    if not parsed.complete:
        # The tree misses whole files or blocks: meaning checks would only add noise.
        raise ConfigErrors(parsed.errors)
    col = D.Collector()
    main = col.collect(parsed.nodes, D.MAIN, "main", None, Position(path, 1, 1))
    norm = _Normaliser(path, col.notes)
    cfg = norm.config(main)
    errors = parsed.errors + col.errors + norm.errors
    if errors:
        raise ConfigErrors(errors)
    notes = sorted(col.notes, key=lambda n: _order(n.pos) if n.pos else ("", 0, 0))
    return dataclasses.replace(cfg, notes=tuple(notes), inactive=tuple(col.inactive))


def load(path: str, env: Optional[Mapping[str, str]] = None) -> Config:
    """Read, validate and normalise a configuration file.  Raises ConfigErrors
    listing every error found."""
    return _build(parse_file_collecting(path, env), path)


def loads(text: str, path: str = "<string>", env: Optional[Mapping[str, str]] = None) -> Config:
    return _build(parse_text_collecting(text, path, env), path)
