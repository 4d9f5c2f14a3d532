"""`rproxy top`, driven in a real terminal (tmux) and read off its screen."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from support.master import wait_until
from support.proc import free_port, request

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def rproxy_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "rproxy")


class Tmux:
    """One private tmux server (its own socket), one window of 120x40."""

    def __init__(self, tmp_path, command: str):
        self.sock = str(tmp_path / "tmux.sock")
        self.tmux(["new-session", "-d", "-s", "t", "-x", "120", "-y", "40", command])
        self.tmux(["resize-window", "-t", "t", "-x", "120", "-y", "40"])   # -x alone is ignored by some tmux

    def tmux(self, args):
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True, timeout=10)

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "t"]).stdout

    def keys(self, *keys):
        self.tmux(["send-keys", "-t", "t", *keys])

    def close(self):
        self.tmux(["kill-server"])


def conf(port, ds_port, sport):
    return f"""workers = 2
status {{ addr = 127.0.0.1  port = {sport} }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {ds_port}  connections = 2 }}
    downstream spare {{ addr = 127.0.0.1  port = {free_port()}  connections = 1  retry = 5s }}
    vhost "shop.example" {{ rule pages {{ uri-prefix = "/"  downstreams = {{ app, spare }}  lb-method = none }} }}
    vhost "*" {{ default = true  rule rest {{ uri-prefix = "/"  downstreams = {{ app }} }} }}
}}
"""


def test_top_shows_downstreams_rates_and_quits_on_q(start_rproxy, downstream, port, tmp_path):
    sport = free_port()
    cfg = start_rproxy(conf(port, downstream.port, sport), port, check_quiet=False)
    stop = threading.Event()

    def load():
        n = 0
        while not stop.is_set() and n < 3000:      # bounded: at most 3000 requests
            path = "/status/503" if n % 4 == 0 else "/page"
            request(port, f"GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode())
            n += 1
            time.sleep(0.01)
    t = threading.Thread(target=load, daemon=True)
    t.start()
    tm = Tmux(tmp_path, f"{rproxy_bin()} top -c {cfg.conf}; echo TOP-EXITED-$?; sleep 60")
    try:
        def row(name):
            m = re.search(rf"^  {name}\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)",
                          tm.screen(), re.M)
            return m.groups() if m else None

        # two readings are needed for a rate: wait for a positive req/s on app
        try:
            wait_until(lambda: row("app") and row("app")[4] not in ("-", "0.0"), 15, "a request rate for app")
        except TimeoutError:
            raise AssertionError(tm.screen()) from None
        screen = tm.screen()
        assert f"rproxy top  http://127.0.0.1:{sport}/status" in screen
        assert "workers 2/2" in screen
        assert "RULE shop.example/pages" in screen and "RULE */rest" in screen
        state, rtt, inflight, pending, rate, err5xx, idle, busy, conn, down = row("app")
        assert state == "UP" and float(rtt) >= 0 and float(rate) > 0
        assert 10.0 <= float(err5xx) <= 50.0            # one request in four is a 503 from the downstream
        assert int(idle) + int(busy) + int(conn) + int(down) == 4      # 2 connections x 2 workers
        assert row("spare")[0] == "DOWN"                # nothing listens there
        assert re.search(r"^  shop\.example\s+\d", screen, re.M)      # the busiest vhost
        assert "WORKERS 2:" in screen
        # it refreshes: the request count of the vhost grows between screens
        def count():
            m = re.search(r"^  shop\.example\s+\S+\s+(\d+)", tm.screen(), re.M)
            return int(m.group(1)) if m else 0
        first = count()
        wait_until(lambda: count() > first, 10, "the screen to refresh")
        tm.keys("q")
        wait_until(lambda: "TOP-EXITED-0" in tm.screen(), 10, "top to quit on q")
    finally:
        stop.set()
        t.join(10)
        tm.close()


def test_top_without_a_status_block_says_so(tmp_path, port, downstream):
    path = tmp_path / "plain.conf"
    path.write_text(f"server {{ addr = 127.0.0.1 port = {port} downstream {{ addr = 127.0.0.1 port = 1 }} }}\n")
    r = subprocess.run([rproxy_bin(), "top", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "has no status { } block" in r.stderr


def test_top_once_against_nothing_fails_clearly():
    url = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run([rproxy_bin(), "top", "--status", url, "--once"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot read" in r.stderr
