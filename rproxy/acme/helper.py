"""The master's side of the ACME helper process: fork, respawn, stop.

The helper (manager.py) is one process per master, started when the
configuration has a certificate in `acme` or `self-signed` mode, restarted
with the new configuration when a reload commits, respawned with backoff
when it dies, and stopped with the master.  Title: `rproxy: acme`.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Optional

from .. import errorlog
from ..config.model import Config


class AcmeHelper:
    def __init__(self, child_cleanup: Callable[[], None]):
        self.child_cleanup = child_cleanup      # closes the master's descriptors in the child
        self.pid: Optional[int] = None
        self.cfg: Optional[Config] = None
        self.failures = 0
        self.respawn_at = 0.0
        self.stopping = False

    def wanted(self, cfg: Config) -> bool:
        if not cfg.uses_tls():          # no TLS listener: nothing to manage, store not imported
            return False
        from . import store

        return bool(store.managed(cfg))

    def start(self, cfg: Config) -> None:
        self.cfg = cfg
        if self.pid is not None:
            self.stop()
        if not self.wanted(cfg) or self.stopping:
            return
        try:
            pid = os.fork()
        except OSError as e:
            errorlog.error(f"cannot fork the acme helper: {e.strerror or e}")
            self.respawn_at = time.monotonic() + 5.0
            return
        if pid == 0:
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
                self.child_cleanup()
                try:
                    from .. import proctitle

                    proctitle.set_title("rproxy: acme")
                except ImportError:
                    pass
                from .manager import main

                main(cfg)
            except BaseException as e:  # noqa: BLE001
                errorlog.error(f"acme helper crashed: {e!r}")
                code = 1
            finally:
                os._exit(code)
        self.pid = pid

    def stop(self) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.pid = None                 # reaped by the master's waitpid(-1) like any child

    def shutdown(self) -> None:
        self.stopping = True
        pid = self.pid
        self.stop()
        if pid is not None:
            for _ in range(30):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        return
                except ChildProcessError:
                    return
                time.sleep(0.1)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def reaped(self, pid: int, code: int) -> bool:
        """waitpid gave `pid`: True when it was the helper (respawned later)."""
        if pid != self.pid:
            return False
        self.pid = None
        if not self.stopping:
            self.failures += 1
            delay = min(2.0 * 2 ** (self.failures - 1), 300.0)
            errorlog.error(f"the acme helper exited (code {code}); starting a new one in {delay:.0f}s")
            self.respawn_at = time.monotonic() + delay
        return True

    def tick(self, now: float) -> None:
        if self.pid is None and not self.stopping and self.cfg is not None and self.wanted(self.cfg) \
                and now >= self.respawn_at:
            self.start(self.cfg)
