"""The response cache's first cut, end to end: entry files shared by the
workers and kept across restarts, hits served by the proxy, RFC 9111
storability, Age, expiry, invalidation, key = scheme + host + target."""
from __future__ import annotations

import collections
import http.client
import os
import subprocess
import threading
import time
import urllib.parse

import pytest

from support.downstream import Downstream
from support.proc import Rproxy, free_port
from support.stats import assert_quiet

SEEN: collections.Counter = collections.Counter()
LOCK = threading.Lock()


LASTREQ: dict = {}
LM = "Wed, 01 Jan 2020 00:00:00 GMT"


def handler(req, s):
    """/c?cc=...&h=Name:Value&len=N&status=N: answers with a body naming the
    request's Host, the target and how many times the downstream saw it.
    etag=V / lm=1 add a validator; a request whose If-None-Match /
    If-Modified-Since matches gets a 304 (Cache-Control: cc304, default
    max-age=60, and the fields h304) unless no304=1; slow2=MS waits from the second request on,
    die2=1 closes without answering from the second request on, s2=N
    answers with status N from the second request on, chunked=1 sends the
    body in two chunks (cut=1: closes after the first)."""
    u = urllib.parse.urlsplit(req.target)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    key = (req.header("Host"), req.target)
    with LOCK:
        SEEN[key] += 1
        n = SEEN[key]
        LASTREQ[key] = {k.lower(): v for k, v in req.headers}
    if n >= 2 and q.get("die2"):
        return False
    if n >= 2 and q.get("slow2"):
        time.sleep(int(q["slow2"][0]) / 1000)
    if q.get("ms"):
        time.sleep(int(q["ms"][0]) / 1000)
    status = int(req.header("X-Status") or q.get("status", ["200"])[0])
    if n >= 2 and q.get("s2"):
        status = int(q["s2"][0])
    size = int(q.get("len", ["0"])[0])
    body = f"{req.method} {req.header('Host')} {req.target} #{n}\n".encode()
    body += bytes(i % 251 for i in range(size))
    vals = []
    if q.get("etag"):
        vals.append(f'ETag: "{q["etag"][0]}"')
    if q.get("lm"):
        vals.append(f"Last-Modified: {LM}")
    match = not q.get("no304") and ((q.get("etag") and req.header("If-None-Match") == f'"{q["etag"][0]}"')
                                    or (q.get("lm") and req.header("If-Modified-Since") == LM))
    if match:
        head = ["HTTP/1.1 304 Not Modified", f"Cache-Control: {q.get('cc304', ['max-age=60'])[0]}",
                f"X-Count: {n}"] + vals + q.get("h304", [])
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        return True
    head = [f"HTTP/1.1 {status} X", "Content-Type: text/plain", f"Content-Length: {len(body)}", f"X-Count: {n}"]
    head += vals
    if q.get("cc", [""])[0]:
        head.append(f"Cache-Control: {q['cc'][0]}")
    head += q.get("h", [])
    if q.get("chunked") and req.method != "HEAD":
        head = [h for h in head if not h.startswith("Content-Length")] + ["Transfer-Encoding: chunked"]
        half = len(body) // 2
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"%x\r\n" % half + body[:half] + b"\r\n")
        if q.get("cut"):
            time.sleep(0.05)
            return False
        time.sleep(0.02)
        s.sendall(b"%x;ext=1\r\n" % (len(body) - half) + body[half:] + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if req.method == "HEAD" else body))
    return True


def conf(port, dport, path):
    return f"""
workers = 2
cache main {{ path = "{path}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {dport}  connections = 2 }}
    vhost "a.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = main }} }}
    vhost "b.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = main }} }}
    vhost "buf.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = main  response-buffering = true }} }}
    vhost "nocache.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }} }} }}
}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ds = Downstream(handler=handler)
    tmp = tmp_path_factory.mktemp("cache")
    path = str(tmp / "entries")
    port = free_port()
    p = Rproxy(conf(port, ds.port, path), tmp, port=port, name="rproxy-cache")
    state = {"p": p, "port": port, "path": path, "tmp": tmp, "ds": ds}
    try:
        yield state
        assert_quiet(state["p"])
    finally:
        state["p"].stop()
        ds.close()


def get(port, target, host="a.test", method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, target, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.headers, data


def recv_all(s, bufsize=65536, slow_first=0):
    """Everything until the proxy closes; the first slow_first bytes read
    in small steps with pauses (a slow client)."""
    raw = b""
    while True:
        d = s.recv(bufsize)
        if not d:
            return raw
        raw += d
        if len(raw) < slow_first:
            time.sleep(0.002)


def wait_for(pred, what="", timeout=5.0, step=0.02):
    """Poll pred() until it returns something true (returned); fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, what
        time.sleep(step)


def updating_while_refreshing(port, host, t):
    """One request refreshes a stale entry (the downstream is slow); another
    meanwhile: (the refresher's response, the other's)."""
    res = {}
    th = threading.Thread(target=lambda: res.setdefault("a", get(port, t, host=host)))
    th.start()
    wait_for(lambda: seen(host, t) >= 2, "the refresh reached the downstream")
    other = get(port, t, host=host)
    th.join()
    return res["a"], other


def seen(host, target):
    with LOCK:
        return SEEN[(host, target)]


def lastreq(host, target):
    with LOCK:
        return LASTREQ[(host, target)]


def test_miss_then_hit_from_either_worker(env):
    port = env["port"]
    t = "/c?cc=max-age=60&len=100000"
    st, h, first = get(port, t)
    assert st == 200 and h["X-Cache"] == "MISS" and first.startswith(b"GET a.test " + t.encode() + b" #1\n")
    for _ in range(6):                      # new connections: both workers answer some
        st, h, body = get(port, t)
        assert (st, h["X-Cache"], body) == (200, "HIT", first)
        assert int(h["Age"]) >= 0 and h["Content-Length"] == str(len(first))
    assert seen("a.test", t) == 1
    names = os.listdir(env["path"])
    assert len([n for n in names if not n.startswith(".tmp")]) >= 1
    assert not [n for n in names if n.startswith(".tmp")]      # written to a temp name, then renamed


def test_head_is_served_from_a_stored_get(env):
    port = env["port"]
    t = "/head?cc=max-age=60"
    _, _, body = get(port, t)
    st, h, data = get(port, t, method="HEAD")
    assert (st, h["X-Cache"], data, h["Content-Length"]) == (200, "HIT", b"", str(len(body)))
    assert seen("a.test", t) == 1


def test_keep_alive_and_pipelined_hits(env):
    port = env["port"]
    t = "/ka?cc=max-age=60"
    get(port, t)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):
        c.request("GET", t, headers={"Host": "a.test"})
        r = c.getresponse()
        assert r.headers["X-Cache"] == "HIT" and r.read().endswith(b"#1\n")
    c.close()
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET {t} HTTP/1.1\r\nHost: a.test\r\n\r\n" * 3
                   + f"GET {t} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").encode())
        raw = recv_all(s)
    assert raw.count(b"X-Cache: HIT") == 4 and raw.count(b"#1\n") == 4
    assert seen("a.test", t) == 1


@pytest.mark.parametrize("target,headers", [
    ("/ns?cc=no-store,max-age=60", {}),
    ("/pv?cc=private,max-age=60", {}),
    ("/nc?cc=no-cache,max-age=60", {}),          # validated before each use, but nothing to validate with
    ("/nf?cc=", {}),                                # no freshness information
    ("/au?cc=max-age=60", {"Authorization": "Basic eDp5"}),
    ("/vr?cc=max-age=60&h=Vary:%20*", {}),         # never matches
    ("/st?cc=&status=500", {}),                  # no freshness, not heuristically cacheable
    ("/rq?cc=max-age=60", {"Cache-Control": "no-store"}),
])
def test_not_stored(env, target, headers):
    port = env["port"]
    for i in range(2):
        st, h, body = get(port, target, headers=headers)
        assert body.startswith(f"GET a.test {target} #{i + 1}\n".encode())
        assert h["X-Cache"] in ("MISS", "BYPASS")
    assert seen("a.test", target) == 2


def test_set_cookie_is_never_handed_to_another_client(env):
    """A response with Set-Cookie is stored without it: its client gets its
    cookie, the hits none; a 304 with Set-Cookie reaches its client and
    leaves the stored entry as it was."""
    port = env["port"]
    t = "/ck?cc=max-age=60&h=Set-Cookie:%20a=b"
    st, h, body = get(port, t)
    assert (h["X-Cache"], h["Set-Cookie"]) == ("MISS", "a=b")
    st, h, hit = get(port, t)
    assert (h["X-Cache"], h["Set-Cookie"], hit) == ("HIT", None, body)
    t = "/ck304?cc=max-age=0&etag=e1&h304=Set-Cookie:%20s=1"
    assert get(port, t)[1]["X-Cache"] == "MISS"
    for i in range(2):      # the 304's max-age=60 is not stored with its cookie: validated again
        st, h, b = get(port, t)
        assert (st, h["X-Cache"], h["Set-Cookie"]) == (200, "REVALIDATED", "s=1") and b.endswith(b"#1\n")
        assert seen("a.test", t) == 2 + i


def test_public_with_authorization_is_stored(env):
    t = "/aup?cc=public,max-age=60"
    get(env["port"], t, headers={"Authorization": "Basic eDp5"})
    _, h, _ = get(env["port"], t, headers={"Authorization": "Basic eDp5"})
    assert h["X-Cache"] == "HIT"


def test_key_includes_the_host(env):
    port = env["port"]
    t = "/host?cc=max-age=60"
    _, _, a = get(port, t, host="a.test")
    _, h, b = get(port, t, host="b.test")
    assert h["X-Cache"] == "MISS" and b.startswith(b"GET b.test ")
    _, _, a2 = get(port, t, host="A.TEST")
    assert a2 == a


def test_expiry_and_request_no_cache(env):
    port = env["port"]
    t = "/exp?cc=max-age=1"
    get(port, t)
    _, h, _ = get(port, t)
    assert h["X-Cache"] == "HIT"
    time.sleep(2.1)
    _, h, body = get(port, t)
    assert h["X-Cache"] == "EXPIRED" and body.endswith(b"#2\n")
    _, h, body = get(port, t)
    assert h["X-Cache"] == "HIT" and body.endswith(b"#2\n")
    _, h, body = get(port, t, headers={"Cache-Control": "no-cache"})
    assert h["X-Cache"] == "MISS" and body.endswith(b"#3\n")         # and stored again
    _, h, body = get(port, t)
    assert h["X-Cache"] == "HIT" and body.endswith(b"#3\n")
    _, h, body = get(port, t, headers={"Cache-Control": "max-age=0"})
    assert body.endswith(b"#4\n")


def test_unsafe_method_invalidates(env):
    port = env["port"]
    t = "/inv?cc=max-age=60"
    get(port, t)
    assert get(port, t)[1]["X-Cache"] == "HIT"
    st, _, _ = get(port, t, method="POST", headers={"Content-Length": "0"})
    assert st == 200
    _, h, body = get(port, t)
    assert h["X-Cache"] == "MISS" and body.endswith(b"#3\n")        # (the POST was #2)
    st, _, _ = get(port, t, method="DELETE", headers={"X-Status": "404"})
    assert st == 404                                                  # an error answer keeps the entry
    assert get(port, t)[1]["X-Cache"] == "HIT"
    get(port, t, method="PUT", headers={"Content-Length": "0", "X-Status": "204"})
    assert get(port, t)[1]["X-Cache"] == "MISS"


def test_no_cache_rule_and_curl(env):
    port = env["port"]
    t = "/plain?cc=max-age=60"
    get(port, t, host="nocache.test")
    _, h, _ = get(port, t, host="nocache.test")
    assert h["X-Cache"] is None and seen("nocache.test", t) == 2
    r = subprocess.run(["curl", "-s", "-D", "-", "-H", "Host: a.test", f"http://127.0.0.1:{port}/curl?cc=max-age=60",
                        f"http://127.0.0.1:{port}/curl?cc=max-age=60"], capture_output=True, timeout=10)
    assert r.stdout.count(b"X-Cache: MISS") == 1 and r.stdout.count(b"X-Cache: HIT") == 1


def test_entries_survive_a_restart(env):
    port = env["port"]
    t = "/restart?cc=max-age=600"
    get(port, t)
    assert_quiet(env["p"])
    env["p"].stop()
    env["p"] = Rproxy(conf(port, env["ds"].port, env["path"]), env["tmp"], port=port, name="rproxy-cache2")
    _, h, body = get(port, t)
    assert h["X-Cache"] == "HIT" and body.endswith(b"#1\n")


def slow_get(port, target, host):
    """A client that reads slowly: the proxy's response buffer takes what its
    socket cannot, and the cache must store exactly what the client gets."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = recv_all(s, 16384, slow_first=1 << 20)
    head, body = raw.split(b"\r\n\r\n", 1)
    return head, body


def test_stored_through_the_response_buffer(env):
    port = env["port"]
    t = "/big?cc=max-age=60&len=6000000"
    head, body = slow_get(port, t, "buf.test")
    assert b"X-Cache: MISS" in head and len(body) > 6000000
    st, h, hit = get(port, t, host="buf.test")
    assert h["X-Cache"] == "HIT" and hit == body
    head, hit = slow_get(port, t, "buf.test")           # a hit to a slow reader: sendfile waits for room
    assert b"X-Cache: HIT" in head and hit == body
    assert seen("buf.test", t) == 1


def test_unsafe_method_invalidates_location_targets(env):
    port = env["port"]
    a, b, other = "/loc-a?cc=max-age=60", "/loc-b?cc=max-age=60", "/loc-c?cc=max-age=60"
    for t in (a, b, other):
        get(port, t)
        assert get(port, t)[1]["X-Cache"] == "HIT"
    loc = urllib.parse.quote(f"Location: {a}") + "&h=" + urllib.parse.quote(
        f"Content-Location: http://A.test{b}")
    get(port, "/post?h=" + loc, method="POST", headers={"Content-Length": "0", "X-Status": "201"})
    assert get(port, a)[1]["X-Cache"] == "MISS"
    assert get(port, b)[1]["X-Cache"] == "MISS"
    assert get(port, other)[1]["X-Cache"] == "HIT"
    # another origin's Location is never touched
    get(port, "/post2?h=" + urllib.parse.quote(f"Location: http://b.test{other}"), method="POST",
        headers={"Content-Length": "0"})
    assert get(port, other)[1]["X-Cache"] == "HIT"


def test_manager_keeps_max_size_and_evicts_least_recently_used(start_rproxy, port, tmp_path):
    ds = Downstream(handler=handler)
    path = tmp_path / "small"
    start_rproxy(f"""
workers = 1
cache small {{ path = "{path}"  max-size = 250k  inactive = 1h }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = small }} }}
}}
""", port)
    try:
        for name in ("one", "two"):
            get(port, f"/{name}?cc=max-age=600&len=100000", host="m.test")
            time.sleep(1.1)                     # distinct "last used" times (whole seconds on some file systems)
        assert get(port, "/one?cc=max-age=600&len=100000", host="m.test")[1]["X-Cache"] == "HIT"   # used again
        time.sleep(1.1)
        get(port, "/three?cc=max-age=600&len=100000", host="m.test")
        wait_for(lambda: sum(p.stat().st_size for p in path.iterdir()) <= 250 * 1024,
                 "the manager did not bring the cache under max-size", step=0.2)
        assert get(port, "/two?cc=max-age=600&len=100000", host="m.test")[1]["X-Cache"] == "MISS"   # the LRU one
        assert get(port, "/one?cc=max-age=600&len=100000", host="m.test")[1]["X-Cache"] == "HIT"
    finally:
        ds.close()


def test_access_log_cache_token(start_rproxy, port, tmp_path):
    ds = Downstream(handler=handler)
    log = tmp_path / "access.log"
    start_rproxy(f"""
workers = 1
access-log-buffer = 0
cache c {{ path = "{tmp_path / 'c'}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{
        rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c }}
        logging {{ request {{ enabled = true  output = "file:{log}"  format = "{{URI}} {{CACHE}}" }} }}
    }}
}}
""", port)
    try:
        t = "/log?cc=max-age=60"
        get(port, t, host="l.test")
        get(port, t, host="l.test")
        get(port, t, host="l.test", headers={"Cache-Control": "no-store"})
        get(port, t, host="l.test", method="POST", headers={"Content-Length": "0"})
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 4, "access log lines", step=0.1)
        assert [ln.split()[-1] for ln in log.read_text().splitlines()] == ["MISS", "HIT", "BYPASS", "-"]
    finally:
        ds.close()


def test_hits_over_tls(start_rproxy, port, test_pki, tmp_path):
    """A TLS client: the hit's body goes through OpenSSL in bounded reads."""
    ds = Downstream(handler=handler)
    srv = test_pki["server"]
    start_rproxy(f"""
workers = 1
cache c {{ path = "{tmp_path / 'c'}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c }} }}
}}
""", port)
    try:
        outs = []
        for i in range(2):
            out = tmp_path / f"o{i}"
            r = subprocess.run(["curl", "-sS", "--cacert", test_pki["ca"].crt, "-D", "-", "-o", str(out),
                                f"https://localhost:{port}/tls?cc=max-age=60&len=3000000"],
                               capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr
            outs.append((r.stdout, out.read_bytes()))
        # (curl speaks HTTP/2 when offered: the hit goes through a stream, then OpenSSL)
        assert b"x-cache: miss" in outs[0][0].lower() and b"x-cache: hit" in outs[1][0].lower()
        assert outs[0][1] == outs[1][1] and len(outs[1][1]) > 3000000
        assert outs[1][1].startswith(b"GET localhost:")
    finally:
        ds.close()


def test_stale_entry_validated_with_etag_and_304_merged(env):
    port = env["port"]
    t = "/val?cc=max-age=0&etag=v1&len=3000"
    st, h, first = get(port, t)
    assert (st, h["X-Cache"], h["X-Count"]) == (200, "MISS", "1")
    st, h, body = get(port, t)                      # stale at once: validated
    assert (st, h["X-Cache"], body) == (200, "REVALIDATED", first)
    assert h["X-Count"] == "2" and h["Cache-Control"] == "max-age=60"     # the 304's fields replace the stored ones
    assert h["Content-Length"] == str(len(first)) and h["ETag"] == '"v1"'
    assert lastreq("a.test", t)["if-none-match"] == '"v1"'
    st, h, body = get(port, t)                      # the merged head made it fresh
    assert (st, h["X-Cache"], h["X-Count"], body) == (200, "HIT", "2", first)
    st, h, body = get(port, t, method="HEAD")
    assert (st, h["X-Cache"], body) == (200, "HIT", b"")
    assert seen("a.test", t) == 2


def test_stale_entry_validated_with_last_modified_and_a_200_replaces_it(env):
    port = env["port"]
    t = "/val-lm?cc=max-age=0&lm=1&cc304=max-age=0"
    get(port, t)
    for _ in range(2):                                  # each use validates (the 304 keeps max-age=0)
        st, h, body = get(port, t)
        assert (h["X-Cache"], body.endswith(b"#1\n")) == ("REVALIDATED", True)
        assert lastreq("a.test", t)["if-modified-since"] == LM
    t = "/val-200?cc=max-age=0&etag=v1&no304=1"
    get(port, t)
    st, h, body = get(port, t)                          # validated, but the downstream sends a new 200
    assert (h["X-Cache"], body.endswith(b"#2\n")) == ("EXPIRED", True)
    assert lastreq("a.test", t)["if-none-match"] == '"v1"'
    _, h, body = get(port, t)
    assert body.endswith(b"#3\n")                      # the 200 replaced the entry (its #2 is not served)


def test_client_conditionals_on_a_fresh_entry(env):
    port = env["port"]
    t = "/cond?cc=max-age=60&etag=c1&lm=1"
    get(port, t)
    st, h, body = get(port, t, headers={"If-None-Match": 'W/"x", "c1"'})
    assert (st, h["X-Cache"], body, h["ETag"]) == (304, "HIT", b"", '"c1"')
    st, h, body = get(port, t, headers={"If-None-Match": '"other"'})
    assert (st, h["X-Cache"]) == (200, "HIT") and body.endswith(b"#1\n")
    st, _, _ = get(port, t, headers={"If-Modified-Since": LM})
    assert st == 304
    assert seen("a.test", t) == 1


def test_vary_keeps_one_entry_per_variant(env):
    port = env["port"]
    t = "/vary?cc=max-age=60&h=Vary:%20Accept-Language"

    def lang(v):
        return get(port, t, headers={"Accept-Language": v} if v is not None else {})
    _, h, en = lang("en")
    _, h2, fr = lang("fr, de")
    assert (h["X-Cache"], h2["X-Cache"]) == ("MISS", "MISS") and en.endswith(b"#1\n") and fr.endswith(b"#2\n")
    _, h, body = lang("en")
    assert (h["X-Cache"], body) == ("HIT", en)
    _, h, body = lang("fr,de")                              # whitespace around commas does not matter
    assert (h["X-Cache"], body) == ("HIT", fr)
    _, h, body = lang(None)                                 # no Accept-Language: a variant of its own
    assert h["X-Cache"] == "MISS" and body.endswith(b"#3\n")
    assert lang(None)[1]["X-Cache"] == "HIT"
    get(port, t, method="POST", headers={"Content-Length": "0"})     # invalidates every variant
    _, h, body = lang("en")
    assert h["X-Cache"] == "MISS" and body.endswith(b"#5\n")


def test_range_from_a_stored_body(env):
    port = env["port"]
    t = "/rng?cc=max-age=60&len=5000"
    _, _, full = get(port, t)
    st, h, body = get(port, t, headers={"Range": "bytes=10-19"})
    assert (st, h["X-Cache"], body, h["Content-Range"]) == (206, "HIT", full[10:20], f"bytes 10-19/{len(full)}")
    assert h["Content-Length"] == "10"
    st, h, body = get(port, t, headers={"Range": "bytes=-7"})
    assert (st, body) == (206, full[-7:])
    st, h, body = get(port, t, headers={"Range": "bytes=100-"})
    assert (st, body) == (206, full[100:])
    st, h, body = get(port, t, headers={"Range": "bytes=999999-"})
    assert (st, h["Content-Range"], body) == (416, f"bytes */{len(full)}", b"")
    st, h, body = get(port, t, headers={"Range": "bytes=0-1,5-6"})          # several ranges: the whole body
    assert (st, body) == (200, full)
    r = subprocess.run(["curl", "-s", "-r", "0-99", "-H", "Host: a.test", f"http://127.0.0.1:{port}{t}"],
                       capture_output=True, timeout=10)
    assert r.stdout == full[:100]
    assert seen("a.test", t) == 1


def fnv(key: str) -> int:
    h = 14695981039346656037
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h or 1


def test_chunked_response_stored_with_its_length(env):
    """A chunked response is stored once complete and hit with a
    Content-Length; one whose downstream closes mid-body is not stored."""
    port = env["port"]
    t = "/chunked?cc=max-age=60&chunked=1&len=70000"
    st, h, body = get(port, t)
    assert (st, h["X-Cache"], h["Transfer-Encoding"]) == (200, "MISS", "chunked")
    st, h, hit = get(port, t)
    assert (st, h["X-Cache"], h["Content-Length"], h["Transfer-Encoding"]) == (200, "HIT", str(len(body)), None)
    assert hit == body and seen("a.test", t) == 1
    st, h, _ = get(port, t, method="HEAD")
    assert (h["X-Cache"], h["Content-Length"]) == ("HIT", str(len(body)))
    cut = "/chunkcut?cc=max-age=60&chunked=1&cut=1&len=70000"
    for i in range(2):
        with pytest.raises(http.client.IncompleteRead):
            get(port, cut)
    assert seen("a.test", cut) == 2
    assert not [n for n in os.listdir(env["path"]) if n.startswith(".tmp")]
    wait_for(lambda: "the response ended before its body was complete; not stored" in env["p"].read_log(),
             "the discarded entry is logged")


def test_lock_and_stale_answers(start_rproxy, port, tmp_path):
    """cache-lock coalesces concurrent misses; cache-use-stale answers with
    the stale entry on an error, a timeout and while another request
    updates it; a lock left by a dead process is taken over."""
    ds = Downstream(handler=handler)
    path = tmp_path / "c"
    start_rproxy(f"""
workers = 2
cache c {{ path = "{path}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port}  read-timeout = 1s  max-fails = 0 }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c  cache-lock = true
                            cache-use-stale = {{ error, timeout, updating }} }} }}
}}
""", port)
    try:
        host = "s.test"
        # a lock whose owner is gone (a worker that died while filling the entry)
        p = subprocess.Popen(["true"])
        p.wait()
        dead = "/dead?cc=max-age=60"
        path.mkdir(exist_ok=True)                   # (the worker makes it too, maybe not yet)
        (path / f".lock.{fnv('http://' + host + dead):016x}").write_text(f"{p.pid}\n")
        _, h, _ = get(port, dead, host=host)
        assert h["X-Cache"] == "MISS"
        assert get(port, dead, host=host)[1]["X-Cache"] == "HIT"     # stored: the lock was taken over
        assert not [n for n in os.listdir(path) if n.startswith(".lock.")]
        # concurrent misses for one key: one downstream request
        t = "/lock?cc=max-age=60&ms=400"
        out = []

        def one():
            out.append(get(port, t, host=host))
        ths = [threading.Thread(target=one) for _ in range(6)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert seen(host, t) == 1
        assert sorted(h["X-Cache"] for _, h, _ in out) == ["HIT"] * 5 + ["MISS"]
        assert len({b for _, _, b in out}) == 1
        # stale answers
        err, slow, upd = "/err?cc=max-age=1&die2=1", "/tmo?cc=max-age=1&slow2=3000", "/upd?cc=max-age=1&slow2=700"
        bodies = {t2: get(port, t2, host=host)[2] for t2 in (err, slow, upd)}
        time.sleep(1.2)
        refresh, (st, h, body) = updating_while_refreshing(port, host, upd)
        assert (st, h["X-Cache"], body) == (200, "UPDATING", bodies[upd])
        assert refresh[1]["X-Cache"] == "EXPIRED" and refresh[2].endswith(b"#2\n")
        st, h, body = get(port, slow, host=host)    # the downstream times out (read-timeout): 504
        assert (st, h["X-Cache"], body) == (200, "STALE", bodies[slow])
        st, h, body = get(port, err, host=host)     # the downstream closes without answering: 502
        assert (st, h["X-Cache"], body) == (200, "STALE", bodies[err])
        st, _, _ = get(port, err, host=host, headers={"Cache-Control": "only-if-cached"})
        assert st == 504                            # stale, and not a downstream failure: no stale answer
    finally:
        ds.close()


def test_stale_instead_of_a_downstream_5xx_and_rfc5861(start_rproxy, port, tmp_path):
    """cache-use-stale http_500 / http_503: the downstream's own answer with
    that status is replaced by the stale entry (http_502 not listed: passed
    on); a stored stale-if-error does the same without the directive;
    stale-while-revalidate gives UPDATING answers while one request
    refreshes; must-revalidate never; a downstream gone: error."""
    ds = Downstream(handler=handler)
    path = tmp_path / "c"
    start_rproxy(f"""
workers = 1
cache c {{ path = "{path}" }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port}  max-fails = 0 }}
    vhost "h.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c
                                 cache-use-stale = {{ error, http_500, http_503 }} }} }}
    vhost "n.test" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c }} }}
}}
""", port)
    try:
        h, n = "h.test", "n.test"
        cases = [(h, "/a?cc=max-age=1&s2=503"), (h, "/b?cc=max-age=1&s2=502"),
                 (h, "/f?cc=max-age=1,must-revalidate&s2=503"), (h, "/g?cc=max-age=1"),
                 (n, "/c?cc=max-age=1,stale-if-error=60&s2=500"), (n, "/d?cc=max-age=1&s2=500"),
                 (n, "/e?cc=max-age=1,stale-while-revalidate=30&slow2=700")]
        first = {}
        for host, t in cases:
            st, hd, body = get(port, t, host=host)
            assert (st, hd["X-Cache"]) == (200, "MISS")
            first[t] = body
        time.sleep(1.2)
        st, hd, body = get(port, cases[0][1], host=h)
        assert (st, hd["X-Cache"], body) == (200, "STALE", first[cases[0][1]])
        assert seen(h, cases[0][1]) == 2
        assert get(port, cases[1][1], host=h)[:2][0] == 502          # http_502 is not listed
        assert get(port, cases[2][1], host=h)[0] == 503              # must-revalidate: never stale
        st, hd, body = get(port, cases[4][1], host=n)                # stale-if-error=60, stored
        assert (st, hd["X-Cache"], body) == (200, "STALE", first[cases[4][1]])
        assert get(port, cases[5][1], host=n)[0] == 500
        t = cases[6][1]                                              # stale-while-revalidate=30
        refresh, (st, hd, body) = updating_while_refreshing(port, n, t)
        assert (st, hd["X-Cache"], body) == (200, "UPDATING", first[t])
        assert refresh[1]["X-Cache"] == "EXPIRED" and refresh[2].endswith(b"#2\n")
        ds.close()                                                   # the downstream is gone: error
        st, hd, body = get(port, cases[3][1], host=h)
        assert (st, hd["X-Cache"], body) == (200, "STALE", first[cases[3][1]])
    finally:
        ds.close()


def test_cache_counts_in_the_metrics(start_rproxy, port, tmp_path):
    ds = Downstream(handler=handler)
    status_port = free_port()
    start_rproxy(f"""
workers = 2
cache c {{ path = "{tmp_path / 'c'}" }}
status {{ addr = 127.0.0.1  port = {status_port} }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {ds.port} }}
    vhost "*" {{
        rule app {{ uri-prefix = "/c/"  downstreams = {{ d }}  cache = c }}
        rule plain {{ uri-prefix = "/"  downstreams = {{ d }} }}
    }}
}}
""", port)
    try:
        t = "/c/m?cc=max-age=60"
        for _ in range(3):
            get(port, t, host="m.test")
        get(port, t, host="m.test", headers={"Cache-Control": "no-store"})
        st, _, _ = get(port, "/c/oic", host="m.test", headers={"Cache-Control": "only-if-cached"})
        assert st == 504                            # nothing stored for it (RFC 9111 5.2.1.7)
        get(port, "/other", host="m.test")

        def counts():
            text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{status_port}/metrics"], capture_output=True,
                                  text=True, timeout=10).stdout
            out = {}
            for line in text.splitlines():
                if line.startswith("rproxy_cache_requests_total{"):
                    labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.index("}")].split(","))
                    assert labels["rule"] == '"app"' and labels["cache"] == '"c"'
                    out[labels["result"].strip('"')] = float(line.rsplit(" ", 1)[1])
            return out
        wait_for(lambda: counts().get("HIT") == 2, "two hits in the metrics", step=0.1)
        c = counts()
        assert (c["HIT"], c["MISS"], c["BYPASS"], c["STALE"]) == (2, 2, 1, 0)   # (the 504 was a MISS)
    finally:
        ds.close()


# ---- keys zone: the shared index ------------------------------------------------------

def kz_conf(port, dport, path, status_port, zone="64k", workers=2, extra=""):
    return f"""
workers = {workers}
cache c {{ path = "{path}"  keys-zone = {zone} {extra} }}
status {{ addr = 127.0.0.1  port = {status_port} }}
server {{
    addr = 127.0.0.1
    port = {port}
    downstream d {{ addr = 127.0.0.1  port = {dport}  connections = 4 }}
    vhost "*" {{ rule app {{ uri-prefix = "/"  downstreams = {{ d }}  cache = c }} }}
}}
"""


def index_metrics(status_port) -> dict:
    """rproxy_cache_index_* of cache c, by name without the prefix."""
    text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{status_port}/metrics"], capture_output=True,
                          text=True, timeout=10).stdout
    out = {}
    for line in text.splitlines():
        if line.startswith("rproxy_cache_index_") and '{cache="c"}' in line:
            name, v = line.rsplit(" ", 1)
            out[name[len("rproxy_cache_index_"):name.index("{")]] = float(v)
    return out


def wait_index(status_port, pred, what):
    return wait_for(lambda: (lambda m: m if m and pred(m) else None)(index_metrics(status_port)), what,
                    timeout=10, step=0.05)


def entry_files(path) -> list:
    return [n for n in os.listdir(path) if len(n) == 16 and not n.startswith(".")]


def test_keys_zone_misses_without_the_file_system_survives_reload_and_restart(tmp_path):
    """Lookups ask the index first: a key it does not know is a miss even
    when a valid entry file sits at its name (the file is never opened); a
    reload keeps the index (no second load); a restart rebuilds it from the
    files with the loader, and the loaded entries are hits."""
    import signal

    from support.master import wait_generation

    ds = Downstream(handler=handler)
    path = tmp_path / "kz"
    port, sp = free_port(), free_port()
    p = Rproxy(kz_conf(port, ds.port, path, sp), tmp_path, port=port, name="kz1")
    try:
        m = wait_index(sp, lambda m: m["loaded"] == 1, "the loader of an empty cache")
        assert m["capacity"] == (64 * 1024 - 64) // 32 and m["keys"] == 0
        host, k1, k2 = "kz.test", "/k1?cc=max-age=600", "/k2?cc=max-age=600"
        assert get(port, k1, host=host)[1]["X-Cache"] == "MISS"
        assert get(port, k1, host=host)[1]["X-Cache"] == "HIT"
        assert get(port, k2, host=host)[1]["X-Cache"] == "MISS"
        f2 = path / f"{fnv('http://' + host + k2):016x}"
        saved = f2.read_bytes()
        m = wait_index(sp, lambda m: m["keys"] == 2, "two keys")
        assert m["bytes"] == sum((path / n).stat().st_size for n in entry_files(path))
        get(port, k2, host=host, method="DELETE", headers={"Content-Length": "0"})    # invalidates
        assert not f2.exists()
        f2.write_bytes(saved)                   # a valid, fresh entry behind the index's back
        before = index_metrics(sp)["misses_total"]
        assert get(port, k2, host=host)[1]["X-Cache"] == "MISS"         # never opened: a file lookup would hit
        assert seen(host, k2) == 3 and index_metrics(sp)["misses_total"] > before   # GET, DELETE, GET
        assert get(port, k2, host=host)[1]["X-Cache"] == "HIT"          # stored again, indexed
        # a reload of the same size keeps the index: no loader, hits at once
        p.signal(signal.SIGHUP)
        wait_generation(p.pid, 2, 2)
        assert index_metrics(sp)["loaded"] == 1
        assert get(port, k1, host=host)[1]["X-Cache"] == "HIT"
        assert p.read_log().count("index loaded") == 1
        # a new size: a new zone, filled by the loader
        with open(p.conf, "w") as f:
            f.write(kz_conf(port, ds.port, path, sp, zone="128k"))
        p.signal(signal.SIGHUP)
        wait_generation(p.pid, 3, 2)
        m = wait_index(sp, lambda m: m["capacity"] == (128 * 1024 - 64) // 32 and m["loaded"] == 1,
                       "the loader of the new zone")
        assert m["keys"] == 2 and p.read_log().count("index loaded, 2 entries") == 1
        assert get(port, k1, host=host)[1]["X-Cache"] == "HIT"
        assert_quiet(p)
    finally:
        p.stop()
    # a restart: the loader fills a new index from the files
    p = Rproxy(kz_conf(port, ds.port, path, sp), tmp_path, port=port, name="kz2")
    try:
        m = wait_index(sp, lambda m: m["loaded"] == 1, "the loader after a restart")
        assert m["keys"] == len(entry_files(path)) == 2
        assert "index loaded, 2 entries" in p.read_log()
        assert get(port, k1, host=host)[1]["X-Cache"] == "HIT"          # known to the index: loaded
        assert get(port, k2, host=host)[1]["X-Cache"] == "HIT"
        assert seen(host, k1) == 1
        assert_quiet(p)
    finally:
        p.stop()
        ds.close()


def test_keys_zone_full_evicts_the_least_recently_used(tmp_path):
    """More keys than a 64k index holds (2046): a store that finds its
    probe window full evicts the window's least recently used entry and
    its file; a key kept in use stays; the index and the directory agree."""
    ds = Downstream(handler=handler)
    path = tmp_path / "full"
    port, sp = free_port(), free_port()
    p = Rproxy(kz_conf(port, ds.port, path, sp, workers=1), tmp_path, port=port, name="kzfull")
    try:
        wait_index(sp, lambda m: m["loaded"] == 1, "the loader")
        host, hot = "full.test", "/hot?cc=max-age=600"
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def one(t):
            c.request("GET", t, headers={"Host": host})
            r = c.getresponse()
            r.read()
            return r.headers["X-Cache"]
        assert one(hot) == "MISS"
        for i in range(2600):
            assert one(f"/f{i}?cc=max-age=600") == "MISS"
            if i % 25 == 0:
                time.sleep(0.03)                # distinct "last used" times (ms, coarse clock)
                assert one(hot) == "HIT"
        c.close()
        m = wait_index(sp, lambda m: m["full_evictions_total"] > 0, "evictions of a full index")
        assert m["keys"] <= m["capacity"] and m["keys"] == len(entry_files(path))
        assert m["keys"] + m["full_evictions_total"] == 2601
        assert get(port, hot, host=host)[1]["X-Cache"] == "HIT"
        assert get(port, "/f2599?cc=max-age=600", host=host)[1]["X-Cache"] == "HIT"
        assert_quiet(p)
    finally:
        p.stop()
        ds.close()
