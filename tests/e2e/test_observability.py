"""Readiness (sd_notify) and reload-on-change, with real processes."""
from __future__ import annotations

import os
import signal
import socket
import time


from support.confs import one_downstream
from support.master import wait_generation, wait_log, wait_until
from support.proc import Rproxy, request


def read_notifications(sock, want: str, timeout: float = 15.0) -> list:
    """Datagrams from the socket until one holds `want`; returns them all."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg.split("\n"):
            return got
    raise AssertionError(f"no {want!r} in {got}")


def test_sd_notify_ready_reloading_stopping(tmp_path, downstream, port):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    p = Rproxy(one_downstream(port, downstream.port, workers=2), tmp_path, port=port, env=env)
    try:
        msgs = read_notifications(sock, "READY=1")
        ready = msgs[-1].split("\n")
        assert f"MAINPID={p.pid}" in ready
        assert any(f.startswith("STATUS=generation 1, 2 of 2 worker(s)") for f in ready), ready
        # READY comes once both workers have reported, not before
        assert len(wait_generation(p.pid, 1, 2)) == 2
        p.signal(signal.SIGHUP)
        msgs = read_notifications(sock, "RELOADING=1")
        assert any(f.startswith("MONOTONIC_USEC=") for f in msgs[-1].split("\n"))
        msgs = read_notifications(sock, "READY=1")
        assert any(f.startswith("STATUS=generation 2") for f in msgs[-1].split("\n")), msgs
        # a reload that fails still ends in READY=1 (the old configuration serves)
        with open(p.conf, "a") as f:
            f.write("\nbogus = 1\n")
        p.signal(signal.SIGHUP)
        read_notifications(sock, "RELOADING=1")
        msgs = read_notifications(sock, "READY=1")
        assert any(f.startswith("STATUS=reload failed") for f in msgs[-1].split("\n")), msgs
        p.signal(signal.SIGTERM)
        msgs = read_notifications(sock, "STOPPING=1")
        assert "STATUS=fast stop" in msgs[-1].split("\n")
        assert p.proc.wait(15) == 0
    finally:
        p.stop()
        sock.close()


def test_without_notify_socket_nothing_is_sent(tmp_path, downstream, port):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    p = Rproxy(one_downstream(port, downstream.port), tmp_path, port=port, env=env)
    try:
        assert request(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0] == 200
    finally:
        assert p.stop() == 0


def test_reload_on_change_good_then_broken_edit(tmp_path, downstream, port):
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "workers.conf").write_text("workers = 1\n")
    text = 'reload-on-change = true\ninclude "conf.d/*.conf"\n' + one_downstream(port, downstream.port, workers=None).replace("workers = None\n", "")
    p = Rproxy(text, tmp_path, port=port)
    try:
        wait_generation(p.pid, 1, 1)
        # a good edit of an included file: reloaded, with the new worker count
        time.sleep(0.2)
        with open(included / "workers.conf", "w") as f:
            f.write("workers = 2\n")
        wait_log(p, "reload-on-change: ")
        wait_log(p, "reloaded ")
        wait_generation(p.pid, 2, 2)
        log = p.read_log()
        assert f"reload-on-change: {included / 'workers.conf'} changed; reloading" in log
        assert log.count("reloading ") == 1          # debounced: one reload for the edit
        # a broken edit of the main file: refused with its position, still serving
        with open(p.conf, "a") as f:
            f.write("\nnot-a-directive = 1\n")
        wait_log(p, "reload failed")
        assert "unknown" in p.read_log().split("reload failed", 1)[1]
        assert request(port, b"GET /still HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0] == 200
        assert wait_generation(p.pid, 2, 2)
        # replacing the file by rename (as editors do) is noticed too
        tmp = tmp_path / "new.conf.tmp"
        tmp.write_text(text)
        os.rename(tmp, p.conf)
        wait_log(p, "reloaded ", count=2)
        wait_generation(p.pid, 3, 2)
    finally:
        p.stop()


def test_reload_on_change_picks_up_a_renewed_certificate(tmp_path, downstream, port, test_pki):
    import shutil
    import ssl

    cert, key = tmp_path / "site.crt", tmp_path / "site.key"
    shutil.copy(test_pki["server"].crt, cert)
    shutil.copy(test_pki["server"].key, key)
    text = f"""reload-on-change = true
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    ssl {{ enabled = true  cert = "{cert}"  key = "{key}" }}
    downstream {{ addr = 127.0.0.1  port = {downstream.port} }}
}}
"""
    p = Rproxy(text, tmp_path, port=port)

    def served_serial():
        ctx = ssl.create_default_context(cafile=test_pki["ca"].crt)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert()["serialNumber"]
    try:
        wait_generation(p.pid, 1, 1)
        first = served_serial()
        # a renewer writes the new pair next to the old one and renames it in place
        new = test_pki["pki"].server("renewed", test_pki["ca"], dns=("localhost",), ips=("127.0.0.1",))
        shutil.copy(new.key, tmp_path / "site.key.new")
        shutil.copy(new.crt, tmp_path / "site.crt.new")
        os.rename(tmp_path / "site.key.new", key)
        os.rename(tmp_path / "site.crt.new", cert)
        wait_log(p, "reloaded ")
        assert "reload-on-change: " in p.read_log() and str(cert) in p.read_log()
        wait_generation(p.pid, 2, 1)
        wait_until(lambda: served_serial() != first, 10, "the renewed certificate to be served")
    finally:
        p.stop()
