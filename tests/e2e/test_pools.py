"""Downstream pools under real faults: stale pooled connections, dead and
restarted downstreams, reconnect backoff."""
from __future__ import annotations

import http.client
import random
import socket
import time

from support.confs import named_downstreams
from support.downstream import Downstream
from support.proc import read_response, request


def conf(port, ds_ports, connections=2, workers=1, lb="roundrobin"):
    return named_downstreams(port, {f"d{i}": f"addr = 127.0.0.1  port = {p}  connections = {connections}"
                                    for i, p in enumerate(ds_ports)}, lb=lb, workers=workers)


def test_downstream_closing_idle_connections_never_shows_a_502(start_rproxy, port):
    """The downstream closes keep-alive connections 0.2 s after their last
    response; the proxy's pool keeps them longer.  Requests spaced around
    that instant (the race window) and back-to-back ones all succeed: a
    connection found closed is never handed out, and one that dies under a
    request is replayed on another."""
    ds = Downstream(idle_timeout=0.2)
    try:
        p = start_rproxy(conf(port, [ds.port], connections=2), port)
        rnd = random.Random(7)
        statuses = []
        for i in range(40):
            time.sleep(rnd.uniform(0.15, 0.28))
            statuses.append(request(p.port, b"GET /spaced%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)[0])
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        for i in range(1000):
            c.request("GET", f"/b2b{i}")
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
        assert statuses == [200] * 1040, p.read_log()
        assert ds.connections > 2           # the downstream really did close connections
        assert "-> 502" not in p.read_log()
    finally:
        ds.close()


def test_one_of_two_downstreams_killed_mid_load(start_rproxy, port):
    a, b = Downstream(), Downstream()
    try:
        p = start_rproxy(conf(port, [a.port, b.port], connections=2), port)
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        results = []
        for i in range(300):
            if i == 100:
                b.close()                   # b dies: its pooled connections are reset
            c.request("GET", f"/k{i}")
            r = c.getresponse()
            r.read()
            results.append(r.status)
        # idempotent requests that met b's dead connections were replayed on a
        assert results == [200] * 300
        assert len([r for r in a.requests if r.target.startswith("/k")]) >= 200
        assert "is down" in p.read_log()
        # b comes back on the same port: it rejoins the rotation
        b2 = Downstream(bind_port=b.port)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not b2.requests:
                c.request("GET", "/rejoin")
                r = c.getresponse()
                r.read()
                assert r.status == 200
                time.sleep(0.05)
            assert b2.requests, p.read_log()
            assert "is up" in p.read_log()
        finally:
            b2.close()
    finally:
        a.close()
        b.close()


def test_hostname_downstream(start_rproxy, port, downstream):
    conf_text = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream {{ addr = localhost  port = {downstream.port}  connections = 1 }}
}}
"""
    p = start_rproxy(conf_text, port)
    assert request(p.port, b"GET /named HTTP/1.1\r\nHost: a\r\n\r\n")[:3:2] == (200, b"/named")


def test_requests_waiting_for_a_downstream_that_goes_down_get_502_at_once(start_rproxy, port):
    """A request pending for the only connection of a downstream that then
    dies is answered 502 when the downstream is marked down, not left to
    the (long) pending timeout's 503."""
    ds = Downstream()
    conf_text = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    pending-timeout = 20s
    downstream {{ addr = 127.0.0.1  port = {ds.port}  connections = 1  max-connections = 1  retry = 10s }}
}}
"""
    try:
        p = start_rproxy(conf_text, port, check_quiet=False)
        busy = socket.create_connection(("127.0.0.1", port), timeout=60)
        busy.sendall(b"GET /slow/3000 HTTP/1.1\r\nHost: a\r\n\r\n")      # holds the only connection
        while not ds.requests:
            time.sleep(0.01)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=60)
        waiting.sendall(b"GET /waits HTTP/1.1\r\nHost: a\r\n\r\n")        # pending
        time.sleep(0.2)
        ds.close()                                  # the downstream dies, its listener too
        assert read_response(waiting)[0] == 502, p.read_log()
        assert read_response(busy)[0] == 502
        waiting.close()
        busy.close()
        assert "is down" in p.read_log()
    finally:
        ds.close()
