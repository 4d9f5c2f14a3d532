"""Helpers for tests of the master process: waiting for workers, titles and
log lines, keep-alive clients that count what they lose, and cleaning up
processes that left the test's session (daemons)."""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from typing import Callable, Optional

import psutil

from .proc import hold_port, read_response

WORKER_TITLE = re.compile(r"^rproxy: worker (\d+) \(gen (\d+)\)$")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05):
    """Poll `predicate` until it returns something true; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def exited(proc: psutil.Process) -> bool:
    """True once `proc` no longer runs (a zombie waiting for its reaper counts
    as exited: it serves nothing and holds no socket)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def title(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""
    return cmd[0] if cmd else ""


def live_children(pid: int) -> list:
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if not exited(k)]


def workers_by_generation(pid: int) -> dict:
    """{generation: {index: psutil.Process}} of the live workers of master `pid`
    that have set their title."""
    out: dict = {}
    for k in live_children(pid):
        m = WORKER_TITLE.match(title(k))
        if m:
            out.setdefault(int(m.group(2)), {})[int(m.group(1))] = k
    return out


def wait_generation(pid: int, generation: int, count: int, timeout: float = 15.0) -> dict:
    """Wait until master `pid` has `count` titled workers of `generation`;
    returns {index: process}."""
    def ready():
        gen = workers_by_generation(pid).get(generation, {})
        return gen if len(gen) == count else None
    return wait_until(ready, timeout, f"{count} worker(s) of generation {generation}")


def log_count(text: str, needle: str) -> int:
    return text.count(needle)


def wait_log(rproxy, needle: str, count: int = 1, timeout: float = 15.0) -> str:
    """Wait until the rproxy's log holds `needle` at least `count` times."""
    return wait_until(lambda: rproxy.read_log() if rproxy.read_log().count(needle) >= count else None,
                      timeout, f"{count}x {needle!r} in the log")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children (for daemons that left the test's session)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def privileged_free_port(low: int = 600, high: int = 1000) -> Optional[int]:
    """A free TCP port below 1024 on 127.0.0.1 (binding one needs root),
    held as free_port() holds its ports."""
    for port in range(high, low, -1):
        if hold_port("127.0.0.1", port):
            return port
    return None


class LostRequest(Exception):
    pass


class KeepAliveClient:
    """GETs on one keep-alive connection, reconnecting when the server says
    `Connection: close`.

    When a *reused* connection is closed before any byte of the response
    arrives, the request is sent again on a new connection: the server closed
    an idle keep-alive connection as the request crossed (what every HTTP
    client does for idempotent requests, RFC 9112 section 9.3.1).  Those are
    counted in `retries`.  Any other failure (a fresh connection failing, or
    a response cut after it started) raises LostRequest."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: Optional[socket.socket] = None
        self.served_on_this_connection = 0
        self.retries = 0
        self.connections = 0

    def _connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.served_on_this_connection = 0
        self.connections += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def get(self, target: str):
        """(status, headers dict, body) of GET `target`."""
        for _ in range(3):
            if self.sock is None:
                self._connect()
            reused = self.served_on_this_connection > 0
            raw = f"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
            first = b""
            try:
                self.sock.sendall(raw)
                first = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                first = b""
            except OSError as e:
                raise LostRequest(f"{target}: {e!r} (reused={reused})") from None
            if not first:
                self.close()
                if reused:
                    self.retries += 1
                    continue
                raise LostRequest(f"{target}: a fresh connection was closed without a response")
            try:
                status, headers, body, _rest = read_response(self.sock, first)
            except (OSError, ConnectionError) as e:
                self.close()
                raise LostRequest(f"{target}: the response was cut: {e!r}") from None
            hd = dict(headers)
            self.served_on_this_connection += 1
            if hd.get("connection", "").lower() == "close":
                self.close()
            return status, hd, body
        raise LostRequest(f"{target}: closed before a response three times")


def proc_limits(pid: int) -> dict:
    """/proc/PID/limits as {name: (soft, hard)}."""
    out = {}
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        for line in f:
            m = re.match(r"^(.+?)\s{2,}(\S+)\s+(\S+)", line)
            if m:
                out[m.group(1).strip()] = (m.group(2), m.group(3))
    return out


def fd_target(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")
