"""First contact: the README's first commands, as a new user runs them.

The committed tree is cloned into a temporary directory; the README's test
command's install step (`RUN_TESTS_INSTALL_ONLY=1` + the command) makes
./.venv there and installs the project into it (compiling the fast path: a
minute or two, once per module), then the README's quick-start command is run
exactly as the README writes it, serves a page through 127.0.0.1:8080 and is
stopped with Ctrl-C (SIGINT to its process group), then once more with a
SIGTERM to the script alone.  Both commands are parsed from the clone's
README, so they cannot drift from what it tells users.

The Python they get as `python3`: $RPROXY_FIRST_CONTACT_PYTHON if set, else
the Debian system Python when it refuses global installs (PEP 668: the case a
clean machine has, and the one quickstart.sh used to fail on), else python3 on
PATH (with any virtual environment taken off PATH).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rproxy.demo_downstream import PAGE

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 900     # venv + pip install with a Cython compile, on a busy 2-core machine
START_TIMEOUT = 300       # quickstart reinstalls if the digest differs: a compile again at worst
STOP_TIMEOUT = 30


def readme_command(readme: Path, heading: str) -> str:
    """The one command in the first ```sh block under `## heading`."""
    text = readme.read_text()
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README.md has no '## {heading}' section"
    block = re.search(r"^```sh\n(.*?)^```", m.group(1), re.S | re.M)
    assert block, f"README.md's '## {heading}' has no ```sh block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1, f"expected one command under '## {heading}', found {lines}"
    return lines[0]


def pep668_system_python() -> str | None:
    """/usr/bin/python3 if it is 3.11+, refuses global installs and can make venvs."""
    py = "/usr/bin/python3"
    if not os.path.exists(py):
        return None
    probe = ("import sys, sysconfig, os, venv, ensurepip; "
             "sys.exit(not (sys.version_info >= (3, 11) and "
             "os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))))")
    r = subprocess.run([py, "-I", "-c", probe], capture_output=True, timeout=60)
    return py if r.returncode == 0 else None


def user_env(bindir: Path) -> tuple[dict, str | None]:
    """The environment of a user in a fresh terminal: no virtual environment
    active, no Python overrides; `python3` is the chosen one (see above)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHON",
                        "RUN_TESTS_INSTALL_ONLY", "PIP_REQUIRE_VIRTUALENV")}
    path = [d for d in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if d and not (Path(d).parent / "pyvenv.cfg").exists()]
    chosen = os.environ.get("RPROXY_FIRST_CONTACT_PYTHON") or pep668_system_python()
    if chosen:
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "python3"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(chosen)} "$@"\n')
        wrapper.chmod(0o755)
        path.insert(0, str(bindir))
    env["PATH"] = os.pathsep.join(path)
    return env, chosen


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group this test started (its id is
    the pid of the command, started in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_bounded(argv, cwd, env, timeout, log: Path) -> int:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            pytest.fail(f"{argv} still running after {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")
        finally:
            kill_group(proc)


@pytest.fixture(scope="module")
def installed_clone(tmp_path_factory):
    """A clone of the committed tree with the README test command's install
    step done in it (./.venv holding rproxy and the test extras)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel", "HEAD"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or Path(r.stdout.split()[0]).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not a git checkout: the first-contact tests clone its committed tree")
    head = r.stdout.split()[1]
    base = tmp_path_factory.mktemp("first-contact")
    clone = base / "rproxy"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True, timeout=300)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", head], check=True, timeout=300)
    env, python = user_env(base / "bin")

    command = readme_command(clone / "README.md", "Running the tests")
    log = base / "install.log"
    rc = run_bounded(shlex.split(command), clone, dict(env, RUN_TESTS_INSTALL_ONLY="1"), INSTALL_TIMEOUT, log)
    which = python or shutil.which("python3", path=env["PATH"])
    assert rc == 0, (f"`RUN_TESTS_INSTALL_ONLY=1 {command}` with python3 = {which} exited {rc}:\n"
                     f"{log.read_text(errors='replace')[-6000:]}")
    yield clone, env, python
    shutil.rmtree(base, ignore_errors=True)


def test_readme_test_command_installs_a_working_rproxy(installed_clone):
    clone, env, python = installed_clone
    venv = clone / ".venv"
    assert (venv / "pyvenv.cfg").is_file(), "the install step made no ./.venv"
    rproxy = venv / "bin" / "rproxy"
    r = subprocess.run([str(rproxy), "-t", "-c", "rproxy.conf"], cwd=clone, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.endswith("rproxy: configuration rproxy.conf is valid\n"), r.stdout
    # the installed copy, with its compiled core, not the clone's source tree
    r = subprocess.run([str(venv / "bin" / "python"), "-P", "-c",
                        "import rproxy.fastpath, rproxy._fastpath as f; print(f.__file__)"],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout
    # and the test extras the suite needs, lint included
    for tool in ("pytest", "ruff", "cython-lint"):
        assert (venv / "bin" / tool).exists(), f"{tool} not installed by the test command"
    if python:   # made from the chosen Python (the PEP 668 one by default)
        cfg = (venv / "pyvenv.cfg").read_text()
        assert f"home = {os.path.dirname(python)}\n" in cfg, cfg


def ports_in_use(*ports: int) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def curl_page(timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "-S", "-m", str(timeout), "http://127.0.0.1:8080/"],
                          capture_output=True, timeout=timeout + 10)


def wait_serving(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the quick-start command exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", 8080), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing answered on 127.0.0.1:8080 within {START_TIMEOUT}s:\n{log.read_text(errors='replace')}")


def start_quickstart(clone: Path, env: dict, log: Path) -> subprocess.Popen:
    command = readme_command(clone / "README.md", "Quick start")
    out = open(log, "wb")
    proc = subprocess.Popen(shlex.split(command), cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return proc


def serve_one_page(proc: subprocess.Popen, clone: Path, log: Path) -> list[psutil.Process]:
    """Wait for the proxy, fetch the demo page through it with curl, and
    return the processes the quick start runs (script, demo, master, workers)."""
    wait_serving(proc, log)
    r = curl_page()
    assert r.returncode == 0, r.stderr
    assert r.stdout == PAGE, r.stdout
    tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    titles = [" ".join(p.cmdline()) for p in tree]
    assert any("rproxy.demo_downstream" in t for t in titles), titles
    masters = [p for p, t in zip(tree, titles) if t.startswith("rproxy: master")]
    assert len(masters) == 1, titles
    # the master runs the INSTALLED rproxy: its compiled core is the one in ./.venv
    cores = [m.path for m in masters[0].memory_maps() if "_fastpath" in os.path.basename(m.path)]
    assert cores and all(Path(c).is_relative_to(clone / ".venv") for c in cores), cores
    return tree


def assert_all_gone(proc: subprocess.Popen, tree: list[psutil.Process], how: str, status: int, log: Path) -> None:
    try:
        rc = proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the quick-start command still runs {STOP_TIMEOUT}s after {how}:\n{log.read_text()}")
    gone, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT)
    assert not alive, f"still running after {how}: {[(p.pid, p.cmdline()) for p in alive]}"
    assert rc == status, f"exit status {rc} after {how}, expected {status}"   # 128 + the signal
    assert ports_in_use(8080, 8081) == [], "8080/8081 still held after the quick start stopped"


def test_readme_quick_start_serves_a_page_and_stops(installed_clone):
    clone, env, python = installed_clone
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    busy = ports_in_use(8080, 8081)
    if busy:
        pytest.skip(f"127.0.0.1:{busy} in use: the shipped rproxy.conf needs 8080 and 8081")
    log = clone.parent / "quickstart-1.log"
    proc = start_quickstart(clone, env, log)
    try:
        tree = serve_one_page(proc, clone, log)
        # the install of the test command is reused, not compiled again
        assert "unchanged since it was installed" in log.read_text(), log.read_text()
        os.killpg(proc.pid, signal.SIGINT)     # Ctrl-C in its terminal
        assert_all_gone(proc, tree, "Ctrl-C", 130, log)
    finally:
        kill_group(proc)

    # again (the virtual environment is reused), stopped by a SIGTERM to the script alone
    log = clone.parent / "quickstart-2.log"
    proc = start_quickstart(clone, env, log)
    try:
        tree = serve_one_page(proc, clone, log)
        os.kill(proc.pid, signal.SIGTERM)
        assert_all_gone(proc, tree, "SIGTERM to the script", 143, log)
    finally:
        kill_group(proc)


@pytest.mark.parametrize("args", [["-c", "rproxy.conf"], ["-t", "-c", "rproxy.conf"]])
def test_python_m_rproxy_in_an_unbuilt_checkout_says_what_to_do(tmp_path, args):
    """`python -m rproxy` inside a checkout imports the source tree, which has
    no compiled core: a message naming the fix, exit 1, no traceback -- even
    with a Python that has rproxy installed (this one)."""
    src = tmp_path / "checkout"
    shutil.copytree(ROOT / "rproxy", src / "rproxy",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))
    for name in ("setup.py", "rproxy.conf"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-m", "rproxy", *args], cwd=src, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot run from the source checkout {src}" in r.stderr, r.stderr
    assert "./quickstart.sh" in r.stderr and "pip install ." in r.stderr, r.stderr
    assert r.stdout == ""


def test_rproxy_without_its_core_says_to_reinstall(tmp_path):
    """An installed copy whose compiled core is gone (no checkout around it)."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "rproxy", site / "rproxy",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-P", "-m", "rproxy", "-t", "-c", str(ROOT / "rproxy.conf")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"this installation of rproxy ({site / 'rproxy'}) is incomplete" in r.stderr, r.stderr
    assert "No module named 'rproxy._fastpath'" in r.stderr, r.stderr

