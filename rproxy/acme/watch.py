"""A worker's state-dir watcher: new certificates and pending challenges.

A thread of the worker (never its loop): it polls state-dir (a few stat()
calls, every CHALLENGE_POLL seconds), builds OpenSSL contexts off the loop
with the GIL it shares only with other such threads, and hands their
addresses to the loop through the control pipe (acme.pxi):

  - chain.pem of a managed certificate changed: a new context, which new
    handshakes use; handshakes and connections already running keep the
    context they hold (OpenSSL counts its references), so none is dropped;
  - challenges/http/TOKEN appeared or went: the HTTP-01 table;
  - challenges/tls/NAME.pem appeared or went: the TLS-ALPN-01 table.

Why not a reload: a reload starts a new generation of workers per
certificate, which is correct but costs every worker's pools and caches;
a context swap costs nothing and keeps the same guarantees.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from ..config.model import Config
from . import store

CHALLENGE_POLL = 0.25
CERT_POLL = 1.0
RETIRED_KEEP = 600.0        # seconds a replaced context stays referenced from Python


def _signature(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Watcher(threading.Thread):
    def __init__(self, cfg: Config, send: Callable[[bytes], None], log: Callable[[str, str], None]):
        super().__init__(name="rproxy-acme", daemon=True)
        self.cfg = cfg
        self.send = send
        self.log = log
        self.items = store.managed(cfg)
        self.root = store.state_dir(cfg)
        self.sigs = {m.key: _signature(store.paths(cfg, m)[0]) for m in self.items}
        self.http: set[str] = set()
        self.tls: dict[str, tuple] = {}         # name -> (signature, context)
        self.current: dict[tuple[int, int], object] = {}   # (server, vhost) -> the context the loop uses
        self.retired: list[tuple[float, object]] = []       # replaced ones, kept a while
        self.stop_event = threading.Event()

    def run(self) -> None:
        next_cert = 0.0
        while not self.stop_event.is_set():
            try:
                self.check_challenges()
                now = time.monotonic()
                if now >= next_cert:
                    next_cert = now + CERT_POLL
                    for m in self.items:
                        self.check_cert(m)
                    self.retired = [(t, c) for t, c in self.retired if now - t < RETIRED_KEEP]
            except Exception as e:  # noqa: BLE001 - the watcher logs and goes on
                self.log("error", f"acme watcher: {e.__class__.__name__}: {e}")
            self.stop_event.wait(CHALLENGE_POLL)

    # ---- certificates ------------------------------------------------------------------

    def check_cert(self, m: store.Managed) -> None:
        from .. import fastpath, tls

        chain, key = store.paths(self.cfg, m)
        sig = _signature(chain)
        if sig is None or sig == self.sigs.get(m.key):
            return
        callbacks = tls._callbacks()
        built = []
        try:
            for si, vi in m.slots:
                srv = self.cfg.servers[si]
                if srv.ssl is None or not srv.ssl.enabled:
                    continue
                ssl = srv.ssl if vi < 0 else self.cfg.servers[si].vhosts[vi].ssl
                tag = srv.label if vi < 0 else f"{srv.label}/{srv.vhosts[vi].name}"
                ctx = tls.server_context(store.effective_ssl(self.cfg, ssl, si, vi), f"certificate {m.key}", tag,
                                         callbacks)
                built.append((si, vi, ctx))
        except tls.TlsError as e:
            # e.g. the key was replaced and the chain not yet: the next poll retries
            self.log("debug", f"acme: {m.key}: new certificate not loadable yet: {e}")
            return
        self.sigs[m.key] = sig
        now = time.monotonic()
        for si, vi, ctx in built:
            old = self.current.get((si, vi))
            self.current[(si, vi)] = ctx            # alive as long as the loop may hand it to SSL_new
            if old is not None:
                self.retired.append((now, old))     # the loop may still be about to apply the record
            self.send(fastpath.acme_ctx_record(si, vi, tls.context_address(ctx)))
        self.log("info", f"acme: {m.key}: new certificate in use for new connections")

    # ---- challenges ----------------------------------------------------------------------

    def check_challenges(self) -> None:
        from .. import fastpath

        hdir = os.path.join(self.root, "challenges", "http")
        try:
            tokens = set(os.listdir(hdir))
        except OSError:
            tokens = set()
        tokens = {t for t in tokens if ".tmp" not in t}
        for t in tokens - self.http:
            try:
                with open(os.path.join(hdir, t), "rb") as f:
                    keyauth = f.read().strip()
            except OSError:
                continue
            if keyauth.startswith(t.encode() + b".") and len(keyauth) <= 128:
                self.send(fastpath.acme_http_record(True, keyauth))
                self.http.add(t)
        for t in self.http - tokens:
            self.send(fastpath.acme_http_record(False, t.encode() + b"."))
            self.http.discard(t)

        tdir = os.path.join(self.root, "challenges", "tls")
        try:
            files = {n for n in os.listdir(tdir) if n.endswith(".pem")}
        except OSError:
            files = set()
        seen = set()
        for n in files:
            name = n[:-4]
            path = os.path.join(tdir, n)
            sig = _signature(path)
            seen.add(name)
            old = self.tls.get(name)
            if old is not None and old[0] == sig:
                continue
            ctx = self.challenge_context(path)
            if ctx is None:
                continue
            from .. import tls

            if name in self.tls:
                self.retired.append((time.monotonic(), self.tls[name][1]))
            self.tls[name] = (sig, ctx)
            self.send(fastpath.acme_tls_record(True, name.encode(), tls.context_address(ctx)))
        for name in set(self.tls) - seen:
            self.send(fastpath.acme_tls_record(False, name.encode(), 0))
            self.retired.append((time.monotonic(), self.tls.pop(name)[1]))

    @staticmethod
    def challenge_context(path: str):
        from OpenSSL import SSL as O

        try:
            ctx = O.Context(O.TLS_SERVER_METHOD)
            ctx.set_min_proto_version(O.TLS1_2_VERSION)
            ctx.use_certificate_file(path)
            ctx.use_privatekey_file(path)
            ctx.check_privatekey()
        except (O.Error, OSError):
            return None
        return ctx
