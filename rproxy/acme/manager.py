"""The ACME helper process: issues and renews certificates into state-dir.

The master forks it after dropping privileges (so it runs as `user`) and
respawns it if it dies (rproxy/acme/helper.py).  It never talks to a worker
directly: it writes files (store.py's layout) and every worker's watcher
thread (watch.py) picks them up, so a worker started later, or a restart,
finds the same state.

When a certificate is due (self-signed placeholder, `renew-before` reached,
ARI window opened, or `rproxy certs renew NAME`), it orders one; a failure
is logged with the CA's problem document and retried with exponential
backoff and jitter (honouring Retry-After); the certificate on disk keeps
serving meanwhile.
"""
from __future__ import annotations

import datetime
import json
import os
import random
import time
from typing import Callable, Optional

from ..config.model import Config
from . import store
from .client import Account, AcmeError, Client, csr_der, tls_alpn_certificate

BACKOFF_FIRST = 2.0
BACKOFF_MAX = 3600.0
CHALLENGE_SETTLE = 1.0      # seconds for the workers' watchers (0.25 s polls) to load a challenge
TICK = 1.0
ARI_POLL = 6 * 3600.0       # how often the CA's renewal window is asked for


def _now() -> float:
    return time.time()


def renew_at(cfg: Config, info: store.CertInfo) -> float:
    """When a CA-issued certificate is due: renew-before (seconds, or a
    fraction of its lifetime) ahead of its expiry."""
    start, end = info.not_before.timestamp(), info.not_after.timestamp()
    rb = cfg.acme.renew_before if cfg.acme else 1 / 3
    ahead = (end - start) * rb if rb < 1 else rb
    return end - ahead


class Manager:
    def __init__(self, cfg: Config, log: Callable[[str, str], None]):
        self.cfg = cfg
        self.log = log
        self.items = [m for m in store.managed(cfg)]
        self.root = store.state_dir(cfg)
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.ari_at: dict[str, float] = {}
        self.ari_next: dict[str, float] = {}
        self.client: Optional[Client] = None

    # ---- the account ---------------------------------------------------------------

    def account(self) -> Account:
        path = os.path.join(self.root, "account.key")
        try:
            with open(path, "rb") as f:
                acct = Account(f.read())
        except FileNotFoundError:
            key = store.new_key_pem()
            store.write_atomic(path, key)
            acct = Account(key)
            self.log("notice", f"acme: new account key in {path}")
        except (ValueError, TypeError) as e:
            os.replace(path, path + ".bad")
            self.log("error", f"acme: the account key {path} is unusable ({e}); kept as {path}.bad, a new "
                              "account is created")
            key = store.new_key_pem()
            store.write_atomic(path, key)
            acct = Account(key)
        try:
            with open(os.path.join(self.root, "account.json")) as f:
                meta = json.load(f)
            if meta.get("directory") == self.cfg.acme.directory and meta.get("thumbprint") == acct.thumbprint():
                acct.url = meta.get("url")
        except (OSError, ValueError, AttributeError):
            pass
        return acct

    def connect(self) -> Client:
        if self.client is not None and self.client.account.url:
            return self.client
        acct = self.account()
        client = Client(self.cfg.acme.directory, acct, self.cfg.acme.ca, log=self.log)
        client.load_directory()
        if not acct.url:
            url = client.register(self.cfg.acme.email)
            store.write_atomic(os.path.join(self.root, "account.json"), json.dumps(
                {"directory": self.cfg.acme.directory, "url": url, "thumbprint": acct.thumbprint()}).encode())
            self.log("notice", f"acme: account {url} at {self.cfg.acme.directory}")
        self.client = client
        return client

    # ---- challenges (files the workers watch) --------------------------------------------

    def publish(self, kind: str, name: str, info: dict) -> None:
        if kind == "http-01":
            store.write_atomic(os.path.join(self.root, "challenges", "http", info["token"]),
                               info["keyauth"].encode())
        else:
            store.write_atomic(os.path.join(self.root, "challenges", "tls", store.safe_name(name) + ".pem"),
                               tls_alpn_certificate(name, info["keyauth"]))
        time.sleep(CHALLENGE_SETTLE)
        self.log("info", f"acme: {kind} challenge for {name} published")

    def unpublish(self) -> None:
        for sub in ("http", "tls"):
            d = os.path.join(self.root, "challenges", sub)
            for n in os.listdir(d) if os.path.isdir(d) else ():
                try:
                    os.unlink(os.path.join(d, n))
                except OSError:
                    pass

    # ---- one certificate -----------------------------------------------------------------

    def due(self, m: store.Managed, now: float) -> Optional[str]:
        """Why `m` must be (re)issued now, or None."""
        chain, key = store.paths(self.cfg, m)
        flag = os.path.join(store.cert_dir(self.cfg, m), "renew")
        if os.path.exists(flag):
            return "renewal asked for (rproxy certs renew)"
        if now < self.retry_at.get(m.key, 0.0):
            return None
        try:
            info = store.check_pair(chain, key)
        except (OSError, ValueError, TypeError) as e:
            return f"the stored certificate is unusable ({e})"
        if m.mode == "self-signed":
            return None
        if info.self_signed:
            return "only a self-signed certificate so far"
        if not set(m.names) <= set(info.names):
            return "the names changed"
        if now >= self.ari_at.get(m.key, float("inf")):
            return "the CA's renewal window (ARI) opened"
        if now >= renew_at(self.cfg, info):
            return "renew-before reached"
        return None

    def issue(self, m: store.Managed, why: str) -> bool:
        self.log("notice", f"acme: ordering a certificate for {', '.join(m.names)}: {why}")
        flag = os.path.join(store.cert_dir(self.cfg, m), "renew")
        try:
            client = self.connect()
            key_pem = store.new_key_pem()
            chain = client.order(list(m.names), csr_der(list(m.names), key_pem), self.cfg.acme.challenge,
                                 self.publish, self.unpublish)
            store.write_pair(self.cfg, m, key_pem, chain.encode())
        except AcmeError as e:
            self.failed(m, str(e), e.retry_after)
            return False
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.failed(m, f"{e.__class__.__name__}: {e}", None)
            return False
        info = store.cert_info(chain.encode())
        try:
            os.unlink(flag)
        except OSError:
            pass
        self.failures.pop(m.key, None)
        self.retry_at.pop(m.key, None)
        self.ari_at.pop(m.key, None)
        self.ari_next.pop(m.key, None)
        meta = {"names": list(m.names), "mode": m.mode, "source": "acme", "issuer": info.issuer,
                "not_after": info.not_after.isoformat(), "issued": datetime.datetime.now(
                    datetime.timezone.utc).isoformat(),
                "renew_at": datetime.datetime.fromtimestamp(renew_at(self.cfg, info),
                                                            datetime.timezone.utc).isoformat()}
        store.write_meta(self.cfg, m, meta)
        self.log("notice", f"acme: certificate for {', '.join(m.names)} issued by {info.issuer}, valid until "
                           f"{info.not_after:%Y-%m-%d %H:%M} UTC")
        return True

    def failed(self, m: store.Managed, why: str, retry_after: Optional[float]) -> None:
        n = self.failures.get(m.key, 0) + 1
        self.failures[m.key] = n
        wait = min(BACKOFF_FIRST * 2 ** (n - 1), BACKOFF_MAX) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, 86400.0))
        self.retry_at[m.key] = _now() + wait
        flag = os.path.join(store.cert_dir(self.cfg, m), "renew")
        try:
            os.unlink(flag)
        except OSError:
            pass
        self.log("error", f"acme: certificate for {', '.join(m.names)} failed (attempt {n}): {why}; the current "
                          f"certificate keeps serving; next try in {wait:.0f}s")
        meta = store.read_meta(self.cfg, m)
        meta.update({"error": why, "retry_at": datetime.datetime.fromtimestamp(
            self.retry_at[m.key], datetime.timezone.utc).isoformat()})
        try:
            store.write_meta(self.cfg, m, meta)
        except OSError:
            pass

    def check_ari(self, m: store.Managed, now: float) -> None:
        """Ask the CA for its renewal window (RFC 9773), when it has one: at
        most every ARI_POLL seconds (or its Retry-After), never per tick."""
        if now < self.ari_next.get(m.key, 0.0):
            return
        self.ari_next[m.key] = now + ARI_POLL
        chain, _ = store.paths(self.cfg, m)
        try:
            with open(chain, "rb") as f:
                pem = f.read()
            if store.cert_info(pem).self_signed:
                return
            win = self.connect().renewal_window(pem)
        except (OSError, ValueError, AcmeError):
            return
        if win is not None:
            start, end, retry_after = win
            self.ari_at[m.key] = random.uniform(start, max(start, end))
            if retry_after:
                self.ari_next[m.key] = now + min(max(retry_after, 60.0), 86400.0)

    # ---- the loop ------------------------------------------------------------------------

    def step(self) -> None:
        now = _now()
        for m in self.items:
            if m.mode == "self-signed":
                store.ensure_certificate(self.cfg, m, self.log)
                continue
            why = self.due(m, now)
            if why:
                self.issue(m, why)
            else:
                self.check_ari(m, now)

    def run(self, stop: Callable[[], bool]) -> None:
        self.unpublish()                # leftovers of a helper that died mid-order
        names = [n for m in self.items if m.mode == "acme" for n in m.names]
        if names:
            self.log("notice", f"acme: managing {', '.join(names)} with {self.cfg.acme.directory}")
        while not stop():
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - the helper logs and goes on
                self.log("error", f"acme: {e.__class__.__name__}: {e}")
            time.sleep(TICK)


def main(cfg: Config) -> None:
    """The helper's body (in the forked child)."""
    import signal

    from .. import errorlog

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))

    def log(level: str, msg: str) -> None:
        errorlog.log(level, msg)

    Manager(cfg, log).run(lambda: bool(stopping))
