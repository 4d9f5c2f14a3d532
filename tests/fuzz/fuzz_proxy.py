#!/usr/bin/env python3
"""Fuzz the real rproxy from both sides, bounded and reproducible.

One rproxy (the installed one; under tests/sanitize/run.sh the sanitizer
build, its runtime preloaded through tests/support/proc.py) with one worker
sits between a raw-socket client and a raw-socket downstream, both driven by
this script.  Case after case, seeded by (--seed, case number), it builds a
client byte stream and the downstream's answers from the templates in
corpus/ and mutates them: split at random byte offsets with pauses, chunked
framing with extensions, trailers (small, and after bodies over the 32 KiB
buffer), many interim 1xx responses (up to a head straddling a full buffer),
101 upgrades with tunnel bytes, early closes on either side, pipelining,
oversized heads, HTTP/1.0, and in some cases random byte edits.

After each case it checks:
  - no sanitizer report file appeared (--reports, the stage's report dir);
  - the worker did not die (same pid);
  - every response the client got is either one of the proxy's own error
    responses, byte for byte, or made of what the downstream sent: its status
    and reason, each header exactly as one the downstream sent (a case with
    byte edits: each name and value found in the downstream's bytes), apart
    from the proxy's documented edits (hop-by-hop fields dropped, its own
    Connection field), and a body that is a run of the downstream's bytes
    (or, for an HTTP/1.0 client, of the de-chunked body): never a byte the
    downstream did not send;
  - the same toward the downstream: request line, headers (apart from the
    forwarding headers the proxy adds) and body come from the client's
    bytes, and no request trailer ever arrives as a request header.

The first failure stops the run and prints the seed, the case number, the
command that replays just that case and the case's bytes (also written to
--out).  Exit 0: no failure within --seconds; 1: a failure; 2: a harness error.

    python -P tests/fuzz/fuzz_proxy.py --seconds 60 --seed 1      # as in CI
    python -P tests/fuzz/fuzz_proxy.py --seconds 3600 --seed 7    # longer
    python -P tests/fuzz/fuzz_proxy.py --seed 1 --case 42 -v      # replay one case
"""
from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))           # tests/: support.*

from support.proc import Rproxy, free_port  # noqa: E402

# the proxy's own responses (http.pxi canned_add): any status, this exact shape
CANNED = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r\n]+)\r\nServer: rproxy\r\nContent-Type: text/plain\r\n"
                    rb"Content-Length: (\d+)\r\n(?:Connection: close\r\n)?\r\n")
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
BUFFER = 32768                 # buffer-size (the default)
PAUSES = (0, 0, 0, 0.001, 0.01, 0.03, 0.08, 0.3)
PROXY_ERRORS = {          # some of them (the judge recognises any by their shape: CANNED)400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
                413: "Content Too Large", 414: "URI Too Long", 421: "Misdirected Request",
                431: "Request Header Fields Too Large", 500: "Internal Server Error",
                501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
# request header fields the proxy adds or rewrites toward the downstream (README, header policy)
PROXY_REQUEST_FIELDS = {b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host",
                        b"x-forwarded-port", b"forwarded", b"via", b"connection", b"host",
                        b"content-length", b"transfer-encoding", b"te", b"keep-alive"}
# its own Connection field on responses (build_response_head)
PROXY_RESPONSE_LINES = {b"Connection: close", b"Connection: keep-alive", b"Connection: upgrade"}
# header names the proxy's access log looks up (trailer names of the same lengths are the dangerous ones)
LOOKED_UP = (b"User-Agent", b"Referer", b"Host", b"X-Abcdefgh")
LOG_FORMAT = "{UA}|{REF}|{HOST}|{US_HDR}:'X-Abcdefgh'|{US_HDR}:'Referer'|{DS_HDR}:'X-First'|{URI}|{STATUS}"


def canned(status: int, close: bool) -> bytes:
    body = f"{status} {PROXY_ERRORS[status]}\n".encode()
    return (f"HTTP/1.1 {status} {PROXY_ERRORS[status]}\r\nServer: rproxy\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


# ---- the corpus and the case generator ---------------------------------------------------

def load_corpus(d: str) -> dict:
    out = {}
    for kind in ("requests", "responses"):
        items = []
        for name in sorted(os.listdir(os.path.join(d, kind))):
            with open(os.path.join(d, kind, name), "rb") as f:
                text = f.read()
            # files are kept with LF line ends (readable, diffable); the wire has CRLF
            lines = text.rstrip(b"\n").split(b"\n")
            items.append((lines[0], [tuple(ln.split(b": ", 1)) for ln in lines[1:]]))
        out[kind] = items
    return out


@dataclass
class Case:
    seed: int
    number: int
    client: list = field(default_factory=list)      # [(bytes, pause before)]
    client_close_early: bool = False
    client_tunnel: bytes = b""                       # sent after a 101
    methods: list = field(default_factory=list)      # of the requests, in order
    http10: bool = False                             # every request made HTTP/1.0
    client10: bool = False                           # some request is HTTP/1.0 (responses de-chunked)
    plans: list = field(default_factory=list)        # per downstream request: [(bytes, pause)], close after
    decoded: list = field(default_factory=list)      # de-chunked response bodies (HTTP/1.0 clients)
    trailer_names: list = field(default_factory=list)
    mutated_client: bool = False
    mutated_ds: bool = False
    notes: list = field(default_factory=list)

    def client_bytes(self) -> bytes:
        return b"".join(b for b, _ in self.client)

    def describe(self) -> str:
        out = [f"case {self.number} (seed {self.seed}): {', '.join(self.notes)}"]
        for i, (b, p) in enumerate(self.client):
            out.append(f"  client piece {i}: pause {p}s, {len(b)} bytes: {short(b)}")
        if self.client_tunnel:
            out.append(f"  client tunnel bytes after 101: {short(self.client_tunnel)}")
        for j, (pieces, close) in enumerate(self.plans):
            out.append(f"  downstream answer {j} (close after: {close}):")
            for i, (b, p) in enumerate(pieces):
                out.append(f"    piece {i}: pause {p}s, {len(b)} bytes: {short(b)}")
        return "\n".join(out)


def short(b: bytes, n: int = 600) -> str:
    return repr(b) if len(b) <= n else f"{b[:n // 2]!r} ...[{len(b) - n} bytes]... {b[-n // 2:]!r}"


def split_pieces(rng: random.Random, data: bytes, max_cuts: int = 4, force: Optional[int] = None) -> list:
    """data cut at random offsets (and at `force`), each piece after a pause."""
    cuts = set()
    if len(data) > 1:
        for _ in range(rng.randint(0, max_cuts)):
            cuts.add(rng.randint(1, len(data) - 1))
    if force is not None and 0 < force < len(data):
        cuts.add(force)
    out, prev = [], 0
    for c in sorted(cuts) + [len(data)]:
        out.append((data[prev:c], rng.choice(PAUSES) if prev else 0))
        prev = c
    return out


def byte_edits(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.randrange(5)
        if op == 0:
            b[i] = rng.choice(b"\r\n: \t;0aZ\x00\x7f\xff")
        elif op == 1:
            del b[i]
        elif op == 2:
            b[i:i] = bytes([rng.choice(b"\r\n:;, 09azAZ\"=")])
        elif op == 3:
            j = min(len(b), i + rng.randint(1, 40))
            b[i:i] = b[i:j]
        else:
            b[i:i] = b"\r\n"
    return bytes(b)


def chunked(rng: random.Random, body: bytes, trailers: list) -> bytes:
    out, i = [], 0
    while i < len(body):
        n = min(len(body) - i, rng.choice((1, 7, 100, 1000, 4096, 16384, 40000)))
        ext = rng.choice((b"", b"", b"", b";ext=1", b";a;b=\"q d\"", b";" + b"e" * rng.randint(1, 200)))
        size = b"%x" % n if rng.random() < 0.8 else b"%X" % n
        if rng.random() < 0.1:
            size = b"000" + size
        out.append(size + ext + b"\r\n" + body[i:i + n] + b"\r\n")
        i += n
    last_ext = rng.choice((b"", b"", b";last=1"))
    out.append(b"0" + last_ext + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in trailers) + b"\r\n")
    return b"".join(out)


def random_body(rng: random.Random, big_ok: bool) -> bytes:
    sizes = [0, 1, 5, 100, 3000]
    if big_ok:
        sizes += [BUFFER - 5, BUFFER + 17, 70000, 100000]
    n = rng.choice(sizes)
    tag = b"<body-%d>" % rng.randrange(10 ** 6)
    return (tag * (n // len(tag) + 1))[:n]


def random_trailers(rng: random.Random, case: Case) -> list:
    out = []
    if rng.random() < 0.3:
        out.append((b"X-Pad", b"p" * rng.choice((10, 600, 3000))))
    for _ in range(rng.randint(1, 3)):
        n = len(rng.choice(LOOKED_UP))
        name = b"T" + bytes(rng.choice(b"abcdefghij") for _ in range(n - 1))
        case.trailer_names.append(name.lower())
        out.append((name, b"%d" % rng.randrange(100)))
    return out


def gen_case(seed: int, number: int, corpus: dict) -> Case:
    rng = random.Random(seed * 1_000_003 + number)
    case = Case(seed, number)
    n_req = rng.choice((1, 1, 1, 2, 3))
    case.http10 = rng.random() < 0.1
    upgrade = rng.random() < 0.08
    stream = []
    for k in range(n_req):
        line, headers = rng.choice(corpus["requests"])
        method, target, version = line.split(b" ")
        if case.http10:
            version = b"HTTP/1.0"
        case.client10 |= version == b"HTTP/1.0"
        target = b"/fz/%d/%d" % (number, k) + target
        headers = list(headers)
        if rng.random() < 0.05:
            target += b"/" + b"L" * rng.choice((5000, 9000))          # 414 over max-request-line
            case.notes.append("long request line")
        if rng.random() < 0.05:
            headers.append((b"X-Fill", b"f" * rng.choice((1500, 15000, 17000))))   # 431 beyond 16 KiB
            case.notes.append("big request head")
        if rng.random() < 0.3:
            headers.append((b"Referer", b"http://ref.test/%d" % k))
        last = k == n_req - 1
        is_upgrade = upgrade and last and method == b"GET" and not case.http10
        if is_upgrade:
            headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
            case.notes.append("upgrade")
        body_kind = "none" if method in (b"GET", b"HEAD", b"DELETE") or is_upgrade else \
            rng.choice(("cl", "chunked", "chunked"))
        if case.http10 and body_kind == "chunked":
            body_kind = "cl"
        body = b""
        if body_kind != "none":
            body = random_body(rng, big_ok=True)
            if rng.random() < 0.15:
                headers.append((b"Expect", b"100-continue"))
        if body_kind == "cl":
            headers.append((b"Content-Length", b"%d" % len(body)))
            raw_body = body
        elif body_kind == "chunked":
            headers.append((b"Transfer-Encoding", b"chunked"))
            raw_body = chunked(rng, body, random_trailers(rng, case) if rng.random() < 0.6 else [])
            case.notes.append(f"chunked request body {len(body)}")
        else:
            raw_body = b""
        rng.shuffle(headers)
        head = b" ".join((method, target, version)) + b"\r\n" + \
            b"".join(h[0] + b": " + h[1] + b"\r\n" if len(h) == 2 else h[0] + b"\r\n" for h in headers) + b"\r\n"
        stream.append(head + raw_body)
        case.methods.append(method)
        case.plans.append(gen_answer(rng, case, corpus, method, is_upgrade))
        if is_upgrade:
            case.client_tunnel = b"CLIENT-TUNNEL-%d-" % number + b"c" * rng.choice((1, 100, 40000))
            break
    data = b"".join(stream)
    if rng.random() < 0.1:
        data = byte_edits(rng, data)
        case.mutated_client = True
        case.notes.append("client bytes edited")
    if rng.random() < 0.07:
        data = data[:rng.randint(0, max(0, len(data) - 1))]
        case.client_close_early = True
        case.notes.append("client closes early")
    case.client = split_pieces(rng, data, max_cuts=rng.choice((0, 1, 3, 8)))
    if n_req > 1:
        case.notes.append(f"{n_req} pipelined")
    return case


def gen_answer(rng: random.Random, case: Case, corpus: dict, method: bytes, upgrade: bool):
    """One downstream answer: interim responses, the final one, split and paused."""
    line, headers = rng.choice(corpus["responses"])
    headers = list(headers)
    parts = []
    force = None
    n_interim = rng.choice((0, 0, 0, 0, 1, 3, 50, "fill"))
    if n_interim == "fill":
        # interim responses up to just under a full buffer, so the final head
        # straddles the end of the first read (the 1,308 x 100 Continue)
        one = b"HTTP/1.1 100 Continue\r\n\r\n"
        parts.append(one * (BUFFER // len(one) - 3))
        # one more, padded so the final head starts `inside` bytes before the buffer's end
        inside = rng.randint(1, 40)
        shell = len(b"HTTP/1.1 100 Continue\r\nX-Pad: \r\n\r\n")
        pad = BUFFER - len(parts[0]) - inside - shell
        parts.append(b"HTTP/1.1 100 Continue\r\nX-Pad: " + b"x" * pad + b"\r\n\r\n")
        case.notes.append("1xx up to a full buffer")
    else:
        for _ in range(n_interim):
            code = rng.choice((b"100 Continue", b"102 Processing", b"103 Early Hints"))
            extra = b"Link: </s.css>; rel=preload\r\n" if code.startswith(b"103") else b""
            parts.append(b"HTTP/1.1 " + code + b"\r\n" + extra + b"\r\n")
        if n_interim:
            case.notes.append(f"{n_interim} interim responses")
    interim_len = len(b"".join(parts))
    close = False
    body = b""
    if upgrade:
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        tunnel = b"DS-TUNNEL-%d-" % case.number + b"d" * rng.choice((1, 100, 40000))
        parts.append(head + tunnel)
        close = True
        case.decoded.append(tunnel)
    else:
        code = int(line.split(b" ")[1])
        framing = rng.choice(("cl", "cl", "chunked", "chunked", "close"))
        if line.startswith(b"HTTP/1.0") and framing == "chunked":
            framing = "close"
        body = random_body(rng, big_ok=rng.random() < 0.3)
        if rng.random() < 0.1:
            headers.append((b"X-Big", b"b" * rng.choice((3000, 20000, 40000))))
            case.notes.append("big response head")
        if framing == "cl":
            headers.append((b"Content-Length", b"%d" % len(body)))
            raw = body
        elif framing == "chunked":
            headers.append((b"Transfer-Encoding", b"chunked"))
            trailers = []
            if rng.random() < 0.5:
                trailers = [(b"X-Resp-Trailer", b"%d" % rng.randrange(1000))]
                if rng.random() < 0.3:
                    trailers.append((b"X-Pad", b"q" * 2000))
                case.notes.append(f"chunked response {len(body)} + trailers")
            raw = chunked(rng, body, trailers)
        else:
            raw = body
            close = True
            if rng.random() < 0.5:
                headers.append((b"Connection", b"close"))
        if method == b"HEAD" or code in (204, 304):
            raw = b""
        rng.shuffle(headers)
        head = line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        if rng.random() < 0.5 and force is None:
            # a cut inside the final head, as real backends produce
            force = interim_len + rng.randint(1, len(head) - 1)
        parts.append(head + raw)
        case.decoded.append(body)
    data = b"".join(parts)
    if rng.random() < 0.1:
        data = byte_edits(rng, data)
        case.mutated_ds = True
        case.notes.append("downstream bytes edited")
    if rng.random() < 0.08:
        data = data[:rng.randint(0, len(data))]
        close = True
        case.notes.append("downstream closes early")
    if n_interim == "fill" and len(data) > BUFFER:
        # one write of exactly a buffer, a pause, then the rest (maybe cut again)
        pieces = [(data[:BUFFER], 0)] + [(b, p or 0.3) if i == 0 else (b, p) for i, (b, p) in
                                         enumerate(split_pieces(rng, data[BUFFER:], max_cuts=rng.choice((0, 2))))]
    else:
        pieces = split_pieces(rng, data, max_cuts=rng.choice((0, 1, 2, 4)), force=force)
        if force is not None:
            # the pause that matters is the one at the forced cut
            at = 0
            for i, (b, p) in enumerate(pieces):
                if i and at == force:
                    pieces[i] = (b, rng.choice((0.02, 0.3)))
                at += len(b)
    return pieces, close


# ---- the downstream --------------------------------------------------------------------

class Downstream:
    """Raw-socket downstream: answers each request it reads with the current
    case's next planned answer; records every byte it gets and sends."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.case: Optional[Case] = None
        self.plans: list = []
        self.received: list = []     # raw bytes per request (head + body as framed)
        self.tunnel_in = b""
        self.sent: dict = {}         # per downstream connection: what it sent (they interleave)
        self.errors: list = []
        self.answering = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def start_case(self, case: Case) -> None:
        with self.lock:
            self.case = case
            self.plans = list(case.plans)
            self.received, self.tunnel_in, self.sent, self.errors = [], b"", {}, []

    def busy(self) -> bool:
        with self.lock:
            return self.answering > 0

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        """The proxy keeps connections open between cases (its pool): each
        request belongs to the case current when its head arrives."""
        buf = b""
        try:
            while True:
                c.settimeout(None if not buf else 3.0)
                try:
                    req, buf, is_upgrade = read_request(c, buf)
                except (socket.timeout, ConnectionError, OSError):
                    return
                except ValueError as e:
                    with self.lock:
                        self.errors.append(f"downstream could not parse what the proxy sent: {e}")
                    return
                if req is None:
                    return
                with self.lock:
                    case = self.case
                    self.received.append(req)
                    plan = self.plans.pop(0) if self.plans else \
                        ([(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", 0)], False)
                    self.answering += 1
                try:
                    if not self._answer(c, case, plan, is_upgrade, buf):
                        return
                finally:
                    with self.lock:
                        self.answering -= 1
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _answer(self, c, case, plan, is_upgrade, buf) -> bool:
        """Send one planned answer; False: the connection is to be closed."""
        pieces, close = plan
        for data, pause in pieces:
            if pause:
                time.sleep(pause)
            with self.lock:
                if self.case is not case:
                    return False
                self.sent[id(c)] = self.sent.get(id(c), b"") + data
            try:
                c.sendall(data)
            except OSError:                 # the proxy gave up on this exchange
                return False
        if is_upgrade and close:
            # a tunnel: take what the client sends for a moment
            with self.lock:
                self.tunnel_in += buf
            c.settimeout(0.5)
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    with self.lock:
                        if self.case is case:
                            self.tunnel_in += d
            except OSError:
                pass
            return False
        return not close

    def close(self) -> None:
        self.sock.close()


def read_request(c: socket.socket, buf: bytes):
    """One request as the proxy framed it: (raw bytes, rest, is_upgrade).
    ValueError when it is not well-formed HTTP/1.1."""
    def fill():
        nonlocal buf
        d = c.recv(65536)
        if not d:
            raise ConnectionError("closed")
        buf += d
    while b"\r\n\r\n" not in buf:
        try:
            fill()
        except ConnectionError:
            if buf:
                raise ValueError(f"closed inside a request head: {short(buf)}")
            return None, b"", False
    i = buf.index(b"\r\n\r\n") + 4
    head = buf[:i]
    lines = head[:-4].split(b"\r\n")
    if len(lines[0].split(b" ")) != 3:
        raise ValueError(f"bad request line {lines[0]!r}")
    hdrs = {}
    for ln in lines[1:]:
        if b":" not in ln:
            raise ValueError(f"bad header line {ln!r}")
        k, v = ln.split(b":", 1)
        hdrs.setdefault(k.strip().lower(), v.strip())
    pos = i
    if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            while b"\r\n" not in buf[pos:]:
                fill()
            j = buf.index(b"\r\n", pos)
            size_text = buf[pos:j].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size line {buf[pos:j]!r}")
            pos = j + 2
            if size == 0:
                while True:                     # trailer lines up to an empty one
                    while b"\r\n" not in buf[pos:]:
                        fill()
                    j = buf.index(b"\r\n", pos)
                    empty = j == pos
                    pos = j + 2
                    if empty:
                        break
                break
            while len(buf) < pos + size + 2:
                fill()
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")
            pos += size + 2
    elif b"content-length" in hdrs:
        n = int(hdrs[b"content-length"])
        while len(buf) < pos + n:
            fill()
        pos += n
    is_upgrade = b"upgrade" in hdrs
    return buf[:pos], buf[pos:], is_upgrade


# ---- the client and what it got --------------------------------------------------------

@dataclass
class Response:
    status: int
    reason: bytes
    lines: list            # header lines, as sent
    body: bytes            # as framed on the wire (chunked: sizes and all), or the tunnel's bytes
    data: bytes            # the chunked body de-chunked
    canned: bool = False


def parse_responses(data: bytes, methods: list):
    """(responses, problem): problem is None, "incomplete" (the stream stops
    inside a response) or a description of bytes that are not HTTP."""
    out, pos, req_i = [], 0, 0
    while pos < len(data):
        m = CANNED.match(data, pos)
        if m:
            body = b"%s %s\n" % (m.group(1), m.group(2))
            if int(m.group(3)) == len(body) and data.startswith(body, m.end()):
                out.append(Response(int(m.group(1)), m.group(2), [], b"", b"", canned=True))
                pos = m.end() + len(body)
                req_i += 1
                continue
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            rem = data[pos:pos + 9]
            if not (b"HTTP/1.1 ".startswith(rem) or rem == b"HTTP/1.1 "):
                return out, f"bytes that start no response: {short(data[pos:])}"
            return out, "incomplete"
        lines = data[pos:end].split(b"\r\n")
        sl = lines[0]
        if not (sl.startswith(b"HTTP/1.1 ") and len(sl) >= 13 and sl[9:12].isdigit() and sl[12:13] == b" "):
            return out, f"bad status line {short(sl, 200)}"
        status, reason = int(sl[9:12]), sl[13:]
        for ln in lines[1:]:
            if b": " not in ln:
                return out, f"bad header line {short(ln, 200)} in {short(data[pos:end], 2000)}"
        hd = {}
        for ln in lines[1:]:
            k, v = ln.split(b": ", 1)
            hd.setdefault(k.lower(), v)
        pos = end + 4
        method = methods[req_i] if req_i < len(methods) else b"GET"
        if 100 <= status < 200 and status != 101:
            out.append(Response(status, reason, lines[1:], b"", b""))
            continue
        req_i += 1
        if status == 101:
            out.append(Response(status, reason, lines[1:], data[pos:], b""))
            return out, None
        if method == b"HEAD" or status in (204, 304):
            out.append(Response(status, reason, lines[1:], b"", b""))
            continue
        if hd.get(b"transfer-encoding", b"").lower() == b"chunked":
            start, decoded = pos, b""
            while True:
                j = data.find(b"\r\n", pos)
                if j < 0:
                    return out, "incomplete"
                try:
                    size = int(data[pos:j].split(b";")[0], 16)
                except ValueError:
                    return out, f"bad chunk size line {short(data[pos:j], 200)}"
                pos = j + 2
                if size == 0:
                    while True:
                        j = data.find(b"\r\n", pos)
                        if j < 0:
                            return out, "incomplete"
                        empty = j == pos
                        pos = j + 2
                        if empty:
                            break
                    break
                if len(data) < pos + size + 2:
                    return out, "incomplete"
                decoded += data[pos:pos + size]
                if data[pos + size:pos + size + 2] != b"\r\n":
                    return out, "chunk data not followed by CRLF"
                pos += size + 2
            out.append(Response(status, reason, lines[1:], data[start:pos], decoded))
        elif b"content-length" in hd:
            n = int(hd[b"content-length"])
            if len(data) < pos + n:
                out.append(Response(status, reason, lines[1:], data[pos:], data[pos:]))
                return out, "incomplete"
            out.append(Response(status, reason, lines[1:], data[pos:pos + n], data[pos:pos + n]))
            pos += n
        else:
            out.append(Response(status, reason, lines[1:], data[pos:], data[pos:]))
            return out, None
    return out, None


def finals(responses) -> int:
    return sum(1 for r in responses if not (100 <= r.status < 200 and r.status != 101))


def run_client(port: int, case: Case, deadline: float) -> tuple:
    """Send the case's client bytes; return (what came back, closed by the proxy)."""
    got = bytearray()
    eof = threading.Event()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reader():
        s.settimeout(0.05)
        while not eof.is_set():
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            got.extend(d)
        eof.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for data, pause in case.client:
            if pause:
                time.sleep(pause)
            if eof.is_set():
                break
            try:
                s.sendall(data)
            except OSError:
                break
        if case.client_close_early:
            time.sleep(0.05)
            return bytes(got), False
        expected = len(case.methods)
        tunnel_sent = False
        last_len, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and not eof.is_set():
            time.sleep(0.02)
            snapshot = bytes(got)
            if len(snapshot) != last_len:
                last_len, quiet_since = len(snapshot), time.monotonic()
            rs, problem = parse_responses(snapshot, case.methods)
            if case.client_tunnel and not tunnel_sent and any(r.status == 101 for r in rs):
                try:
                    s.sendall(case.client_tunnel)
                except OSError:
                    pass
                tunnel_sent = True
                quiet_since = time.monotonic()
            if problem not in (None, "incomplete"):
                break
            if finals(rs) >= expected and problem is None and not case.client_tunnel:
                break
            if time.monotonic() - quiet_since > 1.0:
                break
        closed = eof.wait(0.05)
        return bytes(got), closed
    finally:
        eof.set()
        s.close()
        t.join(1)


# ---- the checks ------------------------------------------------------------------------

class Streams:
    """Byte streams, `x in streams`: x is a run of one of them."""

    def __init__(self, streams):
        self.streams = [bytes(x) for x in streams]

    def __contains__(self, x: bytes) -> bool:
        return any(x in s for s in self.streams)


def header_pairs(data) -> set:
    if isinstance(data, Streams):
        return set().union(*(header_pairs(x) for x in data.streams))
    out = set()
    for ln in data.replace(b"\r\n", b"\n").split(b"\n"):
        if b":" in ln:
            k, v = ln.split(b":", 1)
            out.add((k.strip().lower(), v.strip()))
    return out


def status_lines(data: bytes) -> set:
    """(code, reason) of every status line in data, also right after a body
    that does not end in CRLF."""
    if isinstance(data, Streams):
        return set().union(*(status_lines(x) for x in data.streams))
    return {(int(m.group(1)), m.group(2)) for m in STATUS_LINE.finditer(data)}


def dechunked_from(body: bytes, streams: Streams) -> bool:
    """body (de-chunked for an HTTP/1.0 client, from bytes with random edits,
    so not comparable with what the generator meant) is made of runs of the
    downstream's bytes, no more runs than it sent chunk lines."""
    lines = sum(s.count(b"\r\n") for s in streams.streams)
    i, runs = 0, 0
    while i < len(body):
        lo, hi = 0, len(body) - i           # the longest run at i: lo found, hi+1 not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if body[i:i + mid] in streams:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            return False                    # a byte the downstream never sent
        i += lo
        runs += 1
        if runs > lines + 1:
            return False
    return True


def check_client_side(case: Case, got: bytes, streams: list) -> list:
    """streams: what each downstream connection sent in this case."""
    problems = []
    ds_sent = Streams(streams)
    rs, problem = parse_responses(got, case.methods)
    if problem not in (None, "incomplete"):
        problems.append(f"the client got bytes that are not HTTP: {problem}")
    strong = not case.mutated_ds
    pairs, stats = header_pairs(ds_sent), status_lines(ds_sent)
    expects = b"expect: 100-continue" in case.client_bytes().lower()
    for r in rs:
        if r.canned:
            continue
        if expects and (r.status, r.reason, r.lines) == (100, b"Continue", []):
            continue            # the proxy's own, while it buffers the body (request-buffering)
        if strong:
            if (r.status, r.reason) not in stats:
                problems.append(f"status line {r.status} {r.reason!r}: the downstream sent no such status line")
        elif r.reason and r.reason not in ds_sent:
            problems.append(f"reason {short(r.reason, 200)}: not in the downstream's bytes")
        for ln in r.lines:
            if ln in PROXY_RESPONSE_LINES:
                continue
            k, v = ln.split(b": ", 1)
            if strong:
                if (k.lower(), v.strip()) not in pairs:
                    problems.append(f"response header {short(ln, 300)}: the downstream sent no such field")
            elif k not in ds_sent or v not in ds_sent:
                problems.append(f"response header {short(ln, 300)}: not in the downstream's bytes")
        if r.body and r.body not in ds_sent and not any(r.body in d for d in case.decoded) \
                and not (case.client10 and any(r.data in d for d in case.decoded)) \
                and not (case.client10 and case.mutated_ds and dechunked_from(r.body, ds_sent)):
            problems.append(f"a {len(r.body)}-byte response body the downstream did not send: {short(r.body)}")
    return problems


def check_downstream_side(case: Case, ds: Downstream) -> list:
    problems = list(ds.errors)
    sent = case.client_bytes()
    strong = not case.mutated_client
    cpairs = header_pairs(sent)
    for req in ds.received:
        i = req.index(b"\r\n\r\n")
        lines = req[:i].split(b"\r\n")
        method, target, _ = lines[0].split(b" ")
        if method + b" " + target + b" " not in sent:
            problems.append(f"request line {short(lines[0], 300)}: the client sent no such request")
        for ln in lines[1:]:
            k, v = ln.split(b":", 1)
            name, v = k.strip().lower(), v.strip()
            if strong and name in case.trailer_names:
                problems.append(f"request trailer {short(ln, 200)} reached the downstream as a header")
            if name in PROXY_REQUEST_FIELDS:
                continue
            if strong:
                if (name, v) not in cpairs:
                    problems.append(f"request header {short(ln, 300)}: the client sent no such field")
            elif k.strip() not in sent or v not in sent:
                problems.append(f"request header {short(ln, 300)}: not in the client's bytes")
        body = req[i + 4:]
        if body and body not in sent:
            problems.append(f"a {len(body)}-byte request body the client did not send: {short(body)}")
    if ds.tunnel_in and ds.tunnel_in not in sent + case.client_tunnel and ds.tunnel_in not in case.client_tunnel:
        problems.append(f"tunnel bytes the client did not send: {short(ds.tunnel_in)}")
    return problems


# ---- the run ---------------------------------------------------------------------------

def proxy_conf(port: int, ds_port: int, log: str) -> str:
    return f"""workers = 1
access-log-flush = 50ms
server {{
    addr = 127.0.0.1
    port = {port}
    read-timeout = 2s
    keepalive-timeout = 2s
    logging {{ request {{ enabled = true  output = "file:{log}"  format = "{LOG_FORMAT}" }} }}
    downstream {{
        addr = 127.0.0.1
        port = {ds_port}
        connections = 2
        read-timeout = 2s
        max-fails = 0
    }}
}}
"""


def report_files(d: Optional[str]) -> list:
    if not d or not os.path.isdir(d):
        return []
    return sorted(os.path.join(d, f) for f in os.listdir(d))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="time budget (cases already started finish)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case", type=int, help="run just this case number (a replay)")
    ap.add_argument("--first", type=int, default=0, help="first case number")
    ap.add_argument("--corpus", default=os.path.join(HERE, "corpus"))
    ap.add_argument("--reports", default=os.environ.get("RPROXY_SANITIZER_REPORTS"),
                    help="the sanitizer report directory to watch (default $RPROXY_SANITIZER_REPORTS)")
    ap.add_argument("--out", default=None, help="where a failing case is written (default: a temp dir)")
    ap.add_argument("--keep-going", action="store_true",
                    help="report every failing case (one line each, in full to --out) instead of stopping")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    corpus = load_corpus(args.corpus)
    tmp = tempfile.mkdtemp(prefix="rproxy-fuzz-")
    ds = Downstream()
    port = free_port()
    log = os.path.join(tmp, "access.log")
    before = set(report_files(args.reports))
    p = Rproxy(proxy_conf(port, ds.port, log), tmp, port=port)
    workers = {w.pid for w in p.workers()}
    if not workers:
        print(f"fuzz: rproxy started no worker:\n{p.read_log()}", file=sys.stderr)
        p.stop()
        return 2
    t0 = time.monotonic()
    numbers = [args.case] if args.case is not None else None
    n, stats = args.first, {"cases": 0, "requests": 0, "client bytes": 0, "downstream bytes": 0}
    failure, failures = None, 0
    try:
        while True:
            if numbers is not None:
                if not numbers:
                    break
                n = numbers.pop()
            elif time.monotonic() - t0 >= args.seconds:
                break
            case = gen_case(args.seed, n, corpus)
            if args.verbose:
                print(case.describe(), flush=True)
            ds.start_case(case)
            got, closed = run_client(port, case, time.monotonic() + 8)
            # the downstream may still be sending what the proxy stopped relaying
            end = time.monotonic() + 2
            while ds.busy() and time.monotonic() < end:
                time.sleep(0.01)
            with ds.lock:
                ds_sent = list(ds.sent.values())
                problems = [] if case.client_close_early else check_client_side(case, got, ds_sent)
                problems += check_downstream_side(case, ds)
            stats["cases"] += 1
            stats["requests"] += len(case.methods)
            stats["client bytes"] += len(case.client_bytes())
            stats["downstream bytes"] += sum(map(len, ds_sent))
            time.sleep(0.01)
            new = [f for f in report_files(args.reports) if f not in before]
            if new:
                time.sleep(0.5)                     # let the runtime finish writing
                problems.append("sanitizer reports:\n" + "\n".join(
                    f"==== {f}\n" + open(f, errors="replace").read() for f in new))
            now = {w.pid for w in p.workers()}
            if now != workers or p.poll() is not None:
                problems.append(f"the worker died (pids {sorted(workers)} -> {sorted(now)}); master log:\n"
                                + p.read_log()[-3000:])
            if args.verbose:
                print(f"  client got {len(got)} bytes: {short(got, 300)}\n  -> {problems or 'ok'}", flush=True)
            if problems:
                failure = (case, got, problems)
                if not args.keep_going:
                    break
                failures += 1
                path = write_failure(args.out or tmp, case, got, problems)
                print(f"fuzz: case {n} FAILED: {problems[0][:300]} ({path})", flush=True)
                before = set(report_files(args.reports))
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and len(p.workers()) != len(workers):
                    time.sleep(0.1)
                workers = {w.pid for w in p.workers()}
            n += 1
    finally:
        p.stop()
        ds.close()
    took = time.monotonic() - t0
    print(f"fuzz: seed {args.seed}, {stats['cases']} cases, {stats['requests']} requests, "
          f"{stats['client bytes']} client bytes, {stats['downstream bytes']} downstream bytes in {took:.0f} s")
    if failure is None:
        return 0
    if args.keep_going:
        print(f"fuzz: {failures} failing cases", file=sys.stderr)
        return 1
    case, got, problems = failure
    path = write_failure(args.out or tmp, case, got, problems)
    print(failure_text(case, got, problems) + f"(written in full to {path})", file=sys.stderr)
    return 1


def failure_text(case: Case, got: bytes, problems: list) -> str:
    return (f"FUZZ FAILURE: seed {case.seed}, case {case.number}\n"
            f"replay: python -P tests/fuzz/fuzz_proxy.py --seed {case.seed} --case {case.number} -v\n"
            + "\n".join(f"- {x}" for x in problems) + "\n" + case.describe() + "\n"
            + f"client got {len(got)} bytes: {short(got, 2000)}\n")


def write_failure(out: str, case: Case, got: bytes, problems: list) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"fuzz-seed{case.seed}-case{case.number}.txt")
    with open(path, "w") as f:
        f.write(failure_text(case, got, problems) + f"\nfull client bytes: {case.client_bytes()!r}\n"
                f"full plans: {case.plans!r}\nfull client got: {got!r}\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
