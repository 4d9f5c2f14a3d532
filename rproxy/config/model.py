"""The configuration model: frozen dataclasses consumed by the master and workers.

This is the contract between the config layer and everything else.  Both
dialects of RProxy's language are normalised into this one (2.x) shape:
a 1.x server without vhosts becomes one catch-all vhost whose rules are its
`rewrite` blocks (or a single default rule) over all its downstreams.

Units: durations are float seconds (None = "not set" where the distinction
matters, e.g. per-rule overrides); sizes are int bytes.  Paths (certificates,
log files, pidfile, unix sockets) are absolute: relative ones in a file are
resolved against the directory of the file that contains them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Position:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Note:
    """Something `rproxy -t` should tell the user about a valid config: a value
    rproxy reads differently from RProxy, or a directive not active yet."""
    pos: Optional[Position]
    message: str

    def __str__(self) -> str:
        return f"{self.pos}: {self.message}" if self.pos else self.message


# TLS policy shared by the config layer (documentation, validation) and the
# TLS runtime.  RProxy's defaults enabled SSLv2/SSLv3 and RC4; rproxy speaks
# TLS 1.2 and 1.3 only and always removes the broken cipher families, even
# from a user's own `ciphers` string.
TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
LEGACY_TLS_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
DEFAULT_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                   "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                   "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
EXCLUDED_CIPHERS = "!aNULL:!eNULL:!EXPORT:!RC4:!3DES:!DES:!MD5"


@dataclass(frozen=True)
class CRL:
    file: Optional[str] = None
    dir: Optional[str] = None
    reload: float = 0.0              # seconds between reload checks, 0 = never


@dataclass(frozen=True)
class SSL:
    enabled: bool = False
    cert: Optional[str] = None
    key: Optional[str] = None
    ca: Optional[str] = None
    capath: Optional[str] = None
    ciphers: Optional[str] = None    # None = rproxy's safe default list
    protocols_on: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    protocols_off: tuple[str, ...] = ()
    verify_peer: bool = False
    enforce_peer_cert: bool = False
    verify_depth: int = 9
    context_timeout: float = 172800.0
    cache_enabled: bool = True
    cache_size: int = 20480
    cache_timeout: float = 300.0
    crl: Optional[CRL] = None
    mode: str = "files"                  # files | acme | self-signed (rproxy/acme/)


@dataclass(frozen=True)
class X509Extension:
    name: str
    oid: str


@dataclass(frozen=True)
class Headers:
    """Request headers the proxy adds toward the downstream (RProxy `headers { }`)."""
    x_forwarded_for: bool = True
    x_forwarded_for_mode: str = "append"   # "append" (RFC 7239 chain) or "replace" (RProxy 2.x)
    x_real_ip: bool = False
    x_forwarded_proto: bool = False
    x_forwarded_host: bool = False
    x_forwarded_port: bool = False
    forwarded: bool = False
    via: bool = False
    x_ssl_subject: bool = False
    x_ssl_issuer: bool = False
    x_ssl_notbefore: bool = False
    x_ssl_notafter: bool = False
    x_ssl_serial: bool = False
    x_ssl_sha1: bool = False
    x_ssl_cipher: bool = False
    x_ssl_certificate: bool = True
    x509_extensions: tuple[X509Extension, ...] = ()


@dataclass(frozen=True)
class LogStream:
    """One of a logging block's `request` / `error` sub-sections."""
    enabled: bool = False
    output: str = "file:/dev/stdout"    # file:PATH | syslog:FACILITY[:SOCKET] | stderr | stdout
    level: str = "error"                # emerg alert crit error warn notice info debug
    format: str = "{SRC} {HOST} {URI} {HOST}"


@dataclass(frozen=True)
class Logging:
    request: LogStream = field(default_factory=LogStream)
    error: LogStream = field(default_factory=lambda: LogStream(output="stderr"))


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/"
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True)
class Downstream:
    name: str
    addr: str
    port: int
    enabled: bool = True
    connections: int = 1
    high_watermark: int = 0
    read_timeout: float = 60.0           # waiting for response bytes during an exchange
    write_timeout: float = 60.0          # a stalled write toward the downstream
    connect_timeout: float = 5.0
    retry: float = 0.05                  # first reconnect delay; backs off with jitter
    idle_timeout: float = 55.0           # pooled idle connections are refreshed after this
    max_requests: int = 0                # per connection, 0 = unlimited
    max_age: float = 0.0                 # per connection, 0 = unlimited
    weight: int = 1
    max_fails: int = 3                   # failed exchanges in a row before ejection (0 = never)
    fail_timeout: float = 5.0            # first ejection; doubles while failing, up to 12x
    pipeline: int = 1                    # requests in flight per connection (idempotent only)
    max_connections: Optional[int] = None  # pool growth limit per worker (None: 4 x connections)
    health_check: Optional[HealthCheck] = None
    tls: bool = False
    ssl: Optional[SSL] = None
    tls_name: Optional[str] = None       # SNI and the verified name (default: addr)
    pos: Optional[Position] = field(default=None, compare=False)
    proxy_protocol: str = "off"          # "off" | "v1" | "v2": a PROXY header on private connections


@dataclass(frozen=True)
class Rule:
    name: str
    match: str                           # "exact" | "glob" | "regex" | "prefix" (a 1.x rewrite is "regex")
    pattern: str
    downstreams: tuple[str, ...] = ()
    lb_method: str = "rtt"
    rewrite_dst: Optional[str] = None    # 1.x rewrite { src dst }: the dst prefix
    replace_path: Optional[str] = None   # 2.x path rewriting (prefix/regex replacement)
    passthrough: bool = False
    allow_redirect: bool = False
    redirect_filter: tuple[str, ...] = ()
    upstream_read_timeout: Optional[float] = None
    upstream_write_timeout: Optional[float] = None
    request_buffering: Optional[bool] = None    # None: the server's
    response_buffering: Optional[bool] = None
    headers: Optional[Headers] = None
    compress: tuple[str, ...] = ()       # codings in preference order (br, zstd, gzip)
    compress_types: tuple[str, ...] = ()
    compress_min_size: int = 256
    cache: Optional[str] = None          # the name of a `cache` block
    cache_lock: bool = False
    cache_use_stale: tuple[str, ...] = ()   # error, timeout, updating, http_500, http_502, http_503, http_504
    rate_limit: tuple[str, ...] = ()     # names of top-level rate limits
    deny: bool = False                   # path blocking: answered with deny_status
    deny_status: int = 403
    pos: Optional[Position] = field(default=None, compare=False)
    # issue 20 (edge.pxi, static.pxi); header ops are (kind, name, value, tls_only),
    # the vhost's already merged in front of the rule's
    root: Optional[str] = None
    index: tuple[str, ...] = ("index.html",)
    autoindex: bool = False
    open_file_cache: int = 1000          # entries per worker, 0 = off
    open_file_cache_valid: float = 1.0   # seconds before a cached file's path is checked again
    redirect: Optional[str] = None
    status: int = 302
    sticky: str = "off"
    sticky_cookie: str = "rp_srv"
    sticky_key: Optional[str] = None
    request_ops: tuple = ()
    response_ops: tuple = ()


@dataclass(frozen=True)
class Vhost:
    name: str                            # glob, matched case-insensitively against Host / SNI
    aliases: tuple[str, ...] = ()
    strip_headers: tuple[str, ...] = ()
    ssl: Optional[SSL] = None
    headers: Optional[Headers] = None
    logging: Optional[Logging] = None
    rules: tuple[Rule, ...] = ()
    default: bool = False
    https_redirect: bool = False
    https_redirect_port: int = 443
    rate_limit: tuple[str, ...] = ()
    # access rules in file order: (network text, allowed); first match wins, none: allowed
    access: tuple[tuple[str, bool], ...] = ()
    pos: Optional[Position] = field(default=None, compare=False)


@dataclass(frozen=True)
class Server:
    addr: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 1024
    threads: Optional[int] = None
    proxy_protocol: bool = False         # expect PROXY v1/v2 before anything else
    proxy_protocol_from: tuple[str, ...] = ()
    read_timeout: float = 60.0           # client idle while a request is being read
    write_timeout: float = 60.0          # a stalled write toward the client
    keepalive_timeout: float = 75.0      # client idle between requests
    pending_timeout: float = 10.0
    max_pending: int = 0
    high_watermark: int = 0
    disable_server_nagle: bool = False
    disable_client_nagle: bool = False
    disable_downstream_nagle: bool = False
    max_request_line: int = 8192
    max_header_size: int = 16384
    max_headers: int = 100
    http2: Optional[bool] = None         # None: on for TLS servers, off for plain ones
    http2_max_concurrent_streams: int = 100
    http2_max_resets_per_second: int = 100
    http2_max_control_frames_per_second: int = 500
    http2_max_continuations: int = 8
    client_max_body_size: int = 0        # 0 = unlimited
    underscores_in_headers: str = "drop"  # drop | allow | reject (request header names with '_')
    buffer_size: int = 32768
    request_buffering: bool = True
    response_buffering: bool = True
    client_body_buffer_size: int = 16384
    response_buffer_size: int = 65536
    max_temp_file_size: int = 1024 ** 3
    client_body_timeout: Optional[float] = None   # None: read_timeout
    send_timeout: Optional[float] = None          # None: write_timeout
    ssl: Optional[SSL] = None
    logging: Optional[Logging] = None
    downstreams: tuple[Downstream, ...] = ()
    vhosts: tuple[Vhost, ...] = ()
    # "1": written in RProxy 1.x's form (no vhost blocks; normalised into one
    # catch-all vhost whose rules are the `rewrite` blocks), "2": with vhosts.
    dialect: str = "2"
    pos: Optional[Position] = field(default=None, compare=False)

    @property
    def label(self) -> str:
        if self.addr.startswith("unix:"):
            return self.addr
        if ":" in self.addr:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class Acme:
    """The `acme { }` block: the CA and where managed certificates live."""
    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    email: Optional[str] = None
    state_dir: str = "/var/lib/rproxy/acme"
    challenge: str = "tls-alpn-01"
    ca: Optional[str] = None
    renew_before: float = 1 / 3          # < 1: a fraction of the lifetime; else seconds
    pos: Optional[Position] = field(default=None, compare=False)


@dataclass(frozen=True)
class Status:
    """The admin listener (`status { }`): /metrics and /status."""
    addr: str = "127.0.0.1"
    port: int = 9145
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")

    @property
    def label(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class Cache:
    """A named response cache (`cache NAME { }`)."""
    name: str
    path: str
    max_size: int = 1024 ** 3
    keys_zone: int = 10 * 1024 ** 2
    inactive: float = 600.0


@dataclass(frozen=True)
class RateLimit:
    """A top-level `rate-limit NAME { }` (GCRA in the shared zone)."""
    name: str
    rate: float                          # requests per second
    burst: int = 1
    key: str = "client-ip"               # client-ip | route | header:NAME
    mode: str = "reject"                 # reject | delay | dry-run
    store: str = "local"


@dataclass(frozen=True)
class Redis:
    """`redis { }`: the store of `store = redis` limits."""
    addr: str = "127.0.0.1"
    port: int = 6379
    timeout: float = 0.05
    fail: str = "open"                   # open (admit) | closed (503)


@dataclass(frozen=True)
class Config:
    path: str
    servers: tuple[Server, ...] = ()
    workers: Optional[int] = None
    accept_spread: str = "exclusive"     # exclusive | reuseport (listeners.py)
    daemonize: bool = False
    rootdir: str = "/"
    user: Optional[str] = None
    group: Optional[str] = None
    max_nofile: int = 0                  # 0 = leave RLIMIT_NOFILE alone
    memtrim_sz: int = 0
    pidfile: Optional[str] = None
    shutdown_timeout: float = 30.0
    temp_dir: Optional[str] = None       # None: $TMPDIR, else /tmp
    state_dir: str = "/var/lib/rproxy"   # state kept across restarts (sticky.key)
    error_log: str = "stderr"            # stderr | file:PATH | syslog:FACILITY
    dialect: str = "2"                   # "1", "2", or "mixed" (servers of both forms)
    log_level: str = "info"              # the master's error log threshold
    access_log_buffer: int = 65536       # bytes of access log lines a worker gathers per output
    access_log_flush: float = 0.2        # seconds a gathered line may wait
    status: Optional[Status] = None      # the admin listener, when configured
    reload_on_change: bool = False
    caches: tuple[Cache, ...] = ()
    acme: Optional[Acme] = None          # given, or implied by a vhost in acme / self-signed mode
    rate_limits: tuple[RateLimit, ...] = ()
    rate_limit_zone: int = 1024 ** 2     # bytes of shared memory for limit states
    redis: Optional[Redis] = None
    # What `rproxy -t` reports besides the summary: values read differently
    # from RProxy (e.g. an explicit 0 timeout) and directives not active yet.
    notes: tuple[Note, ...] = field(default=(), compare=False)
    inactive: tuple[Note, ...] = field(default=(), compare=False)

    def uses_tls(self) -> bool:
        """A TLS listener or a TLS downstream (else rproxy.tls, pyOpenSSL and
        cryptography are never imported)."""
        return any((s.ssl is not None and s.ssl.enabled) or any(d.tls for d in s.downstreams)
                   for s in self.servers)

    def worker_count(self) -> tuple[int, str]:
        """How many workers to run, and which setting decided it (for `-t`)."""
        if self.workers:
            return self.workers, "workers"
        threads = [s.threads for s in self.servers if s.threads]
        if threads:
            return max(threads), "threads"
        import os

        return os.cpu_count() or 1, "cpus"
