"""rproxy.tls without sockets: the binding the loop relies on, contexts from
the model, X-SSL-* values, CRL reloads."""
from __future__ import annotations

import datetime
import os
import struct

import pytest
from OpenSSL import SSL as O
from OpenSSL import crypto

from rproxy import fastpath, tls
from rproxy.config import loader
from rproxy.config.model import CRL, SSL, Downstream, Headers, X509Extension
from support.certs import CLIENT_ID_OID


def load_text(text, tmp_path):
    p = tmp_path / "t.conf"
    p.write_text(text)
    return loader.load(str(p))


# ---- the binding ------------------------------------------------------------------------

def test_every_function_the_loop_calls_has_the_expected_c_type():
    addrs = tls.function_addresses()
    assert set(addrs) == set(fastpath.TLS_FUNCTIONS)
    assert all(isinstance(a, int) and a > 0 for a in addrs.values())


def test_the_constants_compiled_into_the_loop_are_libssl_s():
    from OpenSSL._util import lib

    for name, value in fastpath.tls_constants().items():
        assert getattr(lib, name) == value, name


def test_xssl_bits_agree_with_the_header_names():
    assert {tls.HEADER_NAMES[b] for b in fastpath.XSSL_BITS.values()} == set(tls.HEADER_NAMES.values())
    assert fastpath.XSSL_BITS["x_ssl_cipher"] == tls.CIPHER_BIT
    assert max(fastpath.XSSL_BITS.values()) < tls.FIRST_EXTENSION_BIT


# ---- policy ------------------------------------------------------------------------------

def test_protocol_bounds():
    assert tls.protocol_bounds(SSL()) == (O.TLS1_2_VERSION, O.TLS1_3_VERSION)
    assert tls.protocol_bounds(SSL(protocols_off=("TLSv1.2",))) == (O.TLS1_3_VERSION, O.TLS1_3_VERSION)
    assert tls.protocol_bounds(SSL(protocols_on=("TLSv1.2",))) == (O.TLS1_2_VERSION, O.TLS1_2_VERSION)
    with pytest.raises(tls.TlsError):
        tls.protocol_bounds(SSL(protocols_off=("TLSv1.2", "TLSv1.3")))


def test_broken_ciphers_are_removed_even_from_a_user_list(test_pki):
    s = SSL(enabled=True, cert=test_pki["b"].crt, key=test_pki["b"].key, ciphers="RC4-SHA:DES-CBC3-SHA:AES128-SHA")
    ctx = tls.server_context(s, "t", "t", tls._callbacks())
    from OpenSSL._util import ffi, lib

    ssl = lib.SSL_new(ctx._context)
    names = []
    i = 0
    while True:
        p = lib.SSL_get_cipher_list(ssl, i)
        if p == ffi.NULL:
            break
        names.append(ffi.string(p).decode())
        i += 1
    lib.SSL_free(ssl)
    assert "AES128-SHA" in names
    assert not [n for n in names if "RC4" in n or "DES" in n or "MD5" in n or "NULL" in n]
    with pytest.raises(tls.TlsError, match="no usable TLS 1.2 cipher"):
        tls.server_context(SSL(enabled=True, cert=s.cert, key=s.key, ciphers="RC4-MD5"), "t", "t",
                           tls._callbacks())


def test_session_lifetime_is_the_shorter_timeout():
    assert tls.session_lifetime(SSL()) == 300
    assert tls.session_lifetime(SSL(context_timeout=60.0)) == 60
    assert tls.session_lifetime(SSL(cache_timeout=0.2)) == 1


# ---- keys and certificates -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["server", "b", "c", "sec1"])   # EC PKCS#8, RSA PKCS#1, RSA PKCS#8, EC SEC1
def test_key_formats_load(test_pki, name):
    c = test_pki[name]
    first = open(c.key).readline()
    assert {"server": "BEGIN PRIVATE KEY", "b": "BEGIN RSA PRIVATE KEY", "c": "BEGIN PRIVATE KEY",
            "sec1": "BEGIN EC PRIVATE KEY"}[name] in first
    tls.server_context(SSL(enabled=True, cert=c.crt, key=c.key), "t", "t", tls._callbacks())


def test_key_read_from_the_certificate_file(test_pki, tmp_path):
    both = tmp_path / "both.pem"
    both.write_text(open(test_pki["a"].crt).read() + open(test_pki["a"].key).read())
    tls.server_context(SSL(enabled=True, cert=str(both)), "t", "t", tls._callbacks())


def test_key_problems_are_named(test_pki, tmp_path):
    cb = tls._callbacks()
    with pytest.raises(tls.TlsError, match="does not match the certificate"):
        tls.server_context(SSL(enabled=True, cert=test_pki["a"].crt, key=test_pki["b"].key), "t", "t", cb)
    enc = tmp_path / "enc.key"
    test_pki["pki"].openssl("pkey", "-in", test_pki["a"].key, "-aes256", "-passout", "pass:x", "-out", str(enc))
    with pytest.raises(tls.TlsError, match="encrypted"):
        tls.server_context(SSL(enabled=True, cert=test_pki["a"].crt, key=str(enc)), "t", "t", cb)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(tls.TlsError, match="cannot load the certificate"):
        tls.server_context(SSL(enabled=True, cert=str(junk), key=test_pki["a"].key), "where", "t", cb)


def test_certificate_chain_file(test_pki):
    # a leaf followed by its intermediates: all of it is served
    ctx = tls.server_context(SSL(enabled=True, cert=test_pki["deep_chain"], key=test_pki["deep"].key), "t",
                             "t", tls._callbacks())
    assert ctx is not None


# ---- X-SSL-* values -----------------------------------------------------------------------

def test_openssl_time_and_serial_forms():
    t = datetime.datetime(2012, 2, 4, 16, 52, 42, tzinfo=datetime.timezone.utc)
    assert tls.openssl_time(t) == "Feb  4 16:52:42 2012 GMT"
    assert tls.openssl_time(t.replace(day=14, month=12)) == "Dec 14 16:52:42 2012 GMT"
    assert tls.serial_hex(1) == "01"
    assert tls.serial_hex(0) == "00"
    assert tls.serial_hex(0x1ABC) == "1ABC"
    assert tls.serial_hex(0xABC) == "0ABC"


def test_utf8string_values():
    assert tls.utf8string_value(b"\x0c\x07user-42") == "user-42"
    long = "é" * 100
    raw = long.encode()
    assert tls.utf8string_value(b"\x0c\x81" + bytes([len(raw)]) + raw) == long
    assert tls.utf8string_value(b"\x16\x07user-42") is None       # IA5String: not sent
    assert tls.utf8string_value(b"\x0c\x08user-42") is None       # bad length
    assert tls.utf8string_value(b"\x0c\x02\xff\xfe") is None      # not UTF-8


def test_client_certificate_values_match_openssl(test_pki):
    pki, alice = test_pki["pki"], test_pki["alice"]
    x = crypto.load_certificate(crypto.FILETYPE_PEM, open(alice.crt, "rb").read())
    values = {name: v for _, name, v in
              tls.client_cert_values(x, 0xFF | (1 << 8), [(8, "X-Client-Id", CLIENT_ID_OID)])}
    assert values["X-SSL-Subject"] == pki.x509(alice, "-subject", "-nameopt", "compat")[len("subject="):]
    assert values["X-SSL-Issuer"] == pki.x509(alice, "-issuer", "-nameopt", "compat")[len("issuer="):]
    assert values["X-SSL-Notbefore"] == pki.x509(alice, "-startdate")[len("notBefore="):]
    assert values["X-SSL-Notafter"] == pki.x509(alice, "-enddate")[len("notAfter="):]
    assert values["X-SSL-Serial"] == pki.x509(alice, "-serial")[len("serial="):]
    assert values["X-SSL-Sha1"] == pki.x509(alice, "-fingerprint", "-sha1").split("=", 1)[1]
    assert values["X-Client-Id"] == "user-42"
    assert "X-SSL-Cipher" not in values         # the loop writes that one itself
    bob = crypto.load_certificate(crypto.FILETYPE_PEM, open(test_pki["bob"].crt, "rb").read())
    assert [n for _, n, _ in tls.client_cert_values(bob, 1 << 8, [(8, "X-Client-Id", CLIENT_ID_OID)])] == []


def test_packed_header_block():
    block = tls.pack_headers([(0, "X-SSL-Subject", "/CN=a"), (9, "X-Id", "é")])
    line1 = b"X-SSL-Subject: /CN=a\r\n"
    line2 = "X-Id: é\r\n".encode()
    assert block == bytes([0]) + struct.pack("<H", len(line1)) + line1 + bytes([9]) + \
        struct.pack("<H", len(line2)) + line2


def test_header_bits_and_extension_slots():
    slots = {}
    h = Headers(x_ssl_subject=True, x_ssl_cipher=True, x_ssl_certificate=False,
                x509_extensions=(X509Extension("X-A", "1.2.3"), X509Extension("X-B", "1.2.4")))
    bits = tls.header_bits(h, slots)
    assert bits == (1 << 0) | (1 << 6) | (1 << 8) | (1 << 9)
    assert tls.header_bits(Headers(x509_extensions=(X509Extension("x-b", "1.2.4"),)), slots) == \
        (1 << 7) | (1 << 9)                         # same extension, same slot (names are case-insensitive)
    assert tls.header_bits(None, slots) == 0
    many = Headers(x509_extensions=tuple(X509Extension(f"X-{i}", f"1.2.{i}") for i in range(60)))
    with pytest.raises(tls.TlsError):
        tls.header_bits(many, {})


def test_downstream_server_name():
    d = Downstream(name="d", addr="127.0.0.1", port=1, tls=True)
    assert tls.downstream_server_name(d) == ""
    assert tls.downstream_server_name(Downstream(name="d", addr="::1", port=1, tls=True)) == ""
    assert tls.downstream_server_name(Downstream(name="d", addr="api.internal", port=1, tls=True)) == "api.internal"
    assert tls.downstream_server_name(Downstream(name="d", addr="127.0.0.1", port=1, tls=True,
                                                 tls_name="api.test")) == "api.test"


def test_downstream_over_unix_socket_needs_a_name_to_verify():
    with pytest.raises(tls.TlsError, match="tls-name"):
        tls.downstream_context(Downstream(name="d", addr="unix:/run/x.sock", port=0, tls=True))
    tls.downstream_context(Downstream(name="d", addr="unix:/run/x.sock", port=0, tls=True,
                                      ssl=SSL(enabled=True, verify_peer=False)))


# ---- configuration -------------------------------------------------------------------------

def test_a_downstream_certificate_is_verified_unless_said_otherwise(tmp_path, test_pki):
    cfg = load_text(f"""
server {{
    downstream a {{ addr = 127.0.0.1  port = 1  tls = true }}
    downstream b {{ addr = 127.0.0.1  port = 2  tls = true  tls-name = "b.test"  ssl {{ ca = "{test_pki['ca'].crt}" }} }}
    downstream c {{ addr = 127.0.0.1  port = 3  tls = true  ssl {{ verify-peer = false }} }}
    vhost "*" {{ rule r {{ uri-prefix = "/"  downstreams = {{ a, b, c }} }} }}
}}
""", tmp_path)
    a, b, c = cfg.servers[0].downstreams
    assert a.ssl is None and a.tls
    assert b.ssl.verify_peer and b.tls_name == "b.test"
    assert not c.ssl.verify_peer
    s = tls.build(cfg)
    assert len(s.downstreams) == 3


def test_build_makes_one_context_per_ssl_block(tmp_path, test_pki):
    a, b, srv = test_pki["a"], test_pki["b"], test_pki["server"]
    cfg = load_text(f"""
server {{
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    downstream d {{ addr = 127.0.0.1  port = 1 }}
    vhost "a.test" {{ ssl {{ enabled = true  cert = "{a.crt}"  key = "{a.key}" }}
                     rule r {{ uri-prefix = "/"  downstreams = {{ d }} }} }}
    vhost "b.test" {{ ssl {{ enabled = true  cert = "{b.crt}"  key = "{b.key}" }}
                     rule r {{ uri-prefix = "/"  downstreams = {{ d }} }} }}
    vhost "c.test" {{ rule r {{ uri-prefix = "/"  downstreams = {{ d }} }} }}
}}
""", tmp_path)
    assert tls.needed(cfg)
    s = tls.load(cfg)
    assert tls.load(cfg) is s                       # built once: the workers inherit it
    assert set(s.servers[0].vhosts) == {0, 1}       # c.test shares the server's context
    tls.release(cfg)
    assert tls.load(cfg) is not s


# ---- CRL reloads ------------------------------------------------------------------------------

def test_crl_reload_sends_a_new_store_and_keeps_the_old_one_on_errors(test_pki, tmp_path):
    pki = test_pki["pki"]
    crl = pki.crl(test_pki["ca"], out=str(tmp_path / "x.crl"))
    s = SSL(enabled=True, cert=test_pki["server"].crt, key=test_pki["server"].key, ca=test_pki["ca"].crt,
            verify_peer=True, crl=CRL(file=crl, reload=1.0))
    watch = tls.CrlWatch(object(), s, "test", tls.crl_signature(s), slot=3)
    sent, logged, stores = [], [], []

    def record(slot, store):
        stores.append(store)
        return b"rec%d" % slot

    r = tls.CrlReloader([watch], sent.append, record, lambda level, msg: logged.append((level, msg)))
    assert not r.check(watch)                       # unchanged
    os.utime(crl, ns=(1, 1))
    assert r.check(watch) and sent == [b"rec3"]
    assert logged[-1][0] == "notice"
    from OpenSSL._util import ffi, lib

    for addr in stores:                             # the loop would own these references
        lib.X509_STORE_free(ffi.cast("X509_STORE *", addr))
    with open(crl, "w") as f:
        f.write("-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    assert not r.check(watch)
    assert logged[-1][0] == "error" and "previous CRLs stay in force" in logged[-1][1]
    assert len(sent) == 1


def test_the_readme_tls_example_loads_and_builds(test_pki, tmp_path):
    import re

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    section = text[text.index("## TLS\n"):text.index("## Features\n")]
    example = re.findall(r"^```\n(.*?)^```$", section, re.S | re.M)[0]
    files = {"default.crt": test_pki["server"].crt, "default.key": test_pki["server"].key,
             "example.crt": test_pki["a"].crt, "example.key": test_pki["a"].key,
             "internal-ca.pem": test_pki["ca"].crt, "clients-ca.pem": test_pki["ca"].crt,
             "clients.crl": test_pki["pki"].crl(test_pki["ca"], out=str(tmp_path / "c.crl"))}
    for name, path in files.items():
        example = example.replace(f"/etc/rproxy/tls/{name}", f'"{path}"')
    assert "/etc/rproxy" not in example
    cfg = load_text(example, tmp_path)
    s = tls.build(cfg)
    assert set(s.servers[0].vhosts) == {0} and len(s.downstreams) == 1 and len(s.watches) == 1


def test_rproxy_t_loads_the_tls_files_and_describes_tls(test_pki, tmp_path, capsys):
    from rproxy.cli import main

    srv, ca = test_pki["server"], test_pki["ca"]
    conf = tmp_path / "t.conf"
    text = f"""
server {{
    ssl {{ enabled = true  cert = "{srv.crt}"  key = "{srv.key}" }}
    downstream a {{ addr = 127.0.0.1  port = 1  tls = true  tls-name = api.test  ssl {{ ca = "{ca.crt}" }} }}
    downstream b {{ addr = 127.0.0.1  port = 2  tls = true  ssl {{ verify-peer = false }} }}
    vhost "x.test" {{ https-redirect = true
                     headers {{ x-ssl-subject = true  x509-extension {{ name = X-Id  oid = 1.2.3 }} }}
                     rule r {{ uri-prefix = /  downstreams = {{ a, b }} }} }}
}}
"""
    conf.write_text(text)
    assert main(["-t", "-c", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "over TLS (certificate verified for api.test)" in out
    assert "over TLS (certificate not verified)" in out
    assert "plain HTTP redirected to https (port 443)" in out
    assert "X-SSL-{subject,certificate}, X-Id" in out
    conf.write_text(text.replace(srv.key, test_pki["a"].key))
    assert main(["-t", "-c", str(conf)]) == 1
    assert "does not match the certificate" in capsys.readouterr().err
