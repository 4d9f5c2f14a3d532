"""End to end: TLS termination, SNI, client certificates, X-SSL-* headers and
TLS to downstreams, with real clients (Python's ssl, curl, openssl s_client)
against the real `rproxy` command.

Certificates come from support/certs.py (the openssl command, no network).
Every proxy is checked at teardown to hold no client, exchange or buffer.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse

import pytest

from support.certs import CLIENT_ID_OID
from support.downstream import Downstream, payload
from support.proc import free_port, read_response


def tls_conf(port, ds_port, pki, *, server_ssl="", vhosts=None, extra="", workers=1, downstream_extra=""):
    """A TLS listener with the test server certificate (localhost,
    127.0.0.1), one downstream `app`, and by default one catch-all vhost."""
    srv = pki["server"]
    if vhosts is None:
        vhosts = '''
    vhost "localhost" {
        aliases = { "127.0.0.1" }
        default = true
        headers { x-forwarded-proto = true  forwarded = true }
        rule all { uri-prefix = "/"  downstreams = { app } }
    }'''
    return f"""
workers = {workers}
server {{
    addr = 127.0.0.1
    port = {port}
    {extra}
    ssl {{
        enabled = true
        cert = "{srv.crt}"
        key = "{srv.key}"
        {server_ssl}
    }}
    downstream app {{
        addr = 127.0.0.1
        port = {ds_port}
        connections = 2
        {downstream_extra}
    }}
    {vhosts}
}}
"""


def client_context(pki, *, cert=None, chain=None, version=None, verify=True, tickets=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(pki["ca"].crt)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(chain or cert.crt, cert.key)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def connect(port, ctx, sni="localhost", session=None, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


def get(s, path="/", host="localhost", headers=()):
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    status, hdrs, body, rest = read_response(s)
    assert rest == b""
    return status, dict(hdrs), body


def echo(s, host="localhost", headers=()):
    """GET /echo: what the downstream received, as a dict."""
    status, _, body = get(s, "/echo", host, headers)
    assert status == 200
    return json.loads(body)


def hdr(info, name):
    vals = [v for k, v in info["headers"] if k.lower() == name.lower()]
    assert len(vals) <= 1, vals
    return vals[0] if vals else None


def handshake_refused(port, ctx, sni="localhost") -> bool:
    """True when the server refuses the handshake.  With TLS 1.3 a refused
    client certificate only shows on the first read (the client's side of
    the handshake finished before the server looked at it)."""
    try:
        s = connect(port, ctx, sni)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return s.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        s.close()


def wait_log(p, text, timeout=5.0) -> str:
    """The proxy's log once it says `text` (a refused client may see the
    alert before the worker has written its log line)."""
    deadline = time.monotonic() + timeout
    while text not in p.read_log():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{p.read_log()}"
        time.sleep(0.05)
    return p.read_log()


@pytest.fixture
def proxy(start_rproxy, downstream, port, test_pki):
    return start_rproxy(tls_conf(port, downstream.port, test_pki), port)


# ---- handshakes ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_handshake_and_request_on_tls12_and_tls13(proxy, test_pki, version):
    ctx = client_context(test_pki, version=version)
    ctx.set_alpn_protocols(["http/1.1"])          # (h2 is chosen when offered: tests/e2e/test_http2.py)
    with connect(proxy.port, ctx) as s:
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert s.selected_alpn_protocol() == "http/1.1"
        for _ in range(3):                          # keep-alive over TLS
            info = echo(s)
        assert hdr(info, "X-Forwarded-Proto") == "https"
        assert "proto=https" in hdr(info, "Forwarded")
        status, _, body = get(s, "/bytes/100")
        assert (status, body) == (200, payload(100))


@pytest.mark.parametrize("flag,version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl_over_https(proxy, test_pki, flag, version):
    out = subprocess.run(["curl", "-sS", flag, "--cacert", test_pki["ca"].crt, "-w", "\n%{http_code} %{http_version}",
                          f"https://localhost:{proxy.port}/hello"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"/hello\n200 {version}"


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls10_and_tls11_are_refused(proxy, flag):
    # the client side has to be told to offer these at all (seclevel 0)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", flag, "-cipher",
                          "DEFAULT@SECLEVEL=0", "-servername", "localhost"], input="", capture_output=True,
                         text=True, timeout=20)
    assert out.returncode != 0
    assert "protocol version" in out.stdout + out.stderr
    wait_log(proxy, "TLS handshake failed: unsupported protocol")


def test_protocols_off_leaves_tls13_only(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(tls_conf(port, downstream.port, test_pki, server_ssl="protocols-off = { TLSv1.2 }"), port)
    assert handshake_refused(p.port, client_context(test_pki, version=ssl.TLSVersion.TLSv1_2))
    with connect(p.port, client_context(test_pki)) as s:
        assert s.version() == "TLSv1.3"
        assert get(s, "/x")[0] == 200


def test_large_bodies_and_pipelining_over_tls(proxy, test_pki):
    big = payload(1024 * 1024)
    with connect(proxy.port, client_context(test_pki)) as s:
        status, _, body = get(s, f"/bytes/{len(big)}")
        assert (status, body) == (200, big)
        status, _, body = get(s, f"/chunked/{len(big)}")
        assert (status, body) == (200, big)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        status, _, body, _ = read_response(s)
        info = json.loads(body)
        assert status == 200 and info["length"] == len(big)
        s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(20)))
        buf = b""
        for i in range(20):
            status, _, body, buf = read_response(s, buf)
            assert (status, body) == (200, b"/p%d" % i)


# ---- SNI ------------------------------------------------------------------------------

def sni_conf(port, ds_port, pki, extra_vhost=""):
    vhosts = ""
    for name in ("a", "b", "c"):
        cert = pki[name]
        alias = 'aliases = { "www.a.test" }' if name == "a" else ""
        vhosts += f'''
    vhost "{name}.test" {{
        {alias}
        ssl {{ enabled = true  cert = "{cert.crt}"  key = "{cert.key}" }}
        rule all {{ uri-prefix = "/"  replace-path = "/{name}/"  downstreams = {{ app }} }}
    }}'''
    vhosts += f'''
    vhost "localhost" {{
        default = true
        {extra_vhost}
        rule all {{ uri-prefix = "/"  replace-path = "/default/"  downstreams = {{ app }} }}
    }}'''
    return tls_conf(port, ds_port, pki, vhosts=vhosts)


def peer_cn(s) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_sni_picks_the_vhost_certificate(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(sni_conf(port, downstream.port, test_pki), port)
    ctx = client_context(test_pki)                  # verifies the certificate for the SNI name
    for sni, cn, routed in (("a.test", "a.test", "/a/"), ("www.a.test", "a.test", "/a/"),
                            ("B.TEST", "b.test", "/b/"), ("c.test", "c.test", "/c/")):
        with connect(p.port, ctx, sni) as s:
            assert peer_cn(s) == cn
            status, _, body = get(s, "/x", host=sni)
            assert (status, body) == (200, routed.encode() + b"x")
    # no SNI, or a name no vhost has: the server's certificate, Host routes
    anon = client_context(test_pki, verify=False)
    for sni in (None, "nowhere.test"):
        with connect(p.port, anon, sni) as s:
            der = s.getpeercert(binary_form=True)
            assert der == ssl.PEM_cert_to_DER_cert(open(test_pki["server"].crt).read())
            assert get(s, "/x", host="b.test")[2] == b"/b/x"


def test_host_outside_the_sni_vhost_gets_421(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(sni_conf(port, downstream.port, test_pki), port)
    with connect(p.port, client_context(test_pki), "a.test") as s:
        status, headers, _ = get(s, "/x", host="b.test")
        assert status == 421
        assert headers.get("connection") != "close"         # refused, connection kept
        assert get(s, "/x", host="a.test")[2] == b"/a/x"
        assert get(s, "/x", host="www.a.test:443")[2] == b"/a/x"     # same vhost: fine
        assert get(s, "/x", host="unknown.test")[0] == 421
        s.sendall(b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")      # no Host: SNI decides
        status, _, body, _ = read_response(s)
        assert (status, body) == (200, b"/a/ten")
    assert not any(r.target.startswith("/b/") for r in downstream.requests)
    assert "is not the vhost the TLS server name chose" in p.read_log()


# ---- client certificates --------------------------------------------------------------

XSSL_ALL = """headers {
            x-forwarded-for = false
            x-ssl-subject = true  x-ssl-issuer = true  x-ssl-notbefore = true  x-ssl-notafter = true
            x-ssl-serial = true  x-ssl-sha1 = true  x-ssl-cipher = true  x-ssl-certificate = true
            x509-extension { name = "X-Client-Id"  oid = "%s" }
        }""" % CLIENT_ID_OID


def cert_conf(port, ds_port, pki, verify, headers=XSSL_ALL, extra_ssl=""):
    vhosts = f'''
    vhost "localhost" {{
        default = true
        {headers}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}'''
    return tls_conf(port, ds_port, pki, vhosts=vhosts,
                    server_ssl=f'ca = "{pki["ca"].crt}"\n{verify}\n{extra_ssl}')


CERT_HEADERS = ("X-SSL-Subject", "X-SSL-Issuer", "X-SSL-Notbefore", "X-SSL-Notafter", "X-SSL-Serial",
                "X-SSL-Sha1", "X-SSL-Certificate", "X-Client-Id")


def test_client_certificate_required(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true\nenforce-peer-cert = true"),
                     port)
    assert handshake_refused(p.port, client_context(test_pki))
    assert handshake_refused(p.port, client_context(test_pki, cert=test_pki["stranger"]))
    with connect(p.port, client_context(test_pki, cert=test_pki["alice"])) as s:
        info = echo(s)
    assert hdr(info, "X-SSL-Subject") == "/C=US/ST=VA/O=rproxy tests/CN=Alice"
    assert "certificate" in wait_log(p, "TLS handshake failed")


def test_client_certificate_optional(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true"), port)
    with connect(p.port, client_context(test_pki)) as s:
        info = echo(s)
        cipher = s.cipher()[0]
    assert hdr(info, "X-SSL-Cipher") == cipher          # present without a client certificate
    assert all(hdr(info, h) is None for h in CERT_HEADERS)
    with connect(p.port, client_context(test_pki, cert=test_pki["alice"])) as s:
        info = echo(s)
    assert all(hdr(info, h) for h in CERT_HEADERS)
    assert handshake_refused(p.port, client_context(test_pki, cert=test_pki["stranger"]))


def test_client_certificate_not_requested_without_verify_peer(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = false"), port)
    with connect(p.port, client_context(test_pki, cert=test_pki["alice"])) as s:
        info = echo(s)
    assert hdr(info, "X-SSL-Cipher")
    assert all(hdr(info, h) is None for h in CERT_HEADERS)


def test_x_ssl_header_values(start_rproxy, downstream, port, test_pki):
    """Each value as RProxy defined it (reference section 4), checked against
    what the openssl command says about the same certificate; the client's
    own copies of every proxy-owned header are dropped."""
    pki, alice = test_pki["pki"], test_pki["alice"]
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true"), port)
    spoof = [(h, "spoofed") for h in CERT_HEADERS + ("X-SSL-Cipher", "x-ssl-other")]
    with connect(p.port, client_context(test_pki, cert=alice)) as s:
        info = echo(s, headers=spoof)
        again = echo(s)
        cipher = s.cipher()[0]
    assert hdr(info, "X-SSL-Subject") == pki.x509(alice, "-subject", "-nameopt", "compat").split("=", 1)[1]
    assert hdr(info, "X-SSL-Issuer") == "/O=rproxy tests/CN=rproxy test CA"
    assert hdr(info, "X-SSL-Notbefore") == pki.x509(alice, "-startdate").split("=", 1)[1]
    assert hdr(info, "X-SSL-Notafter") == pki.x509(alice, "-enddate").split("=", 1)[1]
    assert hdr(info, "X-SSL-Serial") == pki.x509(alice, "-serial").split("=", 1)[1] == f"{alice.serial:X}"
    sha1 = pki.x509(alice, "-fingerprint", "-sha1").split("=", 1)[1]
    assert hdr(info, "X-SSL-Sha1") == sha1 and len(sha1) == 59
    assert hdr(info, "X-SSL-Cipher") == cipher
    cert = hdr(info, "X-SSL-Certificate")
    assert "\n" not in cert and " " not in cert
    assert urllib.parse.unquote(cert) == open(alice.crt).read()
    assert hdr(info, "X-Client-Id") == "user-42"
    assert hdr(info, "x-ssl-other") is None
    assert "spoofed" not in json.dumps(info["headers"])
    # made once for the connection: the next request carries the same block
    assert [h for h in again["headers"] if h[0].lower().startswith("x-")] == \
        [h for h in info["headers"] if h[0].lower().startswith("x-")]


def test_x_ssl_headers_follow_the_rule_policy(start_rproxy, downstream, port, test_pki):
    vhosts = '''
    vhost "localhost" {
        default = true
        headers { x-ssl-subject = true  x-ssl-certificate = false }
        rule some { uri-prefix = "/some/"  downstreams = { app }
                     headers { x-ssl-serial = true  x-ssl-certificate = false } }
        rule none { uri-prefix = "/none/"  downstreams = { app }  headers { x-ssl-certificate = false } }
        rule rest { uri-prefix = "/"  downstreams = { app } }
    }'''
    p = start_rproxy(tls_conf(port, downstream.port, test_pki, vhosts=vhosts,
                              server_ssl=f'ca = "{test_pki["ca"].crt}"\nverify-peer = true'), port)
    with connect(p.port, client_context(test_pki, cert=test_pki["alice"])) as s:
        for path in ("/some/echo", "/none/echo", "/echo"):
            get(s, path)
    some, none, rest = downstream.requests[-3:]
    assert some.header("X-SSL-Serial") and some.header("X-SSL-Subject") is None
    assert not [k for k, _ in none.headers if k.lower().startswith("x-ssl")]
    assert rest.header("X-SSL-Subject") and rest.header("X-SSL-Serial") is None
    assert rest.header("X-SSL-Certificate") is None


def test_spoofed_x_ssl_headers_are_dropped_on_plain_http(start_rproxy, downstream, port):
    conf = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "*" {{
        headers {{ x-ssl-subject = true  x509-extension {{ name = "X-Client-Id"  oid = "{CLIENT_ID_OID}" }} }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
"""
    p = start_rproxy(conf, port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        info = echo(s, headers=[("X-SSL-Subject", "/CN=admin"), ("X-SSL-Sha1", "x"), ("X-Client-Id", "root")])
    assert not [k for k, _ in info["headers"] if k.lower().startswith("x-ssl") or k.lower() == "x-client-id"]


def test_verify_depth_counts_intermediate_cas(start_rproxy, downstream, port, test_pki):
    deep = client_context(test_pki, cert=test_pki["deep"], chain=test_pki["deep_chain"])
    p1 = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true\nenforce-peer-cert = true",
                                extra_ssl="verify-depth = 2"), port)
    with connect(p1.port, deep) as s:
        assert hdr(echo(s), "X-SSL-Subject") == "/O=rproxy tests/CN=Deep"
    port2 = free_port()
    p2 = start_rproxy(cert_conf(port2, downstream.port, test_pki, "verify-peer = true\nenforce-peer-cert = true",
                                extra_ssl="verify-depth = 1"), port2)
    assert handshake_refused(p2.port, deep)
    wait_log(p2, "certificate chain too long")


def test_revoked_certificate_refused_after_crl_reload(start_rproxy, downstream, port, test_pki, tmp_path):
    pki = test_pki["pki"]
    crl = pki.crl(test_pki["ca"], revoked=(), out=str(tmp_path / "ca.crl"))
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true\nenforce-peer-cert = true",
                               extra_ssl=f'crl {{ file = "{crl}"  reload = 200ms }}'), port)
    bob = client_context(test_pki, cert=test_pki["bob"])
    alice = client_context(test_pki, cert=test_pki["alice"])
    with connect(p.port, bob) as s:
        assert echo(s)["method"] == "GET"
    time.sleep(0.05)                       # a new mtime even on a coarse clock
    pki.crl(test_pki["ca"], revoked=(test_pki["bob"],), out=crl)
    deadline = time.monotonic() + 10
    while not handshake_refused(p.port, bob):
        assert time.monotonic() < deadline, "bob is still accepted after the CRL reload"
        time.sleep(0.1)
    wait_log(p, "CRLs reloaded")
    wait_log(p, "certificate revoked")
    with connect(p.port, alice) as s:
        assert echo(s)["method"] == "GET"


def test_crl_directory(start_rproxy, downstream, port, test_pki, tmp_path):
    pki = test_pki["pki"]
    crldir = tmp_path / "crls"
    crldir.mkdir()
    pki.crl(test_pki["ca"], revoked=(test_pki["bob"],), out=str(crldir / "ca.crl.pem"))
    pki.openssl("rehash", str(crldir))
    p = start_rproxy(cert_conf(port, downstream.port, test_pki, "verify-peer = true\nenforce-peer-cert = true",
                               extra_ssl=f'crl {{ dir = "{crldir}" }}'), port)
    assert handshake_refused(p.port, client_context(test_pki, cert=test_pki["bob"]))
    with connect(p.port, client_context(test_pki, cert=test_pki["alice"])) as s:
        assert echo(s)["method"] == "GET"


# ---- session resumption ---------------------------------------------------------------

def resumed(port, ctx, n):
    """Connect once, then n more times offering the first session: how many resumed."""
    with connect(port, ctx) as s:
        get(s, "/first")                    # TLS 1.3 tickets arrive after the handshake
        session = s.session
    count = 0
    for _ in range(n):
        with connect(port, ctx, session=session) as s:
            get(s, "/again")
            count += s.session_reused
    return count


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_across_workers(start_rproxy, downstream, port, test_pki, version):
    """Tickets: the workers share the keys (contexts made before the fork),
    so a session resumes whichever worker accepts."""
    p = start_rproxy(tls_conf(port, downstream.port, test_pki, workers=3), port)
    assert resumed(p.port, client_context(test_pki, version=version), 8) == 8


def test_session_cache_without_tickets(start_rproxy, downstream, port, test_pki):
    ctx = client_context(test_pki, version=ssl.TLSVersion.TLSv1_2, tickets=False)
    p = start_rproxy(tls_conf(port, downstream.port, test_pki), port)
    assert resumed(p.port, ctx, 3) == 3
    port2 = free_port()
    p2 = start_rproxy(tls_conf(port2, downstream.port, test_pki, server_ssl="cache-enabled = false"), port2)
    assert resumed(p2.port, ctx, 3) == 0


def test_expired_sessions_are_not_resumed(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(tls_conf(port, downstream.port, test_pki, server_ssl="cache-timeout = 1s"), port)
    ctx = client_context(test_pki)
    with connect(p.port, ctx) as s:
        get(s, "/first")
        session = s.session
    time.sleep(2.2)
    with connect(p.port, ctx, session=session) as s:
        assert not s.session_reused


# ---- failures cost one connection ------------------------------------------------------

def worker_pids(p, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not p.workers():
        assert time.monotonic() < deadline, "no worker"
        time.sleep(0.05)
    return sorted(w.pid for w in p.workers())


def test_garbage_and_plain_http_on_the_tls_port(proxy, test_pki):
    pids = worker_pids(proxy)
    # a record that says "handshake" holding no handshake message (type 7
    # does not exist), then bytes that are no TLS at all
    for garbage in (b"\x16\x03\x01\x01\x2c\x07" + os.urandom(299), b"\x00\x01\x02" + os.urandom(500)):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(garbage)
            try:
                while s.recv(4096):                     # an alert at most, then the end
                    pass
            except ConnectionResetError:
                pass                                    # closed with our bytes unread
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, body, _ = read_response(s)
        assert status == 400 and b"HTTPS" in body
    with connect(proxy.port, client_context(test_pki)) as s:
        assert get(s, "/x")[0] == 200
    assert worker_pids(proxy) == pids
    wait_log(proxy, "TLS handshake failed")
    wait_log(proxy, "sent plain HTTP to a TLS port")


def test_handshake_timeout(start_rproxy, downstream, port, test_pki):
    p = start_rproxy(tls_conf(port, downstream.port, test_pki, extra="read-timeout = 1s"), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 0.8 < time.monotonic() - t0 < 5
        s2 = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s2.sendall(b"\x16\x03\x01\x02\x00\x01")    # half a ClientHello, then nothing
        assert s2.recv(10) == b""
        s2.close()


def test_bad_key_stops_start_up_with_a_message(start_rproxy, downstream, port, test_pki, tmp_path):
    conf = tls_conf(port, downstream.port, test_pki).replace(test_pki["server"].key, test_pki["a"].key)
    p = start_rproxy(conf, port, wait=False)
    assert p.proc.wait(20) == 1
    assert "does not match the certificate" in p.read_log()


def test_certificates_reload_on_sighup(start_rproxy, downstream, port, test_pki, tmp_path):
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(test_pki["server"].crt, cert)
    shutil.copy(test_pki["server"].key, key)
    conf = tls_conf(port, downstream.port, test_pki).replace(test_pki["server"].crt, str(cert)) \
        .replace(test_pki["server"].key, str(key))
    p = start_rproxy(conf, port)
    anon = client_context(test_pki, verify=False)
    with connect(p.port, anon) as s:
        assert peer_cn(s) == "localhost"
    shutil.copy(test_pki["a"].crt, cert)
    shutil.copy(test_pki["a"].key, key)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reloaded" not in p.read_log():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with connect(p.port, anon) as s:
        assert peer_cn(s) == "a.test"


# ---- https-redirect -----------------------------------------------------------------------

def test_https_redirect(start_rproxy, downstream, port):
    conf = f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{ addr = 127.0.0.1  port = {downstream.port} }}
    vhost "secure.test" {{
        https-redirect = true
        https-redirect-port = 8443
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
    vhost "plain.test" {{
        aliases = {{ "std.test" }}
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
    vhost "std.test" {{
        https-redirect = true
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
    vhost "www.test" {{
        https-redirect = true
        rule all {{ uri-prefix = "/"  downstreams = {{ app }} }}
    }}
}}
"""
    p = start_rproxy(conf, port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"GET /a/b?q=1&r=2 HTTP/1.1\r\nHost: Secure.Test:8080\r\n\r\n")
        status, headers, body, _ = read_response(s)
        assert status == 301 and body == b""
        assert dict(headers)["location"] == "https://secure.test:8443/a/b?q=1&r=2"
        s.sendall(b"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n")          # kept alive
        status, headers, _, _ = read_response(s)
        assert dict(headers)["location"] == "https://www.test/"
        s.sendall(b"POST /form HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabc")
        status, headers, _, _ = read_response(s)
        assert status == 301 and dict(headers)["connection"] == "close"
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        assert echo(s, host="plain.test")["method"] == "GET"
    assert all(r.target == "/echo" for r in downstream.requests)


# ---- TLS to downstreams ----------------------------------------------------------------

def tls_downstream(cert, require_client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.crt, cert.key)
    names = []
    ctx.sni_callback = lambda sock, name, c: names.append(name) and None
    if require_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(require_client_ca)
    ds = Downstream(ssl_context=ctx)
    ds.sni_names = names
    return ds


def plain_conf(port, ds_port, ds_block):
    return f"""
workers = 1
server {{
    addr = 127.0.0.1
    port = {port}
    downstream app {{
        addr = 127.0.0.1
        port = {ds_port}
        connections = 2
        retry = 100ms
        tls = true
        {ds_block}
    }}
    vhost "*" {{ rule all {{ uri-prefix = "/"  downstreams = {{ app }} }} }}
}}
"""


def plain_get(port, path="/x"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return get(s, path)


def test_tls_downstream_verified_by_name_and_by_address(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["server"])
    try:
        p = start_rproxy(plain_conf(port, ds.port, f'tls-name = "localhost"\nssl {{ ca = "{test_pki["ca"].crt}" }}'),
                         port)
        assert plain_get(p.port)[2] == b"/x"
        assert "localhost" in ds.sni_names
        port2 = free_port()
        p2 = start_rproxy(plain_conf(port2, ds.port, f'ssl {{ ca = "{test_pki["ca"].crt}" }}'), port2)
        assert plain_get(p2.port, "/big")[0] == 200            # verified against IP:127.0.0.1, no SNI
        status, _, body = plain_get(p2.port, "/bytes/300000")
        assert (status, body) == (200, payload(300000))
        assert ds.tls_errors == []
    finally:
        ds.close()


def test_tls_downstream_that_fails_verification_gets_502(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["self"])                   # self-signed
    try:
        p = start_rproxy(plain_conf(port, ds.port, f'ssl {{ ca = "{test_pki["ca"].crt}" }}'), port)
        assert plain_get(p.port)[0] == 502
        log = p.read_log()
        assert "TLS handshake failed" in log and "certificate" in log
        port2 = free_port()                                 # the explicit opt-out
        p2 = start_rproxy(plain_conf(port2, ds.port, "ssl { verify-peer = false }"), port2)
        assert plain_get(p2.port)[2] == b"/x"
    finally:
        ds.close()


def test_tls_downstream_name_mismatch_gets_502(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["server"])
    try:
        p = start_rproxy(plain_conf(port, ds.port, f'tls-name = "elsewhere.test"\nssl {{ ca = "{test_pki["ca"].crt}" }}'),
                         port)
        assert plain_get(p.port)[0] == 502
        assert "hostname mismatch" in p.read_log()
    finally:
        ds.close()


def test_tls_downstream_with_client_certificate(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["server"], require_client_ca=test_pki["ca"].crt)
    alice = test_pki["alice"]
    try:
        p = start_rproxy(plain_conf(port, ds.port, f'ssl {{ ca = "{test_pki["ca"].crt}"  cert = "{alice.crt}" '
                                                   f' key = "{alice.key}" }}'), port)
        assert plain_get(p.port)[2] == b"/x"
    finally:
        ds.close()


def test_tls_downstream_health_check_speaks_tls(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["server"])
    try:
        block = f'ssl {{ ca = "{test_pki["ca"].crt}" }}\nhealth-check {{ path = "/status/200"  interval = 100ms  ' \
                f'timeout = 90ms  fall = 1 }}'
        p = start_rproxy(plain_conf(port, ds.port, block), port)
        time.sleep(0.6)
        assert sum(r.target == "/status/200" for r in ds.requests) >= 3
        assert "health check" not in p.read_log()
        assert plain_get(p.port)[2] == b"/x"
    finally:
        ds.close()


def test_websocket_tunnel_through_tls_on_both_sides(start_rproxy, port, test_pki):
    def upgrade(req, s):
        if (req.header("Upgrade") or "").lower() != "websocket":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi")
        while True:
            d = s.recv(4096)
            if not d:
                return False
            s.sendall(d.upper())

    ds = tls_downstream(test_pki["server"])
    ds.handler = upgrade
    try:
        conf = plain_conf(port, ds.port, f'ssl {{ ca = "{test_pki["ca"].crt}" }}').replace(
            "server {", f'''server {{
    ssl {{ enabled = true  cert = "{test_pki["server"].crt}"  key = "{test_pki["server"].key}" }}''', 1)
        p = start_rproxy(conf, port)
        with connect(p.port, client_context(test_pki)) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            buf = b""
            while not buf.endswith(b"hi"):
                buf += s.recv(4096)
            assert buf.startswith(b"HTTP/1.1 101 ")
            for word in (b"ping", b"x" * 100000):
                s.sendall(word)
                got = b""
                while len(got) < len(word):
                    got += s.recv(65536)
                assert got == word.upper()
    finally:
        ds.close()


def test_an_idle_tls_connection_holds_no_buffer(proxy, test_pki):
    from support.stats import worker_stats

    with connect(proxy.port, client_context(test_pki)) as s:
        get(s, "/x")
        get(s, f"/bytes/{100000}")
        time.sleep(0.2)
        (stats,) = worker_stats(proxy).values()
        assert stats["clients"] == 1 and stats["buffers"] == 0


def test_slow_reader_over_tls_gets_every_byte(proxy, test_pki):
    """The client's socket fills again and again: every SSL_write that
    stops half-way (WANT_WRITE) resumes with the same bytes."""
    n = 4 * 1024 * 1024
    with connect(proxy.port, client_context(test_pki)) as s:
        # (not much smaller: below one TLS record of window, TCP itself
        # stalls ~100 ms per record, with nginx as with rproxy)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        s.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        body = buf.split(b"\r\n\r\n", 1)[1]
        reads = 0
        while len(body) < n:
            reads += 1
            if reads % 16 == 0:
                time.sleep(0.005)               # let the proxy's writes stall
            body += s.recv(65536)
        assert body == payload(n)
        assert get(s, "/after")[2] == b"/after"


def test_large_request_and_response_through_tls_on_both_sides(start_rproxy, port, test_pki):
    ds = tls_downstream(test_pki["server"])
    try:
        conf = plain_conf(port, ds.port, f'ssl {{ ca = "{test_pki["ca"].crt}" }}').replace(
            "server {", f'''server {{
    ssl {{ enabled = true  cert = "{test_pki["server"].crt}"  key = "{test_pki["server"].key}" }}''', 1)
        p = start_rproxy(conf, port)
        big = payload(3 * 1024 * 1024 + 7)
        with connect(p.port, client_context(test_pki)) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
            status, _, body, _ = read_response(s)
            info = json.loads(body)
            assert status == 200 and info["length"] == len(big)
            assert info["sha256"] == __import__("hashlib").sha256(big).hexdigest()
            status, _, body = get(s, f"/bytes/{len(big)}")
            assert (status, body) == (200, payload(len(big)))
    finally:
        ds.close()


def test_graceful_stop_closes_idle_tls_connections_with_close_notify(proxy, test_pki):
    with connect(proxy.port, client_context(test_pki)) as s:
        assert get(s, "/x")[0] == 200
        proxy.signal(signal.SIGQUIT)
        assert s.recv(10) == b""                # close_notify: a clean end, not a reset
    assert proxy.proc.wait(20) == 0
