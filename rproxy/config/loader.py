"""Collected blocks -> the frozen model, normalising the 1.x dialect into the 2.x shape."""
from __future__ import annotations

import os
from typing import Mapping, Optional

from . import directives as D
from .errors import ConfigError, ConfigErrors
from .model import Config, Downstream, Rule, Server, Vhost
from .parser import parse_file, parse_text

LB_METHODS = ("rtt", "roundrobin", "most-idle", "none", "random", "least-pending")


def _opt(blk: D.Block, ctx: str, name: str):
    key = name.replace("-", "_")
    if key in blk.values:
        return blk.values[key]
    return D.default_of(ctx, name)


class _Normaliser:
    def __init__(self, path: str):
        self.path = path
        self.errors: list[ConfigError] = []

    def config(self, main: D.Block) -> Config:
        servers = tuple(self.server(b) for b in main.blocks.get("server", ()))
        return Config(
            path=os.path.abspath(self.path) if self.path != "<string>" else self.path,
            servers=servers,
            workers=_opt(main, D.MAIN, "workers"),
            daemonize=_opt(main, D.MAIN, "daemonize"),
            user=_opt(main, D.MAIN, "user"),
            group=_opt(main, D.MAIN, "group"),
            max_nofile=_opt(main, D.MAIN, "max-nofile"),
            memtrim_sz=_opt(main, D.MAIN, "memtrim-sz"),
            pidfile=_opt(main, D.MAIN, "pidfile"),
            shutdown_timeout=_opt(main, D.MAIN, "shutdown-timeout"),
        )

    def downstream(self, b: D.Block, index: int) -> Optional[Downstream]:
        retry = _opt(b, D.DOWNSTREAM, "retry")
        for rb in b.blocks.get("retry_block", ()):
            retry = _opt(rb, D.RETRY, "seconds") + _opt(rb, D.RETRY, "useconds") / 1e6
        addr, port = b.get("addr"), b.get("port")
        ok = True
        for key, val in (("addr", addr), ("port", port)):
            if val is None:
                self.errors.append(ConfigError(f"downstream needs '{key}'", b.pos))
                ok = False
        if not ok:
            return None
        name = b.title if b.title is not None else f"{addr}:{port}"
        if b.title is None and index:
            name = f"{addr}:{port}#{index + 1}" if index else name
        return Downstream(name=name, addr=addr, port=port,
                          connections=_opt(b, D.DOWNSTREAM, "connections"), retry=retry, pos=b.pos)

    def server(self, b: D.Block) -> Server:
        dss = []
        for i, db in enumerate(b.blocks.get("downstream", ())):
            ds = self.downstream(db, i)
            if ds is not None:
                if any(x.name.lower() == ds.name.lower() for x in dss):
                    ds = Downstream(**{**ds.__dict__, "name": f"{ds.name}#{i + 1}"})
                dss.append(ds)
        names = {d.name for d in dss}
        vhosts = tuple(self.vhost(v, names) for v in b.blocks.get("vhost", ()))
        if not vhosts:
            # 1.x shape (or a 2.x server with no vhost): one catch-all vhost whose
            # single default rule spreads over every downstream of the server.
            rule = Rule(name="default", match="prefix", pattern="/",
                        downstreams=tuple(d.name for d in dss), lb_method="rtt", pos=b.pos)
            vhosts = (Vhost(name="*", rules=(rule,), default=True, pos=b.pos),)
        return Server(addr=_opt(b, D.SERVER, "addr"), port=_opt(b, D.SERVER, "port"),
                      backlog=_opt(b, D.SERVER, "backlog"), threads=_opt(b, D.SERVER, "threads"),
                      downstreams=tuple(dss), vhosts=vhosts, pos=b.pos)

    def vhost(self, b: D.Block, ds_names: set) -> Vhost:
        rules = tuple(r for r in (self.rule(rb, ds_names) for rb in b.blocks.get("rule", ())) if r)
        return Vhost(name=b.title, aliases=_opt(b, D.VHOST, "aliases"), rules=rules, pos=b.pos)

    def rule(self, b: D.Block, ds_names: set) -> Optional[Rule]:
        match = None
        for key, kind in (("uri_match", "exact"), ("uri_gmatch", "glob"), ("uri_rmatch", "regex")):
            if key in b.values:
                if match is not None:
                    self.errors.append(ConfigError(
                        f"rule '{b.title}' has more than one uri-*match", b.pos_of(key)))
                    return None
                match = (kind, b.values[key], b.pos_of(key))
        if match is None:
            self.errors.append(ConfigError(f"rule '{b.title}' has no uri-match, uri-gmatch or uri-rmatch",
                                           b.pos))
            return None
        kind, pattern, ppos = match
        if kind == "regex":
            from ..fastpath import check_posix_regex  # the engine the fast path uses

            problem = check_posix_regex(pattern)
            if problem:
                self.errors.append(ConfigError(f"invalid regular expression: {problem}", ppos))
                return None
        dss = _opt(b, D.RULE, "downstreams")
        for n in dss:
            if n not in ds_names:
                self.errors.append(ConfigError(f"rule '{b.title}': unknown downstream '{n}'",
                                               b.pos_of("downstreams")))
        lb = _opt(b, D.RULE, "lb-method").lower()
        if lb not in LB_METHODS:
            self.errors.append(ConfigError(f"unknown lb-method '{lb}'", b.pos_of("lb_method"),
                                           hint="one of " + ", ".join(LB_METHODS)))
        return Rule(name=b.title, match=kind, pattern=pattern, downstreams=dss, lb_method=lb, pos=b.pos)


def _build(nodes, path: str) -> Config:
    col = D.Collector()
    from .model import Position

    main = col.collect(nodes, D.MAIN, "main", None, Position(path, 1, 1))
    norm = _Normaliser(path)
    cfg = norm.config(main)
    errors = col.errors + norm.errors
    if errors:
        raise ConfigErrors(errors)
    return cfg


def load(path: str, env: Optional[Mapping[str, str]] = None) -> Config:
    """Read, validate and normalise a configuration file.  Raises ConfigErrors."""
    return _build(parse_file(path, env), path)


def loads(text: str, path: str = "<string>", env: Optional[Mapping[str, str]] = None) -> Config:
    return _build(parse_text(text, path, env), path)
