"""The master's side of observability, driven by the arbiter.

Arbiter calls (see master/arbiter.py):
  bind(cfg)                     start-up, still privileged: the status listener
  slot_for(cfg) / give_back     a worker is forked with / has left its slot
  reload_begin(new) -> error    a reload validated `new`: zone and listener for it
  reload_commit / reload_failed the reload's outcome
  register(poller) / on_event   the status listener and inotify in the master's poll
  tick(now)                     timeouts, debounced reload-on-change, readiness
Everything degrades to nothing when the configuration has no `status { }`
and no `reload-on-change`.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from .. import errorlog
from . import sdnotify

# What a configuration with `status { }` or `reload-on-change` uses, imported
# only then (startup.preload_modules, while the master may still be
# privileged; all of them when the dropped user could not import them later).
OPTIONAL_MODULES = ("rproxy.metrics.expo", "rproxy.metrics.server", "rproxy.metrics.watch",
                    "rproxy.metrics.zone")

NSLOTS_MIN = 8


class Observability:
    def __init__(self, arbiter):
        self.arbiter = arbiter
        self.zones: list = []
        self.zone = None                    # the serving generation's zone
        self.pending_zone = None            # the zone of a reload in progress
        self.server = None                  # StatusServer
        self.pending_server = None          # a listener bound for a reload in progress
        self.watcher = None
        self.started_at = time.time()
        self.config_loaded_at = time.time()
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.worker_restarts = 0
        self.ready_sent = False
        self.certs: list = []
        self.warned_slots = False

    # ---- start-up --------------------------------------------------------------------

    def bind(self, cfg) -> None:
        """Bind the status listener and create the zone (before forking)."""
        from ..master import StartupError

        if cfg.status is None:
            return
        try:
            self.server = self._listen(cfg)
        except OSError as e:
            raise StartupError(f"cannot listen on status {cfg.status.label}: {e.strerror or e}") from None
        self.zone = self._new_zone(cfg)
        self.certs = self._certificates(cfg)

    def _listen(self, cfg):
        from .server import StatusServer, bind_status

        sock = bind_status(cfg.status.addr, cfg.status.port)
        return StatusServer(sock, cfg.status.allow, self.handle, cfg.status.label)

    def _new_zone(self, cfg):
        from .zone import Zone, labels_of

        z = Zone(labels_of(cfg), max(NSLOTS_MIN, 4 * self.arbiter.worker_count(cfg)))
        self.zones.append(z)
        return z

    def _certificates(self, cfg) -> list:
        from .expo import certificates

        try:
            return certificates(cfg)
        except Exception as e:  # noqa: BLE001 - a certificate we cannot read is not fatal here
            errorlog.warn(f"status: cannot read certificate dates: {e}")
            return []

    def start(self, cfg) -> None:
        """In the running master (after the privilege drop)."""
        self._watch(cfg)

    def _watch(self, cfg) -> None:
        if cfg.reload_on_change and self.watcher is None:
            from .watch import Watcher

            try:
                self.watcher = Watcher()
            except OSError as e:
                errorlog.error(f"reload-on-change: {e}; changes will not be noticed")
                return
        elif not cfg.reload_on_change and self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.watcher is not None:
            self.watcher.watch(cfg)

    def owned_fds(self) -> list:
        fds = []
        if self.server is not None:
            fds.append(self.server.sock.fileno())
        return fds

    # ---- workers ---------------------------------------------------------------------

    def slot_for(self, cfg, pending: bool):
        """(zone, slot, set_metrics kwargs) for a worker about to be forked, or None."""
        z = self.pending_zone if pending and self.pending_zone is not None else self.zone
        if z is None or cfg.status is None:
            return None
        slot = z.alloc()
        if slot is None:
            if not self.warned_slots:
                errorlog.warn("metrics: every slot of the zone is in use (many draining generations); "
                              "a worker starts without metrics")
                self.warned_slots = True
            return None
        return z, slot, z.worker_args(cfg, slot)

    def give_back(self, z, slot) -> None:
        """A worker that had this slot has been reaped: fold and free it."""
        z.release(slot)
        self._collect()

    def child_cleanup(self) -> None:
        """In a freshly forked worker: the master's descriptors are not its."""
        for srv in (self.server, self.pending_server):
            if srv is not None:
                for c in list(srv.clients.values()):
                    c.sock.close()
                srv.sock.close()
        if self.watcher is not None:
            self.watcher.close()
        sdnotify.forget()

    def _collect(self) -> None:
        """Fold zones no worker uses any more into the serving one."""
        for z in list(self.zones):
            if z is self.zone or z is self.pending_zone or z.used:
                continue
            if self.zone is not None:
                z.fold_into(self.zone)
            self.zones.remove(z)
            z.close()

    # ---- reloads ---------------------------------------------------------------------

    def reloading(self, path: str) -> None:
        sdnotify.reloading(f"reloading {path}")

    def reload_begin(self, new) -> Optional[str]:
        """The new configuration is valid: prepare its zone and listener.
        Returns a reason to refuse the reload, or None."""
        old = self.arbiter.cfg.status
        if new.status is not None and (old is None or (old.addr, old.port) != (new.status.addr, new.status.port)):
            try:
                self.pending_server = self._listen(new)
            except OSError as e:
                return f"cannot listen on status {new.status.label}: {e.strerror or e}"
        if new.status is not None:
            from .zone import labels_of

            labels = labels_of(new)
            if self.zone is not None and self.zone.fits(labels):
                self.zone.assign(labels)
                self.pending_zone = self.zone
            else:
                self.pending_zone = self._new_zone(new)
        return None

    def reload_commit(self, cfg) -> None:
        self.reloads_ok += 1
        self.config_loaded_at = time.time()
        if self.pending_zone is not None:
            self.zone = self.pending_zone
        elif cfg.status is None:
            self.zone = None
        self.pending_zone = None
        if self.pending_server is not None:
            if self.server is not None:
                self.server.close()
            self.server, self.pending_server = self.pending_server, None
        elif cfg.status is None and self.server is not None:
            self.server.close()
            self.server = None
        elif self.server is not None:
            self.server.set_allow(cfg.status.allow)
        self.certs = self._certificates(cfg) if cfg.status is not None else []
        self._collect()
        self._watch(cfg)
        sdnotify.notify("READY=1", f"STATUS={self.status_line(cfg)}")

    def reload_failed(self) -> None:
        self.reloads_failed += 1
        if self.pending_server is not None:
            self.pending_server.close()
            self.pending_server = None
        self.pending_zone = None
        self._collect()
        if self.ready_sent:
            sdnotify.notify("READY=1", f"STATUS=reload failed; {self.status_line(self.arbiter.cfg)}")

    def status_line(self, cfg) -> str:
        a = self.arbiter
        return (f"generation {a.generation}, {self.workers_alive()} of {a.worker_count(cfg)} worker(s); "
                f"reloads: {self.reloads_ok} ok, {self.reloads_failed} failed")

    def stopping(self, how: str) -> None:
        sdnotify.stopping(f"{how} stop")

    # ---- the master's loop -------------------------------------------------------------

    def register(self, poller, select_mod) -> dict:
        fds = {}
        if self.server is not None:
            fds.update(self.server.register(poller, select_mod))
        if self.watcher is not None:
            poller.register(self.watcher.fd, select_mod.POLLIN)
            fds[self.watcher.fd] = self.watcher
        return fds

    def on_event(self, owner, fd: int) -> None:
        if owner is self.watcher:
            self.watcher.read(time.monotonic())
        else:
            owner.on_event(fd)

    def next_deadline(self) -> Optional[float]:
        if self.watcher is not None and self.watcher.due is not None:
            return self.watcher.due
        return None

    def tick(self, now: float) -> None:
        a = self.arbiter
        if self.server is not None:
            self.server.expire(now)
        if not self.ready_sent and not a.stopping and a.workers and self.workers_alive() >= a.worker_count():
            self.ready_sent = True
            sdnotify.ready(self.status_line(a.cfg))
        if self.watcher is not None and not a.stopping:
            changed = self.watcher.take(now)
            if changed:
                errorlog.notice(f"reload-on-change: {', '.join(changed)} changed; reloading")
                a.on_hup()

    def worker_died(self) -> None:
        self.worker_restarts += 1
        if self.ready_sent:
            sdnotify.status(f"a worker died and is being replaced; {self.status_line(self.arbiter.cfg)}")

    def workers_alive(self) -> int:
        a = self.arbiter
        return sum(1 for w in a.workers.values() if w.generation == a.generation and w.ready and w.kill_at is None)

    def close(self) -> None:
        for srv in (self.server, self.pending_server):
            if srv is not None:
                srv.close()
        self.server = self.pending_server = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    # ---- the status listener's answers ------------------------------------------------

    def process(self) -> dict:
        from .._version import __version__

        a = self.arbiter
        return {"pid": os.getpid(), "version": __version__, "generation": a.generation,
                "workers": self.workers_alive(), "workers_configured": a.worker_count(),
                "worker_restarts": self.worker_restarts,
                "reloads": {"ok": self.reloads_ok, "failed": self.reloads_failed},
                "reload_in_progress": a.pending is not None,
                "config": a.cfg.path, "config_loaded_at": self.config_loaded_at, "started_at": self.started_at}

    def snapshot(self) -> dict:
        from .expo import snapshot

        return snapshot(self.arbiter.cfg, self.zones, self.process(), self.certs)

    def handle(self, method: str, path: str):
        from .expo import prometheus

        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", prometheus(self.snapshot()).encode()
        if path == "/status":
            import json
            return 200, "application/json", (json.dumps(self.snapshot(), indent=1) + "\n").encode()
        return 404, "text/plain", b"404 Not Found: try /metrics or /status\n"
