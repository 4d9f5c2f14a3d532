"""The OS packages, end to end (issue 8).

Both packages are built once per session from this checkout, exactly as the
README says (`make -C build deb`, `make -C build rpm`), then:

- linted: lintian and rpmlint through the Makefile's lint targets, no errors;
- inspected without installing: the payload of each (the compiled core for
  the system python3, the vendored llhttp, no build debris), the conffiles,
  the unit, the man page (byte for byte what the directive table renders),
  the .rpm's file list, config flags, requirements and scriptlets
  (`rpm -qlp`, `rpm -qp --scripts`), and that both carry the same files;
- taken through a whole life on this machine with dpkg: install, `rproxy -t`
  on the shipped conffile, `systemd-analyze verify` / `security`, an
  administrator's edit, upgrade (reinstall) keeping it, the service started
  with the unit's own command lines and settings (tests/support/
  systemd_unit.py: systemd is not running here), a request proxied to a
  real downstream, reload (a broken edit refused), log rotation, graceful
  stop, remove (config and user kept), purge (nothing left behind).

Checks that depend on issue 5 (the master's `user`, `pidfile`) switch on by
themselves when the installed package marks those directives active.
"""
from __future__ import annotations

import grp
import gzip
import http.client
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from support.proc import free_port, wait_port
from support.systemd_unit import SYSTEMD_PATH, Unit

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
SYS_PY = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    not (shutil.which("dpkg-deb") and os.path.exists(SYS_PY) and shutil.which("make")),
    reason="the packages are built on a Debian machine (dpkg-deb, /usr/bin/python3, make)")

# What the .deb depends on at run time; installed (if missing) before `dpkg -i`,
# which does not resolve dependencies itself.
RUNTIME_DEPS = ["adduser", "python3-lark", "python3-openssl", "python3-psutil",
                "python3-setproctitle", "logrotate"]


def sh(cmd, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
    env = kw.pop("env", None) or {"PATH": SYSTEMD_PATH, "LC_ALL": "C.UTF-8"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and r.returncode != 0:
        pytest.fail(f"{cmd} exited {r.returncode}\n--- stdout\n{r.stdout[-6000:]}\n--- stderr\n{r.stderr[-6000:]}")
    return r


def version() -> str:
    return sh([SYS_PY, str(BUILD / "scripts" / "pins.py"), "version"]).stdout.strip()


def make(target: str) -> Path:
    """`make -C build TARGET` with the environment a person's shell would give
    it (the pyenv python3 first on PATH is exactly what the Makefile must
    not use)."""
    t0 = time.monotonic()
    sh(["make", "-C", str(BUILD), target], env=dict(os.environ), timeout=900)
    print(f"make {target}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return BUILD / "dist"


@pytest.fixture(scope="module")
def deb() -> Path:
    arch = sh(["dpkg", "--print-architecture"]).stdout.strip()
    path = make("deb") / f"rproxy_{version()}_{arch}.deb"
    assert path.is_file(), f"make deb did not produce {path}"
    return path


@pytest.fixture(scope="module")
def rpm() -> Path:
    path = make("rpm") / f"rproxy-{version()}-1.x86_64.rpm"
    if os.uname().machine != "x86_64":
        arch = sh(["rpm", "--eval", "%{_arch}"]).stdout.strip()
        path = path.with_name(f"rproxy-{version()}-1.{arch}.rpm")
    assert path.is_file(), f"make rpm did not produce {path}"
    return path


@pytest.fixture(scope="module")
def deb_tree(deb, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("deb-tree")
    sh(["dpkg-deb", "-x", str(deb), str(d)])
    return d


@pytest.fixture(scope="module")
def rpm_tree(rpm, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rpm-tree")
    sh(["sh", "-c", f"rpm2cpio '{rpm}' | cpio -idm --quiet"], cwd=d)
    return d


def pyfiles(tree: Path) -> set[str]:
    lib = tree / "usr/lib/rproxy"
    return {str(p.relative_to(lib)) for p in lib.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def sys_py_abi() -> str:
    return sh([SYS_PY, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()


# ---- lint -----------------------------------------------------------------------------

def test_lintian_reports_no_errors(deb):
    r = sh(["make", "-C", str(BUILD), "lint-deb"], check=False, env=dict(os.environ))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not re.search(r"^[EW]: ", out, re.M), out          # overrides cover the kept ones


def test_rpmlint_reports_no_errors(rpm):
    r = sh(["make", "-C", str(BUILD), "lint-rpm"], check=False, env=dict(os.environ))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"(\d+) errors, (\d+) warnings", out)
    assert m and m.group(1) == "0", out


# ---- what the packages carry ----------------------------------------------------------

def test_deb_carries_the_compiled_core_for_the_system_python(deb_tree):
    abi = sys_py_abi().replace(".", "")
    lib = deb_tree / "usr/lib/rproxy"
    assert list(lib.glob(f"rproxy/_fastpath.cpython-{abi}-*.so")), "no compiled core for the system python3"
    assert list(lib.glob(f"__llhttp.cpython-{abi}-*.so")), "llhttp is not vendored"
    assert (lib / "llhttp/__init__.py").is_file()
    assert (lib / "rproxy/config/grammar.lark").is_file()
    debris = [p for p in lib.rglob("*") if p.suffix in (".pyx", ".pxi", ".pxd", ".c", ".h")
              or p.name.endswith(".dist-info") or p.name == "__pycache__"]
    assert not debris, debris
    launcher = (deb_tree / "usr/bin/rproxy").read_text()
    assert launcher.startswith(f"#!{SYS_PY} -I\n")
    assert 'sys.path.insert(0, "/usr/lib/rproxy")' in launcher
    assert os.access(deb_tree / "usr/bin/rproxy", os.X_OK)


def test_deb_control_dependencies_and_conffiles(deb):
    info = sh(["dpkg-deb", "-f", str(deb), "Depends", "Version", "Architecture"]).stdout
    abi = sys_py_abi()
    major, minor = abi.split(".")
    assert f"python3 (>= {abi}~)" in info and f"python3 (<< {major}.{int(minor) + 1})" in info, info
    for dep in ("python3-lark (>= 1.1.5)", "python3-openssl", "python3-psutil",
                "python3-setproctitle (>= 1.3)", "adduser"):
        assert dep in info, info
    assert f"Version: {version()}" in info
    conffiles = sh(["sh", "-c", f"dpkg-deb --ctrl-tarfile '{deb}' | tar -xOf - ./conffiles"]).stdout.split()
    assert sorted(conffiles) == ["/etc/logrotate.d/rproxy", "/etc/rproxy/rproxy.conf"]


def test_shipped_files_are_the_sources(deb_tree, rpm_tree):
    common = BUILD / "common"
    for tree, unitdir in ((deb_tree, "lib/systemd/system"), (rpm_tree, "usr/lib/systemd/system")):
        assert (tree / "etc/rproxy/rproxy.conf").read_text() == (common / "rproxy.conf").read_text()
        assert (tree / "etc/logrotate.d/rproxy").read_text() == (common / "rproxy.logrotate").read_text()
        assert (tree / unitdir / "rproxy.service").read_text() == (common / "rproxy.service").read_text()


def test_dashboard_and_alert_rules_are_in_the_docs(deb_tree, rpm_tree):
    common = BUILD / "common"
    for tree in (deb_tree, rpm_tree):
        for name in ("rproxy-grafana.json", "rproxy-alerts.yml"):
            shipped = list(tree.glob(f"usr/share/doc/rproxy*/{name}"))
            assert len(shipped) == 1, (tree, name)
            assert shipped[0].read_bytes() == (common / name).read_bytes()


def test_shipped_config_is_safe_and_commented():
    text = (BUILD / "common" / "rproxy.conf").read_text()
    addrs = re.findall(r"^\s*addr\s*=\s*(\S+)", text, re.M)
    assert addrs and set(addrs) == {"127.0.0.1"}, addrs
    assert re.search(r"^daemonize\s*=\s*false", text, re.M)      # the unit supervises the foreground master
    assert re.search(r"^user\s*=\s*rproxy", text, re.M)
    assert re.search(r"^pidfile\s*=\s*/run/rproxy/rproxy.pid", text, re.M)
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert len(comments) >= 10


def test_man_page_is_rendered_from_the_directive_table(deb_tree, rpm_tree):
    from rproxy._version import __version__
    from rproxy.config.reference import render_man

    want = render_man(__version__)
    for tree in (deb_tree, rpm_tree):
        got = gzip.decompress((tree / "usr/share/man/man8/rproxy.8.gz").read_bytes()).decode()
        assert got == want


def test_unit_file_settings():
    u = Unit.load(str(BUILD / "common" / "rproxy.service"))
    assert u.one("Type") == "notify"           # the master sends READY=1 / RELOADING=1 / STOPPING=1
    assert u.one("NotifyAccess") == "main"
    conf = "/etc/rproxy/rproxy.conf"
    assert u.commands("ExecStartPre") == [["/usr/bin/rproxy", "-t", "-c", conf]]
    assert u.commands("ExecStart") == [["/usr/bin/rproxy", "-c", conf]]
    assert u.commands("ExecReload") == [["/usr/bin/rproxy", "-t", "-c", conf], ["/bin/kill", "-HUP", "$MAINPID"]]
    assert u.one("CapabilityBoundingSet").split() == ["CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN",
                                                    "CAP_DAC_READ_SEARCH"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("KillMode", "mixed"), ("KillSignal", "SIGQUIT")):
        assert u.one(key) == value, key
    assert int(u.one("LimitNOFILE")) >= 65536
    # a graceful stop must be allowed to drain for the default shutdown-timeout (30 s) + 5 s
    assert u.stop_timeout() > 35


def test_rpm_file_list(rpm, deb_tree, rpm_tree):
    files = set(sh(["rpm", "-qlp", str(rpm)]).stdout.split())
    abi = sys_py_abi().replace(".", "")
    for f in ("/usr/bin/rproxy", "/etc/rproxy/rproxy.conf", "/etc/logrotate.d/rproxy",
              "/usr/lib/systemd/system/rproxy.service", "/usr/lib/sysusers.d/rproxy.conf",
              "/usr/share/man/man8/rproxy.8.gz", "/var/log/rproxy", "/usr/lib/rproxy/llhttp/__init__.py"):
        assert f in files, f
    assert any(re.fullmatch(rf"/usr/lib/rproxy/rproxy/_fastpath\.cpython-{abi}-.*\.so", f) for f in files)
    # byte-compiled in the package (RPM has no py3compile)
    assert "/usr/lib/rproxy/rproxy/__pycache__/cli.cpython-%s.pyc" % abi in files
    assert not [f for f in files if f.endswith((".pyx", ".c")) or ".dist-info" in f]
    # same Python payload as the .deb
    assert pyfiles(rpm_tree) == pyfiles(deb_tree)
    config = sh(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]", str(rpm)]).stdout
    flags = dict(line.split(" ", 1) for line in config.splitlines() if " " in line)
    assert "n" in flags["/etc/rproxy/rproxy.conf"] and "c" in flags["/etc/rproxy/rproxy.conf"]   # noreplace
    assert "n" in flags["/etc/logrotate.d/rproxy"]
    modes = sh(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEUSERNAME} %{FILEGROUPNAME}\\n]", str(rpm)]).stdout
    assert "/var/log/rproxy rproxy adm" in modes.splitlines()
    assert "/var/lib/rproxy rproxy rproxy" in modes.splitlines()


def test_rpm_requirements(rpm):
    req = sh(["rpm", "-qpR", str(rpm)]).stdout.splitlines()
    req = [r.strip() for r in req]
    assert f"python(abi) = {sys_py_abi()}" in req
    for r in ("python3dist(lark) >= 1.1.5", "python3dist(pyopenssl)", "python3dist(psutil)",
              "python3dist(setproctitle) >= 1.3", "shadow-utils", "logrotate"):
        assert r in req, req
    provides = sh(["rpm", "-qp", "--provides", str(rpm)]).stdout
    assert ".so" not in provides, provides               # private modules are not advertised


def test_rpm_scriptlets(rpm):
    scripts = sh(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    parts = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)",
                            scripts, re.S | re.M))
    assert set(parts) == {"preinstall", "postinstall", "preuninstall", "postuninstall"}, scripts
    # the user, created only when missing (upgrades and reinstalls change nothing)
    assert "getent group rproxy >/dev/null || groupadd -r rproxy" in parts["preinstall"]
    assert re.search(r"getent passwd rproxy >/dev/null \|\|\s*\\\s*useradd -r -g rproxy .*rproxy$",
                     parts["preinstall"], re.M)
    # first install: enable per the preset; erase: disable and stop; upgrade: restart if running
    assert re.search(r"\$1 -eq 1 .*\n.*preset rproxy\.service", parts["postinstall"])
    assert re.search(r"\$1 -eq 0 .*\n.*disable --now rproxy\.service", parts["preuninstall"])
    assert re.search(r"\$1 -ge 1 .*\n(.*\n)*.*try-restart rproxy\.service", parts["postuninstall"])
    for name, body in parts.items():
        r = subprocess.run(["sh", "-n"], input=body, capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


# ---- the .deb's life on this machine -----------------------------------------------------

UNIT_PATH = "/lib/systemd/system/rproxy.service"
CONF = "/etc/rproxy/rproxy.conf"
SCAN_ROOTS = ("/etc", "/usr", "/var", "/run", "/opt", "/srv")
# man-db's cache of formatted pages: not the package's (man-db's daily job
# prunes it); the test removes the one it caused
SCAN_IGNORE = ("/var/cache/man/",)
MAN_CACHE = Path("/var/cache/man/cat8/rproxy.8.gz")


def rproxy_paths() -> set[str]:
    """Every path on this machine whose name contains 'rproxy', outside /work,
    /tmp and /root (the checkout, the test venv)."""
    out = set()
    for top in SCAN_ROOTS:
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.startswith(("/proc", "/sys")):
                dirnames[:] = []
                continue
            for n in dirnames + filenames:
                if "rproxy" in n:
                    p = os.path.join(dirpath, n)
                    if not p.startswith(SCAN_IGNORE):
                        out.add(p)
    return out


def dpkg_status() -> str:
    r = sh(["dpkg-query", "-W", "-f=${Status}", "rproxy"], check=False)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def installed_directive_active(name: str) -> bool:
    """Whether the INSTALLED rproxy implements a directive (issue 5 flips
    `user` and `pidfile` to active); checks on them switch on by themselves."""
    code = ("import sys; sys.path.insert(0, '/usr/lib/rproxy'); "
            "from rproxy.config.directives import TABLE; "
            f"print([d.active for d in TABLE if d.name == {name!r}][0])")
    return sh([SYS_PY, "-I", "-c", code]).stdout.strip() == "True"


def edit_conf(text: str, port: int, ds_port: int) -> str:
    """An administrator's edit: the shipped file with other ports."""
    new, n1 = re.subn(r"(\n    port\s*=\s*)8080\b", rf"\g<1>{port}", text)
    new, n2 = re.subn(r"(\n        port\s*=\s*)8081\b", rf"\g<1>{ds_port}", new)
    assert n1 == n2 == 1, "the shipped rproxy.conf no longer has the expected server block"
    return new + f"\n# edited by test_packaging at {time.time()}\n"


def get(port: int, path: str):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing a .deb needs root")
def test_deb_install_run_upgrade_remove_purge(deb, downstream, tmp_path):
    if dpkg_status() != "unknown":
        pytest.fail("a package named rproxy is already known to dpkg on this machine "
                    f"({dpkg_status()}); this test will not touch it: purge it first")
    if os.path.exists("/run/systemd/system"):
        pytest.skip("systemd is running here: dpkg -i would start the packaged service itself; "
                    "this test drives the unit's command lines by hand")
    sh([str(BUILD / "scripts" / "install-build-deps.sh"), *RUNTIME_DEPS], env=dict(os.environ))
    before = rproxy_paths()
    assert not any(p.startswith(("/usr/lib/rproxy", "/etc/rproxy")) for p in before), before
    assert "rproxy" not in {u.pw_name for u in pwd.getpwall()}, "a user rproxy exists before install"
    man_cache_existed = MAN_CACHE.exists()
    master = None
    unit = None
    try:
        # ---- install ------------------------------------------------------------
        sh(["dpkg", "-i", str(deb)])
        assert dpkg_status() == "install ok installed"
        user = pwd.getpwnam("rproxy")
        assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"      # a system user
        assert grp.getgrgid(user.pw_gid).gr_name == "rproxy"
        st = os.stat("/var/log/rproxy")
        assert st.st_uid == user.pw_uid and grp.getgrgid(st.st_gid).gr_name == "adm"
        assert oct(st.st_mode & 0o7777) == "0o2750"
        st = os.stat("/var/lib/rproxy")                 # automatic HTTPS state (acme { state-dir })
        assert st.st_uid == user.pw_uid and oct(st.st_mode & 0o7777) == "0o700"
        # py3compile ran: the private modules are byte-compiled for the system python
        assert list(Path("/usr/lib/rproxy/rproxy/__pycache__").glob("cli.cpython-*.pyc"))
        # enabled for multi-user.target (a symlink made even without systemd running)
        assert os.path.islink("/etc/systemd/system/multi-user.target.wants/rproxy.service")
        assert sh(["/usr/bin/rproxy", "-v"]).stdout.strip() == f"rproxy {version()}"
        r = sh(["/usr/bin/rproxy", "-t", "-c", CONF])
        assert f"configuration {CONF} is valid" in r.stdout
        r = subprocess.run(["man", "-P", "cat", "8", "rproxy"], capture_output=True, text=True,
                           env={"PATH": SYSTEMD_PATH, "MANWIDTH": "100"})
        assert r.returncode == 0 and "shutdown-timeout" in r.stdout, r.stderr

        # ---- the unit, checked by systemd's own tools ------------------------------
        if shutil.which("systemd-analyze"):
            sh(["systemd-analyze", "verify", UNIT_PATH])
            r = sh(["systemd-analyze", "security", "--offline=true", "--threshold=30", UNIT_PATH], check=False)
            assert r.returncode == 0, r.stdout[-3000:]
            m = re.search(r"Overall exposure level for rproxy.service: ([\d.]+)", r.stdout)
            assert m and float(m.group(1)) <= 3.0, r.stdout[-400:]

        # ---- an administrator's edit survives an upgrade ------------------------------
        port = free_port()
        edited = edit_conf(Path(CONF).read_text(), port, downstream.port)
        Path(CONF).write_text(edited)
        uid_before = user.pw_uid
        sh(["dpkg", "-i", str(deb)])                  # upgrade path: preinst/postrm upgrade, postinst configure V
        assert Path(CONF).read_text() == edited
        assert not list(Path("/etc/rproxy").glob("*.dpkg-*"))
        assert pwd.getpwnam("rproxy").pw_uid == uid_before
        assert len([u for u in pwd.getpwall() if u.pw_name == "rproxy"]) == 1

        # ---- start it as rproxy.service would ----------------------------------------
        unit = Unit.load(UNIT_PATH)
        unit.prepare_runtime_directory()
        for cmd in unit.commands("ExecStartPre"):
            r = unit.run(cmd)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        log = open(tmp_path / "rproxy.log", "wb")
        [start] = unit.commands("ExecStart")
        master = unit.start(start, log)

        def logtext():
            log.flush()
            return (tmp_path / "rproxy.log").read_text(errors="replace")

        try:
            wait_port(port, timeout=15)
        except TimeoutError:
            pytest.fail(f"rproxy did not start: {master.poll()}\n{logtext()}")
        proc = psutil.Process(master.pid)
        deadline = time.monotonic() + 10        # the port is bound before the master names itself
        while proc.cmdline()[0] != f"rproxy: master -c {CONF}" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.cmdline()[0] == f"rproxy: master -c {CONF}", proc.cmdline()
        status = Path(f"/proc/{master.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        # the title is set once a listener is bound, before TLS loading and
        # the module preload: the workers come a moment later
        deadline = time.monotonic() + 15
        while not proc.children() and time.monotonic() < deadline and master.poll() is None:
            time.sleep(0.05)
        workers = proc.children()
        assert workers, logtext()

        status_code, body = get(port, "/packaged/hello")
        assert (status_code, body) == (200, b"/packaged/hello"), logtext()
        req = downstream.requests[-1]
        assert req.target == "/packaged/hello"
        # the shipped access log, opened at start-up in the rproxy user's
        # directory by a root without CAP_DAC_OVERRIDE
        access = Path("/var/log/rproxy/access.log")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"/packaged/hello" not in (
                access.read_bytes() if access.exists() else b""):
            time.sleep(0.05)
        assert re.search(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /packaged/hello HTTP/1\.1" 200 15 "-" "[^"]*"$',
                         access.read_text(), re.M), access.read_text()
        assert access.stat().st_uid == uid_before

        if installed_directive_active("user"):
            assert {w.uids().effective for w in proc.children()} == {uid_before}
            assert proc.uids().effective == uid_before
        if installed_directive_active("pidfile"):
            assert Path("/run/rproxy/rproxy.pid").read_text().strip() == str(master.pid)

        # ---- reload: a broken edit is refused before the master sees it ---------------------
        reload_check, reload_signal = unit.commands("ExecReload", mainpid=master.pid)
        Path(CONF).write_text(edited + "\nthis is not a directive\n")
        assert unit.run(reload_check).returncode != 0
        Path(CONF).write_text(edited)
        for cmd in (reload_check, reload_signal):
            r = unit.run(cmd)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        time.sleep(0.5)
        assert master.poll() is None, logtext()
        assert get(port, "/after/reload") == (200, b"/after/reload"), logtext()

        # ---- log rotation (reopens the master's logs through -s once it has a pid file) ----
        logf = Path("/var/log/rproxy/test-access.log")
        logf.write_text("a line\n")
        os.chown(logf, uid_before, grp.getgrnam("adm").gr_gid)
        r = sh(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), "/etc/logrotate.d/rproxy"],
               check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert Path("/var/log/rproxy/test-access.log.1").read_text() == "a line\n"
        new = os.stat(logf)
        assert new.st_size == 0 and new.st_uid == uid_before and oct(new.st_mode & 0o777) == "0o640"
        assert master.poll() is None, logtext()

        # ---- stop as systemctl stop would: KillSignal to the main process only ------------
        master.send_signal(unit.kill_signal())
        master.wait(unit.stop_timeout())
        assert master.returncode == 0, logtext()
        assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
        if installed_directive_active("pidfile"):
            # removed at exit, or emptied: /run/rproxy is root's (RuntimeDirectory
            # without User=) and the master runs as rproxy by then; systemd
            # removes the directory itself after the stop
            pid_path = Path("/run/rproxy/rproxy.pid")
            assert not pid_path.exists() or pid_path.read_text() == "", pid_path.read_text()
        unit.remove_runtime_directory()
        log.close()

        # ---- remove: program gone, configuration and user kept ---------------------------
        sh(["dpkg", "-r", "rproxy"])
        assert dpkg_status() == "deinstall ok config-files"
        assert not os.path.exists("/usr/bin/rproxy")
        assert not os.path.exists("/usr/lib/rproxy")                     # py3clean took the .pyc too
        assert not os.path.exists(UNIT_PATH)
        assert Path(CONF).read_text() == edited
        assert pwd.getpwnam("rproxy").pw_uid == uid_before
        assert os.path.isdir("/var/log/rproxy")

        # ---- purge: nothing left behind -----------------------------------------------------
        sh(["dpkg", "--purge", "rproxy"])
        assert dpkg_status() == "unknown"
        assert "rproxy" not in {u.pw_name for u in pwd.getpwall()}
        assert "rproxy" not in {g.gr_name for g in grp.getgrall()}
        left = rproxy_paths() - before
        assert not left, f"left behind after purge: {sorted(left)}"

        # the purge branch of postrm again, on a purged system: must change nothing and succeed
        ctrl = tmp_path / "ctrl"
        sh(["dpkg-deb", "-e", str(deb), str(ctrl)])
        sh(["sh", "-e", str(ctrl / "postrm"), "purge"])
        assert rproxy_paths() - before == set()
    finally:
        if master is not None and master.poll() is None:
            try:
                os.killpg(master.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            master.wait()
        if dpkg_status() != "unknown":
            subprocess.run(["dpkg", "--purge", "rproxy"], capture_output=True,
                           env={"PATH": SYSTEMD_PATH})
        if unit is not None:
            unit.remove_runtime_directory()
        # whatever a failed purge left, so that one failure does not leave
        # the machine dirty for everything after it
        for p in ("/var/log/rproxy", "/etc/rproxy", "/run/rproxy", "/usr/lib/rproxy"):
            if p not in before and os.path.lexists(p):
                shutil.rmtree(p, ignore_errors=True)
        if "rproxy" in {u.pw_name for u in pwd.getpwall()}:
            subprocess.run(["userdel", "rproxy"], capture_output=True)
        if "rproxy" in {g.gr_name for g in grp.getgrall()}:
            subprocess.run(["groupdel", "rproxy"], capture_output=True)
        # man-db's formatted copy of rproxy(8), made by `man` above or its trigger
        if not man_cache_existed and MAN_CACHE.exists():
            MAN_CACHE.unlink()
