"""Worker-side glue of issue 20 (rproxy/fastpath/edge.pxi, static.pxi): the
arguments of Worker.set_edge, the MIME table, sticky cookie values.

Runs once per worker at start-up; nothing here runs per request."""
from __future__ import annotations

import os

from .config.edge import needs_edge

__all__ = ["needs_edge", "worker_args", "configure_mime", "sticky_tokens", "load_sticky_key", "MIME_TYPES"]

# Made when the master imports this module, then replaced by the key kept in
# <state-dir>/sticky.key (load_sticky_key, run by the master before it drops
# privileges): every worker it forks, at start and at each reload, shares it,
# and the file keeps it across restarts.
_KEY = os.urandom(32)              # what secrets.token_bytes does, without importing it
_KEY_FROM: str | None = None        # the file _KEY came from, once loaded


def _wants_key(cfg) -> bool:
    return any(r.sticky == "cookie" and not r.sticky_key
               for s in cfg.servers for v in s.vhosts for r in v.rules)


def load_sticky_key(cfg, log) -> None:
    """Read <state-dir>/sticky.key, or make it (32 random bytes, 0600) when
    missing.  Only when some rule signs cookies without a sticky-key.  If the
    directory cannot be used, `log` says so and the key made at start stays
    (cookies then survive reloads only)."""
    global _KEY, _KEY_FROM
    if not _wants_key(cfg):
        return
    path = os.path.join(cfg.state_dir, "sticky.key")
    if _KEY_FROM == path:
        return
    try:
        try:
            with open(path, "rb") as f:
                key = f.read(4096)
            if len(key) < 32:
                raise OSError(f"{path}: shorter than 32 bytes")
        except FileNotFoundError:
            os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
            key = os.urandom(32)
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)          # a concurrent first start: the first one wins
            except FileExistsError:
                with open(path, "rb") as f:
                    key = f.read(4096)
            finally:
                os.unlink(tmp)
    except OSError as e:
        log("warn", f"sticky cookies: cannot keep the key in {path} ({e.strerror or e}); using a key made at "
            "start, so cookies survive reloads but not restarts (set state-dir or sticky-key)")
        return
    _KEY, _KEY_FROM = key, path

# the built-in table; /etc/mime.types (when present) adds to it, these win
MIME_TYPES = {
    "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
    "json": "application/json", "map": "application/json", "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8", "csv": "text/csv; charset=utf-8", "xml": "application/xml",
    "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "avif": "image/avif", "ico": "image/x-icon", "woff": "font/woff", "woff2": "font/woff2",
    "ttf": "font/ttf", "otf": "font/otf", "wasm": "application/wasm", "pdf": "application/pdf",
    "zip": "application/zip", "gz": "application/gzip", "tar": "application/x-tar", "mp4": "video/mp4",
    "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav",
    "webmanifest": "application/manifest+json", "bin": "application/octet-stream",
}


def _system_types(path="/etc/mime.types"):
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2 and "/" in parts[0]:
                    out.extend((ext, parts[0]) for ext in parts[1:])
    except OSError:
        pass
    return out


def configure_mime():
    from . import fastpath
    fastpath.set_mime_types([*_system_types(), *MIME_TYPES.items()])


def sticky_tokens(rule) -> list[str]:
    """The cookie value naming each of the rule's downstreams: an HMAC of the
    rule and downstream names, so it says nothing about addresses and cannot
    be made up without the key."""
    import base64
    import hashlib
    import hmac

    key = rule.sticky_key.encode() if rule.sticky_key else _KEY
    return [base64.urlsafe_b64encode(hmac.new(key, f"{rule.name}\0{d}".encode(), hashlib.sha256)
                                     .digest()[:16]).decode().rstrip("=") for d in rule.downstreams]


def worker_args(rule) -> dict:
    return dict(req_ops=rule.request_ops, resp_ops=rule.response_ops, redirect=rule.redirect,
                status=rule.status, root=rule.root, index_files=rule.index, autoindex=rule.autoindex,
                ofc_size=rule.open_file_cache, ofc_valid=rule.open_file_cache_valid,
                sticky=rule.sticky, cookie=rule.sticky_cookie,
                tokens=sticky_tokens(rule) if rule.sticky == "cookie" else ())
