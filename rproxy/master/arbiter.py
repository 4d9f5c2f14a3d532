"""The master's supervision loop: fork workers, reap them, act on signals.

Signal handlers only record the signal (on a deque, waking the loop through
`signal.set_wakeup_fd`); the loop acts on it through the `on_<name>`
methods named in SIGNAL_TABLE, which `rproxy -s` also reads.

Workers belong to a *generation*: one per configuration the master has
loaded.  A reload (SIGHUP) validates the new configuration, binds the
listeners it adds, and forks a complete new generation on the same
listening sockets.  Only when every new worker has reported that it is
ready (through a pipe, after building its tables) is the old generation told
to drain (SIGQUIT): it stops accepting, finishes the exchanges in flight and
exits, bounded by its shutdown-timeout.  Connections waiting in a listen
queue are accepted by whichever generation accepts next, so none is lost.
If anything fails before that point the new generation is discarded and the
old one keeps serving, untouched.

A worker that dies is replaced.  A worker that dies before reporting ready
failed at boot: it is retried with exponential backoff, and after
BOOT_FAILURES_BEFORE_GIVING_UP rounds the master stops with an error rather
than fork in a tight loop.
"""
from __future__ import annotations

import collections
import gc
import resource
import os
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import errorlog, limits
from .. import worker as worker_mod
from ..config.model import Config
from ..cache_manager import CacheManager, zones_for
from . import StartupError, logfiles, privileges
from .listeners import BoundListener, bind, bind_error_message, listener_key


@dataclass(frozen=True)
class SignalAction:
    signum: int
    name: str                   # the loop calls Arbiter.on_<name>
    command: Optional[str]      # `rproxy -s COMMAND` sends it
    doc: str


SIGNAL_TABLE = (
    SignalAction(signal.SIGHUP, "hup", "reload",
                 "reload: validate the configuration, start a new generation of workers, "
                 "drain the old one"),
    SignalAction(signal.SIGTERM, "term", "stop", "fast stop: every connection closed now"),
    SignalAction(signal.SIGINT, "int", None, "fast stop (Ctrl-C)"),
    SignalAction(signal.SIGQUIT, "quit", "quit",
                 "graceful stop: stop accepting, finish the exchanges in flight, exit"),
    SignalAction(signal.SIGUSR1, "usr1", "reopen", "reopen log files (logrotate)"),
    SignalAction(signal.SIGCHLD, "chld", None, "a worker exited: reap it"),
)
SIGNAL_NAMES = {a.signum: a.name for a in SIGNAL_TABLE}

# What a worker takes through its fast path's signalfd: blocked from fork on,
# so one that arrives while the worker is still booting waits for the loop
# instead of killing it (SIGUSR1's default action is to terminate).
WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGUSR1, signal.SIGUSR2}

BOOT_FAILURES_BEFORE_GIVING_UP = 5
MAX_BOOT_BACKOFF = 5.0          # seconds between boot retries, at most
READY_TIMEOUT = 30.0            # a new generation has this long to boot on reload
FAST_STOP_GRACE = 5.0           # SIGTERM'ed workers are SIGKILLed after this
DRAIN_GRACE = 5.0               # beyond shutdown-timeout, for a draining worker to exit
READY = b"R"                    # what a worker writes on its readiness pipe

# Settings that only take effect at start-up: a reload that changes one is
# refused (applying it would need root, or a new process).
RESTART_ONLY = ("daemonize", "pidfile", "user", "group", "rootdir", "accept_spread")


@dataclass
class WorkerProc:
    pid: int
    index: int
    generation: int
    shutdown_timeout: float
    started: float
    ready_fd: Optional[int]             # read end of its readiness pipe, until it reports
    metrics: Optional[tuple] = None     # (zone, slot) of the metrics zone it counts into
    ready: bool = False
    kill_at: Optional[float] = None     # told to stop: SIGKILL if still alive then
    killed: bool = False


@dataclass
class PendingReload:
    cfg: Config
    generation: int
    deadline: float
    added_listeners: list = field(default_factory=list)    # keys bound for this reload
    previous_nofile: Optional[tuple] = None                # to restore on failure


class Arbiter:
    def __init__(self, cfg: Config,
                 worker_main: Callable[..., None] = worker_mod.main_for_child):
        self.cfg = cfg                                      # the configuration being served
        self.worker_main = worker_main                      # runs in the child, never returns
        self.listeners: dict[tuple, BoundListener] = {}
        self.workers: dict[int, WorkerProc] = {}
        self.generation = 1
        self.pending: Optional[PendingReload] = None
        self.reload_again = False                           # SIGHUP during a reload
        self.stopping: Optional[str] = None                 # None | "fast" | "graceful"
        self.exit_code = 0
        self.boot_failures = 0
        self.respawn_at = 0.0
        self._signals: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signals_installed = False
        from ..metrics.master import Observability

        self.obs = Observability(self)                      # metrics zone, status listener, sd_notify
        self.cache_manager = CacheManager()
        from ..acme.helper import AcmeHelper

        self.acme = AcmeHelper(self._helper_cleanup)        # certificates (rproxy/acme/)

    # ---- start-up ---------------------------------------------------------------

    def bind_listeners(self) -> None:
        """Bind every listener of the configuration (start-up, still privileged)."""
        for srv in self.cfg.servers:
            key = listener_key(srv)
            if key not in self.listeners:
                try:
                    self.listeners[key] = bind(srv, self.cfg.accept_spread, self.worker_count())
                except OSError as e:
                    self.close_listeners()
                    raise StartupError(bind_error_message(srv, e)) from None
        try:
            self.obs.bind(self.cfg)
        except StartupError:
            self.close_listeners()
            raise

    def close_listeners(self) -> None:
        for bl in self.listeners.values():
            bl.close()
        self.listeners.clear()

    def owned_fds(self) -> list[int]:
        """Descriptors the master needs (kept when daemonizing closes the rest)."""
        return [self._wake_r, self._wake_w,
                *(s.fileno() for bl in self.listeners.values() for s in bl.socks()),
                *self.obs.owned_fds()]

    def listener_fds(self, cfg: Config, index: int = 0) -> list[tuple[int, int]]:
        """(fd, server index) for each server of `cfg`, as worker `index`
        accepts on them (accept-spread = reuseport: a socket per index)."""
        return [(self.listeners[listener_key(s)].fileno_for(index), i) for i, s in enumerate(cfg.servers)]

    def install_signals(self) -> None:
        """Record signals from now on (before the pidfile exists, so that an
        early `rproxy -s` finds a master that records it, not one that dies
        of the signal's default action)."""
        if self._signals_installed:
            return
        for sig in SIGNAL_NAMES:
            signal.signal(sig, self._record)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._signals_installed = True

    def _record(self, signum, frame) -> None:
        self._signals.append(signum)

    # ---- workers --------------------------------------------------------------------

    def worker_count(self, cfg: Optional[Config] = None) -> int:
        return (cfg or self.cfg).worker_count()[0]

    def spawn_worker(self, cfg: Config, generation: int, index: int) -> None:
        fds = self.listener_fds(cfg, index)
        limits.zone_for(cfg)            # the rate limit zone, mapped before the fork (rproxy/limits.py)
        zones_for(cfg)                  # the caches' keys zones, likewise (rproxy/cache_manager.py)
        metrics = self.obs.slot_for(cfg, pending=generation != self.generation)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        master_pid = os.getpid()
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        # Every object so far goes to the collector's permanent generation:
        # a collection (in the worker or here) then never walks, and so
        # never writes to, the pages both processes share after the fork.
        # Garbage cycles are collected first: frozen, they would stay forever.
        gc.collect()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            os.close(ready_r)
            os.close(ready_w)
            if metrics is not None:
                self.obs.give_back(metrics[0], metrics[1])
            errorlog.error(f"cannot fork worker {index}: {e.strerror or e}; retrying in 1s")
            self.respawn_at = time.monotonic() + 1.0
            return
        if pid == 0:
            try:
                self._become_worker(cfg, fds, index, generation, ready_r, ready_w, master_pid, metrics)
            finally:
                os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.workers[pid] = WorkerProc(pid, index, generation, cfg.shutdown_timeout,
                                       time.monotonic(), ready_r,
                                       metrics=None if metrics is None else metrics[:2])

    def _become_worker(self, cfg, fds, index, generation, ready_r, ready_w, master_pid,
                       metrics=None) -> None:
        """In the child: shed the master's state, then run the worker."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, signal.SIG_DFL)      # still blocked (WORKER_SIGNALS): see above
        os.close(self._wake_r)
        os.close(self._wake_w)
        os.close(ready_r)
        for w in self.workers.values():
            if w.ready_fd is not None:
                os.close(w.ready_fd)
        # Listeners this configuration does not use (those of another
        # generation) must not stay open in this worker: a listener the
        # master closes would otherwise keep a port bound with nobody accepting.
        mine = {fd for fd, _ in fds}
        for bl in self.listeners.values():
            for s in bl.socks():
                if s.fileno() not in mine:
                    s.close()
        self.obs.child_cleanup()
        kw = {} if metrics is None else {"metrics": (metrics[0].mm, metrics[2])}
        self.worker_main(cfg, fds, index, generation, ready_fd=ready_w, master_pid=master_pid, **kw)

    def _helper_cleanup(self) -> None:
        """In a freshly forked helper: the master's descriptors are not its."""
        os.close(self._wake_r)
        os.close(self._wake_w)
        for w in self.workers.values():
            if w.ready_fd is not None:
                os.close(w.ready_fd)
        for bl in self.listeners.values():
            for s in bl.socks():
                s.close()
        self.obs.child_cleanup()

    def manage_workers(self) -> None:
        """Keep one worker per index of the serving generation."""
        if self.stopping or time.monotonic() < self.respawn_at:
            return
        running = {w.index for w in self.workers.values()
                   if w.generation == self.generation and w.kill_at is None}
        for index in range(self.worker_count()):
            if index not in running:
                self.spawn_worker(self.cfg, self.generation, index)

    def read_readiness(self, w: WorkerProc) -> None:
        """Read `w`'s readiness pipe: its report, or EOF when it died before."""
        try:
            data = os.read(w.ready_fd, 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        os.close(w.ready_fd)
        w.ready_fd = None
        if data.startswith(READY):
            w.ready = True
            if w.generation == self.generation:
                self.boot_failures = 0
        # else: EOF, the worker died before it was ready; reaping says why

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.acme.reaped(pid, os.waitstatus_to_exitcode(status)):
                continue
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            if w.ready_fd is not None:
                self.read_readiness(w)                  # it may have reported, then died
                if w.ready_fd is not None:
                    os.close(w.ready_fd)
                    w.ready_fd = None
            if w.metrics is not None:
                self.obs.give_back(*w.metrics)      # its counts join the retired totals
            self.worker_exited(w, os.waitstatus_to_exitcode(status))

    def worker_exited(self, w: WorkerProc, code: int) -> None:
        how = f"exit code {code}" if code >= 0 else f"signal {_signal_name(-code)}"
        who = f"worker {w.index} (gen {w.generation}, pid {w.pid})"
        if self.stopping or w.kill_at is not None:
            errorlog.info(f"{who} exited ({how})")
            return
        if self.pending is not None and w.generation == self.pending.generation:
            self.abandon_reload(f"{who} of the new configuration exited ({how})")
            return
        if w.generation != self.generation:
            return
        if not w.ready:
            self.boot_failed(who, how)
        else:
            self.obs.worker_died()
            errorlog.warn(f"{who} died ({how}); starting a new one")

    def boot_failed(self, who: str, how: str) -> None:
        now = time.monotonic()
        if now < self.respawn_at:
            return                  # another worker of the same round: one failure is counted
        self.boot_failures += 1
        if self.boot_failures >= BOOT_FAILURES_BEFORE_GIVING_UP:
            errorlog.log("emerg", f"{who} failed at start-up ({how}); workers failed to start "
                                  f"{self.boot_failures} times in a row: giving up "
                                  "(the worker's error is above)")
            self.exit_code = 1
            self.begin_stop("fast")
            return
        delay = min(0.1 * 2 ** self.boot_failures, MAX_BOOT_BACKOFF)
        errorlog.error(f"{who} failed at start-up ({how}); retrying in {delay:.1f}s")
        self.respawn_at = now + delay

    def signal_worker(self, w: WorkerProc, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def stop_worker(self, w: WorkerProc, sig: int, grace: float) -> None:
        """Tell `w` to stop (SIGQUIT drains, SIGTERM closes everything) and
        give it `grace` seconds before SIGKILL."""
        self.signal_worker(w, sig)
        deadline = time.monotonic() + grace
        w.kill_at = deadline if w.kill_at is None else min(w.kill_at, deadline)

    def kill_overdue(self, now: float) -> None:
        for w in self.workers.values():
            if w.kill_at is not None and now >= w.kill_at and not w.killed:
                errorlog.warn(f"worker {w.index} (gen {w.generation}, pid {w.pid}) did not stop "
                              "in time; killing it")
                self.signal_worker(w, signal.SIGKILL)
                w.killed = True

    # ---- reload ---------------------------------------------------------------------

    def begin_reload(self) -> None:
        from ..config import ConfigErrors
        from ..config.isolated import load

        path = self.cfg.path
        errorlog.notice(f"reloading {path}")
        self.obs.reloading(path)
        try:
            new = load(path)
        except ConfigErrors as e:
            self.reload_failed(f"the configuration is invalid:\n{e.render()}")
            return
        except OSError as e:
            self.reload_failed(f"cannot read {path}: {e.strerror or e}"
                               + self._as_whom())
            return
        problems = [f"{name} changed ({getattr(self.cfg, name)!r} -> {getattr(new, name)!r}): "
                    "it applies at start-up only, restart rproxy to change it"
                    for name in RESTART_ONLY if getattr(self.cfg, name) != getattr(new, name)]
        problems += [p + self._as_whom() for p in privileges.unreadable_files(new)]
        if problems:
            self.reload_failed("; ".join(problems))
            return
        try:
            logfiles.open_all(new)      # new log outputs: opened now, inherited by the new workers
        except logfiles.LogOpenError as e:
            self.reload_failed(f"cannot open {e}{self._as_whom()}")
            return
        from .startup import load_tls, prepare_acme

        try:
            prepare_acme(new)               # state-dir and a certificate for every new managed name
            load_tls(new)                   # fresh contexts: certificates and keys are reloaded
        except StartupError as e:
            logfiles.retain([self.cfg])
            self.reload_failed(str(e) + self._as_whom())
            return
        from .. import edge
        edge.load_sticky_key(new, errorlog.log)    # kept when already loaded; a new state-dir is read now
        problem = self.obs.reload_begin(new)
        if problem is not None:
            logfiles.retain([self.cfg])
            self.reload_failed(problem)
            return
        pending = PendingReload(new, self.generation + 1, time.monotonic() + READY_TIMEOUT)
        for srv in new.servers:
            key = listener_key(srv)
            if key in self.listeners:
                self.listeners[key].add_copies(srv, self.worker_count(new))
                continue
            try:
                self.listeners[key] = bind(srv, new.accept_spread, self.worker_count(new))
            except OSError as e:
                self.release_listeners(pending.added_listeners)
                logfiles.retain([self.cfg])
                self.reload_failed(bind_error_message(srv, e))
                return
            pending.added_listeners.append(key)
        if new.max_nofile and new.max_nofile != self.cfg.max_nofile:
            pending.previous_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
            try:
                privileges.set_max_nofile(new.max_nofile)     # inherited by the new workers
            except StartupError as e:
                self.release_listeners(pending.added_listeners)
                logfiles.retain([self.cfg])
                self.reload_failed(str(e))
                return
        self.pending = pending
        for index in range(self.worker_count(new)):
            self.spawn_worker(new, pending.generation, index)

    def _as_whom(self) -> str:
        if os.geteuid() == 0:
            return ""
        return f" (the master runs as {privileges.pwd_name(os.geteuid())} after start-up)"

    def reload_failed(self, why: str) -> None:
        errorlog.error(f"reload failed, still serving the previous configuration "
                       f"(generation {self.generation}): {why}")
        self.obs.reload_failed()
        self._after_reload()

    def release_listeners(self, keys) -> None:
        for key in keys:
            bl = self.listeners.pop(key, None)
            if bl is not None:
                bl.close()

    def check_pending(self, now: float) -> None:
        p = self.pending
        if p is None:
            return
        mine = [w for w in self.workers.values() if w.generation == p.generation]
        if len(mine) == self.worker_count(p.cfg) and all(w.ready for w in mine):
            self.commit_reload()
        elif now >= p.deadline:
            self.abandon_reload(f"the new workers were not ready after {READY_TIMEOUT:.0f}s")

    def commit_reload(self) -> None:
        """Every new worker is ready: the new generation serves, the older
        ones drain."""
        p, self.pending = self.pending, None
        old_generation = self.generation
        old_error_log = (self.cfg.error_log, self.cfg.log_level)
        release_tls(self.cfg)
        self.cfg, self.generation = p.cfg, p.generation
        in_use = set()
        for srv in self.cfg.servers:
            key = listener_key(srv)
            in_use.add(key)
            self.listeners[key].set_backlog(srv.backlog)
            # reuseport: fewer workers than sockets leaves sockets no worker
            # accepts on, whose share of new connections would wait forever
            self.listeners[key].trim_copies(self.worker_count())
        # Removed listeners: the master's copy goes now; the draining workers'
        # copies go with them, which closes the socket.  Log outputs alike.
        self.release_listeners([k for k in self.listeners if k not in in_use])
        if (self.cfg.error_log, self.cfg.log_level) != old_error_log:
            logfiles.use_error_log(self.cfg)
        logfiles.retain([self.cfg])
        draining = 0
        for w in self.workers.values():
            if w.generation != self.generation and w.kill_at is None:
                self.stop_worker(w, signal.SIGQUIT, w.shutdown_timeout + DRAIN_GRACE)
                draining += 1
        self.boot_failures = 0
        self.respawn_at = 0.0
        self.obs.reload_commit(self.cfg)
        self.acme.start(self.cfg)               # the helper follows the new configuration
        errorlog.notice(f"reloaded {self.cfg.path}: generation {self.generation} serving with "
                        f"{self.worker_count()} worker(s); {draining} worker(s) of generation "
                        f"{old_generation} and older draining")
        self._after_reload()

    def abandon_reload(self, why: str) -> None:
        """The new generation did not come up: discard it, keep the old one."""
        p, self.pending = self.pending, None
        release_tls(p.cfg)
        for w in self.workers.values():
            if w.generation == p.generation and w.kill_at is None:
                self.stop_worker(w, signal.SIGTERM, FAST_STOP_GRACE)
        self.release_listeners(p.added_listeners)
        logfiles.retain([self.cfg])
        if p.previous_nofile is not None:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, p.previous_nofile)
            except (ValueError, OSError):
                pass
        self.reload_failed(why)

    def _after_reload(self) -> None:
        if self.reload_again and not self.stopping:
            self.reload_again = False
            self.begin_reload()

    # ---- signal handlers (run from the loop, never from the signal handler) -------

    def on_term(self) -> None:
        self.begin_stop("fast")

    def on_int(self) -> None:
        self.begin_stop("fast")

    def on_quit(self) -> None:
        self.begin_stop("graceful")

    def on_hup(self) -> None:
        if self.stopping:
            return
        if self.pending is not None:
            errorlog.notice("SIGHUP during a reload: reloading again once this one is done")
            self.reload_again = True
            return
        self.begin_reload()

    def on_usr1(self) -> None:
        for problem in logfiles.reopen():
            errorlog.error(f"SIGUSR1: {problem}{self._as_whom()}")
        errorlog.notice("SIGUSR1: log files reopened; telling the workers")
        for w in list(self.workers.values()):
            self.signal_worker(w, signal.SIGUSR1)

    def on_chld(self) -> None:
        self.reap_workers()

    def begin_stop(self, how: str) -> None:
        if self.stopping == "fast" or self.stopping == how:
            return
        self.stopping = how
        self.obs.stopping(how)
        self.acme.shutdown()
        if self.pending is not None:
            p, self.pending = self.pending, None
            for w in self.workers.values():
                if w.generation == p.generation:
                    self.stop_worker(w, signal.SIGTERM, FAST_STOP_GRACE)
            self.release_listeners(p.added_listeners)
        errorlog.notice(f"{'fast' if how == 'fast' else 'graceful'} stop of "
                        f"{len(self.workers)} worker(s)")
        # Nothing will accept again: drop the master's copies now (a unix
        # socket's path goes at once; a TCP port closes when the last worker
        # holding it exits).
        self.close_listeners()
        for w in self.workers.values():
            if how == "fast":
                self.stop_worker(w, signal.SIGTERM, FAST_STOP_GRACE)
            elif w.kill_at is None:
                self.stop_worker(w, signal.SIGQUIT, w.shutdown_timeout + DRAIN_GRACE)

    # ---- the loop -------------------------------------------------------------------

    def set_title(self) -> None:
        """`rproxy: master -c /abs/path.conf`: what `rproxy -s` recognises
        the master by, so it is set before the pidfile is written."""
        from .. import proctitle

        proctitle.set_title(f"rproxy: master -c {self.cfg.path}")

    def run(self) -> int:
        self.set_title()
        self.install_signals()
        self.obs.start(self.cfg)
        self.manage_workers()
        self.acme.start(self.cfg)
        errorlog.notice(f"rproxy started: {self.worker_count()} worker(s), "
                        + ", ".join(l.label for l in self.listeners.values()))
        while True:
            while self._signals:
                name = SIGNAL_NAMES.get(self._signals.popleft())
                if name:
                    getattr(self, f"on_{name}")()
            self.reap_workers()
            now = time.monotonic()
            self.check_pending(now)
            self.kill_overdue(now)
            self.obs.tick(now)
            self.cache_manager.tick(self.cfg, now)     # cache max-size / inactive (rproxy/cache_manager.py)
            self.acme.tick(now)
            if self.stopping:
                if not self.workers:
                    break
            else:
                self.manage_workers()
            self.wait(self.next_timeout(time.monotonic()))
        self.close_listeners()
        self.obs.close()
        errorlog.notice("rproxy stopped")
        return self.exit_code

    def next_timeout(self, now: float) -> float:
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None and not w.killed]
        if self.pending is not None:
            deadlines.append(self.pending.deadline)
        if not self.stopping and self.respawn_at > now:
            deadlines.append(self.respawn_at)
        if self.obs.next_deadline() is not None:
            deadlines.append(self.obs.next_deadline())
        if self.cache_manager.next_deadline(now) is not None:
            deadlines.append(now)       # a cache's index is loading: in slices, between the other duties
        return max(0.0, min([now + 1.0, *deadlines]) - now)

    def wait(self, timeout: float) -> None:
        """Sleep until a signal, a worker's readiness report, or `timeout`."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        booting = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        for fd in booting:
            poller.register(fd, select.POLLIN)
        observed = self.obs.register(poller, select)
        try:
            events = poller.poll(timeout * 1000)
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif fd in observed:
                self.obs.on_event(observed[fd], fd)
            elif booting[fd].ready_fd == fd:
                self.read_readiness(booting[fd])


def release_tls(cfg: Config) -> None:
    """The master drops a configuration's TLS contexts (its workers keep
    their own copies)."""
    if cfg.uses_tls():
        from .. import tls

        tls.release(cfg)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
