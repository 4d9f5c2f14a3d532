"""Throwaway certificates for the TLS tests, made with the `openssl` command.

A test PKI: a root CA, an intermediate chain, server certificates for
several names (EC and RSA keys, PKCS#1, SEC1 and PKCS#8 files), client
certificates (one with a UTF8String extension), and CRLs signed by the CA
(`openssl ca -gencrl` over a hand-written index).  No network.
"""
from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CLIENT_ID_OID = "1.3.6.1.4.1.99999.1"      # a private OID the tests put a UTF8String in


@dataclass
class Cert:
    name: str
    crt: str
    key: str
    serial: int
    subject: str


class Pki:
    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.serial = 0x1000

    def openssl(self, *args: str, cwd=None) -> str:
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd or self.root)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")
        return r.stdout

    def path(self, name: str) -> str:
        return str(self.root / name)

    def key(self, name: str, kind: str = "ec", form: str = "pkcs8") -> str:
        """A private key file: kind ec|rsa, form pkcs8 (BEGIN PRIVATE KEY),
        pkcs1 (BEGIN RSA PRIVATE KEY) or sec1 (BEGIN EC PRIVATE KEY)."""
        out = self.path(f"{name}.key")
        if kind == "ec":
            self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out)
        else:
            self.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", out)
        if form == "pkcs1":
            self.openssl("rsa", "-in", out, "-out", out, "-traditional")
        elif form == "sec1":
            self.openssl("ec", "-in", out, "-out", out)
        os.chmod(out, 0o600)
        return out

    def ca(self, name: str = "ca", subject: str = "/O=rproxy tests/CN=rproxy test CA",
           issuer: Optional[Cert] = None) -> Cert:
        """A root CA, or an intermediate signed by `issuer`."""
        key = self.key(name)
        crt = self.path(f"{name}.crt")
        if issuer is None:
            self.serial += 1
            self.openssl("req", "-x509", "-new", "-key", key, "-subj", subject, "-days", "30",
                         "-set_serial", str(self.serial), "-out", crt,
                         "-addext", "basicConstraints=critical,CA:TRUE",
                         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            return Cert(name, crt, key, self.serial, subject)
        return self._sign(name, key, subject, issuer, "basicConstraints=critical,CA:TRUE\n"
                          "keyUsage=critical,keyCertSign,cRLSign\n")

    def server(self, name: str, issuer: Cert, dns=(), ips=(), kind="ec", form="pkcs8") -> Cert:
        key = self.key(name, kind, form)
        sans = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        if sans:
            ext += f"subjectAltName={sans}\n"
        return self._sign(name, key, f"/O=rproxy tests/CN={(list(dns) or list(ips))[0]}", issuer, ext)

    def client(self, name: str, issuer: Cert, subject: str, client_id: Optional[str] = None) -> Cert:
        key = self.key(name)
        ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
        if client_id is not None:
            ext += f"{CLIENT_ID_OID}=ASN1:UTF8String:{client_id}\n"
        return self._sign(name, key, subject, issuer, ext)

    def self_signed(self, name: str, cn: str, dns=(), ips=()) -> Cert:
        key = self.key(name)
        crt = self.path(f"{name}.crt")
        self.serial += 1
        args = ["req", "-x509", "-new", "-key", key, "-subj", f"/CN={cn}", "-days", "30",
                "-set_serial", str(self.serial), "-out", crt]
        sans = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        if sans:
            args += ["-addext", f"subjectAltName={sans}"]
        self.openssl(*args)
        return Cert(name, crt, key, self.serial, f"/CN={cn}")

    def _sign(self, name: str, key: str, subject: str, issuer: Cert, ext: str) -> Cert:
        csr = self.path(f"{name}.csr")
        crt = self.path(f"{name}.crt")
        extfile = self.path(f"{name}.ext")
        with open(extfile, "w") as f:
            f.write(ext)
        self.openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
        self.serial += 1
        self.openssl("x509", "-req", "-in", csr, "-CA", issuer.crt, "-CAkey", issuer.key, "-set_serial",
                     str(self.serial), "-days", "30", "-out", crt, "-extfile", extfile)
        return Cert(name, crt, key, self.serial, subject)

    def chain(self, out: str, *certs: Cert) -> str:
        """A PEM file of several certificates (leaf first)."""
        path = self.path(out)
        with open(path, "w") as f:
            for c in certs:
                with open(c.crt) as g:
                    f.write(g.read())
        return path

    def crl(self, issuer: Cert, revoked=(), out: Optional[str] = None) -> str:
        """A CRL signed by `issuer` revoking `revoked` (written atomically,
        so a reloading proxy never reads half a file)."""
        d = self.root / f"crl-{issuer.name}"
        d.mkdir(exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = (now - datetime.timedelta(minutes=1)).strftime("%y%m%d%H%M%SZ")
        expiry = (now + datetime.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
        with open(d / "index.txt", "w") as f:
            for c in revoked:
                f.write(f"R\t{expiry}\t{stamp}\t{c.serial:X}\tunknown\t{c.subject}\n")
        (d / "index.txt.attr").write_text("unique_subject = no\n")
        if not (d / "crlnumber").exists():
            (d / "crlnumber").write_text("01\n")
        (d / "ca.cnf").write_text(
            "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\n"
            f"database = {d / 'index.txt'}\ncrlnumber = {d / 'crlnumber'}\n"
            "default_md = sha256\ndefault_crl_days = 30\n")
        path = out or self.path(f"{issuer.name}.crl")
        tmp = path + ".tmp"
        self.openssl("ca", "-gencrl", "-config", str(d / "ca.cnf"), "-keyfile", issuer.key, "-cert", issuer.crt,
                     "-out", tmp)
        os.replace(tmp, path)
        return path

    def x509(self, cert: Cert, *args: str) -> str:
        return self.openssl("x509", "-in", cert.crt, "-noout", *args).strip()


def make_test_pki(root) -> dict:
    """Everything the TLS tests use, made once per test session."""
    pki = Pki(root)
    ca = pki.ca()
    out = {"pki": pki, "ca": ca}
    out["server"] = pki.server("server", ca, dns=("localhost",), ips=("127.0.0.1",))
    out["a"] = pki.server("a", ca, dns=("a.test", "www.a.test"))
    out["b"] = pki.server("b", ca, dns=("b.test",), kind="rsa", form="pkcs1")
    out["c"] = pki.server("c", ca, dns=("c.test",), kind="rsa", form="pkcs8")
    out["sec1"] = pki.server("sec1", ca, dns=("sec1.test",), kind="ec", form="sec1")
    out["alice"] = pki.client("alice", ca, "/C=US/ST=VA/O=rproxy tests/CN=Alice", client_id="user-42")
    out["bob"] = pki.client("bob", ca, "/C=US/O=rproxy tests/CN=Bob")
    int1 = pki.ca("int1", "/O=rproxy tests/CN=Intermediate 1", issuer=ca)
    int2 = pki.ca("int2", "/O=rproxy tests/CN=Intermediate 2", issuer=int1)
    out["int1"], out["int2"] = int1, int2
    out["deep"] = pki.client("deep", int2, "/O=rproxy tests/CN=Deep")
    out["deep_chain"] = pki.chain("deep-chain.pem", out["deep"], int2, int1)
    out["self"] = pki.self_signed("self", "localhost", dns=("localhost",), ips=("127.0.0.1",))
    out["other_ca"] = pki.ca("other-ca", "/CN=another CA")
    out["stranger"] = pki.client("stranger", out["other_ca"], "/CN=Stranger")
    return out
