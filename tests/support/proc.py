"""Running the real `rproxy` command in tests, and small raw HTTP clients."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import psutil


def _installed_rproxy() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "rproxy")
    if os.path.exists(local):
        return local
    found = shutil.which("rproxy")
    if not found:
        raise RuntimeError("the rproxy command is not installed (pip install .)")
    return found


def sanitizer_env() -> dict[str, str]:
    """RPROXY_TEST_SANITIZER_ENV (set by tests/sanitize/run.sh): whitespace
    separated NAME=VALUE words (LD_PRELOAD of the ASan/UBSan runtimes,
    ASAN_OPTIONS, UBSAN_OPTIONS, RPROXY_UBSAN_LOG_PATH) that go into rproxy's
    own processes only:
    a preloaded libasan makes curl, ps, openssl... hang, and an instrumented
    fast path cannot be imported without it."""
    words = os.environ.get("RPROXY_TEST_SANITIZER_ENV", "").split()
    out = {}
    for w in words:
        name, eq, value = w.partition("=")
        if not eq or not name:
            raise RuntimeError(f"RPROXY_TEST_SANITIZER_ENV: {w!r} is not NAME=VALUE")
        out[name] = value
    return out


_wrapper: Optional[str] = None


def rproxy_command() -> list[str]:
    """The installed `rproxy` console script (the one next to this Python).

    Under the sanitizer stage it is a small sh wrapper that puts
    sanitizer_env() in the environment and execs that script (same pid):
    every launcher -- Rproxy, the tests' own `rproxy -s ...` runs, the
    logrotate snippet, a test's env={...} -- gets the runtime into rproxy
    and into nothing else."""
    global _wrapper
    real = _installed_rproxy()
    extra = sanitizer_env()
    if not extra:
        return [real]
    if _wrapper is None:
        import atexit
        import shlex
        import tempfile

        d = tempfile.mkdtemp(prefix="rproxy-sanitize-")
        os.chmod(d, 0o755)              # a test may run rproxy as another user
        path = os.path.join(d, "rproxy")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
            for name, value in extra.items():
                f.write(f"{name}={shlex.quote(value)}; export {name}\n")
            f.write(f"exec {shlex.quote(real)} \"$@\"\n")
        os.chmod(path, 0o755)
        atexit.register(shutil.rmtree, d, True)
        _wrapper = path
    return [_wrapper]


# Ports handed out by free_port(), each still held by a bound socket.
_held: list[socket.socket] = []


def hold_port(host: str, port: int) -> bool:
    """Bind (host, port) with SO_REUSEADDR and keep the socket, never
    listening (see free_port); False if the port is taken."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        return False
    _held.append(s)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port for a server a test starts (rproxy, a downstream, redis,
    pebble, a metrics listener), or one where nothing must listen.

    Not a guess: the kernel picks it (bind to port 0) and this process keeps
    that socket bound -- with SO_REUSEADDR, never listening -- until it exits.
    While a socket is bound there, no other process's bind(0) or connect()
    is given the port, and a bind without SO_REUSEADDR fails; a server that
    binds it WITH SO_REUSEADDR and listens (rproxy's listeners, its metrics
    listener, nginx, redis, Go's pebble, Python's socketserver all do) takes
    it over, and connections go to that server only (a socket that does not
    listen accepts none; connecting while no server listens is refused).  So
    the port passes from the test to the server with no close-then-rebind
    window in which another test run on the machine could take it, and the
    port can go into a config file before the server starts."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    _held.append(s)
    return s.getsockname()[1]


def open_fds(pid: int) -> list[str]:
    """What process `pid` holds open now: the targets of /proc/PID/fd
    ("/path", "/path (deleted)", "socket:[N]", "pipe:[N]"...).  An fd closed
    between the listing and its readlink is left out: it is not held."""
    d = f"/proc/{pid}/fd"
    out = []
    for fd in os.listdir(d):
        try:
            out.append(os.readlink(f"{d}/{fd}"))
        except FileNotFoundError:
            continue
    return out


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"rproxy exited with {proc.returncode}:\n{proc.read_log()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _is_helper(p) -> bool:
    try:
        return " ".join(p.cmdline()).startswith("rproxy: acme")
    except psutil.Error:
        return False


class Rproxy:
    """`rproxy -c FILE` in its own session, its stderr in a log file."""

    def __init__(self, conf_text: str, tmp_path, port: Optional[int] = None, host="127.0.0.1",
                 extra_args=(), wait=True, env=None, name="rproxy"):
        self.conf = os.path.join(str(tmp_path), f"{name}.conf")
        with open(self.conf, "w") as f:
            f.write(conf_text)
        self.log_path = os.path.join(str(tmp_path), f"{name}.log")
        self.logf = open(self.log_path, "wb")
        self.port = port
        self.host = host
        self.proc = subprocess.Popen(rproxy_command() + ["-c", self.conf, *extra_args],
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        if wait and port is not None:
            wait_port(port, host, proc=self)
            self._wait_for_a_worker()

    def _wait_for_a_worker(self, timeout: float = 10.0) -> None:
        """The master listens before it forks: a port that answers does not
        mean a worker exists yet (tests read p.workers() right away).  Soft:
        a master that exits or forks nothing is the test's to judge."""
        deadline = time.monotonic() + timeout
        while not self.workers() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_log(self) -> str:
        self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def workers(self) -> list:
        try:
            return [c for c in psutil.Process(self.proc.pid).children() if not _is_helper(c)]
        except psutil.NoSuchProcess:
            return []

    def helpers(self) -> list:
        """The master's helper processes (`rproxy: acme`), not workers."""
        try:
            return [c for c in psutil.Process(self.proc.pid).children() if _is_helper(c)]
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; SIGKILL the whole session if it does not go."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)     # stragglers in the session
        except ProcessLookupError:
            pass
        self.logf.close()
        return self.proc.returncode


# ---- raw HTTP client helpers ------------------------------------------------------

def read_response(sock: socket.socket, buf: bytes = b"", head_request: bool = False):
    """Read one response; returns (status, headers list, body, rest-of-buffer).
    Handles Content-Length, chunked and close-delimited bodies."""
    def fill():
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed")
        return d
    while b"\r\n\r\n" not in buf:
        buf += fill()
    i = buf.index(b"\r\n\r\n")
    head, buf = buf[:i], buf[i + 4:]
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for ln in lines[1:]:
        k, v = ln.split(b":", 1)
        headers.append((k.decode().lower(), v.strip().decode()))
    hd = dict(headers)
    if head_request or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", buf
    if hd.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += fill()
            j = buf.index(b"\r\n")
            size = int(buf[:j].split(b";")[0], 16)
            buf = buf[j + 2:]
            if size == 0:
                while b"\r\n" not in buf:
                    buf += fill()
                while not buf.startswith(b"\r\n"):
                    j = buf.index(b"\r\n")
                    buf = buf[j + 2:]
                    while b"\r\n" not in buf:
                        buf += fill()
                buf = buf[2:]
                break
            while len(buf) < size + 2:
                buf += fill()
            body += buf[:size]
            buf = buf[size + 2:]
        return status, headers, body, buf
    if "content-length" in hd:
        n = int(hd["content-length"])
        while len(buf) < n:
            buf += fill()
        return status, headers, buf[:n], buf[n:]
    # close-delimited
    while True:
        try:
            buf += fill()
        except ConnectionError:
            return status, headers, buf, b""


def read_until_close(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the peer sends until it closes the connection."""
    sock.settimeout(timeout)
    out = b""
    while True:
        d = sock.recv(65536)
        if not d:
            return out
        out += d


def request(port: int, raw: bytes, host: str = "127.0.0.1", timeout: float = 10.0, head=False):
    """Send raw bytes on a new connection; the final response (interim 1xx
    ones, such as the 100 Continue rproxy sends while it buffers a body, are
    read past)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(raw)
        status, headers, body, rest = read_response(s, head_request=head)
        while 100 <= status < 200 and status != 101:
            status, headers, body, rest = read_response(s, rest, head_request=head)
        return status, headers, body


def lines_of(path, n=1, timeout=10.0):
    """The lines of the file at `path` (a pathlib.Path) once it has at least
    n, or what it has when the timeout passes (an access or error log the
    proxy writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return [ln.decode("ascii") for ln in lines]
        time.sleep(0.02)
