"""A small ACME client (RFC 8555) on `cryptography` and the standard library.

Only what rproxy needs: an ES256 account (created once, reused), orders for
DNS names, HTTP-01 and TLS-ALPN-01 (RFC 8737) challenges, finalize with a
CSR, download of the chain, and the renewal window of ARI (RFC 9773) when
the directory offers it.  Blocking I/O: this runs in the ACME helper
process (rproxy/acme/manager.py), never in a worker.
"""
from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"     # id-pe-acmeIdentifier (RFC 8737)


class AcmeError(Exception):
    """The CA refused something: `problem` is its problem document (RFC 7807)."""

    def __init__(self, message: str, problem: Optional[dict] = None, retry_after: Optional[float] = None):
        super().__init__(message)
        self.problem = problem or {}
        self.retry_after = retry_after

    def __str__(self):
        text = super().__str__()
        if self.problem:
            text += f": {self.problem.get('type', '')} {self.problem.get('detail', '')}".rstrip()
            for sub in self.problem.get("subproblems", ())[:4]:
                ident = sub.get("identifier", {}).get("value", "")
                text += f"; {ident}: {sub.get('detail', '')}"
        return text


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")


class Account:
    """An EC P-256 account key and what the CA says about it."""

    def __init__(self, key_pem: bytes):
        from cryptography.hazmat.primitives import serialization

        self.key = serialization.load_pem_private_key(key_pem, None)
        nums = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64(_int_bytes(nums.x, 32)), "y": b64(_int_bytes(nums.y, 32))}
        self.url: Optional[str] = None

    def thumbprint(self) -> str:
        canon = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        return b64(hashlib.sha256(canon).digest())

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return _int_bytes(r, 32) + _int_bytes(s, 32)


class Client:
    def __init__(self, directory: str, account: Account, ca: Optional[str] = None, timeout: float = 20.0,
                 log: Callable[[str, str], None] = lambda level, msg: None):
        self.directory_url = directory
        self.account = account
        self.timeout = timeout
        self.log = log
        self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
        self.dir: dict = {}
        self.nonce: Optional[str] = None

    # ---- transport -------------------------------------------------------------------

    def _request(self, url: str, data: Optional[bytes] = None, ctype: Optional[str] = None):
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        req.add_header("User-Agent", "rproxy-acme")
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx)
            status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AcmeError(f"cannot reach the ACME directory at {url}: {reason}") from None
        nonce = headers.get("Replay-Nonce")
        if nonce:
            self.nonce = nonce
        return status, headers, body

    @staticmethod
    def _retry_after(headers) -> Optional[float]:
        value = headers.get("Retry-After") if headers is not None else None
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            import email.utils

            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None

    def load_directory(self) -> dict:
        status, headers, body = self._request(self.directory_url)
        if status != 200:
            raise AcmeError(f"the ACME directory {self.directory_url} answered {status}",
                            retry_after=self._retry_after(headers))
        try:
            self.dir = json.loads(body)
        except ValueError:
            raise AcmeError(f"the ACME directory {self.directory_url} is not JSON") from None
        return self.dir

    def _new_nonce(self) -> str:
        status, headers, _ = self._request(self.dir["newNonce"])
        if not headers.get("Replay-Nonce"):
            raise AcmeError(f"newNonce answered {status} without a nonce")
        return headers["Replay-Nonce"]

    def post(self, url: str, payload, use_jwk: bool = False):
        """A JWS POST (payload None: POST-as-GET), retried on badNonce.
        Returns (status, headers, body); raises AcmeError on a problem."""
        for attempt in range(6):
            nonce = self.nonce or self._new_nonce()
            self.nonce = None
            protected = {"alg": "ES256", "nonce": nonce, "url": url}
            if use_jwk or not self.account.url:
                protected["jwk"] = self.account.jwk
            else:
                protected["kid"] = self.account.url
            p64 = b64(json.dumps(protected).encode())
            b = "" if payload is None else b64(json.dumps(payload).encode())
            sig = b64(self.account.sign(f"{p64}.{b}".encode()))
            data = json.dumps({"protected": p64, "payload": b, "signature": sig}).encode()
            status, headers, body = self._request(url, data, "application/jose+json")
            if status < 400:
                return status, headers, body
            problem = {}
            try:
                problem = json.loads(body)
            except ValueError:
                pass
            if problem.get("type") == "urn:ietf:params:acme:error:badNonce" and attempt < 5:
                continue
            raise AcmeError(f"{url} answered {status}", problem, self._retry_after(headers))
        raise AcmeError(f"{url}: too many bad nonces")

    def post_json(self, url: str, payload, use_jwk: bool = False):
        status, headers, body = self.post(url, payload, use_jwk)
        try:
            return json.loads(body) if body else {}, headers
        except ValueError:
            raise AcmeError(f"{url} answered {status} with something that is not JSON") from None

    # ---- account -----------------------------------------------------------------------

    def register(self, email: Optional[str]) -> str:
        """Create the account, or find the existing one of this key."""
        payload = {"termsOfServiceAgreed": True}
        if email:
            payload["contact"] = [f"mailto:{email}"]
        _, headers = self.post_json(self.dir["newAccount"], payload, use_jwk=True)
        self.account.url = headers.get("Location")
        if not self.account.url:
            raise AcmeError("newAccount answered without the account's Location")
        return self.account.url

    # ---- orders ------------------------------------------------------------------------

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.account.thumbprint()}"

    def poll(self, url: str, done: tuple, deadline: float, what: str) -> dict:
        while True:
            obj, headers = self.post_json(url, None)
            if obj.get("status") in done:
                return obj
            if obj.get("status") == "invalid":
                problem = obj.get("error") or next((c.get("error") for c in obj.get("challenges", ())
                                                    if c.get("error")), None)
                raise AcmeError(f"{what} is invalid", problem)
            if time.monotonic() > deadline:
                raise AcmeError(f"{what} still {obj.get('status')} after waiting")
            time.sleep(min(max(self._retry_after(headers) or 0.5, 0.2), 3.0))

    def order(self, names, csr_der: bytes, preferred: str, publish: Callable[[str, str, dict], None],
              unpublish: Callable[[], None], timeout: float = 90.0) -> str:
        """Order a certificate for `names`; `publish(type, name, challenge
        info)` makes a challenge answerable, `unpublish()` withdraws them
        all.  Returns the PEM chain."""
        deadline = time.monotonic() + timeout
        order, headers = self.post_json(self.dir["newOrder"],
                                        {"identifiers": [{"type": "dns", "value": n} for n in names]})
        order_url = headers.get("Location")
        try:
            for authz_url in order.get("authorizations", ()):
                authz, _ = self.post_json(authz_url, None)
                if authz.get("status") == "valid":
                    continue
                name = authz.get("identifier", {}).get("value", "")
                by_type = {c.get("type"): c for c in authz.get("challenges", ())}
                other = "http-01" if preferred == "tls-alpn-01" else "tls-alpn-01"
                chal = by_type.get(preferred) or by_type.get(other)
                if chal is None:
                    raise AcmeError(f"the CA offers no http-01 or tls-alpn-01 challenge for {name}")
                keyauth = self.key_authorization(chal["token"])
                publish(chal["type"], name, {"token": chal["token"], "keyauth": keyauth})
                self.post_json(chal["url"], {})
                self.poll(authz_url, ("valid",), deadline, f"the authorization of {name}")
            order = self.poll(order_url, ("ready", "valid"), deadline, "the order")
        finally:
            unpublish()
        if order.get("status") == "ready":
            self.post_json(order["finalize"], {"csr": b64(csr_der)})
            order = self.poll(order_url, ("valid",), deadline, "the order")
        _, _, body = self.post(order["certificate"], None)
        text = body.decode("ascii", "replace")
        if "BEGIN CERTIFICATE" not in text:
            raise AcmeError("the certificate download is not a PEM chain")
        return text

    # ---- ARI (RFC 9773) ----------------------------------------------------------------

    def renewal_window(self, chain_pem: bytes) -> Optional[tuple[float, float, Optional[float]]]:
        """(start, end, retry_after) of the CA's suggested renewal window, or None."""
        url = self.dir.get("renewalInfo")
        if not url:
            return None
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(chain_pem)
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            return None
        serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
        status, headers, body = self._request(f"{url.rstrip('/')}/{b64(aki)}.{b64(serial)}")
        if status != 200:
            return None
        try:
            import datetime

            win = json.loads(body)["suggestedWindow"]
            start = datetime.datetime.fromisoformat(win["start"].replace("Z", "+00:00")).timestamp()
            end = datetime.datetime.fromisoformat(win["end"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            return None
        return start, end, self._retry_after(headers)


# ---- certificates a challenge or an order needs -----------------------------------------

def csr_der(names, key_pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, None)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def tls_alpn_certificate(name: str, keyauth: str) -> bytes:
    """RFC 8737: a self-signed certificate for `name` carrying the critical
    acmeIdentifier extension (the SHA-256 of the key authorization, as a DER
    OCTET STRING).  Returns key + certificate, PEM."""
    from cryptography import x509

    from .store import new_key_pem, self_signed

    digest = hashlib.sha256(keyauth.encode("ascii")).digest()
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(ACME_IDENTIFIER_OID), b"\x04\x20" + digest)
    key_pem = new_key_pem()
    return key_pem + self_signed([name], key_pem, days=7, extensions=[(ext, True)], cn="ACME challenge")
