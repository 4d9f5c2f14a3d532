"""`rproxy certs` and what `rproxy -t` says about automatic HTTPS."""
from __future__ import annotations

import argparse
import datetime
import os
import pwd
import sys
import tempfile
from dataclasses import replace

from ..config.model import Config
from . import store


def _identity(cfg: Config) -> tuple[int, int, str]:
    if cfg.user:
        try:
            pw = pwd.getpwnam(cfg.user) if not cfg.user.isdigit() else pwd.getpwuid(int(cfg.user))
            return pw.pw_uid, pw.pw_gid, pw.pw_name
        except KeyError:
            pass
    return os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name


def test_lines(cfg: Config) -> tuple[list[str], list[str]]:
    """(summary lines, errors) for `rproxy -t`."""
    items = store.managed(cfg)
    if not items:
        return [], []
    lines, errors = [], []
    root = store.state_dir(cfg)
    uid, gid, who = _identity(cfg)
    if cfg.acme is not None and any(m.mode == "acme" for m in items):
        lines.append(f"acme: directory {cfg.acme.directory}, challenge {cfg.acme.challenge} first "
                     f"(both answered), renew {_renew_text(cfg.acme.renew_before)}")
    lines.append(f"acme: state-dir {root} (0700, owned by {who})")
    if not store.writable_by(root, uid, gid):
        errors.append(f"acme: state-dir {root} is not writable by {who}")
    plain80 = any((s.ssl is None or not s.ssl.enabled) and s.port == 80 for s in cfg.servers)
    for m in items:
        if m.mode == "self-signed" and m.key.startswith("_server-"):
            lines.append(f"  listener :{cfg.servers[m.slots[0][0]].port} without a matching SNI name: self-signed "
                         f"for {m.names[0]} (kept in state-dir)")
            continue
        if m.mode == "self-signed":
            lines.append(f"  {', '.join(m.names)}: self-signed (kept in state-dir, renewed before expiry)")
            continue
        ports = sorted({cfg.servers[si].port for si, _ in m.slots})
        how = []
        if 443 in ports:
            how.append("tls-alpn-01 on :443")
        if plain80:
            how.append("http-01 on :80")
        lines.append(f"  {', '.join(m.names)}: certificate from the CA (served on :{', :'.join(map(str, ports))}; "
                     f"challenges: {', '.join(how) if how else 'none on :443 or :80'})")
        if not how:
            lines.append(f"    note: the CA validates on port 443 (tls-alpn-01) or 80 (http-01); no listener of "
                         f"this configuration answers there for {m.names[0]} (a test CA may use other ports)")
    return lines, errors


def _renew_text(rb: float) -> str:
    if rb < 1:
        return f"when {rb:.0%} of the lifetime is left"
    return f"{rb / 86400:g} days before expiry"


def build_for_test(cfg: Config):
    """`-t` loads every context as a start would; managed certificates get a
    throwaway self-signed stand-in (state-dir itself is not touched)."""
    from .. import tls

    if not store.managed(cfg):
        return tls.build(cfg)
    with tempfile.TemporaryDirectory(prefix="rproxy-t-") as tmp:
        tcfg = replace(cfg, acme=replace(cfg.acme, state_dir=tmp))
        store.prepare(tcfg, lambda level, msg: None)
        return tls.build(tcfg)


def main(argv) -> int:
    from ..config import ConfigErrors, load

    ap = argparse.ArgumentParser(prog="rproxy certs", description="the certificates rproxy manages")
    ap.add_argument("-c", "--config", default="/etc/rproxy/rproxy.conf", metavar="FILE")
    ap.add_argument("action", nargs="?", choices=("list", "renew"), default="list")
    ap.add_argument("name", nargs="?", help="renew: a name of the certificate")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigErrors as e:
        sys.stderr.write(e.render() + "\n")
        return 1
    items = store.managed(cfg)
    if args.action == "renew":
        if not args.name:
            sys.stderr.write("rproxy certs renew: give the name\n")
            return 2
        m = next((m for m in items if m.mode == "acme" and (args.name.lower() in m.names or args.name == m.key)),
                 None)
        if m is None:
            sys.stderr.write(f"rproxy certs: {args.name} is not a name rproxy gets from the CA\n")
            return 1
        store.write_atomic(os.path.join(store.cert_dir(cfg, m), "renew"), b"")
        print(f"{m.names[0]}: renewal asked for; the running rproxy orders it within a second")
        return 0
    if not items:
        print("no managed certificates (no ssl { mode = acme | self-signed })")
        return 0
    print(f"{'name':32} {'mode':12} {'issuer':40} {'expires (UTC)':17} next renewal / last error")
    for m in items:
        chain, key = store.paths(cfg, m)
        meta = store.read_meta(cfg, m)
        try:
            info = store.check_pair(chain, key)
            issuer = "self-signed" if info.self_signed else info.issuer
            expires = f"{info.not_after:%Y-%m-%d %H:%M}"
            if m.mode == "self-signed":
                nxt = f"{info.not_after - datetime.timedelta(seconds=store.SELF_SIGNED_RENEW):%Y-%m-%d %H:%M}"
            elif info.self_signed:
                nxt = "as soon as the CA answers"
            else:
                from .manager import renew_at

                nxt = datetime.datetime.fromtimestamp(renew_at(cfg, info), datetime.timezone.utc) \
                    .strftime("%Y-%m-%d %H:%M")
        except (OSError, ValueError, TypeError) as e:
            issuer, expires, nxt = "-", "-", f"unusable: {e}"
        if meta.get("error") and m.mode == "acme":
            nxt += f" (last error: {meta['error'][:120]})"
        print(f"{', '.join(m.names)[:32]:32} {m.mode:12} {issuer[:40]:40} {expires:17} {nxt}")
    return 0
