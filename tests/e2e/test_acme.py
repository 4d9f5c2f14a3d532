"""Automatic HTTPS against a real ACME server (Debian's pebble) on 127.0.0.1.

pebble validates HTTP-01 on the plain listener and TLS-ALPN-01 on the TLS
listener of the proxy under test (its httpPort / tlsPort are those ports);
pebble-challtestsrv answers 127.0.0.1 for every name unless a test says
otherwise.  The served chains are checked against the root pebble issues
under, fetched from its management port.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from support import pebble as pb
from support.proc import free_port, rproxy_command

pytestmark = pytest.mark.skipif(not pb.available(), reason="needs Debian's pebble")


@pytest.fixture(scope="module")
def ports():
    return free_port(), free_port()      # (plain = pebble's httpPort, TLS = pebble's tlsPort)


@pytest.fixture(scope="module")
def ca(tmp_path_factory, ports):
    p = pb.Pebble(tmp_path_factory.mktemp("pebble"), *ports).start()
    yield p
    p.stop()


def conf(ca, ports, state, ds_port, challenge="tls-alpn-01", names=("app.test", "www.app.test"),
         extra_vhosts="", renew_before="1/3", plain_vhost_extra=""):
    http_port, tls_port = ports
    aliases = ", ".join(f'"{n}"' for n in names[1:])
    return f"""
log-level = info
acme {{ directory = "{ca.directory}"  ca = {ca.ca_file}  state-dir = {state}
        email = "ops@app.test"  challenge = {challenge}  renew-before = {renew_before} }}
server {{ port = {http_port}
  downstream d {{ addr = 127.0.0.1 port = {ds_port} }}
  vhost "{names[0]}" {{ aliases = {{ {aliases} }} {plain_vhost_extra} rule r {{ uri-prefix = / downstreams = {{ d }} }} }}
}}
server {{ port = {tls_port} ssl {{ enabled = true }}
  downstream d {{ addr = 127.0.0.1 port = {ds_port} }}
  vhost "{names[0]}" {{ aliases = {{ {aliases} }} ssl {{ mode = acme }} rule r {{ uri-prefix = / downstreams = {{ d }} }} }}
  {extra_vhosts}
}}
"""


def served_cert(port: int, name: str):
    """(DER of the certificate served for SNI `name`, its issuer is its subject)."""
    from cryptography import x509

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            der = t.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return der, cert.issuer == cert.subject


def swapped(proxy, name, times=1) -> bool:
    """Every worker's watcher logged `times` certificate swaps for `name`
    (each swaps on its own poll; the loop applies the swap right after)."""
    pids = [int(m) for m in re.findall(r"\[info\] (\d+): acme: %s: new certificate in use" % re.escape(name),
                                       proxy.read_log())]
    return all(pids.count(w.pid) >= times for w in proxy.workers())


def wait_issued(proxy, port, name, timeout=30.0):
    """Until every worker serves the CA's certificate: each worker logged
    its swap, and 8 handshakes in a row agree."""
    def settled():
        if not swapped(proxy, name):
            return False
        seen = {served_cert(port, name) for _ in range(8)}
        return len(seen) == 1 and not next(iter(seen))[1]
    pb.wait_for(settled, timeout, f"a CA certificate for {name} in every worker")


def curl_verify(ca, tmp_path, port, name) -> str:
    roots = tmp_path / "roots.pem"
    roots.write_text(ca.roots())
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(roots), "--resolve",
                        f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/hello"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_tls_alpn_issuance_verifies_and_restart_reuses_state(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    text = conf(ca, ports, state, downstream.port)
    p = start_rproxy(text, ports[1])
    # at once: a self-signed certificate for the names, so the listener works before issuance
    wait_issued(p, ports[1], "app.test")
    assert curl_verify(ca, tmp_path, ports[1], "app.test") == "/hello"
    assert curl_verify(ca, tmp_path, ports[1], "www.app.test") == "/hello"
    log = p.read_log()
    assert "tls-alpn-01 challenge for app.test published" in log
    assert "http-01 challenge" not in log
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    meta = json.loads((state / "certs" / "app.test" / "meta.json").read_text())
    assert meta["source"] == "acme" and meta["names"] == ["app.test", "www.app.test"]
    first, _ = served_cert(ports[1], "app.test")
    p.stop()

    # a restart serves the stored certificate from the first handshake and orders nothing
    p2 = start_rproxy(text, ports[1])
    assert served_cert(ports[1], "app.test")[0] == first
    time.sleep(1.5)
    log2 = p2.read_log()
    assert "ordering a certificate" not in log2 and "new account" not in log2


def test_http01_issuance_exempt_from_https_redirect(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    p = start_rproxy(conf(ca, ports, state, downstream.port, challenge="http-01",
                          plain_vhost_extra=f"https-redirect = true https-redirect-port = {ports[1]}"), ports[1])
    wait_issued(p, ports[1], "app.test")
    assert curl_verify(ca, tmp_path, ports[1], "www.app.test") == "/hello"
    log = p.read_log()
    assert "http-01 challenge for app.test published" in log
    assert "tls-alpn-01 challenge" not in log
    # other paths of the plain listener still redirect; an unknown token is not answered by the table
    r = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/.well-known/acme-challenge/nope",
                               headers={"Host": "app.test"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(r, timeout=5)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 301


def test_tls_alpn_without_pending_challenge_is_refused(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    p = start_rproxy(conf(ca, ports, state, downstream.port), ports[1])
    wait_issued(p, ports[1], "app.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1", "http/1.1"])     # http/1.1 alone would be accepted
    with socket.create_connection(("127.0.0.1", ports[1]), timeout=5) as s:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s, server_hostname="app.test")


class Load:
    """Keep-alive clients (HTTP/1.1 over TLS and plain) until stopped: every
    request must be answered."""

    def __init__(self, ports, n=2):
        self.ports = ports
        self.ok = 0
        self.failed = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(tls,), daemon=True)
                        for tls in (True, False) for _ in range(n)]

    def run(self, tls):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        count = 0
        while not self.stop_event.is_set() and count < 20000:
            if tls:
                c = http.client.HTTPSConnection("127.0.0.1", self.ports[1], context=ctx, timeout=10)
            else:
                c = http.client.HTTPConnection("127.0.0.1", self.ports[0], timeout=10)
            try:
                for _ in range(20):             # 20 requests per connection, then a new handshake
                    c.request("GET", "/load", headers={"Host": "app.test"})
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200 or body != b"/load":
                        self.failed.append((r.status, body[:80]))
                    else:
                        self.ok += 1
                    count += 1
            except (OSError, http.client.HTTPException) as e:
                self.failed.append(repr(e))
            finally:
                c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)


def test_forced_renewal_under_load_drops_nothing(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    p = start_rproxy(conf(ca, ports, state, downstream.port), ports[1])
    wait_issued(p, ports[1], "app.test")
    before, _ = served_cert(ports[1], "app.test")
    with Load(ports) as load:
        time.sleep(0.5)
        r = subprocess.run(rproxy_command() + ["certs", "-c", p.conf, "renew", "www.app.test"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        pb.wait_for(lambda: swapped(p, "app.test", 2) and all(served_cert(ports[1], "app.test")[0] != before
                                                             for _ in range(8)), 30,
                    "the renewed certificate in every worker")
        time.sleep(0.5)             # load through the swapped contexts
    assert load.failed == []
    assert load.ok > 100
    assert curl_verify(ca, tmp_path, ports[1], "app.test") == "/hello"
    assert "renewal asked for" in p.read_log()
    r = subprocess.run(rproxy_command() + ["certs", "-c", p.conf], capture_output=True, text=True)
    assert r.returncode == 0 and "Pebble Intermediate" in r.stdout and "app.test, www.app.test" in r.stdout


def test_ca_down_at_start_then_back(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    ca.stop_ca()
    try:
        p = start_rproxy(conf(ca, ports, state, downstream.port), ports[1])
        der, self_signed = served_cert(ports[1], "app.test")
        assert self_signed                      # the listener serves at once
        pb.wait_for(lambda: "cannot reach the ACME directory" in p.read_log(), 10, "the failure in the log")
        c = http.client.HTTPSConnection("127.0.0.1", ports[1], context=ssl._create_unverified_context(), timeout=5)
        c.request("GET", "/x", headers={"Host": "app.test"})
        assert c.getresponse().status == 200
        c.close()
    finally:
        ca.start()
    wait_issued(p, ports[1], "app.test", timeout=40)
    assert curl_verify(ca, tmp_path, ports[1], "app.test") == "/hello"


def test_ca_rejects_name_not_pointing_here_keeps_old_certificate(ca, ports, tmp_path, start_rproxy, downstream):
    # bad.test resolves to 127.0.0.2, where nothing answers the validation
    req = urllib.request.Request(f"http://127.0.0.1:{ca.chall_mgmt}/add-a", method="POST",
                                 data=json.dumps({"host": "bad.test.", "addresses": ["127.0.0.2"]}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    state = tmp_path / "state"
    p = start_rproxy(conf(ca, ports, state, downstream.port, names=("bad.test",)), ports[1])
    pb.wait_for(lambda: "failed (attempt 1)" in p.read_log(), 30, "the rejected order in the log")
    log = p.read_log()
    assert "urn:ietf:params:acme:error:" in log and "bad.test" in log
    assert "the current certificate keeps serving" in log
    assert served_cert(ports[1], "bad.test")[1]            # still the self-signed one
    meta = json.loads((state / "certs" / "bad.test" / "meta.json").read_text())
    assert "urn:ietf:params:acme:error:" in meta["error"]
    assert p.poll() is None


def test_self_signed_mode_and_corrupted_state(ca, ports, tmp_path, start_rproxy, downstream):
    from cryptography import x509

    state = tmp_path / "state"
    lab = 'vhost "lab.test" { ssl { mode = self-signed } rule r { uri-prefix = / downstreams = { d } } }'
    text = conf(ca, ports, state, downstream.port, extra_vhosts=lab)
    p = start_rproxy(text, ports[1])
    der, self_signed = served_cert(ports[1], "lab.test")
    assert self_signed
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["lab.test"]
    assert (state / "certs" / "lab.test" / "chain.pem").exists()
    p.stop()
    # kept across restarts
    p = start_rproxy(text, ports[1])
    assert served_cert(ports[1], "lab.test")[0] == der
    p.stop()
    # a corrupted chain: logged, kept aside, a fresh self-signed one serves
    (state / "certs" / "lab.test" / "chain.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    p = start_rproxy(text, ports[1])
    der2, self_signed = served_cert(ports[1], "lab.test")
    assert self_signed and der2 != der
    assert "lab.test" in p.read_log() and "unusable" in p.read_log()
    assert (state / "certs" / "lab.test" / "chain.pem.bad").exists()


def test_check_mode_reports_and_refuses_unwritable_state_dir(ca, ports, tmp_path, downstream):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    text = conf(ca, ports, state, downstream.port)
    path = tmp_path / "t.conf"
    path.write_text(text)
    r = subprocess.run(rproxy_command() + ["-t", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"acme: directory {ca.directory}" in r.stdout
    assert "app.test, www.app.test: certificate from the CA" in r.stdout
    assert not (state / "certs").exists()          # -t does not touch state-dir
    path.write_text("user = nobody\n" + text)
    r = subprocess.run(rproxy_command() + ["-t", "-c", str(path)], capture_output=True, text=True)
    if os.geteuid() == 0:
        assert r.returncode == 1 and "is not writable by nobody" in r.stderr
    # a wildcard cannot be issued without DNS-01
    path.write_text(conf(ca, ports, state, downstream.port, names=("app.test", "*.app.test")))
    r = subprocess.run(rproxy_command() + ["-t", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 1 and "DNS-01" in r.stderr


def test_failed_renewal_keeps_the_issued_certificate(ca, ports, tmp_path, start_rproxy, downstream):
    state = tmp_path / "state"
    p = start_rproxy(conf(ca, ports, state, downstream.port, names=("keep.test",)), ports[1])
    wait_issued(p, ports[1], "keep.test")
    issued, _ = served_cert(ports[1], "keep.test")
    # the name now points elsewhere: the forced renewal fails validation
    req = urllib.request.Request(f"http://127.0.0.1:{ca.chall_mgmt}/add-a", method="POST",
                                 data=json.dumps({"host": "keep.test.", "addresses": ["127.0.0.2"]}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    # pebble reuses a valid authorization 1 time in 100 even with PEBBLE_AUTHZREUSE=0
    # (its check is `rand.Intn(100) > percent`): such a renewal succeeds without
    # validating, so ask again (at most 3 times) until one validates and fails
    for _attempt in range(3):
        issued_before = p.read_log().count("certificate for keep.test issued")
        r = subprocess.run(rproxy_command() + ["certs", "-c", p.conf, "renew", "keep.test"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        pb.wait_for(lambda: "failed (attempt 1)" in p.read_log()
                    or p.read_log().count("certificate for keep.test issued") > issued_before, 30,
                    "the failed renewal in the log",
                    detail=lambda: p.read_log()[-3000:] + "\n--- pebble ---\n" + ca.read_log()[-3000:])
        if "failed (attempt 1)" in p.read_log():
            break
        pb.wait_for(lambda: swapped(p, "keep.test", p.read_log().count("certificate for keep.test issued")), 30,
                    "the reissued certificate in every worker")
        issued, _ = served_cert(ports[1], "keep.test")
    assert "failed (attempt 1)" in p.read_log(), p.read_log()[-3000:]
    assert "urn:ietf:params:acme:error:" in p.read_log()
    assert served_cert(ports[1], "keep.test")[0] == issued
    assert curl_verify(ca, tmp_path, ports[1], "keep.test") == "/hello"
    r = subprocess.run(rproxy_command() + ["certs", "-c", p.conf], capture_output=True, text=True)
    assert "last error" in r.stdout and "Pebble Intermediate" in r.stdout


def test_unusable_state_dir_stops_the_start_clearly(ca, ports, tmp_path, start_rproxy, downstream):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    p = start_rproxy(conf(ca, ports, blocker / "state", downstream.port), ports[1], wait=False)
    assert p.proc.wait(20) == 1
    assert f"acme state-dir {blocker / 'state'}" in p.read_log()
