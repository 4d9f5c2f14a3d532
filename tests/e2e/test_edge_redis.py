"""Rate limits in Redis (store = redis): one budget for two rproxy nodes
(separate masters), fail = open / closed when Redis is down or silent,
reconnect after a restart.  Each test starts its own redis-server on a free
port (Debian's redis-server)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from support.master import wait_log, wait_until
from support.proc import free_port, read_response, wait_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server (Debian package) is not installed")


class RedisServer:
    def __init__(self, tmp_path, port=None):
        self.port = port or free_port()
        self.dir = tmp_path
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    r = RedisServer(tmp_path)
    yield r
    r.stop()


def conf(port, ds_port, redis_port, limit="rate = 1/h  burst = 5", fail="open", timeout="200ms", workers=2):
    return f"""workers = {workers}
redis {{ addr = 127.0.0.1  port = {redis_port}  timeout = {timeout}  fail = {fail} }}
rate-limit shared {{ key = client-ip  {limit}  store = redis }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {ds_port} }}
    vhost "*" {{
        rule all {{ uri-prefix = "/"  downstreams = {{ app }}  rate-limit = {{ shared }} }}
    }}
}}
"""


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        st, hs, _, _ = read_response(s)
        return st, dict(hs)


def test_two_nodes_share_one_budget(start_rproxy, downstream, redis):
    ports = [free_port(), free_port()]
    for pt in ports:
        start_rproxy(conf(pt, downstream.port, redis.port), pt)
    got = [get(ports[i % 2])[0] for i in range(12)]
    assert got.count(200) == 5 and got.count(429) == 7, got
    st, hs = get(ports[0])
    assert st == 429 and "retry-after" in hs and hs["ratelimit-policy"] == '"shared";q=5;w=18000'


def test_fail_open_and_closed_when_redis_is_down(start_rproxy, downstream, tmp_path):
    dead = free_port()                      # nothing listens there
    po, pc = free_port(), free_port()
    p_open = start_rproxy(conf(po, downstream.port, dead, fail="open", workers=1), po)
    p_closed = start_rproxy(conf(pc, downstream.port, dead, fail="closed", workers=1), pc)
    assert [get(po)[0] for _ in range(8)] == [200] * 8          # admitted, burst or not
    assert [get(pc)[0] for _ in range(3)] == [503] * 3
    wait_log(p_open, "rate limits with store = redis fail open")
    wait_log(p_closed, "redis is down (fail = closed): 503")


def test_silent_redis_times_out_with_the_fail_policy(start_rproxy, downstream):
    """A Redis that accepts and never answers: each decision waits `timeout`."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        po, pc = free_port(), free_port()
        start_rproxy(conf(po, downstream.port, silent.getsockname()[1], fail="open", timeout="100ms",
                          workers=1), po)
        p_closed = start_rproxy(conf(pc, downstream.port, silent.getsockname()[1], fail="closed",
                                     timeout="100ms", workers=1), pc)
        t0 = time.monotonic()
        assert get(po)[0] == 200
        assert time.monotonic() - t0 >= 0.09                       # it did wait for an answer
        assert get(pc)[0] == 503
        wait_log(p_closed, "redis timed out (fail = closed): 503")
    finally:
        silent.close()


def test_redis_restarted_is_reconnected(start_rproxy, downstream, redis):
    port = free_port()
    p = start_rproxy(conf(port, downstream.port, redis.port, limit="rate = 1/h  burst = 2", fail="closed",
                          workers=1), port)
    assert [get(port)[0] for _ in range(3)] == [200, 200, 429]
    redis.stop()
    wait_until(lambda: get(port)[0] == 503, 10, "503 while redis is down")
    redis.start()                           # empty: the budget starts again
    wait_log(p, "redis: connected again")
    assert [get(port)[0] for _ in range(3)] == [200, 200, 429]
