"""End to end: serving and shaping at the edge (issue 20) -- static files,
redirect rules, request/response header rules, security headers, sticky
sessions -- with raw sockets, curl and Python's ssl against the real
`rproxy` command.  Every proxy is checked at teardown to hold nothing."""
from __future__ import annotations

import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from support.downstream import Downstream, payload
from support.proc import free_port, open_fds, read_response, rproxy_command

BIG = 3 * 1024 * 1024 + 17


@pytest.fixture
def site(tmp_path):
    """A document root with files, a subdirectory, dotfiles, symlinks in and out."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / ".git").mkdir()
    (root / ".well-known").mkdir()
    (root / "a.txt").write_bytes(b"hello world\n")
    (root / "style.css").write_bytes(b"body{}\n")
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (root / ".env").write_bytes(b"SECRET=1\n")
    (root / ".git" / "config").write_bytes(b"[core]\n")
    (root / ".well-known" / "token").write_bytes(b"acme\n")
    (root / "big.bin").write_bytes(payload(BIG))
    (root / "app.js").write_bytes(b"console.log(1)\n" * 50)
    (root / "app.js.gz").write_bytes(gzip.compress((root / "app.js").read_bytes()))
    (root / "odd name.txt").write_bytes(b"odd\n")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the root\n")
    os.symlink(secret, root / "escape.txt")
    os.symlink("../../secret.txt", root / "sub" / "up.txt")
    os.symlink("a.txt", root / "inner.txt")
    return root


def conf(port, body, downstreams=(), extra="", top=""):
    dss = "\n".join(f"downstream {n} {{ addr = 127.0.0.1  port = {p}  connections = 4 }}" for n, p in downstreams)
    return f"""
workers = 1
{top}
server {{
    addr = 127.0.0.1
    port = {port}
    {extra}
    {dss}
    vhost "*" {{
        default = true
        {body}
    }}
}}
"""


def raw(port, data: bytes, head=False):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        st, hs, body, _ = read_response(s, head_request=head)
        return st, dict(hs), body


def get(port, target, headers=(), method="GET"):
    h = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return raw(port, f"{method} {target} HTTP/1.1\r\nHost: t\r\n{h}\r\n".encode(), head=method == "HEAD")


STATIC = 'rule files { uri-prefix = "/static/"  root = "%s"  autoindex = %s }'


# ---- static files --------------------------------------------------------------------

def test_static_files_validators_ranges_and_head(start_rproxy, port, site):
    start_rproxy(conf(port, STATIC % (site, "false")), port=port)
    st, h, body = get(port, "/static/a.txt")
    assert (st, body) == (200, b"hello world\n")
    assert h["content-type"] == "text/plain; charset=utf-8" and h["accept-ranges"] == "bytes"
    etag, lm = h["etag"], h["last-modified"]
    assert get(port, "/static/style.css")[1]["content-type"].startswith("text/css")
    # HEAD: the same head, no body
    st, hh, body = get(port, "/static/big.bin", method="HEAD")
    assert st == 200 and hh["content-length"] == str(BIG) and body == b""
    # conditionals
    assert get(port, "/static/a.txt", [("If-None-Match", etag)])[0] == 304
    assert get(port, "/static/a.txt", [("If-None-Match", f'"x", W/{etag}')])[0] == 304
    assert get(port, "/static/a.txt", [("If-None-Match", "*")])[0] == 304
    assert get(port, "/static/a.txt", [("If-None-Match", '"other"')])[0] == 200
    assert get(port, "/static/a.txt", [("If-Modified-Since", lm)])[0] == 304
    assert get(port, "/static/a.txt", [("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")])[0] == 200
    # If-None-Match wins over If-Modified-Since
    assert get(port, "/static/a.txt", [("If-None-Match", '"other"'), ("If-Modified-Since", lm)])[0] == 200
    st, h304, body = get(port, "/static/a.txt", [("If-None-Match", etag)])
    assert h304["etag"] == etag and body == b"" and "content-length" not in h304
    # ranges
    st, h, body = get(port, "/static/a.txt", [("Range", "bytes=0-4")])
    assert (st, body, h["content-range"]) == (206, b"hello", "bytes 0-4/12")
    assert get(port, "/static/a.txt", [("Range", "bytes=6-")])[2] == b"world\n"
    assert get(port, "/static/a.txt", [("Range", "bytes=-3")])[2] == b"ld\n"
    assert get(port, "/static/a.txt", [("Range", "bytes=6-100")])[2] == b"world\n"
    st, h, body = get(port, "/static/a.txt", [("Range", "bytes=50-")])
    assert (st, h["content-range"]) == (416, "bytes */12")
    assert get(port, "/static/a.txt", [("Range", "bytes=0-1,4-5")])[:3:2] == (200, b"hello world\n")
    assert get(port, "/static/a.txt", [("Range", "items=0-1")])[0] == 200
    assert get(port, "/static/a.txt", [("Range", "bytes=0-4"), ("If-Range", etag)])[0] == 206
    assert get(port, "/static/a.txt", [("Range", "bytes=0-4"), ("If-Range", '"old"')])[0] == 200
    # another version: the whole file from its first byte, not from the range's
    assert get(port, "/static/a.txt", [("Range", "bytes=6-"), ("If-Range", '"old"')])[:3:2] == (200, b"hello world\n")
    st, h, body = get(port, "/static/big.bin", [("Range", f"bytes={BIG - 1000}-")])
    assert st == 206 and body == payload(BIG)[-1000:]
    # a large file through sendfile, and keep-alive afterwards on the same connection
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        st, _, body, rest = read_response(s)
        assert st == 200 and body == payload(BIG)
        assert read_response(s, rest)[2] == b"hello world\n"
    # only GET and HEAD
    st, h, _ = get(port, "/static/a.txt", method="DELETE")
    assert (st, h["allow"]) == (405, "GET, HEAD")


def test_static_confinement(start_rproxy, port, site):
    p = start_rproxy(conf(port, STATIC % (site, "false")), port=port)
    for target in ("/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/%2E%2E/secret.txt",
                   "/static/sub/..%2f..%2fsecret.txt", "/static/..%5c..%5csecret.txt", "/static/a.txt%00.css",
                   "/static/%zz", "/static/sub/%2e%2e/%2e%2e/secret.txt"):
        st, _, body = get(port, target)
        assert st == 400, target
        assert b"outside" not in body
    # double encoding is a literal name that does not exist
    assert get(port, "/static/%252e%252e/secret.txt")[0] == 404
    # symlinks leaving the root (absolute, or relative through ..) are refused; one inside works
    assert get(port, "/static/escape.txt")[0] == 403
    assert get(port, "/static/sub/up.txt")[0] == 403
    assert get(port, "/static/inner.txt")[2] == b"hello world\n"
    # dotfiles are hidden, .well-known is not
    assert get(port, "/static/.env")[0] == 404
    assert get(port, "/static/.git/config")[0] == 404
    assert get(port, "/static/%2egit/config")[0] == 404
    assert get(port, "/static/.well-known/token")[2] == b"acme\n"
    assert get(port, "/static/nothing")[0] == 404
    assert get(port, "/static/odd%20name.txt")[2] == b"odd\n"
    log = p.read_log()
    assert "path leaves the root" in log and "refused path" in log and "hidden file: .env" in log


def test_static_dirs_index_autoindex_precompressed_and_fallback(start_rproxy, port, site, downstream):
    body = (STATIC % (site, "true")) + '\nrule rest { uri-prefix = "/"  root = "%s"  downstreams = { app } }' % site
    start_rproxy(conf(port, body, [("app", downstream.port)]), port=port)
    st, h, _ = get(port, "/static/sub?x=1")
    assert (st, h["location"]) == (301, "/static/sub/?x=1")
    assert get(port, "/static/sub/")[2] == b"<p>index</p>\n"
    st, h, listing = get(port, "/static/")
    assert st == 200 and h["content-type"].startswith("text/html")
    assert b'href="a.txt"' in listing and b'href="sub/"' in listing and b"odd%20name.txt" in listing
    assert b".env" not in listing and b".git" not in listing
    # precompressed sibling, chosen by Accept-Encoding, with Vary either way
    st, h, zbody = get(port, "/static/app.js", [("Accept-Encoding", "br, gzip")])
    assert h.get("content-encoding") == "gzip" and gzip.decompress(zbody) == (site / "app.js").read_bytes()
    assert h["vary"] == "Accept-Encoding" and h["content-type"].startswith("text/javascript")
    st, h, plain = get(port, "/static/app.js", [("Accept-Encoding", "deflate")])
    assert "content-encoding" not in h and h["vary"] == "Accept-Encoding" and plain == (site / "app.js").read_bytes()
    assert "vary" not in get(port, "/static/a.txt", [("Accept-Encoding", "gzip")])[1]
    assert "content-encoding" not in get(port, "/static/app.js", [("Accept-Encoding", "gzip;q=0")])[1]
    # try-files: a miss (or a method other than GET/HEAD) goes to the rule's downstreams
    assert get(port, "/a.txt")[2] == b"hello world\n"
    st, _, body = get(port, "/echo/x")
    assert st == 200 and json.loads(body)["target"] == "/echo/x"
    get(port, "/a.txt", method="POST")
    assert downstream.requests[-1].method == "POST" and downstream.requests[-1].target == "/a.txt"
    assert get(port, "/empty/")[0] == 200       # no index, no autoindex: the downstream answers


def test_static_over_tls_and_security_levels(start_rproxy, port, site, test_pki, tmp_path):
    srv = test_pki["server"]
    body = f"""security-headers = strict
        {STATIC % (site, "false")}
        rule basic {{ uri-prefix = "/basic/"  root = "{site}"  security-headers = basic }}
        rule custom {{ uri-prefix = "/custom/"  root = "{site}"
                       security-headers {{ profile = strict  content-security-policy = "default-src 'self'"
                                          x-frame-options = DENY  permissions-policy = off }} }}
        rule none {{ uri-prefix = "/none/"  root = "{site}"  security-headers = off }}"""
    tls = f'ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}'
    plain_port = port
    start_rproxy(conf(plain_port, body), port=plain_port)
    from support.proc import free_port
    tport = free_port()
    start_rproxy(conf(tport, body, extra=tls), port=tport)
    ctx = ssl.create_default_context(cafile=test_pki["ca"].crt)

    def tls_get(target):
        with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                st, hs, b, _ = read_response(t)
                return st, dict(hs), b

    st, h, b = tls_get("/static/big.bin")
    assert st == 200 and b == payload(BIG)
    assert h["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    assert h["x-content-type-options"] == "nosniff" and h["cross-origin-opener-policy"] == "same-origin"
    assert "permissions-policy" in h
    st, h, _ = get(plain_port, "/static/a.txt")
    assert "strict-transport-security" not in h and h["x-frame-options"] == "SAMEORIGIN"
    assert "permissions-policy" in h
    h = get(plain_port, "/basic/a.txt")[1]
    assert h["referrer-policy"] == "strict-origin-when-cross-origin" and "permissions-policy" not in h
    assert "strict-transport-security" not in tls_get("/basic/a.txt")[1]
    h = tls_get("/custom/a.txt")[1]
    assert h["content-security-policy"] == "default-src 'self'" and h["x-frame-options"] == "DENY"
    assert "permissions-policy" not in h and "strict-transport-security" in h
    h = get(plain_port, "/none/a.txt")[1]
    assert not any(k in h for k in ("x-frame-options", "x-content-type-options", "referrer-policy"))
    # curl over TLS, ranges through the read + SSL_write path
    out = subprocess.run(["curl", "-s", "--cacert", test_pki["ca"].crt, "-r", "100-199",
                          f"https://localhost:{tport}/static/big.bin", "--resolve", f"localhost:{tport}:127.0.0.1"],
                         capture_output=True, timeout=20)
    assert out.stdout == payload(BIG)[100:200]


def test_open_file_cache_bounded_and_revalidated(start_rproxy, port, tmp_path):
    """open-file-cache keeps at most N files open per worker (LRU closes the
    rest), and a file replaced (rename over) or deleted is seen once
    open-file-cache-valid has passed."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(300):
        (root / f"f{i}.txt").write_bytes(b"file %d\n" % i)
    body = (f'rule files {{ uri-prefix = "/s/"  root = "{root}"  open-file-cache = 40  '
            'open-file-cache-valid = 300ms }')
    p = start_rproxy(conf(port, body), port=port)
    (worker,) = p.workers()

    def nfds():
        return len(os.listdir(f"/proc/{worker.pid}/fd"))
    assert get(port, "/s/f0.txt")[2] == b"file 0\n"
    base = nfds()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        rest = b""
        for start in range(0, 300, 50):
            s.sendall(b"".join(b"GET /s/f%d.txt HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(start, start + 50)))
            for i in range(start, start + 50):
                st, hs, b, rest = read_response(s, rest)
                assert (st, b) == (200, b"file %d\n" % i)
        during = nfds()
    after = nfds()
    # 40 cached files at most, plus a little slack (the client connection, a log fd)
    assert during <= base + 40 + 4 and after <= base + 40 + 4, (base, during, after)
    assert after >= base + 30          # the cache does keep files open
    # a file replaced by a rename: fresh once the validity time has passed
    st, h, b = get(port, "/s/f299.txt")
    assert b == b"file 299\n"
    (root / "new.tmp").write_bytes(b"replaced content\n")
    os.rename(root / "new.tmp", root / "f299.txt")
    time.sleep(0.6)
    st, h, b = get(port, "/s/f299.txt")
    assert (st, b) == (200, b"replaced content\n") and h["content-length"] == "17"
    # a deleted file: 404 after the validity time, and its fd is closed
    assert get(port, "/s/f298.txt")[0] == 200
    os.unlink(root / "f298.txt")
    time.sleep(0.6)
    assert get(port, "/s/f298.txt")[0] == 404
    held = open_fds(worker.pid)
    assert not any(t.endswith("f298.txt") or "(deleted)" in t for t in held), held


# ---- redirects -------------------------------------------------------------------------

def test_redirect_rules(start_rproxy, port):
    body = "\n".join(
        f'rule r{s} {{ uri-prefix = "/r{s}/"  redirect = "https://new.example/$path$query"  status = {s} }}'
        for s in (301, 302, 303, 307, 308))
    body += '''
        rule dflt { uri-match = "/old"  redirect = "$scheme://$host/new" }
        rule caps { uri-rmatch = "^/user/([a-z]+)/post/([0-9]+)$"  redirect = "/u/\\\\1?post=\\\\2" }
        rule full { uri-prefix = "/all/"  redirect = "https://x.example$request_uri"  status = 301 }'''
    start_rproxy(conf(port, body), port=port)
    for s in (301, 302, 303, 307, 308):
        st, h, b = get(port, f"/r{s}/a/b?q=1")
        assert st == s and h["location"] == "https://new.example/a/b?q=1"
        assert b.startswith(str(s).encode()) and int(h["content-length"]) == len(b)
    st, h, _ = raw(port, b"GET /old HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n")
    assert (st, h["location"]) == (302, "http://Example.COM:8080/new")
    assert get(port, "/user/ann/post/42")[1]["location"] == "/u/ann?post=42"
    assert get(port, "/all/x?y")[1]["location"] == "https://x.example/all/x?y"
    st, h, b = get(port, "/r308/z", method="HEAD")
    assert st == 308 and b == b""
    # keep-alive across redirects: two on one connection
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /r301/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /r302/2 HTTP/1.1\r\nHost: t\r\n\r\n")
        a = read_response(s)
        b2 = read_response(s, a[3])
        assert (a[0], b2[0]) == (301, 302)


# ---- header rules ------------------------------------------------------------------------

def test_header_rules_both_ways(start_rproxy, port, downstream):
    def handler(req, s):
        body = json.dumps({"headers": req.headers}).encode()
        s.sendall(b"HTTP/1.1 200 OK\r\nServer: backend/1.0\r\nX-Powered-By: php\r\nX-Frame-Options: DENY\r\n"
                  b"Cache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return True
    downstream.handler = handler
    body = '''security-headers = basic
        request-headers { set { X-Site = main } }
        response-headers { add { X-Vhost = v1 } }
        rule app { uri-prefix = "/"  downstreams = { app }
            request-headers  { set { X-Env = prod  X-Where = "$scheme://$host/$path$query" }
                               add { X-Added = one }  remove = { X-Debug, x-site-secret } }
            response-headers { add { Cache-Control = "no-store" }  set { X-Set = "a b" }
                               remove = { Server, x-powered-by } } }'''
    start_rproxy(conf(port, body, [("app", downstream.port)]), port=port)
    st, h, b = raw(port, b"GET /p?q=1 HTTP/1.1\r\nHost: h.example\r\nX-Env: dev\r\nX-Debug: 1\r\n"
                         b"X-Site-Secret: s\r\nX-Keep: k\r\n\r\n")
    sent = {}
    for k, v in json.loads(b)["headers"]:
        sent.setdefault(k.lower(), []).append(v)
    assert sent["x-env"] == ["prod"] and sent["x-added"] == ["one"] and sent["x-keep"] == ["k"]
    assert sent["x-site"] == ["main"] and "x-debug" not in sent and "x-site-secret" not in sent
    assert sent["x-where"] == ["http://h.example/p?q=1"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        st, hs, _, _ = read_response(s)
    names = [k for k, _ in hs]
    assert "server" not in names and "x-powered-by" not in names
    assert sorted(v for k, v in hs if k == "cache-control") == ["max-age=60", "no-store"]
    assert dict(hs)["x-set"] == "a b" and dict(hs)["x-vhost"] == "v1"
    # a security header the downstream sent is kept, not doubled
    assert [v for k, v in hs if k == "x-frame-options"] == ["DENY"]
    assert dict(hs)["x-content-type-options"] == "nosniff"


def test_header_rules_cannot_touch_framing(tmp_path):
    for rule in ('request-headers { set { Content-Length = 5 } }', 'response-headers { remove = { Transfer-Encoding } }',
                 'request-headers { add { Connection = close } }', 'request-headers { set { Host = x } }'):
        path = tmp_path / "c.conf"
        path.write_text(conf(1, 'rule a { uri-prefix = "/"  %s }' % rule))
        out = subprocess.run([*rproxy_command(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "hop-by-hop or framing" in out.stderr, rule
    path.write_text(conf(1, 'rule a { uri-prefix = "/"  redirect = "/x"  status = 304 }'))
    out = subprocess.run([*rproxy_command(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "status" in out.stderr


# ---- sticky sessions ------------------------------------------------------------------------

def named_handler(name):
    def handler(req, s):
        body = name.encode()
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return True
    return handler


def test_sticky_cookie(start_rproxy, port, tmp_path):
    dss = [Downstream(handler=named_handler(n)) for n in ("a", "b", "c")]
    try:
        body = '''rule app { uri-prefix = "/"  downstreams = { a, b, c }  lb-method = roundrobin
                    sticky = cookie  sticky-cookie = "rp_srv" }'''
        p = start_rproxy(conf(port, body, [(n, d.port) for n, d in zip("abc", dss)],
                              top=f'state-dir = "{tmp_path}/state"'), port=port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            st, hs, first, rest = read_response(s)
            cookie = dict(hs)["set-cookie"]
            assert cookie.startswith("rp_srv=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert "Path=/" in cookie and "Secure" not in cookie
            value = cookie.split(";")[0]
            for d in dss:       # opaque: no address, port or name in it
                assert str(d.port) not in value and "127.0.0.1" not in value
            seen = set()
            req = f"GET / HTTP/1.1\r\nHost: t\r\nCookie: x=1; {value}; y=2\r\n\r\n".encode()
            for i in range(0, 1000, 50):
                s.sendall(req * 50)
                for _ in range(50):
                    st, hs, b, rest = read_response(s, rest)
                    assert "set-cookie" not in dict(hs)
                    seen.add(b)
            assert seen == {first}
        # without the cookie, round robin spreads clients and each gets its own cookie
        got = {get(port, "/")[2] for _ in range(6)}
        assert got == {b"a", b"b", b"c"}
        # a tampered cookie names nothing: balanced again, and replaced
        st, h, b = get(port, "/", [("Cookie", value[:-2] + "zz")])
        assert h["set-cookie"].startswith("rp_srv=")
        # failover: the sticky downstream dies, the client moves and gets a new cookie
        idx = {b"a": 0, b"b": 1, b"c": 2}[first]
        dss[idx].close()
        for _ in range(20):
            st, h, b = get(port, "/", [("Cookie", value)])
            if st == 200 and b != first:
                break
        assert st == 200 and b != first and h["set-cookie"].split(";")[0] != value
        p.check_quiet = False
    finally:
        for d in dss:
            d.close()


def test_sticky_key_kept_across_restarts(start_rproxy, port, tmp_path):
    """Without sticky-key, the key made at first start is kept in <state-dir>/sticky.key
    (0600): a cookie from before a stop + start still names the same downstream."""
    dss = [Downstream(handler=named_handler(n)) for n in ("a", "b", "c")]
    state = tmp_path / "state"
    try:
        body = '''rule app { uri-prefix = "/"  downstreams = { a, b, c }  lb-method = roundrobin
                    sticky = cookie }'''
        text = conf(port, body, [(n, d.port) for n, d in zip("abc", dss)], top=f'state-dir = "{state}"')
        p = start_rproxy(text, port=port)
        cookies = {}
        for _ in range(3):
            st, h, b = get(port, "/")
            cookies[b] = h["set-cookie"].split(";")[0]
        assert set(cookies) == {b"a", b"b", b"c"}
        key = state / "sticky.key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32
        p.stop()
        start_rproxy(text, port=port)
        for name, value in cookies.items():
            for _ in range(3):
                st, h, b = get(port, "/", [("Cookie", value)])
                assert (st, b) == (200, name) and "set-cookie" not in h
        # a state-dir that cannot be used: a warning, cookies still work (key made at start)
        tport = free_port()
        q = start_rproxy(conf(tport, body, [(n, d.port) for n, d in zip("abc", dss)],
                              top='state-dir = "/proc/self/nope"'), port=tport)
        st, h, b = get(tport, "/")
        assert st == 200 and h["set-cookie"].startswith("rp_srv=")
        assert "cannot keep the key" in q.read_log()
    finally:
        for d in dss:
            d.close()


def test_sticky_ip_hash_and_cookie_secure_over_tls(start_rproxy, port, test_pki):
    dss = [Downstream(handler=named_handler(n)) for n in ("a", "b", "c")]
    try:
        body = 'rule app { uri-prefix = "/"  downstreams = { a, b, c }  sticky = ip-hash }'
        start_rproxy(conf(port, body, [(n, d.port) for n, d in zip("abc", dss)]), port=port)
        got = {get(port, "/")[2] for _ in range(30)}
        assert len(got) == 1 and "set-cookie" not in get(port, "/")[1]
        srv = test_pki["server"]
        tport = free_port()
        body = 'rule app { uri-prefix = "/"  downstreams = { a, b }  sticky = cookie  sticky-key = "k1" }'
        start_rproxy(conf(tport, body, [(n, d.port) for n, d in zip("ab", dss)],
                          extra=f'ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}'), port=tport)
        ctx = ssl.create_default_context(cafile=test_pki["ca"].crt)
        with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                h = dict(read_response(t)[1])
        assert h["set-cookie"].endswith("; Secure")
    finally:
        for d in dss:
            d.close()


# ---- REDbot (HTTP lint) on a file and on a proxied resource -------------------------------

def test_redbot_finds_no_framing_or_validator_fault(start_rproxy, port, site, downstream):
    redbot = os.path.join(os.path.dirname(sys.executable), "redbot")
    if not os.path.exists(redbot):
        pytest.skip("redbot is not installed (pip install redbot)")

    def handler(req, s):
        body = b"<!doctype html><title>t</title><p>proxied</p>\n"
        s.sendall(b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Type: text/html\r\n"
                  b"Cache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return True
    downstream.handler = handler
    body = (STATIC % (site, "false")) + '\nrule app { uri-prefix = "/"  downstreams = { app } }'
    start_rproxy(conf(port, "security-headers = basic\n" + body, [("app", downstream.port)]), port=port)

    def lint(path):
        out = subprocess.run([redbot, "-o", "text", f"http://127.0.0.1:{port}{path}"], capture_output=True,
                             text=True, timeout=60).stdout
        assert "The Content-Length header is correct" in out, out
        for bad in ("Content-Length header isn't right", "doesn't have a Date header", "Transfer-Encoding",
                    "chunk", "isn't a valid", "invalid"):
            assert bad not in out, (bad, out)
        return out
    out = lint("/static/style.css")
    for good in ("If-None-Match conditional requests are supported",
                 "If-Modified-Since conditional requests are supported",
                 "A ranged request returned the correct partial content"):
        assert good in out, out
    lint("/page")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
