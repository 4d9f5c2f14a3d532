"""The master's parts on their own: pidfile, rlimits, the privilege drop,
what a dropped master can still read, the worker's orphan check, and the
arbiter's boot-failure backoff with a worker that always fails.

Anything that changes process-wide state (limits, ids, signal handlers)
runs in a forked child, so the test process is left as it was."""
from __future__ import annotations

import os
import pathlib
import pickle
import pwd
import resource
import select
import shutil
import signal
import stat
import tempfile
import time
import traceback

import pytest

from rproxy.master import StartupError, pidfile, privileges

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def in_child(fn, timeout=30.0):
    """Run fn() in a forked child; return its result or re-raise its exception."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            try:
                out = ("ok", fn())
            except BaseException as e:  # noqa: BLE001
                out = ("err", e, traceback.format_exc())
            data = pickle.dumps(out)
            os.write(w, data)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"the child did not finish within {timeout}s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = pickle.loads(b"".join(chunks))
    if out[0] == "err":
        raise out[1]
    return out[1]


# ---- pidfile ---------------------------------------------------------------------------

def test_pidfile_is_written_whole_and_removed_only_by_its_owner(tmp_path):
    path = str(tmp_path / "r.pid")
    pidfile.write(path)
    assert open(path).read() == f"{os.getpid()}\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["r.pid"]                 # no temp file left behind
    assert pidfile.read(path) == os.getpid()
    # a newer master took the file over: ours must not remove it
    with open(path, "w") as f:
        f.write("999999\n")
    pidfile.remove(path)
    assert os.path.exists(path)
    pidfile.write(path)
    pidfile.remove(path)
    assert not os.path.exists(path)


def test_pidfile_errors_are_clear(tmp_path):
    with pytest.raises(StartupError, match="cannot create a file in"):
        pidfile.write(str(tmp_path / "missing" / "r.pid"))
    bad = tmp_path / "bad.pid"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="does not hold a process id"):
        pidfile.read(str(bad))
    assert pidfile.running_master(str(bad)) is None
    pidfile.refuse_if_running(str(bad))                     # garbage is not a running master


def test_process_title_of_a_missing_process_is_none():
    assert pidfile.process_title(2 ** 22 + 12345) is None
    assert pidfile.process_title(os.getpid())               # this process has one


# ---- limits --------------------------------------------------------------------------

def test_max_nofile_is_set_exactly():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 1234 if hard == resource.RLIM_INFINITY or hard >= 1234 else hard - 1

    def child():
        privileges.set_max_nofile(wanted)
        return resource.getrlimit(resource.RLIMIT_NOFILE)
    assert in_child(child) == (wanted, hard)


def test_max_nofile_zero_leaves_the_limit_alone():
    def child():
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        privileges.set_max_nofile(0)
        return before == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert in_child(child)


def test_max_nofile_above_the_kernel_ceiling_is_an_error_not_another_value():
    with open("/proc/sys/fs/nr_open") as f:
        nr_open = int(f.read())

    def child():
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            privileges.set_max_nofile(nr_open + 1)
        except StartupError as e:
            return str(e), before == resource.getrlimit(resource.RLIMIT_NOFILE)
        return None
    message, unchanged = in_child(child)
    assert f"max-nofile = {nr_open + 1}" in message and "fs.nr_open" in message
    assert unchanged


def test_max_nofile_above_a_hard_limit_that_cannot_be_raised():
    def child():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))
        if os.geteuid() == 0:
            os.setresuid(65534, 65534, 65534)       # no CAP_SYS_RESOURCE any more
        try:
            privileges.set_max_nofile(600)
        except StartupError as e:
            return str(e)
        return None
    message = in_child(child)
    assert message is not None and "the hard limit is 512" in message


def test_core_limit_is_raised_to_its_hard_limit():
    def child():
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        privileges.raise_core_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        return soft == hard
    assert in_child(child)


# ---- user and group --------------------------------------------------------------------

def test_unknown_user_and_group_are_start_up_errors():
    with pytest.raises(StartupError, match="user = no-such-user-here: no such user"):
        privileges.resolve_identity("no-such-user-here", None)
    with pytest.raises(StartupError, match="group = no-such-group-here: no such group"):
        privileges.resolve_identity("nobody", "no-such-group-here")


@needs_root
def test_drop_changes_real_effective_and_saved_ids_for_good():
    nobody = pwd.getpwnam("nobody")

    def child():
        ident = privileges.resolve_identity("nobody", None)
        privileges.drop(ident)
        regained = True
        try:
            os.setresuid(0, 0, 0)
        except PermissionError:
            regained = False
        try:
            os.setgroups([0])
            groups_regained = True
        except PermissionError:
            groups_regained = False
        return os.getresuid(), os.getresgid(), os.getgroups(), regained, groups_regained
    uids, gids, groups, regained, groups_regained = in_child(child)
    assert uids == (nobody.pw_uid,) * 3
    assert gids == (nobody.pw_gid,) * 3
    assert 0 not in groups
    assert not regained and not groups_regained


@needs_root
def test_a_dropped_master_reports_key_files_it_cannot_read():
    from rproxy.config.model import SSL, Config, Server

    # pytest's tmp_path sits in a directory only root may enter
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="rproxy-keys-"))
    os.chmod(tmp_path, 0o755)
    try:
        _check_key_files(tmp_path, SSL, Config, Server)
    finally:
        shutil.rmtree(tmp_path)


def _check_key_files(tmp_path, SSL, Config, Server):
    secret = tmp_path / "server.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    os.chmod(secret, 0o600)
    public = tmp_path / "server.crt"
    public.write_text("-----BEGIN CERTIFICATE-----\n")
    os.chmod(public, 0o644)
    from rproxy.config.model import Downstream

    # a downstream's ssl block is in force with tls = true, `enabled` or not
    ds = Downstream(name="d", addr="127.0.0.1", port=1, tls=True, ssl=SSL(cert=str(public), key=str(secret)))
    cfg = Config(path=str(tmp_path / "r.conf"), servers=(
        Server(port=443, ssl=SSL(enabled=True, cert=str(public), key=str(secret)), downstreams=(ds,)),))
    assert privileges.unreadable_files(cfg) == []            # root reads everything

    def child():
        privileges.drop(privileges.resolve_identity("nobody", None))
        return privileges.unreadable_files(cfg)
    problems = in_child(child)
    assert problems == [f"TLS key {secret} (server 127.0.0.1:443): Permission denied",
                        f"TLS key {secret} (downstream d): Permission denied"]


# ---- the worker and the arbiter --------------------------------------------------------

def test_a_worker_whose_master_is_already_gone_exits_at_once():
    from rproxy import worker
    from rproxy.config import loads

    cfg = loads("server { port = 1\n downstream { addr = 127.0.0.1\n port = 1 } }\n")

    def child():
        # the "master" this worker belongs to is not its parent any more
        return worker.run(cfg, [], 0, 1, master_pid=os.getppid() + 1)
    assert in_child(child) == worker.EXIT_OK


def test_boot_failures_back_off_then_the_master_gives_up(tmp_path):
    from rproxy import errorlog
    from rproxy.config import loads
    from rproxy.master.arbiter import BOOT_FAILURES_BEFORE_GIVING_UP, Arbiter

    from support.proc import free_port

    cfg = loads(f"workers = 3\nserver {{ port = {free_port()}\n downstream {{ addr = 127.0.0.1\n port = 1 }} }}\n")
    starts = tmp_path / "starts"
    log = tmp_path / "log"

    def failing_worker(cfg, fds, index, generation, *, ready_fd, master_pid):
        with open(starts, "a") as f:
            f.write(f"{time.monotonic()} {index}\n")
        os._exit(3)

    def child():
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        errorlog.configure(fd, "info")
        arbiter = Arbiter(cfg, worker_main=failing_worker)
        arbiter.bind_listeners()
        return arbiter.run()
    assert in_child(child) == 1
    text = log.read_text()
    assert "failed to start 5 times in a row: giving up" in text
    rounds = [line.split() for line in starts.read_text().splitlines()]
    assert len(rounds) == 3 * BOOT_FAILURES_BEFORE_GIVING_UP   # every worker, once per round
    times = sorted(float(t) for t, _ in rounds)
    # between rounds the master waited 0.2, 0.4, 0.8, 1.6 s: >= 3 s in all
    assert times[-1] - times[0] >= 0.2 + 0.4 + 0.8 + 1.6 - 0.1


def test_every_signal_command_of_the_cli_is_in_the_signal_table():
    from rproxy.cli import SIGNAL_COMMANDS
    from rproxy.master.control import COMMANDS

    assert set(SIGNAL_COMMANDS) == set(COMMANDS) == {"reload", "stop", "quit", "reopen"}


def test_sighup_while_a_reload_is_booting_reloads_again_afterwards(tmp_path, downstream):
    """A second SIGHUP that arrives while the new generation is still
    booting is neither lost nor started on top of it: it runs afterwards."""
    from rproxy import errorlog, worker
    from rproxy.config import load
    from rproxy.master.arbiter import Arbiter
    from support.proc import free_port

    conf = tmp_path / "r.conf"
    conf.write_text(f"workers = 1\nserver {{ port = {free_port()}\n"
                    f" downstream {{ addr = 127.0.0.1\n port = {downstream.port} }} }}\n")
    log = tmp_path / "log"

    def slow_to_boot(cfg, fds, index, generation, **kw):
        if generation == 2:
            time.sleep(1.0)         # the window in which the second SIGHUP lands
        worker.main_for_child(cfg, fds, index, generation, **kw)

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            errorlog.configure(fd, "info")
            arbiter = Arbiter(load(str(conf)), worker_main=slow_to_boot)
            arbiter.bind_listeners()
            code = arbiter.run()
        finally:
            os._exit(code)
    try:
        def logged(needle, count=1):
            return log.exists() and log.read_text().count(needle) >= count
        _wait(lambda: logged("rproxy started"), "start")
        os.kill(pid, signal.SIGHUP)
        _wait(lambda: logged(f"reloading {conf}"), "the first reload to begin")
        os.kill(pid, signal.SIGHUP)
        _wait(lambda: logged("reloaded ", 2), "two reloads")
        text = log.read_text()
        assert "SIGHUP during a reload: reloading again once this one is done" in text
        assert "generation 2 serving" in text and "generation 3 serving" in text
        # the second reload began only once the first was done, not on top of it
        assert text.count(f"reloading {conf}") == 2
        assert text.index("generation 2 serving") < text.rindex(f"reloading {conf}")
    finally:
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _wait(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_without_dac_override_opens_logs_as_their_owner():
    """Under the packaged unit root lacks CAP_DAC_OVERRIDE: a log directory
    owned by the drop user is closed to it, so the file is opened as that
    user (and belongs to it)."""
    import pwd
    import subprocess
    import sys

    import tempfile

    nobody = pwd.getpwnam("nobody")
    d = pathlib.Path(tempfile.mkdtemp(prefix="rproxy-logs-"))    # a path nobody can reach
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    os.chmod(d, 0o2750)
    code = f"""
import os
from rproxy.master import logfiles
try:
    os.open({str(d / 'x.log')!r}, os.O_WRONLY | os.O_CREAT, 0o640)
    print("plain open worked")
except PermissionError:
    print("plain open refused")
fd = logfiles._open_file({str(d / 'a.log')!r}, ({nobody.pw_uid}, {nobody.pw_gid}))
st = os.fstat(fd)
print(st.st_uid, os.geteuid(), os.getegid())
"""
    r = subprocess.run(["setpriv", "--bounding-set=-all,+setuid,+setgid,+chown", "--inh-caps=-all",
                        sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=30)
    shutil.rmtree(d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["plain open refused", f"{nobody.pw_uid} 0 0"], r.stdout
