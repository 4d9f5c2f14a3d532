"""Backpressure: memory per exchange stays bounded whatever the peers do.

At the same time, through one worker: a client reads a 32 MiB response at
4 MiB/s, and a downstream reads a 32 MiB upload at 4 MiB/s (each producer
is far faster: loopback).  The proxy reads a producer again only once its
consumer took the previous bytes, so its memory must stay flat: the worker's
RSS, sampled all along (psutil), grows by less than a quarter of what went
through each way.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time

import psutil

from support.downstream import Downstream

MIB = 1024 * 1024
TOTAL = 32 * MIB               # 4x RSS_BOUND: memory that followed the bytes would show
RATE = 4 * MIB                 # bytes per second, both slow peers
STEP = 64 * 1024
RSS_BOUND = 8 * MIB            # growth of the worker's RSS over its start


def pattern(i: int) -> bytes:
    return bytes([i % 251]) * STEP


def slow_handler(req, s):
    """/big: a chunked TOTAL-byte response, written as fast as the socket takes
    it.  /upload: the body read at RATE, then its digest."""
    if req.target == "/big":
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(TOTAL // STEP):
            s.sendall(b"%x\r\n" % STEP + pattern(i) + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        return True
    return True


def test_slow_client_and_slow_downstream_keep_memory_bounded(start_rproxy, port):
    upload_digest = {}

    def upload_server(ls):
        c, _ = ls.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        head, body = buf.split(b"\r\n\r\n", 1)
        h = hashlib.sha256(body)
        got = len(body)
        while got < TOTAL:
            d = c.recv(min(STEP, TOTAL - got))
            if not d:
                break
            h.update(d)
            got += len(d)
            time.sleep(len(d) / RATE)                    # a downstream that reads slowly
        upload_digest["got"] = got
        upload_digest["sha"] = h.hexdigest()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.5)
        c.close()

    big = Downstream(handler=slow_handler)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    threading.Thread(target=upload_server, args=(ls,), daemon=True).start()
    p = start_rproxy(f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    write-timeout = 30s
    downstream big {{ addr = 127.0.0.1  port = {big.port}  connections = 1 }}
    downstream up  {{ addr = 127.0.0.1  port = {ls.getsockname()[1]}  connections = 1  read-timeout = 300s }}
    vhost "*" {{
        rule big {{ uri-match = "/big"    downstreams = {{ big }} }}
        rule up  {{ uri-match = "/upload" downstreams = {{ up }} }}
    }}
}}
""", port)
    worker = psutil.Process(p.workers()[0].pid)
    base_rss = worker.memory_info().rss
    samples = []
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            samples.append(worker.memory_info().rss)
            time.sleep(0.5)

    def slow_reader(result):
        h = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += s.recv(4096)
            _, raw = raw.split(b"\r\n\r\n", 1)
            body_bytes = 0
            # de-chunk on the fly
            while True:
                while b"\r\n" not in raw:
                    raw += s.recv(STEP)
                size_line, raw = raw.split(b"\r\n", 1)
                size = int(size_line, 16)
                if size == 0:
                    break
                while len(raw) < size + 2:
                    d = s.recv(STEP)
                    raw += d
                    time.sleep(len(d) / RATE)            # a client that reads slowly
                h.update(raw[:size])
                body_bytes += size
                raw = raw[size + 2:]
        result["len"] = body_bytes
        result["sha"] = h.hexdigest()

    def slow_uploader(result):
        with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % TOTAL)
            for i in range(TOTAL // STEP):
                s.sendall(pattern(i))                    # as fast as the proxy takes it
            data = b""
            while not data.endswith(b"ok"):
                d = s.recv(4096)
                if not d:
                    break
                data += d
        result["status"] = data.split(b" ")[1] if data else b""

    down, up = {}, {}
    threads = [threading.Thread(target=slow_reader, args=(down,)),
               threading.Thread(target=slow_uploader, args=(up,)),
               threading.Thread(target=sample)]
    for t in threads:
        t.start()
    threads[0].join(300)
    threads[1].join(300)
    sampling.set()
    threads[2].join(5)
    big.close()
    ls.close()

    expected = hashlib.sha256(b"".join(pattern(i) for i in range(TOTAL // STEP))).hexdigest()
    assert down == {"len": TOTAL, "sha": expected}
    assert up == {"status": b"200"}
    assert upload_digest == {"got": TOTAL, "sha": expected}
    peak = max(samples)
    print(f"worker RSS: start {base_rss / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB over {len(samples)} samples")
    assert peak - base_rss < RSS_BOUND, f"worker RSS grew by {(peak - base_rss) / MIB:.1f} MiB"
