"""The state directory of automatic HTTPS (`acme { state-dir }`).

Layout (0700, owned by `user`; every file written to a temporary name and
renamed, so a reader sees the old file or the new one, never half of one):

    account.key                 the ACME account key (EC P-256, PEM)
    account.json                {"directory": ..., "url": ...}: the account, reused across restarts
    certs/NAME/key.pem          the private key of the certificate
    certs/NAME/chain.pem        the certificate and its chain (self-signed until the CA's arrives)
    certs/NAME/meta.json        {"names", "mode", "source": "acme" | "self-signed", "error", ...}
    certs/NAME/renew            present: renew now (`rproxy certs renew NAME`)
    challenges/http/TOKEN       key authorization of a pending HTTP-01 challenge
    challenges/tls/NAME.pem     certificate + key of a pending TLS-ALPN-01 challenge

NAME is the vhost's title (a listener's own certificate: `_server-PORT`).
The master creates the directory and a self-signed certificate for every
managed name before the workers start; the ACME helper replaces it; each
worker watches chain.pem and the challenges (rproxy/acme/watch.py).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import datetime

from ..config.model import SSL, Config

SELF_SIGNED_DAYS = 90
SELF_SIGNED_RENEW = 30 * 86400          # a self-signed certificate is remade with this much left


@dataclass(frozen=True)
class Managed:
    """One certificate rproxy manages: the vhosts (or listener) it serves."""
    key: str                            # directory name under certs/
    names: tuple[str, ...]              # DNS names, the first is the subject
    mode: str                           # "acme" | "self-signed"
    slots: tuple[tuple[int, int], ...]  # (server index, vhost index or -1 for the listener)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.lower()) or "_"


def managed(cfg: Config) -> list[Managed]:
    """Every managed certificate of `cfg`, in file order (a name served by
    several listeners is one certificate)."""
    found: dict[str, dict] = {}
    for si, srv in enumerate(cfg.servers):
        if srv.ssl is None or not srv.ssl.enabled:
            continue
        if srv.ssl.mode != "files":
            names = [n for v in srv.vhosts for n in (v.name, *v.aliases)
                     if not any(c in n for c in "*?[")] or ["localhost"]
            if srv.ssl.mode == "self-signed":
                names = names[:1] if names else ["localhost"]
            key = f"_server-{srv.port}" if not srv.addr.startswith("unix:") else f"_server-{safe_name(srv.addr)}"
            _add(found, key, names, srv.ssl.mode, (si, -1))
        for vi, vh in enumerate(srv.vhosts):
            if vh.ssl is not None and vh.ssl.enabled and vh.ssl.mode != "files":
                _add(found, safe_name(vh.name), [vh.name, *vh.aliases], vh.ssl.mode, (si, vi))
    return [Managed(k, tuple(dict.fromkeys(n.lower() for n in v["names"])), v["mode"], tuple(v["slots"]))
            for k, v in found.items()]


def _add(found, key, names, mode, slot):
    entry = found.setdefault(key, {"names": [], "mode": mode, "slots": []})
    entry["names"].extend(names)
    entry["slots"].append(slot)
    if mode == "acme":
        entry["mode"] = "acme"


def state_dir(cfg: Config) -> str:
    return cfg.acme.state_dir if cfg.acme is not None else "/var/lib/rproxy/acme"


def cert_dir(cfg: Config, m: Managed) -> str:
    return os.path.join(state_dir(cfg), "certs", m.key)


def paths(cfg: Config, m: Managed) -> tuple[str, str]:
    d = cert_dir(cfg, m)
    return os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")


def effective_ssl(cfg: Config, ssl: SSL, si: int, vi: int) -> SSL:
    """`ssl` with cert/key pointing at the managed files, when it is managed."""
    if ssl.mode == "files":
        return ssl
    for m in managed(cfg):
        if (si, vi) in m.slots:
            chain, key = paths(cfg, m)
            return replace(ssl, cert=chain, key=key)
    return ssl


# ---- files -----------------------------------------------------------------------------

def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_pair(cfg: Config, m: Managed, key_pem: bytes, chain_pem: bytes) -> None:
    """Key first, then chain: a watcher reloads on chain.pem's change, and
    by then the key that matches it is in place.  (A reader that catches
    the new key with the old chain fails to load and keeps its context.)"""
    chain, key = paths(cfg, m)
    write_atomic(key, key_pem)
    write_atomic(chain, chain_pem, 0o644)


def read_meta(cfg: Config, m: Managed) -> dict:
    try:
        with open(os.path.join(cert_dir(cfg, m), "meta.json")) as f:
            import json
            meta = json.load(f)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def write_meta(cfg: Config, m: Managed, meta: dict) -> None:
    import json
    write_atomic(os.path.join(cert_dir(cfg, m), "meta.json"), json.dumps(meta, indent=1).encode(), 0o644)


def ensure_dirs(cfg: Config, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    """Create state-dir (0700) and its subdirectories, owned by `user`."""
    root = state_dir(cfg)
    dirs = [root, os.path.join(root, "certs"), os.path.join(root, "challenges"),
            os.path.join(root, "challenges", "http"), os.path.join(root, "challenges", "tls")]
    dirs += [cert_dir(cfg, m) for m in managed(cfg)]
    for d in dirs:
        os.makedirs(d, mode=0o700, exist_ok=True)
        if uid is not None and os.geteuid() == 0:
            os.chown(d, uid, gid if gid is not None else -1)
    os.chmod(root, 0o700)


def chown_tree(cfg: Config, uid: int, gid: int) -> None:
    for base, dirs, files in os.walk(state_dir(cfg)):
        for n in dirs + files:
            try:
                os.chown(os.path.join(base, n), uid, gid)
            except OSError:
                pass
    os.chown(state_dir(cfg), uid, gid)


# ---- certificates ------------------------------------------------------------------------

def new_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed(names, key_pem: bytes, days: int = SELF_SIGNED_DAYS, extensions=(),
                cn: Optional[str] = None) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, None)
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or names[0][:64])])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass
class CertInfo:
    not_before: datetime.datetime
    not_after: datetime.datetime
    issuer: str
    names: tuple[str, ...]
    self_signed: bool


def cert_info(chain_pem: bytes) -> CertInfo:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(chain_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(cert.not_valid_before_utc, cert.not_valid_after_utc, cert.issuer.rfc4514_string(), names,
                    cert.issuer == cert.subject)


def check_pair(chain_path: str, key_path: str) -> CertInfo:
    """The certificate's facts if the files load and the key matches; raises otherwise."""
    from cryptography.hazmat.primitives import serialization

    with open(chain_path, "rb") as f:
        chain = f.read()
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    info = cert_info(chain)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(chain)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError("the key does not match the certificate")
    return info


def ensure_certificate(cfg: Config, m: Managed, log) -> CertInfo:
    """A usable certificate for `m` on disk: the stored one when it loads,
    matches its key, covers the names and is not expired (self-signed: not
    within SELF_SIGNED_RENEW of expiry), else a fresh self-signed one.  A
    corrupted file is logged and kept aside as *.bad."""
    chain, key = paths(cfg, m)
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        info = check_pair(chain, key)
        if set(m.names) <= set(info.names) and info.not_after > now and not (
                info.self_signed and (info.not_after - now).total_seconds() < SELF_SIGNED_RENEW):
            return info
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError) as e:
        log("error", f"acme: certificate of {m.key} in {cert_dir(cfg, m)} is unusable ({e}); "
                     "a self-signed one replaces it")
        for p in (chain, key):
            try:
                os.replace(p, p + ".bad")
            except OSError:
                pass
    key_pem = new_key_pem()
    write_pair(cfg, m, key_pem, self_signed(list(m.names), key_pem))
    meta = read_meta(cfg, m)
    meta.update({"names": list(m.names), "mode": m.mode, "source": "self-signed"})
    write_meta(cfg, m, meta)
    return check_pair(chain, key)


def prepare(cfg: Config, log, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    """The master, before the workers exist: state-dir and a certificate for
    every managed name (self-signed until the CA's arrives)."""
    items = managed(cfg)
    if not items:
        return
    ensure_dirs(cfg, uid, gid)
    for m in items:
        ensure_certificate(cfg, m, log)
    if uid is not None and os.geteuid() == 0:
        chown_tree(cfg, uid, gid if gid is not None else -1)


def writable_by(path: str, uid: int, gid: int) -> bool:
    """Could `uid`/`gid` create files in `path` (or its nearest existing parent)?"""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    st = os.stat(p)
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)
