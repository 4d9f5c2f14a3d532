"""The master's supervision loop: fork workers, reap them, act on signals.

Signal handlers only record the signal (on a queue, waking the loop through
a pipe); the loop acts on it through the `on_<name>` methods, so adding a
signal is one method.  A worker that dies is replaced; a worker that fails
at boot (exit code EXIT_BOOT_ERROR) repeatedly is not respawned in a tight
loop: the master backs off, then gives up with a clear error.
"""
from __future__ import annotations

import collections
import errno
import os
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import errorlog
from .. import worker as worker_mod
from ..config.model import Config
from .listeners import BoundListener, bind, listener_key

SIGNAL_NAMES = {
    signal.SIGTERM: "term",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGHUP: "hup",
    signal.SIGUSR1: "usr1",
    signal.SIGCHLD: "chld",
}

BOOT_FAILURES_BEFORE_GIVING_UP = 5


@dataclass
class WorkerProc:
    pid: int
    index: int
    generation: int
    started: float


@dataclass
class Arbiter:
    cfg: Config
    listeners: dict = field(default_factory=dict)       # key -> BoundListener
    workers: dict = field(default_factory=dict)         # pid -> WorkerProc
    generation: int = 1
    stopping: Optional[str] = None                      # None | "fast" | "graceful"
    exit_code: int = 0
    boot_failures: int = 0
    respawn_at: float = 0.0

    def __post_init__(self):
        self._signals: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ---- start-up ---------------------------------------------------------------

    def bind_listeners(self) -> None:
        for srv in self.cfg.servers:
            key = listener_key(srv)
            if key not in self.listeners:
                self.listeners[key] = bind(srv)

    def listener_fds(self) -> list[tuple[int, int]]:
        return [(self.listeners[listener_key(s)].sock.fileno(), i) for i, s in enumerate(self.cfg.servers)]

    def install_signals(self) -> None:
        for sig in SIGNAL_NAMES:
            signal.signal(sig, self._record)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _record(self, signum, frame) -> None:
        self._signals.append(signum)

    # ---- workers --------------------------------------------------------------------

    def worker_count(self) -> int:
        return self.cfg.worker_count()[0]

    def spawn_worker(self, index: int) -> None:
        fds = self.listener_fds()
        pid = os.fork()
        if pid == 0:
            # child: default signal dispositions; the fast path takes signals via signalfd
            signal.set_wakeup_fd(-1)
            for sig in SIGNAL_NAMES:
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
            worker_mod.main_for_child(self.cfg, fds, index, self.generation)
        self.workers[pid] = WorkerProc(pid, index, self.generation, time.monotonic())

    def manage_workers(self) -> None:
        """Keep one worker per index of the current generation."""
        if self.stopping or time.monotonic() < self.respawn_at:
            return
        running = {w.index for w in self.workers.values() if w.generation == self.generation}
        for index in range(self.worker_count()):
            if index not in running:
                self.spawn_worker(index)

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == worker_mod.EXIT_BOOT_ERROR:
                self.boot_failures += 1
                if self.boot_failures >= BOOT_FAILURES_BEFORE_GIVING_UP:
                    errorlog.error(f"workers keep failing at start-up ({self.boot_failures} times); "
                                   "giving up")
                    self.exit_code = 1
                    self.begin_stop("fast")
                    return
                delay = min(0.1 * 2 ** self.boot_failures, 5.0)
                errorlog.warn(f"worker {w.index} (pid {pid}) failed at start-up; retrying in {delay:.1f}s")
                self.respawn_at = time.monotonic() + delay
            else:
                if time.monotonic() - w.started > 5:
                    self.boot_failures = 0
                how = f"exit code {code}" if code >= 0 else f"signal {-code}"
                errorlog.warn(f"worker {w.index} (pid {pid}) died ({how}); starting a new one")

    def signal_workers(self, sig: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # ---- signal handlers (run from the loop, never from the signal handler) -------

    def on_term(self) -> None:
        self.begin_stop("fast")

    def on_int(self) -> None:
        self.begin_stop("fast")

    def on_quit(self) -> None:
        self.begin_stop("graceful")

    def on_hup(self) -> None:
        errorlog.notice("SIGHUP: reload is not available in this version; ignoring")

    def on_usr1(self) -> None:
        self.signal_workers(signal.SIGUSR1)

    def on_chld(self) -> None:
        self.reap_workers()

    def begin_stop(self, how: str) -> None:
        if self.stopping == "fast":
            return
        self.stopping = how
        self.stop_deadline = time.monotonic() + (self.cfg.shutdown_timeout + 5 if how == "graceful" else 5)
        self.signal_workers(signal.SIGQUIT if how == "graceful" else signal.SIGTERM)

    # ---- the loop -------------------------------------------------------------------

    def run(self) -> int:
        try:
            import setproctitle

            setproctitle.setproctitle(f"rproxy: master -c {self.cfg.path}")
        except ImportError:
            pass
        self.install_signals()
        self.manage_workers()
        errorlog.notice(f"rproxy started: {self.worker_count()} worker(s), "
                        + ", ".join(l.label for l in self.listeners.values()))
        while True:
            while self._signals:
                name = SIGNAL_NAMES.get(self._signals.popleft())
                if name:
                    getattr(self, f"on_{name}")()
            self.reap_workers()
            if self.stopping:
                if not self.workers:
                    break
                if time.monotonic() > self.stop_deadline:
                    self.signal_workers(signal.SIGKILL)
            else:
                self.manage_workers()
            self._sleep(0.5)
        for bl in self.listeners.values():
            bl.sock.close()
            if bl.key[0] == "unix":
                try:
                    os.unlink(bl.key[1])
                except OSError:
                    pass
        errorlog.notice("rproxy stopped")
        return self.exit_code

    def _sleep(self, timeout: float) -> None:
        try:
            select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
