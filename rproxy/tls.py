"""TLS for rproxy: pyOpenSSL contexts built from the configuration model.

One module, one job: turn `ssl { }` blocks into OpenSSL contexts the fast
path drives (rproxy/fastpath/tls.pxi), and describe a client certificate as
the X-SSL-* headers RProxy defined.  The contexts are built by the master
while it is still privileged, before it forks (so every worker shares the
session-ticket keys and a ticket from one worker resumes on another); a
reload builds fresh ones, which is how certificates, keys and CAs are
reloaded.  Nothing here runs per request: the loop gets the contexts' and
libssl's C addresses once, and calls into Python only once per handshake that
carried a client certificate, when a rule wants its headers.

OpenSSL is pyOpenSSL's (cryptography's bundled build), never the system
libssl: the loop calls it through the cffi binding's function addresses.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from .config.model import (DEFAULT_CIPHERS, EXCLUDED_CIPHERS, SSL, Config, Downstream, Headers)


class TlsError(Exception):
    """A context cannot be built (the message names the block and the file)."""


def _binding():
    from OpenSSL._util import ffi, lib

    return ffi, lib


# libssl functions the loop calls, with the C type the binding must give
# them (the loop's function pointer types are written to these; a binding
# that changed one would be refused at start-up rather than crash).
FUNCTION_TYPES = {
    "SSL_new": "SSL *(*)(SSL_CTX *)",
    "SSL_free": "void(*)(SSL *)",
    "SSL_set_fd": "int(*)(SSL *, int)",
    "SSL_set_accept_state": "void(*)(SSL *)",
    "SSL_set_connect_state": "void(*)(SSL *)",
    "SSL_do_handshake": "int(*)(SSL *)",
    "SSL_read": "int(*)(SSL *, void *, int)",
    "SSL_write": "int(*)(SSL *, void *, int)",
    "SSL_get_error": "int(*)(SSL *, int)",
    "SSL_shutdown": "int(*)(SSL *)",
    "SSL_get_servername": "char *(*)(SSL *, int)",
    "SSL_set_SSL_CTX": "SSL_CTX *(*)(SSL *, SSL_CTX *)",
    "SSL_set_verify": "void(*)(SSL *, int, int(*)(int, X509_STORE_CTX *))",
    "SSL_CTX_get_verify_mode": "int(*)(SSL_CTX *)",
    "SSL_set_tlsext_host_name": "void(*)(SSL *, char *)",
    "SSL_session_reused": "int(*)(SSL *)",
    "SSL_get_peer_certificate": "X509 *(*)(SSL *)",
    "X509_free": "void(*)(X509 *)",
    "SSL_get_current_cipher": "SSL_CIPHER *(*)(SSL *)",
    "SSL_CIPHER_get_name": "char *(*)(SSL_CIPHER *)",
    "SSL_get_version": "char *(*)(SSL *)",
    "SSL_get_verify_result": "long(*)(SSL *)",
    "X509_verify_cert_error_string": "char *(*)(long)",
    "ERR_get_error": "unsigned long(*)()",
    "ERR_reason_error_string": "char *(*)(unsigned long)",
    "ERR_clear_error": "void(*)()",
    "X509_STORE_CTX_get_error_depth": "int(*)(X509_STORE_CTX *)",
    "X509_STORE_CTX_get_error": "int(*)(X509_STORE_CTX *)",
    "X509_STORE_CTX_set_error": "void(*)(X509_STORE_CTX *, int)",
    "SSL_CTX_set_cert_store": "void(*)(SSL_CTX *, X509_STORE *)",
    "SSL_set_session": "int(*)(SSL *, SSL_SESSION *)",
    "SSL_get1_session": "SSL_SESSION *(*)(SSL *)",
    "SSL_SESSION_free": "void(*)(SSL_SESSION *)",
}


def _normalise_ctype(text: str) -> str:
    return text.replace("const ", "").replace(" ", "")


def function_addresses() -> dict[str, int]:
    """{name: C address} of the libssl functions the loop calls."""
    ffi, lib = _binding()
    real = getattr(lib, "_original_lib", lib)      # cryptography wraps the cffi lib in a module
    out = {}
    for name, want in FUNCTION_TYPES.items():
        ptr = ffi.addressof(real, name)
        got = ffi.typeof(ptr).cname
        if _normalise_ctype(got) != _normalise_ctype(want):
            raise TlsError(f"pyOpenSSL's binding declares {name} as {got}, rproxy was built for {want}")
        out[name] = int(ffi.cast("uintptr_t", ptr))
    return out


_bound = False


def bind_fastpath() -> None:
    """Give the fast path libssl's entry points (once per process)."""
    global _bound
    if _bound:
        return
    from . import fastpath

    fastpath.tls_bind(function_addresses())
    _bound = True


def _callbacks() -> dict:
    """The fast path's C callbacks, as cffi function pointers for the contexts."""
    from . import fastpath

    ffi, _ = _binding()
    addr = fastpath.tls_callbacks()
    return {
        "servername": ffi.cast("int(*)(SSL *, int *, void *)", addr["servername"]),
        "verify": ffi.cast("int(*)(int, X509_STORE_CTX *)", addr["verify"]),
        "alpn": ffi.cast("int(*)(SSL *, unsigned char **, unsigned char *, unsigned char *, unsigned int, "
                         "void *)", addr["alpn"]),
    }


def context_address(ctx) -> int:
    ffi, _ = _binding()
    return int(ffi.cast("uintptr_t", ctx._context))


# ---- contexts ---------------------------------------------------------------------

def protocol_bounds(ssl: SSL) -> tuple[int, int]:
    """(min, max) protocol version from protocols-on / protocols-off (only
    TLS 1.2 and 1.3 are ever spoken; the loader already refused an empty set)."""
    from OpenSSL import SSL as O

    on = set(ssl.protocols_on) - set(ssl.protocols_off)
    versions = [v for name, v in (("TLSv1.2", O.TLS1_2_VERSION), ("TLSv1.3", O.TLS1_3_VERSION)) if name in on]
    if not versions:
        raise TlsError("no TLS protocol is enabled")
    return versions[0], versions[-1]


def cipher_string(ssl: SSL) -> str:
    """The TLS 1.2 cipher list: the configured one (or rproxy's), with the
    broken families always removed.  (TLS 1.3's suites are all AEAD:
    OpenSSL's defaults stay.)"""
    return f"{ssl.ciphers or DEFAULT_CIPHERS}:{EXCLUDED_CIPHERS}"


def session_lifetime(ssl: SSL) -> int:
    """Seconds a session may be resumed (cache entry and ticket alike:
    OpenSSL keeps one lifetime per session).  cache-timeout is rproxy's
    lifetime of a cached session, context-timeout RProxy's name for the
    session lifetime; the shorter wins."""
    return max(1, int(min(ssl.cache_timeout, ssl.context_timeout)))


def _what(where: str, path: str) -> str:
    return f"{where}: {path}"


def _load_chain(ctx, ssl: SSL, where: str) -> None:
    from OpenSSL import SSL as O

    key = ssl.key or ssl.cert
    try:
        with open(key, "rb") as f:
            if b"ENCRYPTED" in f.read():
                raise TlsError(f"{where}: the private key {key} is encrypted; rproxy cannot ask for a "
                               "passphrase: store it unencrypted (readable by root only)")
    except OSError as e:
        raise TlsError(f"{where}: cannot read the private key {key}: {e.strerror or e}") from None
    try:
        ctx.use_certificate_chain_file(ssl.cert)
    except O.Error as e:
        raise TlsError(f"{where}: cannot load the certificate {ssl.cert}: {_reason(e)}") from None
    try:
        ctx.use_privatekey_file(key)
    except O.Error as e:
        if "mismatch" in _reason(e):
            raise TlsError(f"{where}: the private key {key} does not match the certificate {ssl.cert}") \
                from None
        raise TlsError(f"{where}: cannot load the private key {key}: {_reason(e)}") from None
    try:
        ctx.check_privatekey()
    except O.Error:
        raise TlsError(f"{where}: the private key {key} does not match the certificate {ssl.cert}") from None


def _reason(e: Exception) -> str:
    """The reasons of a pyOpenSSL error, or its text."""
    try:
        parts = [r[2] for r in e.args[0] if r[2]]
        if parts:
            return "; ".join(dict.fromkeys(parts))
    except (IndexError, TypeError):
        pass
    return str(e) or e.__class__.__name__


def read_crls(path: str) -> list:
    """Every CRL of a PEM file (one file may hold the CRLs of several CAs)."""
    from cryptography import x509

    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN X509 CRL-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise ValueError("no PEM CRL in it")
    return [x509.load_pem_x509_crl(b) for b in blocks]


def build_store(ssl: SSL, where: str):
    """A certificate store for verifying peers: the CA file/directory and
    the CRLs.  CRL checking covers the whole chain (see the verify callback
    in tls.pxi for what a missing CRL means)."""
    from OpenSSL import crypto

    store = crypto.X509Store()
    if ssl.ca or ssl.capath:
        try:
            store.load_locations(ssl.ca, ssl.capath)
        except crypto.Error as e:
            raise TlsError(f"{where}: cannot load the CA {ssl.ca or ssl.capath}: {_reason(e)}") from None
    if ssl.crl is not None:
        if ssl.crl.file:
            try:
                for crl in read_crls(ssl.crl.file):
                    store.add_crl(crl)
            except (OSError, ValueError, crypto.Error) as e:
                raise TlsError(f"{where}: cannot load the CRL file {ssl.crl.file}: {_reason(e)}") from None
        if ssl.crl.dir:
            # a hashed directory: OpenSSL looks CRLs up there as HASH.rN
            try:
                store.load_locations(None, ssl.crl.dir)
            except crypto.Error as e:
                raise TlsError(f"{where}: cannot use the CRL directory {ssl.crl.dir}: {_reason(e)}") from None
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
    return store


def install_store(ctx, store) -> None:
    """Make `store` the context's certificate store (the context takes a
    reference of its own; the Python object keeps the other)."""
    ffi, lib = _binding()
    lib.X509_STORE_up_ref(store._store)
    lib.SSL_CTX_set_cert_store(ctx._context, store._store)


def _common(ctx, ssl: SSL, where: str) -> None:
    from OpenSSL import SSL as O

    lo, hi = protocol_bounds(ssl)
    ctx.set_min_proto_version(lo)
    ctx.set_max_proto_version(hi)
    try:
        ctx.set_cipher_list(cipher_string(ssl).encode())
    except O.Error as e:
        raise TlsError(f"{where}: ciphers {ssl.ciphers!r} selects no usable TLS 1.2 cipher: {_reason(e)}") \
            from None
    ctx.set_options(O.OP_NO_COMPRESSION | O.OP_NO_RENEGOTIATION | O.OP_IGNORE_UNEXPECTED_EOF)
    # idle connections give their 34 KiB of record buffers back; writes may
    # stop after any record (the loop resumes from where they stopped)
    _, lib = _binding()
    ctx.set_mode(lib.SSL_MODE_RELEASE_BUFFERS | lib.SSL_MODE_ENABLE_PARTIAL_WRITE
                 | lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)


def server_context(ssl: SSL, where: str, session_tag: str, callbacks: dict):
    """The context of a TLS listener or of a vhost's own certificate."""
    from OpenSSL import SSL as O

    ffi, lib = _binding()
    if not ssl.cert:
        raise TlsError(f"{where}: ssl is enabled but has no cert")
    ctx = O.Context(O.TLS_SERVER_METHOD)
    _common(ctx, ssl, where)
    ctx.set_options(O.OP_CIPHER_SERVER_PREFERENCE)
    _load_chain(ctx, ssl, where)
    # sessions of one listener/vhost never resume on another (nor skip its
    # client-certificate check)
    import hashlib
    ctx.set_session_id(hashlib.sha256(session_tag.encode()).digest()[:32])
    ctx.set_session_cache_mode(O.SESS_CACHE_SERVER if ssl.cache_enabled else O.SESS_CACHE_OFF)
    ctx.set_timeout(session_lifetime(ssl))
    if ssl.verify_peer:
        install_store(ctx, _keep_store(ctx, build_store(ssl, where)))
        if ssl.ca:
            try:
                ctx.load_client_ca(ssl.ca.encode())      # the CA names sent in the certificate request
            except O.Error:
                pass
        mode = lib.SSL_VERIFY_PEER | lib.SSL_VERIFY_CLIENT_ONCE
        if ssl.enforce_peer_cert:
            mode |= lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        lib.SSL_CTX_set_verify(ctx._context, mode, callbacks["verify"])
    # OpenSSL's own depth limit stays out of the way: the verify callback
    # applies the depth of the vhost SNI chose
    ctx.set_verify_depth(100)
    lib.SSL_CTX_set_alpn_select_cb(ctx._context, callbacks["alpn"], ffi.NULL)
    lib.SSL_CTX_set_tlsext_servername_callback(ctx._context, callbacks["servername"])
    return ctx


def _keep_store(ctx, store):
    ctx._rproxy_store = store           # lives as long as the context
    return store


def downstream_server_name(ds: Downstream) -> str:
    """The name sent as SNI: tls-name, else the address when it is a host
    name (RFC 6066: never an IP literal)."""
    if ds.tls_name:
        return ds.tls_name
    if ds.addr.startswith("unix:"):
        return ""
    try:
        import ipaddress
        ipaddress.ip_address(ds.addr.strip("[]"))
        return ""
    except ValueError:
        return ds.addr


def downstream_context(ds: Downstream):
    """The client context toward a `tls = true` downstream.  Its certificate
    is verified (against `ca`/`capath`, else the system's CAs, and for the
    downstream's name or address) unless its ssl block says verify-peer =
    false: the explicit opt-out for self-signed backends."""
    from OpenSSL import SSL as O

    ffi, lib = _binding()
    ssl = ds.ssl or SSL(enabled=True, verify_peer=True)
    where = f"downstream {ds.name}"
    ctx = O.Context(O.TLS_CLIENT_METHOD)
    _common(ctx, ssl, where)
    ctx.set_session_cache_mode(O.SESS_CACHE_OFF)    # the loop keeps a session per downstream itself
    if ssl.cert:
        _load_chain(ctx, ssl, where)                # our client certificate
    ctx.set_alpn_protos([b"http/1.1"])
    if not ssl.verify_peer:
        ctx.set_verify(O.VERIFY_NONE)
        return ctx
    if ssl.ca or ssl.capath:
        install_store(ctx, _keep_store(ctx, build_store(ssl, where)))
    else:
        ctx.set_default_verify_paths()
        if ssl.crl is not None:
            raise TlsError(f"{where}: a crl needs the ca (or capath) it belongs to")
    ctx.set_verify(O.VERIFY_PEER)
    ctx.set_verify_depth(ssl.verify_depth)            # N intermediate CAs, as for clients
    name = ds.tls_name or ("" if ds.addr.startswith("unix:") else ds.addr.strip("[]"))
    if not name:
        raise TlsError(f"{where}: a unix: downstream with TLS needs tls-name (the name its certificate "
                       "carries), or verify-peer = false in its ssl block")
    param = lib.SSL_CTX_get0_param(ctx._context)
    try:
        import ipaddress
        packed = ipaddress.ip_address(name).packed
        ok = lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    except ValueError:
        raw = name.encode("idna")
        ok = lib.X509_VERIFY_PARAM_set1_host(param, raw, len(raw))
    if ok != 1:
        raise TlsError(f"{where}: cannot verify certificates for the name {name!r}")
    return ctx


# ---- client certificate -> X-SSL-* headers ---------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# header names, by the bit the fast path uses for them (tls.pxi XSSL_*)
HEADER_NAMES = {0: "X-SSL-Subject", 1: "X-SSL-Issuer", 2: "X-SSL-Notbefore", 3: "X-SSL-Notafter",
                4: "X-SSL-Serial", 5: "X-SSL-Sha1", 6: "X-SSL-Cipher", 7: "X-SSL-Certificate"}
CIPHER_BIT = 6
FIRST_EXTENSION_BIT = 8


def openssl_time(dt) -> str:
    """OpenSSL's ASN1_TIME_print form: `Feb  4 16:52:42 2012 GMT`."""
    return f"{_MONTHS[dt.month - 1]} {dt.day:2d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {dt.year} GMT"


def serial_hex(n: int) -> str:
    """i2a_ASN1_INTEGER: upper-case hex, whole bytes, no separators."""
    if n < 0:
        return "-" + serial_hex(-n)
    h = format(n, "X")
    return ("0" + h) if len(h) % 2 else h


def oneline(name_ptr) -> str:
    """X509_NAME_oneline: `/C=US/O=Org/CN=Client`."""
    ffi, lib = _binding()
    buf = ffi.new("char[]", 8192)
    return ffi.string(lib.X509_NAME_oneline(name_ptr, buf, 8192)).decode("ascii", "replace")


def utf8string_value(der: bytes) -> Optional[str]:
    """The text of a DER UTF8String (tag 12), else None."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    n, i = der[1], 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3 or len(der) < 2 + k:
            return None
        n, i = int.from_bytes(der[2:2 + k], "big"), 2 + k
    if len(der) != i + n:
        return None
    try:
        return der[i:i + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _header_safe(value: str) -> bool:
    return not any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value)


def client_cert_values(x509, bits: int, extensions=()) -> list[tuple[int, str, str]]:
    """[(bit, header name, value)] for a pyOpenSSL X509: what RProxy's
    headers carry (reference section 4), except that the certificate is
    URL-encoded PEM on one line, never obs-folded."""
    from cryptography import x509 as cx
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    _, lib = _binding()
    cert = x509.to_cryptography()
    out = []

    def want(bit):
        return bits & (1 << bit)

    if want(0):
        out.append((0, HEADER_NAMES[0], oneline(lib.X509_get_subject_name(x509._x509))))
    if want(1):
        out.append((1, HEADER_NAMES[1], oneline(lib.X509_get_issuer_name(x509._x509))))
    if want(2):
        out.append((2, HEADER_NAMES[2], openssl_time(cert.not_valid_before_utc)))
    if want(3):
        out.append((3, HEADER_NAMES[3], openssl_time(cert.not_valid_after_utc)))
    if want(4):
        out.append((4, HEADER_NAMES[4], serial_hex(cert.serial_number)))
    if want(5):
        out.append((5, HEADER_NAMES[5], ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA1()))))
    if want(7):
        pem = cert.public_bytes(Encoding.PEM).decode("ascii")
        import urllib.parse
        out.append((7, HEADER_NAMES[7], urllib.parse.quote(pem, safe="")))
    for bit, name, oid in extensions:
        if not want(bit):
            continue
        try:
            ext = cert.extensions.get_extension_for_oid(cx.ObjectIdentifier(oid))
        except cx.ExtensionNotFound:
            continue
        if not isinstance(ext.value, cx.UnrecognizedExtension):
            continue                    # extensions OpenSSL knows are never a bare UTF8String
        value = utf8string_value(ext.value.value)
        if value is not None and _header_safe(value):
            out.append((bit, name, value))
    return out


def pack_headers(values) -> bytes:
    """The fast path's header block: records [bit][length, 2 bytes LE][line]."""
    out = bytearray()
    for bit, name, value in values:
        line = f"{name}: {value}\r\n".encode("utf-8")
        if len(line) > 0xFFFF:
            continue
        out += bytes((bit, len(line) & 0xFF, len(line) >> 8)) + line
    return bytes(out)


class ClientCertHeaders:
    """Called by the loop once per handshake that carried a client
    certificate, on a server whose rules send some X-SSL-* header: returns
    the ready header block the rules then pick from."""

    def __init__(self, bits: int, extensions=()):
        self.bits = bits
        self.extensions = tuple(extensions)

    def __call__(self, ssl_address: int) -> bytes:
        from OpenSSL import crypto

        ffi, lib = _binding()
        x = lib.SSL_get_peer_certificate(ffi.cast("SSL *", ssl_address))
        if x == ffi.NULL:
            return b""
        return pack_headers(client_cert_values(crypto.X509._from_raw_x509_ptr(x), self.bits,
                                               self.extensions))


def header_bits(headers: Optional[Headers], ext_slots: dict) -> int:
    """RuleRt.xssl for a rule's headers block.  ext_slots maps (lower-case
    name, oid) to (extension bit, name as written), growing as new
    extensions are met."""
    from . import fastpath

    if headers is None:
        return 0
    bits = 0
    for key, bit in fastpath.XSSL_BITS.items():
        if getattr(headers, key):
            bits |= 1 << bit
    for ext in headers.x509_extensions:
        key = (ext.name.lower(), ext.oid)
        if key not in ext_slots:
            if FIRST_EXTENSION_BIT + len(ext_slots) > 63:
                raise TlsError("more than 56 different x509-extension headers")
            ext_slots[key] = (FIRST_EXTENSION_BIT + len(ext_slots), ext.name)
        bits |= 1 << ext_slots[key][0]
    return bits


# ---- everything a configuration needs, built once --------------------------------------

@dataclass
class CrlWatch:
    """A context whose CRLs are reloaded when their files change."""
    ctx: object
    ssl: SSL
    where: str
    signature: tuple
    slot: int = -1                      # the fast path's slot, set in the worker


@dataclass
class ServerTls:
    ctx: object
    verify_depth: int
    vhosts: dict = field(default_factory=dict)      # vhost index -> (ctx, verify depth)
    header_fn: Optional[ClientCertHeaders] = None   # set in the worker that uses it


@dataclass
class TlsSet:
    servers: dict = field(default_factory=dict)     # server index -> ServerTls
    downstreams: dict = field(default_factory=dict) # (server index, downstream name) -> ctx
    watches: list = field(default_factory=list)     # CrlWatch


def needed(cfg: Config) -> bool:
    return cfg.uses_tls()


def crl_signature(ssl: SSL) -> tuple:
    """What a CRL reload compares: the file's mtime and size, and for a
    directory its own mtime plus every entry's (a CRL replaced in place
    does not change the directory's mtime; RProxy only looked at one)."""
    sig = []
    crl = ssl.crl
    for path in (crl.file, crl.dir):
        if not path:
            continue
        try:
            st = os.stat(path)
            sig.append((path, st.st_mtime_ns, st.st_size))
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    st = os.stat(os.path.join(path, name))
                    sig.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((path, None))
    return tuple(sig)


def build(cfg: Config) -> TlsSet:
    from .acme.store import effective_ssl

    callbacks = _callbacks()
    out = TlsSet()
    for si, srv in enumerate(cfg.servers):
        if srv.ssl is not None and srv.ssl.enabled:
            where = f"ssl of server {srv.label}"
            sssl = effective_ssl(cfg, srv.ssl, si, -1)
            st = ServerTls(server_context(sssl, where, f"{srv.label}", callbacks), srv.ssl.verify_depth)
            _watch(out, st.ctx, srv.ssl, where)
            for vi, vh in enumerate(srv.vhosts):
                if vh.ssl is not None and vh.ssl.enabled:
                    vwhere = f"ssl of vhost {vh.name} (server {srv.label})"
                    vctx = server_context(effective_ssl(cfg, vh.ssl, si, vi), vwhere, f"{srv.label}/{vh.name}",
                                          callbacks)
                    st.vhosts[vi] = (vctx, vh.ssl.verify_depth)
                    _watch(out, vctx, vh.ssl, vwhere)
            out.servers[si] = st
        for ds in srv.downstreams:
            if ds.tls:
                ctx = downstream_context(ds)
                out.downstreams[(si, ds.name)] = ctx
                if ds.ssl is not None and ds.ssl.crl is not None and ds.ssl.verify_peer:
                    _watch(out, ctx, ds.ssl, f"ssl of downstream {ds.name}")
    return out


def _watch(out: TlsSet, ctx, ssl: SSL, where: str) -> None:
    if ssl.crl is not None and ssl.crl.reload > 0 and ssl.verify_peer:
        out.watches.append(CrlWatch(ctx, ssl, where, crl_signature(ssl)))


_loaded: dict[int, tuple[Config, TlsSet]] = {}


def load(cfg: Config) -> TlsSet:
    """The contexts of `cfg`, built on first use.  The master calls this
    before forking (privileged at start-up, as the dropped user on reload);
    its workers inherit the result."""
    hit = _loaded.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    tls_set = build(cfg)
    _loaded[id(cfg)] = (cfg, tls_set)
    return tls_set


def release(cfg: Config) -> None:
    """The master no longer needs `cfg`'s contexts (a reload replaced it)."""
    _loaded.pop(id(cfg), None)


# ---- CRL reloads, in a thread of the worker ----------------------------------------------

class CrlReloader(threading.Thread):
    """Checks the CRL files every `reload` seconds; when one changed, builds
    a new certificate store (CA + CRLs) off the loop and hands it to the
    loop through its control pipe.  A CRL that fails to load keeps the old
    store in force (and is retried at the next change)."""

    def __init__(self, watches, send: Callable[[bytes], None], record: Callable[[int, int], bytes],
                 log: Callable[[str, str], None]):
        super().__init__(name="rproxy-crl", daemon=True)
        self.watches = list(watches)
        self.send = send
        self.record = record
        self.log = log
        self.stop_event = threading.Event()
        self.next_check = {id(w): 0.0 for w in self.watches}

    def run(self) -> None:
        import time

        while not self.stop_event.is_set():
            now = time.monotonic()
            for w in self.watches:
                if now >= self.next_check[id(w)]:
                    self.next_check[id(w)] = now + w.ssl.crl.reload
                    self.check(w)
            wait = min(self.next_check.values()) - time.monotonic() if self.watches else 3600
            self.stop_event.wait(max(wait, 0.05))

    def check(self, w: CrlWatch) -> bool:
        sig = crl_signature(w.ssl)
        if sig == w.signature:
            return False
        try:
            store = build_store(w.ssl, w.where)
        except TlsError as e:
            self.log("error", f"CRL reload failed, the previous CRLs stay in force: {e}")
            w.signature = sig               # retried when the file changes again
            return False
        ffi, lib = _binding()
        lib.X509_STORE_up_ref(store._store)     # this reference goes to the context
        try:
            self.send(self.record(w.slot, int(ffi.cast("uintptr_t", store._store))))
        except OSError as e:
            lib.X509_STORE_free(store._store)
            self.log("error", f"CRL reload: cannot reach the loop: {e}")
            return False
        w.signature = sig
        self.log("notice", f"{w.where}: CRLs reloaded")
        return True


# ---- a worker's fast path -------------------------------------------------------------

def configure_worker(w, cfg: Config, ds_index: dict, log: Callable[[str, str], None]) -> Optional[TlsSet]:
    """Give worker `w`'s fast path its TLS tables: contexts of listeners,
    vhosts and downstreams, the X-SSL-* policy of every rule, the
    https-redirect vhosts; start the CRL reloader.  ds_index maps
    (server index, downstream name) to the fast path's downstream index.
    Returns what must stay alive as long as the worker runs."""
    from . import fastpath
    from .worker import set_https_redirects

    set_https_redirects(cfg)
    if not needed(cfg):
        return None
    tls_set = load(cfg)
    bind_fastpath()
    for (si, name), ctx in tls_set.downstreams.items():
        ds = next(d for d in cfg.servers[si].downstreams if d.name == name)
        fastpath.tls_set_downstream(ds_index[(si, name)], context_address(ctx), downstream_server_name(ds))
    ext_slots: dict = {}
    for si, st in tls_set.servers.items():
        srv = cfg.servers[si]
        wanted = 0
        for vi, vh in enumerate(srv.vhosts):
            for ri, rule in enumerate(vh.rules):
                bits = header_bits(rule.headers or vh.headers, ext_slots)
                if bits:
                    fastpath.tls_set_rule(si, vi, ri, bits)
                    wanted |= bits
        wanted &= ~(1 << CIPHER_BIT)        # the cipher needs no certificate: the loop has it
        headers = None
        if wanted:
            exts = [(bit, name, oid) for (_, oid), (bit, name) in ext_slots.items() if wanted & (1 << bit)]
            headers = ClientCertHeaders(wanted, exts)
            st.header_fn = headers          # the loop holds a borrowed reference
        fastpath.tls_set_server(si, context_address(st.ctx), st.verify_depth, headers)
        for vi, (vctx, depth) in st.vhosts.items():
            fastpath.tls_set_vhost(si, vi, context_address(vctx), depth)
    from .acme import store as acme_store

    if acme_store.managed(cfg) and tls_set.servers:
        from .acme.watch import Watcher

        control_fd, _ = w.control_pipe()
        Watcher(cfg, lambda rec: os.write(control_fd, rec), log).start()
    if tls_set.watches:
        for watch in tls_set.watches:
            watch.slot = fastpath.tls_register_context(context_address(watch.ctx))
        control_fd, _ = w.control_pipe()
        CrlReloader(tls_set.watches, lambda rec: os.write(control_fd, rec), fastpath.tls_store_record,
                    log).start()
    return tls_set
