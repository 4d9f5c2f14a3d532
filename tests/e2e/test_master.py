"""End to end: the master process, with real `rproxy` processes.

Worker count and titles, respawn after kill -9, reload (SIGHUP) switching
downstreams while a slow exchange of the old generation completes, a broken
config on reload, no request lost across five reloads under keep-alive
load, graceful stop (SIGQUIT), SIGUSR1 log reopening, daemonize (pidfile,
no controlling terminal), `user = nobody` with a port below 1024 (root
only), max-nofile in /proc/PID/limits, SIGKILL of the master, `rproxy -s`.
"""
from __future__ import annotations

import collections
import fcntl
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time

import psutil
import pytest

from support.confs import one_downstream, server_block
from support.downstream import Downstream
from support.master import (KeepAliveClient, LostRequest, exited, fd_target, kill_tree,
                            live_children, privileged_free_port, proc_limits, title, wait_generation,
                            wait_log, wait_until, workers_by_generation)
from support.proc import free_port, read_response, request, rproxy_command, wait_port
from support.stats import worker_stats

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def conf(port, ds_port, workers=2, main="", servers=""):
    return one_downstream(port, ds_port, workers=workers, main="shutdown-timeout = 10s\n" + main) + servers


def rewrite(path: str, text: str) -> None:
    """Replace a config file the way editors do (new file, rename)."""
    tmp = path + ".new"
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode & 0o7777)
    os.rename(tmp, path)


def get(port, target="/"):
    return request(port, f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())


class SlowRequest(threading.Thread):
    """GET /slow/MS on its own connection, in a thread; .result when done."""

    def __init__(self, port, ms):
        super().__init__(daemon=True)
        self.port, self.ms = port, ms
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = get(self.port, f"/slow/{self.ms}")
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def wait_request_seen(ds: Downstream, prefix: str, timeout=10):
    wait_until(lambda: any(r.target.startswith(prefix) for r in ds.requests), timeout,
               f"the downstream to receive {prefix}")


# ---- workers ----------------------------------------------------------------------------

def test_worker_count_and_titles(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=3), port)
    workers = wait_generation(p.pid, 1, 3)
    assert sorted(workers) == [0, 1, 2]
    assert len(live_children(p.pid)) == 3
    assert title(psutil.Process(p.pid)) == f"rproxy: master -c {os.path.abspath(p.conf)}"
    for index, w in workers.items():
        assert title(w) == f"rproxy: worker {index} (gen 1)"


def test_killed_worker_is_replaced(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    before = wait_generation(p.pid, 1, 2)
    # Titled is not yet ready: a worker titles itself before it builds its
    # tables and reports ready, and one killed in between is rightly logged
    # as "failed at start-up" (a slow start, e.g. under ASan, widened that
    # window).  A worker answering SIGUSR2 runs its loop, so it reported
    # ready before (the signal waits in its signalfd until then).
    worker_stats(p, timeout=30)
    victim = before[1]
    victim.send_signal(signal.SIGKILL)
    after = wait_until(lambda: (lambda g: g if len(g) == 2 and g[1].pid != victim.pid else None)(
        workers_by_generation(p.pid).get(1, {})), 10, "a replacement for worker 1")
    assert after[0].pid == before[0].pid              # the other one was left alone
    assert not psutil.pid_exists(victim.pid)          # reaped by the master: no zombie
    assert "worker 1 (gen 1, pid %d) died (signal SIGKILL)" % victim.pid in p.read_log()
    assert get(port, "/after-respawn")[0] == 200


def _listen_inodes(pid: int, port: int) -> set:
    """Inodes of the listening TCP sockets on `port` that process `pid` holds."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(cols[9])
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            held.add(target[8:-1])
    return held


def test_accept_spread_reuseport_gives_each_worker_its_own_socket(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2, main="accept-spread = reuseport"), port)
    workers = wait_generation(p.pid, 1, 2)
    mine = {i: _listen_inodes(w.pid, port) for i, w in workers.items()}
    assert all(len(v) == 1 for v in mine.values()), mine
    assert mine[0] != mine[1]                                   # one SO_REUSEPORT socket each
    assert _listen_inodes(p.pid, port) == mine[0] | mine[1]     # the master keeps both
    assert all(get(port, f"/r{i}")[0] == 200 for i in range(20))
    # a replaced worker takes over its predecessor's socket (and its queue)
    victim = workers[1]
    victim.send_signal(signal.SIGKILL)
    after = wait_until(lambda: (lambda g: g if len(g) == 2 and g[1].pid != victim.pid else None)(
        workers_by_generation(p.pid).get(1, {})), 10, "a replacement for worker 1")
    assert _listen_inodes(after[1].pid, port) == mine[1]
    assert get(port, "/after")[0] == 200


def test_accept_spread_exclusive_shares_one_socket(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    workers = wait_generation(p.pid, 1, 2)
    held = [_listen_inodes(w.pid, port) for w in workers.values()]
    assert len(held[0]) == 1 and held[0] == held[1]


# ---- reload -------------------------------------------------------------------------------

def test_reload_switches_downstream_while_old_slow_exchange_completes(start_rproxy, port):
    old_ds, new_ds = Downstream(), Downstream()
    try:
        p = start_rproxy(conf(port, old_ds.port, workers=2), port)
        old_workers = wait_generation(p.pid, 1, 2)
        slow = SlowRequest(port, 3000)
        wait_request_seen(old_ds, "/slow/")
        rewrite(p.conf, conf(port, new_ds.port, workers=2))
        p.signal(signal.SIGHUP)
        wait_log(p, "reloaded ")
        assert slow.is_alive()                  # the reload happened with it in flight
        wait_generation(p.pid, 2, 2)
        for i in range(20):
            status, _, body = get(port, f"/new/{i}")
            assert (status, body) == (200, f"/new/{i}".encode())
        assert [r.target for r in new_ds.requests] == [f"/new/{i}" for i in range(20)]
        assert not any(r.target.startswith("/new/") for r in old_ds.requests)
        # the old generation drained the slow exchange, which completes intact
        slow.join(10)
        assert slow.error is None
        assert slow.result[0] == 200 and slow.result[2] == b"slow"
        # then the old generation exits; the master stays
        wait_until(lambda: all(exited(w) for w in old_workers.values()), 10, "gen 1 to exit")
        assert p.poll() is None
        assert set(workers_by_generation(p.pid)) == {2}
    finally:
        old_ds.close()
        new_ds.close()


def test_reload_with_broken_config_keeps_serving(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    before = wait_generation(p.pid, 1, 2)
    good = open(p.conf).read()
    lines = good.splitlines()
    lines.insert(2, "no-such-directive = 1")
    rewrite(p.conf, "\n".join(lines) + "\n")
    p.signal(signal.SIGHUP)
    log = wait_log(p, "reload failed")
    assert f"{os.path.abspath(p.conf)}:3:1" in log
    assert "still serving the previous configuration (generation 1)" in log
    assert get(port, "/still-here")[:3:2] == (200, b"/still-here")
    assert workers_by_generation(p.pid) == {1: before}          # same processes, untouched
    # fixed again: the next reload works
    rewrite(p.conf, good)
    p.signal(signal.SIGHUP)
    wait_log(p, "reloaded ")
    wait_generation(p.pid, 2, 2)


def test_reload_adds_and_removes_listeners(start_rproxy, downstream, port):
    second = free_port()
    p = start_rproxy(conf(port, downstream.port, workers=1), port)
    wait_generation(p.pid, 1, 1)
    # add a listener: bound by the master on reload, served by the new generation
    rewrite(p.conf, conf(port, downstream.port, workers=1) + server_block(second, downstream.port))
    p.signal(signal.SIGHUP)
    wait_log(p, "reloaded ")
    assert get(second, "/on-second")[:3:2] == (200, b"/on-second")
    assert get(port, "/on-first")[0] == 200
    # remove the first: closed once the generation that used it is gone
    rewrite(p.conf, "workers = 1\n" + server_block(second, downstream.port))
    p.signal(signal.SIGHUP)
    wait_log(p, "reloaded ", count=2)
    wait_until(lambda: set(workers_by_generation(p.pid)) == {3}, 15, "older generations to exit")
    wait_until(lambda: _refused(port), 5, f"port {port} to close")
    assert get(second, "/still-second")[0] == 200


def test_reload_changing_a_start_up_only_setting_is_refused(start_rproxy, downstream, port,
                                                             tmp_path):
    p = start_rproxy(conf(port, downstream.port, workers=1, main=f"pidfile = {tmp_path}/a.pid"),
                     port)
    before = wait_generation(p.pid, 1, 1)
    rewrite(p.conf, conf(port, downstream.port, workers=1, main=f"pidfile = {tmp_path}/b.pid"))
    p.signal(signal.SIGHUP)
    log = wait_log(p, "reload failed")
    assert "pidfile changed" in log and "restart rproxy to change it" in log
    assert workers_by_generation(p.pid) == {1: before}
    assert get(port, "/same")[0] == 200


def test_reload_whose_new_workers_cannot_start_keeps_the_old_generation(start_rproxy, downstream,
                                                                          port):
    # workers of generation 2 and later fail at boot (fault injection: no
    # valid configuration makes a worker fail without touching the network)
    p = start_rproxy(conf(port, downstream.port, workers=2), port,
                     env={**os.environ, "RPROXY_FAULT_BOOT_GENERATION": "2"})
    before = wait_generation(p.pid, 1, 2)
    rewrite(p.conf, conf(port, downstream.port).replace("workers = 2", "workers = 1"))
    p.signal(signal.SIGHUP)
    log = wait_log(p, "reload failed")
    assert "of the new configuration exited (exit code 3)" in log
    assert workers_by_generation(p.pid) == {1: before}
    assert get(port, "/old-config")[0] == 200
    wait_until(lambda: len(live_children(p.pid)) == 2, 10, "the failed generation to be reaped")


def test_no_request_lost_during_five_reloads(start_rproxy, downstream, port):
    """Keep-alive clients run through five reloads (alternating 1 and 2
    workers); every request is answered exactly once."""
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    wait_generation(p.pid, 1, 2)
    stop = threading.Event()
    results = collections.Counter()
    lost = []
    clients = []

    def load(tid):
        c = KeepAliveClient(port)
        clients.append(c)
        n = 0
        while not stop.is_set() and n < 2000:
            # every 7th exchange is slow, so reloads catch some in flight
            target = f"/slow/100?id={tid}-{n}" if n % 7 == 3 else f"/ka/{tid}/{n}"
            try:
                status, _, body = c.get(target)
            except LostRequest as e:
                lost.append(str(e))
                c.close()
            else:
                results["ok" if status == 200 else f"status {status}"] += 1
                expected = b"slow" if target.startswith("/slow/") else target.encode()
                if body != expected:
                    results["wrong body"] += 1
            n += 1
            results["sent"] += 1
        c.close()

    threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in range(2)]
    for t in threads:
        t.start()
    try:
        for reload_no in range(1, 6):
            time.sleep(0.3)
            rewrite(p.conf, conf(port, downstream.port, workers=1 + reload_no % 2))
            p.signal(signal.SIGHUP)
            wait_log(p, "reloaded ", count=reload_no)
        wait_generation(p.pid, 6, 2)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert lost == []
    assert results["sent"] >= 100
    assert results["ok"] == results["sent"], results
    # each request reached the downstream exactly once: no exchange was cut
    # after the downstream had it (which a retry would have hidden)
    seen = collections.Counter(r.target for r in downstream.requests)
    assert sum(seen.values()) == results["sent"]
    assert max(seen.values()) == 1
    assert "reload failed" not in p.read_log()


def test_reload_keeps_an_accepted_connection_that_has_not_sent_yet(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=1), port)
    wait_generation(p.pid, 1, 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # accepted by the generation-1 worker (wait until it holds a client)
        wait_until(lambda: _client_count(p) >= 1, 5, "the worker to accept")
        p.signal(signal.SIGHUP)
        wait_log(p, "reloaded ")
        s.sendall(b"GET /late-first-request HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, body, _ = read_response(s)
    assert (status, body) == (200, b"/late-first-request")


def _client_count(p) -> int:
    n = 0
    for w in live_children(p.pid):
        try:
            n += sum(1 for c in w.net_connections(kind="tcp")
                     if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == p.port)
        except psutil.Error:
            pass
    return n


# ---- stopping -------------------------------------------------------------------------

def test_quit_drains_in_flight_slow_response_then_exits_zero(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    workers = wait_generation(p.pid, 1, 2)
    slow = SlowRequest(port, 1000)
    wait_request_seen(downstream, "/slow/")
    p.signal(signal.SIGQUIT)
    slow.join(10)
    assert slow.error is None
    assert slow.result[0] == 200 and slow.result[2] == b"slow"
    assert p.proc.wait(15) == 0
    assert all(exited(w) for w in workers.values())
    assert _refused(port)


def _refused(port) -> bool:
    """Nothing listens on `port` any more (a socket still listening, even with
    nobody accepting, completes the handshake from its backlog)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_sigkill_of_the_master_stops_the_workers(start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port)
    workers = list(wait_generation(p.pid, 1, 2).values())
    p.signal(signal.SIGKILL)
    p.proc.wait(5)
    wait_until(lambda: all(exited(w) for w in workers), 5, "the orphaned workers to exit")


def test_workers_failing_at_boot_are_retried_with_backoff_then_the_master_gives_up(
        start_rproxy, downstream, port):
    p = start_rproxy(conf(port, downstream.port, workers=2), port, wait=False,
                     env={**os.environ, "RPROXY_FAULT_BOOT_GENERATION": "1"})
    assert p.proc.wait(30) == 1
    log = p.read_log()
    assert "retrying in 0.2s" in log and "retrying in 0.4s" in log and "retrying in 1.6s" in log
    assert "failed to start 5 times in a row: giving up" in log
    assert log.count("cannot start") <= 2 * 5                  # no tight loop
    assert log.index("retrying in 0.2s") < log.index("retrying in 0.4s")


# ---- signals through the pidfile, log reopening ----------------------------------------

def test_signal_commands_through_the_pidfile(start_rproxy, downstream, port, tmp_path):
    pid_path = str(tmp_path / "rproxy.pid")
    p = start_rproxy(conf(port, downstream.port, workers=1, main=f"pidfile = {pid_path}"), port)
    wait_generation(p.pid, 1, 1)
    assert open(pid_path).read() == f"{p.pid}\n"

    def ctl(*args):
        return subprocess.run(rproxy_command() + list(args), capture_output=True, text=True, timeout=30)

    r = ctl("-s", "reload", "-c", p.conf)
    assert r.returncode == 0, r.stderr
    wait_generation(p.pid, 2, 1)
    # reopen: logrotate moved the log away; new lines go to a new file at the old path
    rotated = p.log_path + ".1"
    os.rename(p.log_path, rotated)
    r = ctl("-s", "reopen", "-c", p.conf)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: os.path.exists(p.log_path) and "worker 0 (gen 2): log files reopened"
               in open(p.log_path).read(), 10, "the reopened log")
    assert "log files reopened" in open(p.log_path).read()
    assert "log files reopened" not in open(rotated).read()
    os.rename(rotated, p.log_path)      # so the fixture's log reader sees one file again
    r = ctl("-s", "quit", "-p", pid_path)
    assert r.returncode == 0, r.stderr
    assert p.proc.wait(15) == 0
    assert not os.path.exists(pid_path)             # removed at exit
    r = ctl("-s", "stop", "-c", p.conf)
    assert r.returncode == 1 and "does not exist: is rproxy running?" in r.stderr


def test_signal_command_errors(tmp_path, downstream):
    conf_path = tmp_path / "r.conf"
    conf_path.write_text(conf(free_port(), downstream.port))

    def ctl(*args):
        return subprocess.run(rproxy_command() + list(args), capture_output=True, text=True, timeout=30)

    r = ctl("-s", "stop", "-c", str(conf_path))
    assert r.returncode == 1 and "sets no pidfile" in r.stderr
    stale = tmp_path / "stale.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale.write_text(f"{dead.pid}\n")
    r = ctl("-s", "stop", "-p", str(stale))
    assert r.returncode == 1 and "not running" in r.stderr and "stale" in r.stderr
    other = subprocess.Popen(["sleep", "30"])
    try:
        stale.write_text(f"{other.pid}\n")
        r = ctl("-s", "stop", "-p", str(stale))
        assert r.returncode == 1 and "is not an rproxy master" in r.stderr
        assert other.poll() is None                 # and it was not signalled
    finally:
        other.kill()
        other.wait()
    conf_path.write_text("server { bogus = 1 }\n")
    r = ctl("-s", "reload", "-c", str(conf_path), "-p", str(stale))
    assert r.returncode == 1 and "not reloading" in r.stderr and f"{conf_path}:1:" in r.stderr


# ---- daemon, privileges, limits -----------------------------------------------------------

@pytest.fixture
def daemon_cleanup():
    pids = []
    yield pids
    for pid in pids:
        kill_tree(pid)


def test_daemonize_detaches_and_writes_the_pidfile(downstream, port, tmp_path, daemon_cleanup):
    pid_path = tmp_path / "rproxy.pid"
    conf_path = tmp_path / "rproxy.conf"
    conf_path.write_text(conf(port, downstream.port, workers=2,
                              main=f"daemonize = true\npidfile = {pid_path}"))
    # start it on a pseudo-terminal that is its controlling terminal, as from a
    # shell, with one more inherited pipe (as a script's $(...) would leave)
    controller, terminal = os.openpty()
    inherited_r, inherited_w = os.pipe()
    try:
        proc = subprocess.Popen(rproxy_command() + ["-c", str(conf_path)], stdin=terminal,
                                stdout=terminal, stderr=terminal, start_new_session=True,
                                pass_fds=(inherited_w,),
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(inherited_w)
        try:
            assert proc.wait(20) == 0                   # the parent exits once the daemon is up
        finally:
            if proc.poll() is None:
                proc.kill()
            if pid_path.exists():
                daemon_cleanup.append(int(pid_path.read_text()))
        # the daemon closed the inherited pipe: whoever waits for its EOF gets it
        assert select.select([inherited_r], [], [], 5)[0], "the daemon kept an inherited pipe open"
        assert os.read(inherited_r, 1) == b""
    finally:
        os.close(inherited_r)
        os.close(terminal)
        os.close(controller)
    pid = int(pid_path.read_text())
    assert pid_path.read_text() == f"{pid}\n"
    daemon = psutil.Process(pid)
    assert pid != proc.pid
    assert title(daemon) == f"rproxy: master -c {conf_path}"
    assert daemon.terminal() is None                    # no controlling terminal
    assert os.getsid(pid) != pid                        # not a session leader: cannot get one back
    assert os.getsid(pid) != os.getsid(0)
    assert daemon.cwd() == "/"
    for fd in (0, 1, 2):
        assert fd_target(pid, fd) == "/dev/null"
    workers = wait_generation(pid, 1, 2)
    assert all(w.terminal() is None for w in workers.values())
    wait_port(port)
    assert get(port, "/daemon")[0] == 200
    r = subprocess.run(rproxy_command() + ["-s", "stop", "-c", str(conf_path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: exited(daemon), 10, "the daemon to stop")
    assert all(exited(w) for w in workers.values())
    assert not pid_path.exists()


def test_daemonize_reports_a_start_up_failure_to_the_terminal(downstream, port, tmp_path):
    conf_path = tmp_path / "rproxy.conf"
    conf_path.write_text(conf(port, downstream.port, main="daemonize = true\n"
                                                          f"pidfile = {tmp_path}/no/such/dir/r.pid"))
    r = subprocess.run(rproxy_command() + ["-c", str(conf_path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "pidfile" in r.stderr and "no/such/dir" in r.stderr
    assert "the daemon exited during start-up" in r.stderr


@needs_root
def test_user_nobody_serves_on_a_privileged_port_and_cannot_add_one_on_reload(downstream):
    port = privileged_free_port()
    second = privileged_free_port(high=(port or 1000) - 1)
    if port is None or second is None:
        pytest.skip("no free port below 1024")
    nobody = pwd.getpwnam("nobody")
    # a directory the dropped master can read its configuration from
    d = tempfile.mkdtemp(prefix="rproxy-nobody-")
    os.chmod(d, 0o755)
    from support.proc import Rproxy

    p = None
    try:
        pid_path = os.path.join(d, "rproxy.pid")     # in a directory of root's
        text = conf(port, downstream.port, workers=2, main=f"user = nobody\npidfile = {pid_path}")
        p = Rproxy(text, d, port=port)
        os.chmod(p.conf, 0o644)
        workers = wait_generation(p.pid, 1, 2)
        for proc in [psutil.Process(p.pid), *workers.values()]:
            assert tuple(proc.uids()) == (nobody.pw_uid,) * 3, title(proc)
            assert tuple(proc.gids()) == (nobody.pw_gid,) * 3, title(proc)
            groups = [int(g) for g in _status(proc.pid, "Groups").split()]
            assert 0 not in groups
        assert get(port, "/as-nobody")[:3:2] == (200, b"/as-nobody")
        # reload adding a second port below 1024: refused, the old config serves
        rewrite(p.conf, text + server_block(second, downstream.port))
        p.signal(signal.SIGHUP)
        log = wait_log(p, "reload failed")
        assert f"cannot listen on 127.0.0.1:{second}" in log
        assert "ports below 1024 can only be bound at start-up" in log
        assert workers_by_generation(p.pid) == {1: workers}
        assert get(port, "/still")[0] == 200
        # a reload that needs nothing privileged works as nobody
        rewrite(p.conf, text)
        p.signal(signal.SIGHUP)
        wait_log(p, "reloaded ")
        wait_generation(p.pid, 2, 2)
        assert get(port, "/gen2")[0] == 200
        # the pidfile was given to nobody before the drop: nobody cannot
        # remove it from root's directory, but empties it at exit
        assert os.stat(pid_path).st_uid == nobody.pw_uid
        assert open(pid_path).read() == f"{p.pid}\n"
        p.stop()
        p = None
        assert open(pid_path).read() == ""
        r = subprocess.run(rproxy_command() + ["-s", "stop", "-p", pid_path], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1 and "is empty: rproxy is not running" in r.stderr, r.stderr
    finally:
        if p is not None:
            p.stop()
        shutil.rmtree(d, ignore_errors=True)


def _status(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def test_max_nofile_is_the_limit_of_every_process(start_rproxy, downstream, port):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 4321 if hard == resource.RLIM_INFINITY or hard >= 4321 else hard - 7
    p = start_rproxy(conf(port, downstream.port, workers=2, main=f"max-nofile = {wanted}"), port)
    workers = wait_generation(p.pid, 1, 2)
    for pid in [p.pid, *(w.pid for w in workers.values())]:
        assert proc_limits(pid)["Max open files"][0] == str(wanted)


def test_max_nofile_that_cannot_be_set_fails_clearly(start_rproxy, downstream, port):
    with open("/proc/sys/fs/nr_open") as f:
        too_many = int(f.read()) + 1
    p = start_rproxy(conf(port, downstream.port, main=f"max-nofile = {too_many}"), port, wait=False)
    assert p.proc.wait(15) == 1
    log = p.read_log()
    assert f"max-nofile = {too_many}: cannot set the open files limit" in log
    assert "[emerg]" in log


def test_accept_spread_reuseport_reload_to_fewer_workers_closes_the_extra_socket(start_rproxy, downstream,
                                                                                 port):
    p = start_rproxy(conf(port, downstream.port, workers=2, main="accept-spread = reuseport"), port)
    wait_generation(p.pid, 1, 2)
    assert len(_listen_inodes(p.pid, port)) == 2
    rewrite(p.conf, conf(port, downstream.port, workers=1, main="accept-spread = reuseport"))
    p.signal(signal.SIGHUP)
    wait_log(p, "reloaded ")
    wait_until(lambda: set(workers_by_generation(p.pid)) == {2}, 15, "generation 1 to exit")
    only = wait_generation(p.pid, 2, 1)[0]
    assert _listen_inodes(p.pid, port) == _listen_inodes(only.pid, port)
    assert len(_listen_inodes(p.pid, port)) == 1
    # every new connection reaches the one worker (none hashed to a socket nobody accepts on)
    assert all(get(port, f"/n{i}")[0] == 200 for i in range(20))
