"""Pieces of automatic HTTPS that need no CA: the config, the state layout,
the RFC 8737 challenge certificate, the JWS signature, renewal times."""
import datetime
import hashlib
import json

import pytest

from rproxy.acme import client, store
from rproxy.acme.manager import renew_at
from rproxy.config import ConfigErrors, loads

BASE = """
acme {{ directory = "https://ca.test/dir"  state-dir = {state}  renew-before = {rb} }}
server {{ port = 8443 ssl {{ enabled = true }}
  downstream d {{ addr = 127.0.0.1 port = 1 }}
  vhost "a.test" {{ aliases = {{ "www.a.test" }} ssl {{ mode = acme }} rule r {{ uri-prefix = / downstreams = {{ d }} }} }}
  vhost "b.test" {{ ssl {{ mode = self-signed }} rule r {{ uri-prefix = / downstreams = {{ d }} }} }}
}}
"""


def test_renew_before_duration_or_fraction(tmp_path):
    assert loads(BASE.format(state=tmp_path, rb="30d")).acme.renew_before == 30 * 86400
    assert loads(BASE.format(state=tmp_path, rb="1/3")).acme.renew_before == pytest.approx(1 / 3)
    assert loads(BASE.format(state=tmp_path, rb="0.25")).acme.renew_before == 0.25
    with pytest.raises(ConfigErrors, match="renew-before"):
        loads(BASE.format(state=tmp_path, rb="soon"))


def test_managed_names_and_listener_fallback(tmp_path):
    cfg = loads(BASE.format(state=tmp_path, rb="30d"))
    items = {m.key: m for m in store.managed(cfg)}
    assert items["a.test"].names == ("a.test", "www.a.test") and items["a.test"].mode == "acme"
    assert items["b.test"].mode == "self-signed"
    assert items["_server-8443"].mode == "self-signed"        # the listener had no cert
    store.prepare(cfg, lambda *a: None)
    info = store.check_pair(*store.paths(cfg, items["a.test"]))
    assert info.self_signed and set(info.names) == {"a.test", "www.a.test"}
    assert oct((tmp_path.stat().st_mode) & 0o777) == "0o700"


def test_tls_alpn_certificate_carries_the_critical_acme_identifier():
    from cryptography import x509

    pem = client.tls_alpn_certificate("a.test", "tok.thumb")
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31"))
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test"]


def test_jws_signature_verifies_and_thumbprint_is_canonical():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    acct = client.Account(store.new_key_pem())
    sig = acct.sign(b"payload")
    assert len(sig) == 64
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    acct.key.public_key().verify(encode_dss_signature(r, s), b"payload", ec.ECDSA(hashes.SHA256()))
    canon = json.dumps({"crv": "P-256", "kty": "EC", "x": acct.jwk["x"], "y": acct.jwk["y"]},
                       separators=(",", ":")).encode()
    assert acct.thumbprint() == client.b64(hashlib.sha256(canon).digest())


def test_renewal_time_from_duration_or_fraction(tmp_path):
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    info = store.CertInfo(start, start + datetime.timedelta(days=90), "CN=x", ("a.test",), False)
    cfg = loads(BASE.format(state=tmp_path, rb="30d"))
    assert renew_at(cfg, info) == (start + datetime.timedelta(days=60)).timestamp()
    cfg = loads(BASE.format(state=tmp_path, rb="1/3"))
    assert renew_at(cfg, info) == pytest.approx((start + datetime.timedelta(days=60)).timestamp())


def test_problem_document_in_the_message():
    e = client.AcmeError("order failed", {"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                                          "detail": "no", "subproblems": [
                                              {"identifier": {"value": "a.test"}, "detail": "bad"}]})
    assert "rejectedIdentifier" in str(e) and "a.test: bad" in str(e)


def test_ari_window_makes_a_certificate_due_and_is_asked_rarely(tmp_path):
    import time as _time
    from types import SimpleNamespace

    from rproxy.acme.manager import Manager

    cfg = loads(BASE.format(state=tmp_path, rb="1d"))
    store.prepare(cfg, lambda *a: None)
    m = next(i for i in store.managed(cfg) if i.key == "a.test")
    # a CA-issued-looking certificate: not self-signed, far from renew-before
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = store.new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.test"), x509.DNSName("www.a.test")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    store.write_pair(cfg, m, key_pem, cert.public_bytes(serialization.Encoding.PEM))
    asked = []

    def window(pem):
        asked.append(1)
        return _time.time() - 20, _time.time() - 10, None

    mgr = Manager(cfg, lambda *a: None)
    mgr.client = SimpleNamespace(account=SimpleNamespace(url="https://ca.test/acct/1"), renewal_window=window)
    t = _time.time()
    assert mgr.due(m, t) is None
    mgr.check_ari(m, t)
    mgr.check_ari(m, t + 1)
    assert len(asked) == 1
    assert "ARI" in mgr.due(m, t + 1)
