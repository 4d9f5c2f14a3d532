"""Semantics layer: the directive table, value types, and the node collector.

Every directive rproxy knows is one row of TABLE: its name, the blocks it may
appear in, its type, default, range, whether its runtime exists yet, and a
one-line doc.  The README's configuration reference and the man page are
generated from this table (reference.py); loader.py turns the collected blocks
into the model.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Optional

from .. import accesslog
from .errors import ConfigError
from .model import Note, Position
from .parser import ListValue, Node, Scalar


class TypeContext:
    """What a value type may use besides the value: a place for notes."""

    def __init__(self, notes: list[Note]):
        self.notes = notes

    def note(self, pos: Optional[Position], message: str) -> None:
        self.notes.append(Note(pos, message))


# --------------------------------------------------------------------------
# value types: each takes the parsed value and returns a Python value or
# raises ConfigError at the value's (or the offending list item's) position.
# --------------------------------------------------------------------------

def _scalar(v, what: str) -> Scalar:
    if isinstance(v, ListValue):
        if len(v.items) == 1:       # libconfuse: { x } is a one-element list
            return v.items[0]
        raise ConfigError(f"expected {what}, got a list of {len(v.items)}", v.pos)
    return v


def _items(v) -> list[Scalar]:
    return v.items if isinstance(v, ListValue) else [v]


_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def t_bool(v, ctx=None) -> bool:
    s = _scalar(v, "a boolean")
    low = s.text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"invalid boolean {s.text!r}", s.pos, hint="use true/yes/on or false/no/off")


def _c_int(s: Scalar) -> int:
    """C strtol base 0, as libconfuse: 0x hex, leading 0 octal, sign allowed."""
    text = s.text.strip()
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        hint = None
        if re.fullmatch(r"[+-]?0[0-9]+", text):
            hint = "a leading 0 makes an integer octal (as in C): write it without the 0"
        elif re.fullmatch(r"[0-9]+;", text):
            hint = "no ';' after values: options are separated by newlines or spaces"
        raise ConfigError(f"invalid integer {s.text!r}", s.pos, hint=hint)
    sign, body = m.groups()
    if body.lower().startswith("0x"):
        n = int(body, 16)
    elif body.startswith("0") and len(body) > 1:
        n = int(body, 8)
    else:
        n = int(body)
    return -n if sign == "-" else n


def t_int(v, ctx=None) -> int:
    return _c_int(_scalar(v, "an integer"))


_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}


def t_size(v, ctx=None) -> int:
    """Bytes: an integer (C syntax, as RProxy read it), or a number with a
    binary unit: 512b, 64k, 1.5m, 1g (k = 1024)."""
    s = _scalar(v, "a size")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*", s.text)
    if m:
        unit = _SIZE_UNITS.get(m.group(2).lower())
        if unit is not None:
            n = Fraction(m.group(1)) * unit
            if n.denominator != 1:
                raise ConfigError(f"invalid size {s.text!r}: not a whole number of bytes", s.pos)
            return int(n)
    elif re.fullmatch(r"\s*[+-]?(0[xX][0-9a-fA-F]+|\d+)\s*", s.text):
        n = _c_int(s)
        if n < 0:
            raise ConfigError(f"invalid size {s.text!r}: a size cannot be negative", s.pos)
        return n
    raise ConfigError(f"invalid size {s.text!r}", s.pos, hint="bytes (65536) or a unit: 64k, 5m, 1g")


_DURATION_UNITS = {"us": Fraction(1, 10 ** 6), "ms": Fraction(1, 1000), "s": Fraction(1),
                   "m": Fraction(60), "min": Fraction(60), "h": Fraction(3600), "d": Fraction(86400)}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([a-zA-Z]+)")


def t_duration(v, ctx=None) -> float:
    """Seconds: a bare number (seconds; RProxy 1.x's integer form), a value
    with units (250ms, 5s, 2m, 1h, 1m30s), or RProxy 2.x's { sec, usec }."""
    if isinstance(v, ListValue) and len(v.items) == 2:
        sec, usec = (_c_int(x) for x in v.items)
        if sec < 0 or usec < 0:
            raise ConfigError("a { sec, usec } duration cannot be negative", v.pos)
        return float(Fraction(sec) + Fraction(usec, 10 ** 6))
    if isinstance(v, ListValue) and len(v.items) > 2:
        raise ConfigError(f"expected a duration or {{ sec, usec }}, got a list of {len(v.items)}", v.pos)
    s = _scalar(v, "a duration")
    text = s.text.strip()
    if text.startswith("-"):
        raise ConfigError(f"invalid duration {s.text!r}: a duration cannot be negative", s.pos)
    if re.fullmatch(r"\+?\d+\.\d+", text):
        return float(Fraction(text.lstrip("+")))
    if re.fullmatch(r"\+?(0[xX][0-9a-fA-F]+|\d+)", text):
        return float(_c_int(s))
    total, end = Fraction(0), 0
    for m in _DURATION_PART.finditer(text):
        unit = _DURATION_UNITS.get(m.group(2).lower())
        if m.start() != end or unit is None:
            break
        total += Fraction(m.group(1)) * unit
        end = m.end()
    else:
        if end == len(text) and end:
            return float(total)
    raise ConfigError(f"invalid duration {s.text!r}", s.pos,
                      hint="seconds (30), units (250ms, 5s, 2m, 1h, 1m30s) or { sec, usec }")


def t_string(v, ctx=None) -> str:
    return _scalar(v, "a string").text


def t_list(v, ctx=None) -> tuple:
    return tuple(x.text for x in _items(v))


def resolve_path(text: str, pos: Position) -> str:
    """A path as written, made absolute against the directory of the file
    that contains it (so a daemon that chdirs to / still finds it)."""
    if os.path.isabs(text):
        return os.path.normpath(text)
    if pos.file.startswith("<"):
        base = os.getcwd()
    else:
        base = os.path.dirname(os.path.abspath(pos.file))
    return os.path.normpath(os.path.join(base, text))


def t_path(v, ctx=None) -> str:
    s = _scalar(v, "a path")
    if not s.text:
        raise ConfigError("empty path", s.pos)
    return resolve_path(s.text, s.pos)


_UNIX_PATH_MAX = 107      # sizeof(sun_path) - 1 on Linux


def _unix_addr(s: Scalar) -> str:
    raw = s.text[5:]
    if not raw:
        raise ConfigError("unix: needs a socket path, e.g. unix:/run/rproxy.sock", s.pos)
    path = resolve_path(raw, s.pos)
    if len(path.encode()) > _UNIX_PATH_MAX:
        raise ConfigError(f"unix socket path is {len(path.encode())} bytes long; the limit is "
                          f"{_UNIX_PATH_MAX}", s.pos)
    return "unix:" + path


def _ip(text: str) -> Optional[str]:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def t_listen_address(v, ctx=None) -> str:
    """IPv4 or IPv6 literal (libevhtp's ipv4:/ipv6: prefixes and [v6]
    brackets accepted), or unix:/path.  No names: a listener binds before
    anything could resolve them."""
    s = _scalar(v, "an address")
    text = s.text.strip()
    if text.lower().startswith("unix:"):
        return _unix_addr(s)
    for prefix in ("ipv4:", "ipv6:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = _ip(text)
    if ip is None:
        if not text:
            raise ConfigError("empty listen address", s.pos, hint="0.0.0.0 for every IPv4 address, :: for IPv6")
        hint = "an IPv4 or IPv6 address (e.g. 0.0.0.0, ::1) or unix:/path; names are not resolved"
        if re.fullmatch(r"[^:]+:\d+", text):
            hint = "put the port in 'port'"
        raise ConfigError(f"invalid listen address {s.text!r}", s.pos, hint=hint)
    return ip


_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
                       r"(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


def t_address(v, ctx=None) -> str:
    """A downstream address: IPv4, IPv6, a host name (resolved when a worker
    starts), or unix:/path."""
    s = _scalar(v, "an address")
    text = s.text.strip()
    if text.lower().startswith("unix:"):
        return _unix_addr(s)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = _ip(text)
    if ip is not None:
        return ip
    if _HOSTNAME.fullmatch(text) and not re.fullmatch(r"[\d.]+", text):
        return text
    if not text:
        raise ConfigError("empty address", s.pos)
    hint = "an IPv4 or IPv6 address, a host name, or unix:/path"
    if re.fullmatch(r"[^:]+:\d+", text):
        hint = "put the port in 'port'"
    raise ConfigError(f"invalid address {s.text!r}", s.pos, hint=hint)


def _glob_item(s: Scalar) -> str:
    if not s.text or re.search(r"\s", s.text):
        raise ConfigError(f"invalid glob {s.text!r}: empty or containing blanks", s.pos)
    return s.text


def t_cidr_list(v, ctx=None) -> tuple:
    """Addresses or networks (10.0.0.0/8, ::1), as their normalised text."""
    out = []
    for x in _items(v):
        try:
            out.append(str(ipaddress.ip_network(x.text.strip(), strict=False)))
        except ValueError:
            raise ConfigError(f"invalid address or network {x.text!r}", x.pos,
                              hint="an IPv4 or IPv6 address, or a CIDR such as 10.0.0.0/8") from None
    return tuple(out)


def t_access_list(v, ctx=None) -> tuple:
    """CIDR list for access rules: addresses, networks, or `all`."""
    out = []
    for x in _items(v):
        if x.text.strip().lower() == "all":
            out += ["0.0.0.0/0", "::/0"]
        else:
            out += t_cidr_list(x)
    return tuple(out)


_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:r)?\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*", re.I)
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def t_rate(v, ctx=None) -> float:
    """Requests per second, from `100/s`, `600/m`, `10/h`."""
    s = _scalar(v, "a rate")
    m = _RATE.fullmatch(s.text)
    if not m:
        raise ConfigError(f"invalid rate {s.text!r}", s.pos, hint="requests per unit: 100/s, 600/m, 10/h")
    per_s = float(m.group(1)) / _RATE_UNITS[m.group(2).lower()]
    if not (per_s > 0 and 1e6 / per_s <= 2 ** 40):
        raise ConfigError(f"rate {s.text!r} is out of range", s.pos, hint="between 1/h and 1000000/s")
    if per_s > 1e6:
        raise ConfigError(f"rate {s.text!r} is out of range", s.pos, hint="at most 1000000/s")
    return per_s


def t_limit_key(v, ctx=None) -> str:
    """client-ip | route | header:NAME."""
    s = _scalar(v, "a limit key")
    low = s.text.strip().lower()
    if low in ("client-ip", "route"):
        return low
    if low.startswith("header:"):
        name = s.text.strip()[7:]
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"invalid header name {name!r} in key", s.pos)
        return "header:" + name
    raise ConfigError(f"invalid key {s.text!r}", s.pos, hint="client-ip, route or header:NAME")


def t_glob_list(v, ctx=None) -> tuple:
    return tuple(_glob_item(x) for x in _items(v))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")    # RFC 9110 field-name


def _header_name(s: Scalar) -> str:
    if not _TOKEN.fullmatch(s.text):
        raise ConfigError(f"invalid header name {s.text!r}", s.pos,
                          hint="letters, digits and !#$%&'*+.^_`|~- only")
    return s.text


def t_header_name(v, ctx=None) -> str:
    return _header_name(_scalar(v, "a header name"))


def t_header_list(v, ctx=None) -> tuple:
    return tuple(_header_name(x) for x in _items(v))


def t_oid(v, ctx=None) -> str:
    s = _scalar(v, "an OID")
    if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", s.text):
        raise ConfigError(f"invalid OID {s.text!r}", s.pos, hint="numeric, dotted: 1.3.6.1.4.1.99999.1")
    return s.text


def t_url_path(v, ctx=None) -> str:
    s = _scalar(v, "a path")
    if not s.text.startswith("/") or re.search(r"[\s\x00-\x1f\x7f]", s.text):
        raise ConfigError(f"invalid request path {s.text!r}", s.pos, hint="starts with '/', no blanks")
    return s.text


def t_regex(v, ctx=None) -> str:
    s = _scalar(v, "a regular expression")
    from ..fastpath import check_posix_regex  # the engine the fast path runs (regcomp, ERE)

    problem = check_posix_regex(s.text)
    if problem:
        raise ConfigError(f"invalid regular expression {s.text!r}: {problem}", s.pos)
    return s.text


PROTOCOL_NAMES = {"all": "ALL", "sslv2": "SSLv2", "sslv3": "SSLv3", "tlsv1": "TLSv1",
                  "tlsv1.0": "TLSv1", "tlsv1.1": "TLSv1.1", "tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3"}


def t_protocols(v, ctx=None) -> tuple:
    out = []
    for s in _items(v):
        canon = PROTOCOL_NAMES.get(s.text.lower())
        if canon is None:
            close = difflib.get_close_matches(s.text.lower(), list(PROTOCOL_NAMES), n=1, cutoff=0.6)
            hint = (f"did you mean '{PROTOCOL_NAMES[close[0]]}'?" if close
                    else "one of SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, ALL")
            raise ConfigError(f"unknown TLS protocol {s.text!r}", s.pos, hint=hint)
        if canon not in out:
            out.append(canon)
    return tuple(out)


_WEAK_CIPHER = re.compile(r"(?i)(^|[:+!-])(RC4|3DES|DES-CBC3|DES|MD5|EXP|EXPORT|NULL)")


def t_ciphers(v, ctx=None) -> str:
    s = _scalar(v, "a cipher list")
    try:
        from OpenSSL import SSL

        SSL.Context(SSL.TLS_METHOD).set_cipher_list(s.text.encode())
    except ImportError:       # pyOpenSSL is a dependency; without it, skip the check
        pass
    except Exception:
        raise ConfigError(f"no cipher in {s.text!r} is available in this OpenSSL", s.pos,
                          hint="an OpenSSL cipher string, e.g. ECDHE+AESGCM:ECDHE+CHACHA20") from None
    if ctx is not None and _WEAK_CIPHER.search(s.text):
        ctx.note(s.pos, "RC4, 3DES, DES, MD5, export and NULL ciphers are always excluded, "
                        "whatever 'ciphers' lists")
    return s.text


SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
                     "cron", "authpriv", "ftp", *(f"local{i}" for i in range(8)))
# RProxy's table spelled lpr as "lptr"; configs written for it keep working.
FACILITY_ALIASES = {"lptr": "lpr"}


def _facility(text: str, pos: Position) -> str:
    low = FACILITY_ALIASES.get(text.lower(), text.lower())
    if low not in SYSLOG_FACILITIES:
        close = difflib.get_close_matches(low, SYSLOG_FACILITIES, n=1, cutoff=0.6)
        raise ConfigError(f"unknown syslog facility {text!r}", pos,
                          hint=f"did you mean '{close[0]}'?" if close else "one of " + ", ".join(SYSLOG_FACILITIES))
    return low


def t_log_output(v, ctx=None) -> str:
    """stderr | stdout | file:PATH | syslog:FACILITY[:SOCKET]."""
    s = _scalar(v, "a log output")
    text = s.text.strip()
    if text.lower() in ("stderr", "stdout"):
        return text.lower()
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() == "file":
        if not rest:
            raise ConfigError("file: needs a path, e.g. file:/var/log/rproxy/access.log", s.pos)
        return "file:" + resolve_path(rest, s.pos)
    if sep and scheme.lower() == "syslog":
        facility, sep, sock = rest.partition(":")
        out = "syslog:" + _facility(facility, s.pos)
        if sep:
            # a datagram socket other than /dev/log (a chroot's, a test's)
            if not sock:
                raise ConfigError("syslog:FACILITY: needs a socket path after the second ':'", s.pos)
            path = resolve_path(sock, s.pos)
            if len(path.encode()) > _UNIX_PATH_MAX:
                raise ConfigError(f"syslog socket path is {len(path.encode())} bytes long; the limit is "
                                  f"{_UNIX_PATH_MAX}", s.pos)
            out += ":" + path
        return out
    hint = "stderr, stdout, file:PATH or syslog:FACILITY[:SOCKET]"
    if not sep and "/" in text:
        hint = f"write file:{text}"
    raise ConfigError(f"invalid log output {s.text!r}", s.pos, hint=hint)


def t_log_format(v, ctx=None) -> str:
    """RProxy's log format: literal text and {TOKEN}s (accesslog.TOKENS);
    {US_HDR} and {DS_HDR} take a header name as :'Name'.  RProxy silently
    dropped a logger whose format had an unknown token; here it is an error
    with its column.  The worker parses it again with the same function."""
    s = _scalar(v, "a log format")
    try:
        accesslog.parse_format(s.text)
    except accesslog.FormatError as e:
        raise ConfigError(e.message, s.pos_at(e.offset), hint=e.hint) from None
    return s.text


_CODINGS = ("br", "zstd", "gzip")


def t_codings(v, ctx=None) -> tuple:
    """Content codings rproxy can produce, in preference order."""
    out = []
    for s in _items(v):
        c = s.text.strip().lower()
        if c not in _CODINGS:
            raise ConfigError(f"unknown coding {s.text!r}", s.pos, hint="br, zstd or gzip")
        if c in out:
            raise ConfigError(f"coding {s.text!r} listed twice", s.pos)
        out.append(c)
    return tuple(out)


_MEDIA_TYPE = re.compile(r"[!#$%&'+.^_`|~0-9A-Za-z-]+/(\*|[!#$%&'+.^_`|~0-9A-Za-z-]+)")


def t_media_types(v, ctx=None) -> tuple:
    """type/subtype or type/* (no parameters), lower case."""
    out = []
    for s in _items(v):
        t = s.text.strip().lower()
        if not _MEDIA_TYPE.fullmatch(t):
            raise ConfigError(f"invalid media type {s.text!r}", s.pos, hint="type/subtype or type/*, e.g. text/*")
        out.append(t)
    return tuple(out)


_STALE = ("error", "timeout", "updating", "http_500", "http_502", "http_503", "http_504")


def t_stale(v, ctx=None) -> tuple:
    """cache-use-stale conditions."""
    out = []
    for s in _items(v):
        c = s.text.strip().lower()
        if c not in _STALE:
            raise ConfigError(f"unknown cache-use-stale condition {s.text!r}", s.pos,
                              hint="error, timeout, updating, http_500, http_502, http_503 or http_504")
        out.append(c)
    return tuple(out)


TYPES: dict[str, Callable[..., Any]] = {
    "bool": t_bool,
    "int": t_int,
    "size": t_size,
    "duration": t_duration,
    "string": t_string,
    "enum": t_string,                 # the Collector checks the value against `choices`
    "list": t_list,
    "path": t_path,
    "listen address": t_listen_address,
    "address": t_address,
    "glob list": t_glob_list,
    "CIDR list": t_cidr_list,
    "access list": t_access_list,
    "rate": t_rate,
    "limit key": t_limit_key,
    "header name": t_header_name,
    "header list": t_header_list,
    "OID": t_oid,
    "request path": t_url_path,
    "regex": t_regex,
    "protocol list": t_protocols,
    "cipher list": t_ciphers,
    "log output": t_log_output,
    "log format": t_log_format,
    "coding list": t_codings,
    "media type list": t_media_types,
    "stale list": t_stale,
}

LIST_TYPES = {"list", "glob list", "header list", "protocol list", "CIDR list", "coding list", "media type list",
              "stale list", "access list"}


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

_UNSET = object()

# Contexts are the block kinds; LOG_STREAM is the shared body of logging's
# request / error / general sub-blocks.
MAIN, SERVER, DOWNSTREAM, VHOST, RULE = "main", "server", "downstream", "vhost", "rule"
RETRY, REWRITE, HEALTH = "retry", "rewrite", "health-check"
STATUS = "status"
CACHE = "cache"
RATE_LIMIT, REDIS, ACCESS = "rate-limit", "redis", "access"
SSL, CRL, HEADERS, X509, LOGGING, LOG_STREAM = "ssl", "crl", "headers", "x509-extension", "logging", "log-stream"
ACME = "acme"
# issue 20 (edge.pxi): header rules, their free-form set/add blocks, security headers
HDR_RULES, HDR_PAIRS, SECHDR = "header-rules", "header-pairs", "security-headers"
FREEFORM = {HDR_PAIRS}            # blocks whose every `Name = value` is data, not a directive

CONTEXT_PHRASE = {MAIN: "the top level", LOG_STREAM: "a logging 'request', 'error' or 'general' block"}
CONTEXT_TITLE = {MAIN: "top level", LOG_STREAM: "logging → request / error / general",
                 CRL: "ssl → crl", X509: "headers → x509-extension", RETRY: "downstream → retry",
                 HEALTH: "downstream → health-check", RULE: "vhost → rule", REWRITE: "server → rewrite",
                 ACCESS: "vhost → access",
                 HDR_RULES: "request-headers / response-headers", SECHDR: "security-headers { }"}

ORIGINS = {"1": "RProxy 1.x", "2": "RProxy 2.x", "1,2": "RProxy 1.x, 2.x", "rproxy": "rproxy"}


@dataclass(frozen=True)
class Directive:
    name: str
    where: tuple[str, ...]            # contexts (block kinds) it may appear in
    type: str                         # a TYPES key, or "block"
    default: Any = None
    doc: str = ""
    field: Optional[str] = None       # key in the collected block (default: name with '_')
    lo: Optional[float] = None        # inclusive range for numbers
    hi: Optional[float] = None
    choices: tuple[str, ...] = ()     # enum: allowed values (lower case)
    aliases: tuple[tuple[str, str], ...] = ()   # enum: accepted spelling -> value
    titled: str = "no"                # blocks: "no" | "yes" | "optional"
    repeat: bool = False              # blocks: may appear more than once
    context: Optional[str] = None     # blocks: the context of the block's body (default: name)
    active: bool = True               # False: parsed and validated, behaviour not built yet
    origin: str = "1,2"               # "1", "2", "1,2" (RProxy dialects) or "rproxy" (extension)
    legacy_default: Any = _UNSET      # the default in a 1.x-form server, where it differs
    zero_default: bool = False        # an explicit 0 (RProxy: "none") means the default
    zero_note: Optional[str] = None   # what -t says when that happens
    required: bool = False            # documentation; loader.py enforces it

    @property
    def key(self) -> str:
        return self.field or self.name.replace("-", "_")

    @property
    def body(self) -> str:
        return self.context or self.name

    def default_for(self, legacy: bool):
        if legacy and self.legacy_default is not _UNSET:
            return self.legacy_default
        return self.default


def _d(name, where, type_, default=None, doc="", **kw) -> Directive:
    if isinstance(where, str):
        where = (where,)
    return Directive(name, tuple(where), type_, default, doc, **kw)


_TIMEOUT_NOTE = "RProxy read 0 as 'no timeout'; rproxy never disables it and uses its default"
_X_SSL = (("x-ssl-subject", "the client certificate's subject, as X-SSL-Subject"),
          ("x-ssl-issuer", "its issuer, as X-SSL-Issuer"),
          ("x-ssl-notbefore", "its notBefore date, as X-SSL-Notbefore"),
          ("x-ssl-notafter", "its notAfter date, as X-SSL-Notafter"),
          ("x-ssl-serial", "its serial number in hex, as X-SSL-Serial"),
          ("x-ssl-sha1", "its SHA-1 fingerprint, as X-SSL-Sha1"),
          ("x-ssl-cipher", "the negotiated cipher, as X-SSL-Cipher"))
LB_METHODS = ("rtt", "roundrobin", "most-idle", "none", "random", "least-pending")
LOG_LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
LOG_LEVEL_ALIASES = (("err", "error"), ("warning", "warn"), ("panic", "emerg"), ("critical", "crit"))

TABLE: tuple[Directive, ...] = (
    # ---- top level -------------------------------------------------------
    _d("workers", MAIN, "int", None, "worker processes (default: the largest `threads`, else one per CPU)",
       lo=1, hi=1024, origin="rproxy"),
    _d("accept-spread", MAIN, "enum", "exclusive", "how workers share a TCP listener: exclusive (one socket, "
       "EPOLLEXCLUSIVE wakes one worker) | reuseport (one SO_REUSEPORT socket per worker; restart to change)",
       choices=("exclusive", "reuseport"), origin="rproxy"),
    _d("daemonize", MAIN, "bool", False, "detach and run in the background (double fork, pidfile)"),
    _d("rootdir", MAIN, "path", "/", "directory a daemonized master changes to (RProxy never applied it)"),
    _d("user", MAIN, "string", None, "drop privileges to this user after binding"),
    _d("group", MAIN, "string", None, "drop privileges to this group after binding"),
    _d("max-nofile", MAIN, "int", 0, "RLIMIT_NOFILE to set at start (0 = leave as is)", lo=0),
    _d("memtrim-sz", MAIN, "size", 0, "malloc trim threshold in each worker (mallopt M_TRIM_THRESHOLD; "
       "0 = libc default)", lo=0, hi=2**31 - 1, origin="1"),   # mallopt takes a C int
    _d("pidfile", MAIN, "path", None, "write the master's pid here (atomically; removed at exit)", origin="rproxy"),
    _d("temp-dir", MAIN, "path", None, "directory for the temp files of buffered bodies, created unlinked "
       "(default: $TMPDIR, else /tmp)", origin="rproxy"),
    _d("state-dir", MAIN, "path", "/var/lib/rproxy", "directory for state kept across restarts (sticky.key, "
       "made 0600 by the master before it drops privileges)", origin="rproxy"),
    _d("shutdown-timeout", MAIN, "duration", 30.0,
       "longest a graceful stop or reload waits for busy connections (0 = do not wait)", origin="rproxy"),
    _d("error-log", MAIN, "log output", "stderr", "where the master and workers write their error log: "
       "stderr, file:PATH or syslog:FACILITY[:SOCKET]", origin="rproxy"),
    _d("log-level", MAIN, "enum", "info", "least severe message the error log keeps", choices=LOG_LEVELS,
       aliases=LOG_LEVEL_ALIASES, origin="rproxy"),
    _d("access-log-buffer", MAIN, "size", 65536, "access log lines a worker gathers per output before one "
       "write (0 = write each line at once)", lo=0, hi=16 * 1024 * 1024, origin="rproxy"),
    _d("access-log-flush", MAIN, "duration", 0.2, "longest an access log line waits in that buffer",
       lo=0.001, hi=60.0, origin="rproxy"),
    _d("reload-on-change", MAIN, "bool", False, "reload (as SIGHUP does) when the config file, an included "
       "file or a certificate file changes (inotify, debounced)", origin="rproxy"),
    _d("status", MAIN, "block", doc="the admin listener: GET /metrics (Prometheus) and /status (JSON)",
       origin="rproxy"),
    _d("acme", MAIN, "block", doc="automatic HTTPS: the ACME CA and where certificates are kept (vhosts "
       "opt in with `ssl { mode = acme }`)", origin="rproxy"),
    _d("server", MAIN, "block", doc="one listener", repeat=True),
    _d("cache", MAIN, "block", doc="a named shared response cache (RFC 9111) that rules refer to with "
       "`cache = NAME`", titled="yes", repeat=True, origin="rproxy"),

    # ---- cache (names fixed by issue 21) ----
    _d("path", CACHE, "path", None, "directory of the cache's files (one per entry; made at start)",
       origin="rproxy", required=True),
    _d("max-size", CACHE, "size", 1024 ** 3, "most bytes of entries on disk (least recently used evicted by "
       "the master's cache manager; 0 = unlimited)", lo=0, origin="rproxy"),
    _d("keys-zone", CACHE, "size", 10 * 1024 ** 2, "shared-memory index of the entries, 32 bytes a key "
       "(10m: 327,678 keys; a full index evicts the least recently used); kept across reloads of the same size",
       lo=65536, hi=1024 ** 3, origin="rproxy"),
    _d("inactive", CACHE, "duration", 600.0, "entries not used (stored or hit) for this long are evicted",
       origin="rproxy"),
    _d("rate-limit-zone", MAIN, "size", 1024 ** 2, "shared memory for rate limit states, kept across reloads "
       "of the same size: 8 bytes a key, 131,072 keys per MB (rounded down to a power of two)", lo=4096,
       hi=1024 ** 3, origin="rproxy"),
    _d("rate-limit", MAIN, "block", doc="a named rate limit, referenced by vhosts and rules (`rate-limit = "
       "{ NAME }`)", titled="yes", repeat=True, origin="rproxy"),
    _d("redis", MAIN, "block", doc="the Redis server of `store = redis` limits (one connection per worker)",
       origin="rproxy"),

    # ---- rate-limit / redis ----------------------------------------------
    _d("key", RATE_LIMIT, "limit key", "client-ip", "what gets its own budget: client-ip (the PROXY protocol "
       "one when trusted), header:NAME (requests without it are not limited), route (one for the whole "
       "vhost or rule)", origin="rproxy"),
    _d("rate", RATE_LIMIT, "rate", None, "sustained rate: 100/s, 600/m, 10/h", required=True, origin="rproxy"),
    _d("burst", RATE_LIMIT, "int", 1, "reject / dry-run: requests admitted at once; delay: requests queued "
       "beyond the one passing now (nginx's burst)", lo=1, hi=1000000, origin="rproxy"),
    _d("mode", RATE_LIMIT, "enum", "reject", "reject (429 + Retry-After), delay (hold up to burst, paced "
       "at rate; beyond: 429), dry-run (count and log only)", choices=("reject", "delay", "dry-run"),
       origin="rproxy"),
    _d("store", RATE_LIMIT, "enum", "local", "local (the shared zone: exact across this node's workers) | "
       "redis (one budget for every node using the same Redis)", choices=("local", "redis"), origin="rproxy"),
    _d("addr", REDIS, "address", "127.0.0.1", "Redis address (IPv4 or IPv6)", origin="rproxy"),
    _d("port", REDIS, "int", 6379, "Redis port", lo=1, hi=65535, origin="rproxy"),
    _d("timeout", REDIS, "duration", 0.05, "longest a Redis answer may take before `fail` applies",
       lo=0.001, hi=60, origin="rproxy"),
    _d("fail", REDIS, "enum", "open", "Redis down, slow or failing: open (admit and count) | closed (503)",
       choices=("open", "closed"), origin="rproxy"),

    # ---- acme ------------------------------------------------------------
    _d("directory", ACME, "string", "https://acme-v02.api.letsencrypt.org/directory",
       "the ACME directory URL (RFC 8555) of the CA", origin="rproxy"),
    _d("email", ACME, "string", None, "contact address given to the CA for the account", origin="rproxy"),
    _d("state-dir", ACME, "path", "/var/lib/rproxy/acme", "account key, certificate keys and chains "
       "(created 0700, owned by `user`)", origin="rproxy"),
    _d("challenge", ACME, "enum", "tls-alpn-01", "the challenge asked for first (both are answered when a "
       "listener can)", choices=("tls-alpn-01", "http-01"), origin="rproxy"),
    _d("ca", ACME, "path", None, "CA bundle trusted for the directory's own TLS (test CAs; default: the "
       "system's)", origin="rproxy"),
    _d("renew-before", ACME, "string", "1/3", "renew this long before expiry: a duration (30d) or a "
       "fraction of the lifetime (1/3, 0.25)", origin="rproxy"),

    # ---- status ----------------------------------------------------------
    _d("addr", STATUS, "listen address", "127.0.0.1", "listen address of the status listener (IPv4 or IPv6)",
       origin="rproxy"),
    _d("port", STATUS, "int", 9145, "its port", lo=1, hi=65535, origin="rproxy"),
    _d("allow", STATUS, "CIDR list", ("127.0.0.1/32", "::1/128"), "client addresses or networks allowed "
       "(everyone else gets 403)", origin="rproxy"),

    # ---- server ----------------------------------------------------------
    _d("addr", SERVER, "listen address", "127.0.0.1", "listen address: IPv4, IPv6 or unix:/path"),
    _d("port", SERVER, "int", 8080, "listen port (ignored for unix:)", lo=1, hi=65535),
    _d("backlog", SERVER, "int", 1024, "listen() backlog", lo=1),
    _d("proxy-protocol", SERVER, "bool", False, "expect a PROXY protocol v1 or v2 header on every connection "
       "(before TLS); its client address is used for X-Forwarded-For, access rules, limits and logs",
       origin="rproxy"),
    _d("proxy-protocol-from", SERVER, "CIDR list", (), "sources allowed to send that header (others are "
       "closed with a log line); required with proxy-protocol", origin="rproxy"),
    _d("threads", SERVER, "int", None, "RProxy's per-server thread count; sets the worker count when "
       "`workers` is not given", lo=1, hi=1024),
    _d("host", SERVER, "string", None, "1.x: accepted and never used by RProxy either", origin="1", active=False),
    _d("read-timeout", SERVER, "duration", 60.0, "client idle while a request is being read",
       zero_default=True, zero_note=_TIMEOUT_NOTE),
    _d("write-timeout", SERVER, "duration", 60.0, "a stalled write toward the client",
       zero_default=True, zero_note=_TIMEOUT_NOTE),
    _d("keepalive-timeout", SERVER, "duration", 75.0, "client idle between requests",
       zero_default=True, zero_note=_TIMEOUT_NOTE, origin="rproxy"),
    _d("pending-timeout", SERVER, "duration", 10.0, "longest a request waits for a downstream connection "
       "(then 503)", zero_default=True, zero_note="RProxy read 0 as 'wait forever'; rproxy uses its default"),
    _d("max-pending", SERVER, "int", 0, "requests allowed to wait for a downstream connection, per worker "
       "(0 = unlimited)", lo=0),
    _d("high-watermark", SERVER, "size", 0, "most response bytes in flight per exchange: a downstream is "
       "read this much at a time and not again until the client took it (0 = buffer-size)", lo=0,
       origin="2"),
    _d("disable-server-nagle", SERVER, "bool", False, "TCP_NODELAY on the listening socket: rproxy always "
       "sets it (a proxy writes whole heads; Nagle only adds delay), so false changes nothing", origin="2"),
    _d("disable-client-nagle", SERVER, "bool", False, "TCP_NODELAY on client connections: always set, "
       "as above", origin="2"),
    _d("disable-downstream-nagle", SERVER, "bool", False, "TCP_NODELAY on downstream connections: always "
       "set, as above", origin="2"),
    _d("max-request-line", SERVER, "size", 8192, "longest request line (414 beyond)", lo=64, hi=1024 ** 2,
       origin="rproxy"),
    _d("max-header-size", SERVER, "size", 16384, "largest request head (431 beyond)", lo=256, hi=16 * 1024 ** 2,
       origin="rproxy"),
    _d("http2", SERVER, "bool", None, "HTTP/2 toward clients: ALPN h2 on a TLS server (default on), prior "
       "knowledge (h2c) on a plain one (default off); streams go to downstreams as HTTP/1.1", origin="rproxy"),
    _d("http2-max-concurrent-streams", SERVER, "int", 100, "HTTP/2 streams a client may have open at once "
       "(SETTINGS; more are refused)", lo=1, hi=10000, origin="rproxy"),
    _d("http2-max-resets-per-second", SERVER, "int", 100, "HTTP/2 streams a client may reset per second "
       "before GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487)", lo=1, hi=100000, origin="rproxy"),
    _d("http2-max-control-frames-per-second", SERVER, "int", 500, "HTTP/2 SETTINGS, PING, PRIORITY and "
       "empty DATA frames a client may send per second before GOAWAY ENHANCE_YOUR_CALM", lo=1, hi=1000000,
       origin="rproxy"),
    _d("http2-max-continuations", SERVER, "int", 8, "HTTP/2 CONTINUATION frames one header block may have before "
       "the connection is closed (CONTINUATION flood, CVE-2024-27316)", lo=1, hi=10000, origin="rproxy"),
    _d("max-headers", SERVER, "int", 100, "most request header fields (431 beyond; at most 128)", lo=1, hi=128,
       origin="rproxy"),
    _d("client-max-body-size", SERVER, "size", 0, "largest request body (413 beyond; 0 = unlimited)", lo=0,
       origin="rproxy"),
    _d("client-body-buffer-size", SERVER, "size", 16384, "request body bytes buffered in memory before "
       "the rest goes to a temp file (request-buffering)", lo=0, hi=2**31 - 1, origin="rproxy"),
    _d("response-buffer-size", SERVER, "size", 65536, "response bytes a slow client may leave in memory "
       "before the rest goes to a temp file (response-buffering)", lo=0, hi=2**31 - 1, origin="rproxy"),
    _d("max-temp-file-size", SERVER, "size", 1024 ** 3, "largest temp file of a buffered response (then "
       "the downstream waits for the client again; 0 = memory only)", lo=0, origin="rproxy"),
    _d("client-body-timeout", SERVER, "duration", None, "longest wait between two reads of a request body "
       "(then 408; default: read-timeout)", zero_default=True, zero_note=_TIMEOUT_NOTE, origin="rproxy"),
    _d("send-timeout", SERVER, "duration", None, "longest wait between two writes toward the client (then "
       "the connection is closed; default: write-timeout)", zero_default=True, zero_note=_TIMEOUT_NOTE,
       origin="rproxy"),
    _d("buffer-size", SERVER, "size", 32768, "per-connection read buffer", lo=4096, hi=16 * 1024 ** 2,
       origin="rproxy"),
    _d("underscores-in-headers", SERVER, "enum", "drop", "request header names containing `_`: drop them, "
       "allow them (except spellings of a header rproxy owns or acts on, e.g. X_SSL_Subject), or reject "
       "the request with 400", choices=("drop", "allow", "reject"), origin="rproxy"),
    _d("lb-method", SERVER, "enum", "rtt", "1.x: how the server's rewrites pick a downstream",
       choices=LB_METHODS, origin="1"),
    _d("rewrite", SERVER, "block", doc="1.x: a regex route with a path rewrite, tried in file order",
       repeat=True, origin="1"),
    _d("headers", (SERVER, VHOST, RULE), "block", doc="request headers added toward the downstream "
       "(server level: 1.x only, where the block always existed)"),
    _d("ssl", (SERVER, VHOST, DOWNSTREAM), "block", doc="TLS for a listener, a vhost's SNI certificate, "
       "or (downstream) TLS toward the backend"),
    _d("logging", (SERVER, VHOST), "block", doc="request and error logs (1.x or 2.x form)"),
    _d("downstream", SERVER, "block", doc="a backend (named in 2.x, untitled in 1.x)", titled="optional",
       repeat=True),
    _d("vhost", SERVER, "block", doc="a virtual host, matched by Host / SNI", titled="yes", repeat=True,
       origin="2"),

    # ---- 1.x rewrite { src dst } -----------------------------------------
    _d("src", REWRITE, "regex", None, "POSIX extended regex searched in the request path", required=True,
       origin="1"),
    _d("dst", REWRITE, "string", None, "path prefix sent instead of everything up to the end of src's "
       "last group", required=True, origin="1"),

    # ---- downstream ------------------------------------------------------
    _d("addr", DOWNSTREAM, "address", None, "backend address: IPv4, IPv6, host name or unix:/path",
       legacy_default="127.0.0.1", required=True),
    _d("port", DOWNSTREAM, "int", None, "backend port (not for unix:)", lo=1, hi=65535,
       legacy_default=80, required=True),
    _d("enabled", DOWNSTREAM, "bool", True, "false takes the downstream out of rotation", origin="2"),
    _d("connections", DOWNSTREAM, "int", 1, "persistent connections per worker", lo=1, hi=65535,
       legacy_default=8),
    _d("max-connections", DOWNSTREAM, "int", None, "most connections per worker when every pooled one "
       "is busy and requests wait; extras close again once idle (default: 4 x connections)", lo=1,
       hi=65535, origin="rproxy"),
    _d("high-watermark", DOWNSTREAM, "size", 0, "most request-body bytes in flight per exchange: the client "
       "is read this much at a time and not again until the downstream took it (0 = buffer-size)", lo=0),
    _d("read-timeout", DOWNSTREAM, "duration", 60.0, "waiting for response bytes during an exchange",
       zero_default=True, zero_note=_TIMEOUT_NOTE),
    _d("write-timeout", DOWNSTREAM, "duration", 60.0, "a stalled write toward the downstream",
       zero_default=True, zero_note=_TIMEOUT_NOTE),
    _d("connect-timeout", DOWNSTREAM, "duration", 5.0, "longest a connect() may take", zero_default=True,
       zero_note=_TIMEOUT_NOTE, origin="rproxy"),
    _d("retry", DOWNSTREAM, "duration", 0.05, "first delay before reconnecting a failed connection "
       "(then backs off); { sec, usec } or a duration", legacy_default=1.0, origin="2"),
    _d("retry", DOWNSTREAM, "block", doc="1.x form of the reconnect delay", field="retry_block", origin="1"),
    _d("idle-timeout", DOWNSTREAM, "duration", 55.0, "pooled idle connections are refreshed after this",
       zero_default=True, zero_note=_TIMEOUT_NOTE, origin="rproxy"),
    _d("max-requests", DOWNSTREAM, "int", 0, "requests per connection before it is replaced (0 = unlimited)",
       lo=0, origin="rproxy"),
    _d("max-age", DOWNSTREAM, "duration", 0.0, "age at which a connection is replaced (0 = unlimited)", origin="rproxy"),
    _d("weight", DOWNSTREAM, "int", 1, "relative share of requests", lo=1, hi=1000, origin="rproxy"),
    _d("max-fails", DOWNSTREAM, "int", 3, "failed exchanges in a row (refused, reset, timed out, "
       "malformed) after which the downstream is ejected (0 = never)", lo=0, hi=1000, origin="rproxy"),
    _d("fail-timeout", DOWNSTREAM, "duration", 5.0, "how long an ejection lasts; doubled while the "
       "downstream keeps failing, up to 12 times this", origin="rproxy"),
    _d("pipeline", DOWNSTREAM, "int", 1, "requests in flight per connection once none is idle (only "
       "idempotent ones without a body; those behind a failed response are replayed once)",
       lo=1, hi=64, origin="rproxy"),
    _d("tls", DOWNSTREAM, "bool", False, "speak TLS to the downstream (settings in its `ssl { }`; its "
       "certificate is verified unless that says verify-peer = false)", origin="rproxy"),
    _d("tls-name", DOWNSTREAM, "string", None, "name sent as SNI and checked in the downstream's certificate "
       "(default: addr; no SNI for an IP address)", origin="rproxy"),
    _d("proxy-protocol", DOWNSTREAM, "enum", "off", "send a PROXY protocol header (the client's address) "
       "first on each connection; connections then become private, one client each, opened on demand up "
       "to max-connections per worker", choices=("off", "v1", "v2"), origin="rproxy"),
    _d("health-check", DOWNSTREAM, "block", doc="active HTTP health check", origin="rproxy"),
    _d("seconds", RETRY, "int", 1, "whole seconds", lo=0, origin="1"),
    _d("useconds", RETRY, "int", 0, "microseconds", lo=0, origin="1"),
    _d("path", HEALTH, "request path", "/", "path requested with GET", origin="rproxy"),
    _d("interval", HEALTH, "duration", 5.0, "time between checks", lo=0.001, origin="rproxy"),
    _d("timeout", HEALTH, "duration", 2.0, "longest a check may take (shorter than interval)", lo=0.001,
       origin="rproxy"),
    _d("rise", HEALTH, "int", 2, "passed checks to mark a downstream up", lo=1, hi=100, origin="rproxy"),
    _d("fall", HEALTH, "int", 3, "failed checks to mark it down", lo=1, hi=100, origin="rproxy"),

    # ---- vhost -----------------------------------------------------------
    _d("aliases", VHOST, "glob list", (), "more host globs for this vhost", origin="2"),
    _d("strip-headers", VHOST, "header list", (), "response headers removed before the client sees them", origin="2"),
    _d("default", VHOST, "bool", False, "requests whose Host matches no vhost go here (one per server)",
       origin="rproxy"),
    _d("https-redirect", VHOST, "bool", False, "answer plain-HTTP requests with a 301 to the same URL "
       "over https", origin="rproxy"),
    _d("https-redirect-port", VHOST, "int", 443, "port in that redirect (443 is left out of the URL)",
       lo=1, hi=65535, origin="rproxy"),
    _d("rate-limit", (VHOST, RULE), "list", (), "rate limits (top-level `rate-limit NAME` blocks) every "
       "request here must pass; a rule's are checked after its vhost's", origin="rproxy"),
    _d("access", VHOST, "block", doc="client address rules: `allow` / `deny` CIDR lists, checked in file "
       "order, first match wins (deny: 403); no match: allowed", origin="rproxy"),
    _d("allow", ACCESS, "access list", (), "addresses or networks allowed (`all` for every address)",
       origin="rproxy"),
    _d("deny", ACCESS, "access list", (), "addresses or networks refused with 403 (`all` for every address)",
       origin="rproxy"),
    _d("rule", VHOST, "block", doc="a path rule, tried in file order", titled="yes", repeat=True, origin="2"),

    # ---- rule ------------------------------------------------------------
    _d("uri-match", RULE, "string", None, "exact path match", origin="2"),
    _d("uri-gmatch", RULE, "string", None, "glob path match (`*` matches anything)", origin="2"),
    _d("uri-rmatch", RULE, "regex", None, "POSIX extended regex searched in the path", origin="2"),
    _d("uri-prefix", RULE, "request path", None, "path prefix match", origin="rproxy"),
    _d("deny", RULE, "bool", False, "refuse this rule's requests (path blocking) with `status`",
       origin="rproxy"),
    _d("status", RULE, "int", None, "status of the rule's own answer: with `deny = true` 403 (default), 404, "
       "410 or 451; with `redirect` 301, 302 (default), 303, 307 or 308", lo=301, hi=499, origin="rproxy"),
    _d("downstreams", RULE, "list", (), "downstream names this rule forwards to (none = 404)", origin="2"),
    _d("lb-method", RULE, "enum", "rtt", "how a downstream is picked", choices=LB_METHODS, origin="2"),
    _d("replace-path", RULE, "string", None, "path sent downstream: replaces the matched prefix (uri-prefix), "
       "the whole path (uri-match) or the match with \\1..\\9 (uri-rmatch)", origin="rproxy"),
    _d("passthrough", RULE, "bool", False, "after the request head, relay raw bytes both ways",
       origin="2"),
    _d("allow-redirect", RULE, "bool", False, "follow a downstream's 377 + X-Internal-Redirect (only "
       "to targets the redirect-filter matches; refused without one)",
       origin="2"),
    _d("redirect-filter", RULE, "glob list", (), "host[:port] globs an internal redirect may go to", origin="2"),
    _d("request-buffering", (SERVER, RULE), "bool", True, "read the whole request body (memory, then a temp file) "
       "before taking a downstream connection; false streams it (server level: the default of its "
       "rules)", origin="rproxy"),
    _d("response-buffering", (SERVER, RULE), "bool", True, "take responses as fast as the downstream sends them "
       "(memory, then a temp file) so a slow client does not hold its connection; always off for "
       "text/event-stream and upgrades (server level: the default of its rules)", origin="rproxy"),
    _d("upstream-read-timeout", RULE, "duration", None, "client read timeout for this rule's requests "
       "(default: the server's)", zero_default=True, origin="2",
       zero_note="RProxy read 0 as 'no timeout'; rproxy keeps the server's timeout instead"),
    _d("upstream-write-timeout", RULE, "duration", None, "client write timeout for this rule's requests "
       "(default: the server's)", zero_default=True, origin="2",
       zero_note="RProxy read 0 as 'no timeout'; rproxy keeps the server's timeout instead"),

    _d("compress", RULE, "coding list", (), "compress responses on the fly with these codings, in this order "
       "of preference among those the client accepts equally (br, zstd, gzip; none = off)", origin="rproxy"),
    _d("compress-types", RULE, "media type list", ("text/*", "application/json", "application/javascript",
       "application/xml", "image/svg+xml"), "Content-Types compressed (`type/*` matches a whole type)",
       origin="rproxy"),
    _d("compress-min-size", RULE, "size", 256, "smallest Content-Length compressed (bodies of unknown "
       "length are compressed when their type matches)", lo=0, origin="rproxy"),

    _d("cache", RULE, "string", None, "the `cache` block whose entries this rule's responses use",
       origin="rproxy"),
    _d("cache-lock", RULE, "bool", False, "one request fills a missing entry; the others wait for it "
       "(up to 5 s, then go to the downstream without storing)", origin="rproxy"),
    _d("cache-use-stale", RULE, "stale list", (), "serve a stale entry on a downstream error (502/503), timeout "
       "(504), while another request updates it (updating), or instead of the downstream's own 500/502/503/504 "
       "(http_500...)", origin="rproxy"),
    # ---- serving and shaping at the edge (issue 20, edge.pxi / static.pxi) --
    _d("root", RULE, "path", None, "serve files from this directory (GET/HEAD; a uri-prefix maps onto it); "
       "a miss goes to the rule's downstreams when it has some", origin="rproxy"),
    _d("index", RULE, "list", ("index.html",), "files tried for a directory request", origin="rproxy"),
    _d("autoindex", RULE, "bool", False, "list a directory without an index file (else 403)", origin="rproxy"),
    _d("open-file-cache", RULE, "int", 1000, "open files of `root` each worker keeps (LRU; 0 = off)",
       lo=0, hi=1000000, origin="rproxy"),
    _d("open-file-cache-valid", RULE, "duration", 1.0, "how long a cached open file is used before its path "
       "is checked again (a replaced or deleted file is seen after at most this)", lo=0.0, hi=3600.0,
       origin="rproxy"),
    _d("redirect", RULE, "string", None, "answer with a redirect to this URL: $scheme $host $path (after a "
       "uri-prefix) $query (with its ?) $request_uri, \\1..\\9 of a uri-rmatch", origin="rproxy"),
    _d("sticky", RULE, "enum", "off", "keep a client on one downstream: a signed cookie, or a hash of the "
       "client address", choices=("off", "cookie", "ip-hash"), origin="rproxy"),
    _d("sticky-cookie", RULE, "string", "rp_srv", "name of that cookie", origin="rproxy"),
    _d("sticky-key", RULE, "string", None, "HMAC key of the cookie values (default: a random key made "
       "at first start and kept in <state-dir>/sticky.key)", origin="rproxy"),
    _d("security-headers", (VHOST, RULE), "enum", None, "off, basic or strict (see the README; a rule's "
       "replaces its vhost's; default off)", choices=("off", "basic", "strict"), origin="rproxy"),
    _d("security-headers", (VHOST, RULE), "block", doc="security headers one by one, over a profile",
       field="security_headers_block", context=SECHDR, origin="rproxy"),
    _d("request-headers", (VHOST, RULE), "block", doc="request header rules toward the downstream "
       "(a vhost's first, then its rule's)", context=HDR_RULES, origin="rproxy"),
    _d("response-headers", (VHOST, RULE), "block", doc="response header rules toward the client "
       "(also on redirects and files)", context=HDR_RULES, origin="rproxy"),
    _d("set", HDR_RULES, "block", doc="`Name = value` pairs replacing any header of that name",
       context=HDR_PAIRS, origin="rproxy"),
    _d("add", HDR_RULES, "block", doc="`Name = value` pairs added", context=HDR_PAIRS, origin="rproxy"),
    _d("remove", HDR_RULES, "header list", (), "header names removed", origin="rproxy"),
    _d("profile", SECHDR, "enum", "basic", "the headers to start from", choices=("off", "basic", "strict"),
       origin="rproxy"),
    *(_d(name, SECHDR, "string", None, f"{name} value (off = not sent)", origin="rproxy")
      for name in ("strict-transport-security", "content-security-policy", "x-content-type-options",
                   "referrer-policy", "x-frame-options", "permissions-policy", "cross-origin-opener-policy")),

    # ---- headers ---------------------------------------------------------
    _d("x-forwarded-for", HEADERS, "bool", True, "add the client address to X-Forwarded-For"),
    _d("x-forwarded-for-mode", HEADERS, "enum", "append", "append to the client's X-Forwarded-For chain, "
       "or replace it (RProxy's behaviour)", choices=("append", "replace"), origin="rproxy"),
    _d("x-real-ip", HEADERS, "bool", False, "set X-Real-IP to the client address", origin="rproxy"),
    _d("x-forwarded-proto", HEADERS, "bool", False, "set X-Forwarded-Proto (http or https)",
       origin="rproxy"),
    _d("x-forwarded-host", HEADERS, "bool", False, "set X-Forwarded-Host to the client's Host",
       origin="rproxy"),
    _d("x-forwarded-port", HEADERS, "bool", False, "set X-Forwarded-Port to the listener's port", origin="rproxy"),
    _d("forwarded", HEADERS, "bool", False, "add an RFC 7239 Forwarded element", origin="rproxy"),
    _d("via", HEADERS, "bool", False, "add a Via element", origin="rproxy"),
    *(_d(name, HEADERS, "bool", False, f"send {doc}", origin="2" if name == "x-ssl-sha1" else "1,2")
      for name, doc in _X_SSL),
    _d("x-ssl-certificate", HEADERS, "bool", True, "send the client certificate, as X-SSL-Certificate "
       "(URL-encoded PEM on one line)"),
    _d("x509-extension", HEADERS, "block", doc="send a client certificate extension as a header",
       repeat=True),
    _d("name", X509, "header name", None, "header to send", required=True),
    _d("oid", X509, "OID", None, "numeric OID of the extension (UTF8String values only)", required=True),

    # ---- ssl -------------------------------------------------------------
    _d("enabled", SSL, "bool", False, "false ignores the block; when true, cert, key, ca, capath and the "
       "CRL paths must exist"),
    # Paths are checked to exist when the block is in force: enabled, or a downstream's with tls = true.
    _d("mode", SSL, "enum", "files", "where a listener's or vhost's certificate comes from: files (cert "
       "and key), acme (issued and renewed through the acme block) or self-signed (made and renewed in "
       "state-dir)", choices=("files", "acme", "self-signed"), origin="rproxy"),
    _d("cert", SSL, "path", None, "PEM certificate (chain); required on an enabled listener or vhost; "
       "in a downstream: the client certificate rproxy presents"),
    _d("key", SSL, "path", None, "PEM private key, RSA or ECDSA, PKCS#1, SEC1 or PKCS#8, unencrypted "
       "(default: read from cert)"),
    _d("ca", SSL, "path", None, "CA bundle for verifying peers (client certificates; a downstream's "
       "certificate)"),
    _d("capath", SSL, "path", None, "hashed CA directory"),
    _d("ciphers", SSL, "cipher list", None, "OpenSSL cipher string (default: ECDHE with AES-GCM or "
       "ChaCha20; RC4, 3DES, MD5, export and NULL ciphers are always excluded); TLS 1.3 keeps OpenSSL's "
       "suites"),
    _d("protocols-on", SSL, "protocol list", ("TLSv1.2", "TLSv1.3"), "protocols to enable; only TLSv1.2 "
       "and TLSv1.3 are ever spoken (SSLv2/SSLv3/TLSv1/TLSv1.1 are accepted and refused); ALL = both"),
    _d("protocols-off", SSL, "protocol list", (), "protocols to disable, after protocols-on"),
    _d("verify-peer", SSL, "bool", False, "request and verify the client's certificate (in a downstream: "
       "verify the downstream's, default true; false accepts any, e.g. self-signed)"),
    _d("enforce-peer-cert", SSL, "bool", False, "reject a client that sends no certificate"),
    _d("verify-depth", SSL, "int", 9, "most intermediate CAs between a peer's certificate and the trusted "
       "CA (RProxy's 0 rejected every CA-issued certificate)", lo=0, hi=100, zero_default=True,
       zero_note="RProxy's verify-depth 0 rejected every CA-issued certificate; rproxy uses its default"),
    _d("context-timeout", SSL, "duration", 172800.0, "TLS session lifetime (the shorter of this and "
       "cache-timeout applies)"),
    _d("cache-enabled", SSL, "bool", True, "server-side session cache (session tickets work either way)"),
    _d("cache-size", SSL, "int", 20480, "sessions in that cache (pyOpenSSL's binding cannot set it: "
       "OpenSSL's 20480 applies)", lo=1, active=False),
    _d("cache-timeout", SSL, "duration", 300.0, "lifetime of a cached session or ticket (RProxy ignored it)"),
    _d("crl", SSL, "block", doc="certificate revocation lists (the client certificate's issuer must have "
       "one)", origin="2"),
    _d("file", CRL, "path", None, "PEM CRL file (may hold several CRLs)", origin="2"),
    _d("dir", CRL, "path", None, "hashed CRL directory, HASH.rN files (file or dir is required)", origin="2"),
    _d("reload", CRL, "duration", 10.0, "how often the CRL files are checked for changes (0 = never)",
       origin="2"),

    # ---- logging ---------------------------------------------------------
    _d("request", LOGGING, "block", doc="2.x: the access log (a vhost's replaces its server's)",
       context=LOG_STREAM, origin="2"),
    _d("error", LOGGING, "block", doc="2.x: where errors about this server's (vhost's) clients and "
       "downstreams go, instead of `error-log`", context=LOG_STREAM, origin="2"),
    _d("general", LOGGING, "block", doc="2.x: accepted; RProxy never read it and neither does rproxy",
       context=LOG_STREAM, origin="2"),
    _d("enabled", LOG_STREAM, "bool", False, "write this log", origin="2"),
    _d("output", LOG_STREAM, "log output", "file:/dev/stdout",
       "file:PATH, syslog:FACILITY[:SOCKET], stderr or stdout", origin="2"),
    _d("level", LOG_STREAM, "enum", "error", "error log: least severe message kept (not used by request)",
       choices=LOG_LEVELS, aliases=LOG_LEVEL_ALIASES, origin="2"),
    _d("format", LOG_STREAM, "log format", "{SRC} {HOST} {URI} {HOST}",
       "request log: line template of {TOKENS} (not used by error)", origin="2"),
    _d("enabled", LOGGING, "bool", False, "1.x: write the access log", origin="1"),
    _d("type", LOGGING, "enum", "file", "1.x: where the access log goes (fd wrote nothing in RProxy)",
       choices=("file", "syslog", "fd"), origin="1"),
    _d("filename", LOGGING, "path", "/dev/stdout", "1.x: access log file (type = file)", origin="1"),
    _d("format", LOGGING, "log format", "{SRC} {HOST} {URI} {HOST}", "1.x: access log line template",
       origin="1"),
    _d("facility", LOGGING, "enum", "local0", "1.x: syslog facility (type = syslog)",
       choices=SYSLOG_FACILITIES, aliases=tuple(FACILITY_ALIASES.items()), origin="1"),
    _d("errorlog", LOGGING, "path", None, "1.x: error log file of this server (default: `error-log`)",
       origin="1"),
)

# Names RProxy had at some point that rproxy does not accept, with the way to
# write the same thing now (reference §1.10 and §7).
RETIRED = {
    "if-uri-match": "RProxy 2.0.0-2.0.3 syntax; write rule NAME { uri-match = \"PATH\" ... }",
    "if-uri-gmatch": "RProxy 2.0.0-2.0.3 syntax; write rule NAME { uri-gmatch = \"GLOB\" ... }",
    "if-uri-rmatch": "RProxy 2.0.0-2.0.3 syntax; write rule NAME { uri-rmatch = \"REGEX\" ... }",
    "hostnames": "RProxy 2.0.0 syntax; write a vhost block per name, or its aliases",
    "named-curve": "from an unmerged RProxy 1.x change; OpenSSL chooses the curves",
}

# Keys of the 1.x form of `logging { }`; the 2.x form uses sub-blocks.
LOGGING_1X_KEYS = ("enabled", "type", "filename", "format", "facility", "errorlog")


def _index(table) -> dict[tuple[str, str], list[Directive]]:
    out: dict[tuple[str, str], list[Directive]] = {}
    for d in table:
        for w in d.where:
            out.setdefault((w, d.name), []).append(d)
    return out


_BY_CONTEXT = _index(TABLE)


def lookup(context: str, name: str, is_block: bool) -> Optional[Directive]:
    for d in _BY_CONTEXT.get((context, name), ()):
        if (d.type == "block") == is_block:
            return d
    return None


def names_in(context: str) -> list[str]:
    return sorted({n for (c, n) in _BY_CONTEXT if c == context})


def contexts_of(name: str) -> list[str]:
    return sorted({c for (c, n) in _BY_CONTEXT if n == name})


def default_of(context: str, name: str, legacy: bool = False):
    d = lookup(context, name, False)
    return None if d is None else d.default_for(legacy)


# --------------------------------------------------------------------------
# collecting a block's nodes, with errors, notes and the inactive list
# --------------------------------------------------------------------------

@dataclass
class Block:
    """A block's collected settings: converted values plus where each came from."""
    name: str                        # block name as written
    context: str
    title: Optional[str]
    pos: Position
    title_pos: Optional[Position] = None
    values: dict = field(default_factory=dict)
    where: dict = field(default_factory=dict)     # key -> Position of the value
    items: dict = field(default_factory=dict)     # key -> Positions of a list's items
    blocks: dict = field(default_factory=dict)    # key -> list[Block]
    failed: set = field(default_factory=set)      # keys given with a value that was rejected

    def has(self, key: str) -> bool:
        return key in self.values

    def given(self, key: str) -> bool:
        """Written in the file, valid or not (so a missing-X error is not added
        on top of an invalid-X one)."""
        return key in self.where or key in self.failed

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def pos_of(self, key: str) -> Position:
        return self.where.get(key, self.pos)

    def sub(self, name: str) -> list["Block"]:
        """The sub-blocks of a block directive, by its name (or field key)."""
        return self.blocks.get(name.replace("-", "_"), [])


def context_phrase(context: str, block_name: Optional[str] = None) -> str:
    if context in CONTEXT_PHRASE and not (context == LOG_STREAM and block_name):
        return CONTEXT_PHRASE[context]
    return f"a '{block_name or context}' block"


def where_text(first: Position, here: Position) -> str:
    """'line 4' when both are in one file, else 'file:4'."""
    return f"line {first.line}" if first.file == here.file else f"{first.file}:{first.line}"


def format_duration(x: Optional[float]) -> str:
    """Short and readable: 250ms, 1.05s, 90m, 1d."""
    if x is None:
        return "unset"
    if x == 0:
        return "0s"
    if x < 1:
        return f"{x * 1000:.6g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if x >= 2 * size and x % size == 0:
            return f"{int(x // size)}{unit}"
    return f"{x:.9g}s"


class Collector:
    def __init__(self):
        self.errors: list[ConfigError] = []
        self.notes: list[Note] = []
        self.inactive: list[Note] = []
        self.tctx = TypeContext(self.notes)

    def unknown(self, node: Node, context: str, block_name: str, blk: "Block") -> None:
        kind = "block" if node.kind == "block" else "option"
        elsewhere = [c for c in contexts_of(node.key) if c != context]
        here = context_phrase(context, block_name)
        if node.key in RETIRED:
            self.errors.append(ConfigError(f"'{node.name}' is not supported", node.pos, RETIRED[node.key]))
            return
        if elsewhere:
            msg = f"'{node.name}' is not allowed in {here}"
            hint = f"'{node.name}' belongs in " + " or ".join(context_phrase(c) for c in elsewhere)
        else:
            msg = f"unknown {kind} '{node.name}' in {here}"
            close = difflib.get_close_matches(node.key, names_in(context), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else None
            if close:
                # counts as given: no "has no 'addr'" on top of "did you mean 'addr'?"
                blk.failed.add(close[0].replace("-", "_"))
            elif node.kind == "block" and node.title is not None and lookup(context, node.title.text.lower(), True):
                hint = (f"'{node.title.text}' is read as this block's name: is a value with blanks left "
                        "unquoted just before it?")
        self.errors.append(ConfigError(msg, node.pos, hint))

    def collect(self, nodes: list[Node], context: str, name: str, title: Optional[Scalar],
                pos: Position, inside_inactive: bool = False) -> Block:
        blk = Block(name, context, title.text if title is not None else None, pos,
                    title.pos if title is not None else None)
        if context in FREEFORM:
            return self.pairs(nodes, blk)
        for node in nodes:
            d = lookup(context, node.key, node.kind == "block")
            if d is None:
                alt = lookup(context, node.key, node.kind != "block")
                if alt is not None:
                    if node.kind == "block" and context == VHOST and node.key == "default":
                        msg = ("a 'default { }' block is RProxy 2.0.0-2.0.3 syntax: mark a vhost with "
                               "'default = true', or end its rules with rule NAME { uri-gmatch = \"*\" }")
                    elif node.kind == "block":
                        msg = f"'{node.name}' is an option, not a block: write '{node.name} = value'"
                    else:
                        msg = f"'{node.name}' is a block: write '{node.name} {{ ... }}'"
                    self.errors.append(ConfigError(msg, node.pos))
                else:
                    self.unknown(node, context, name, blk)
                continue
            if not d.active and not inside_inactive:
                self.inactive.append(Note(node.pos, f"'{node.name}' in {context_phrase(context, name)}"))
            if d.type == "block":
                self.block(node, d, blk, inside_inactive or not d.active)
            else:
                self.option(node, d, blk)
        return blk

    def pairs(self, nodes: list[Node], blk: Block) -> Block:
        """A free-form block: `Header-Name = value` items, kept in order in
        blk.values["pairs"] as (name, value, position)."""
        out = []
        for node in nodes:
            if node.kind != "assign" or node.value is None:
                self.errors.append(ConfigError(f"'{node.name}': write Header-Name = \"value\"", node.pos))
                continue
            if node.value.broken:
                continue
            try:
                name = _header_name(Scalar(node.name, node.name, None, node.pos))
                value = _scalar(node.value, "a header value").text
            except ConfigError as e:
                self.errors.append(e)
                continue
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
                self.errors.append(ConfigError(f"header value of '{node.name}' holds a control character",
                                               node.value.pos))
                continue
            out.append((name, value, node.pos))
        blk.values["pairs"] = tuple(out)
        return blk

    def block(self, node: Node, d: Directive, parent: Block, inside_inactive: bool) -> None:
        if d.titled == "yes" and node.title is None:
            self.errors.append(ConfigError(f"'{node.name}' needs a name: {node.name} NAME {{ ... }}", node.pos))
            return
        if d.titled == "no" and node.title is not None:
            self.errors.append(ConfigError(f"'{node.name}' takes no name", node.title.pos))
            return
        if node.title is not None and node.title.broken:
            return
        existing = parent.blocks.setdefault(d.key, [])
        if not d.repeat and existing:
            self.errors.append(ConfigError(
                f"duplicate '{node.name}' block (first at {where_text(existing[0].pos, node.pos)})", node.pos))
            return
        if node.title is not None:
            title = node.title.text
            if not title:
                self.errors.append(ConfigError(f"'{node.name}' name cannot be empty", node.title.pos))
                return
            for other in existing:
                if other.title is not None and other.title.lower() == title.lower():
                    self.errors.append(ConfigError(
                        f"duplicate {node.key} name '{title}' "
                        f"(first at {where_text(other.title_pos or other.pos, node.pos)})", node.title.pos))
                    return
        existing.append(self.collect(node.children, d.body, node.key, node.title, node.pos, inside_inactive))

    def option(self, node: Node, d: Directive, blk: Block) -> None:
        value_node = node.value
        if value_node is None or value_node.broken:
            self.failed(blk, d, node)     # its ${VAR} error is already reported
            return
        try:
            value = TYPES[d.type](value_node, self.tctx)
            if d.type == "enum":
                value = self.enum(d, node)
        except ConfigError as e:
            e.message = f"'{node.name}': {e.message}"
            self.errors.append(e)
            self.failed(blk, d, node)
            return
        vpos = value_node.pos
        if node.kind == "append":
            if d.type not in LIST_TYPES:
                self.errors.append(ConfigError(f"'+=' only appends to lists; '{node.name}' is not a list",
                                               node.pos))
                return
            value = tuple(blk.values.get(d.key, d.default or ())) + value
            items = blk.items.get(d.key, ()) + tuple(x.pos for x in _items(value_node))
        else:
            items = tuple(x.pos for x in _items(value_node))
            if d.key in blk.values:
                self.notes.append(Note(node.pos, f"'{node.name}' is set again: this value replaces the one "
                                                 f"at {where_text(blk.where[d.key], vpos)}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problem = _range_problem(d, value)
            if problem:
                self.errors.append(ConfigError(f"'{node.name}' {problem}", vpos))
                self.failed(blk, d, node)
                return
            if d.zero_default and value == 0:
                default = d.default
                shown = format_duration(default) if d.type == "duration" else default
                tail = "" if default is None else f" ({shown})"
                self.notes.append(Note(vpos, f"'{node.name} = {_raw(value_node)}': "
                                             f"{d.zero_note or 'means the default'}{tail}"))
                blk.values.pop(d.key, None)
                blk.where[d.key] = vpos
                return
        blk.values[d.key] = value
        blk.where[d.key] = vpos
        blk.items[d.key] = items

    @staticmethod
    def failed(blk: Block, d: Directive, node: Node) -> None:
        """Remember a rejected value: its error is reported, and later checks
        must neither call it missing nor use an earlier value."""
        blk.failed.add(d.key)
        blk.values.pop(d.key, None)
        blk.where[d.key] = node.value.pos if node.value is not None else node.pos

    @staticmethod
    def enum(d: Directive, node: Node) -> str:
        s = _scalar(node.value, "a word")
        low = s.text.lower()
        low = dict(d.aliases).get(low, low)
        if low in d.choices:
            return low
        close = difflib.get_close_matches(low, d.choices, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "one of " + ", ".join(d.choices)
        raise ConfigError(f"invalid value {s.text!r}", s.pos, hint=hint)


def _raw(v) -> str:
    if isinstance(v, ListValue):
        return "{ " + ", ".join(x.raw for x in v.items) + " }"
    return v.raw


def _range_problem(d: Directive, value) -> Optional[str]:
    if d.zero_default and value == 0:
        return None
    # Implicit ceilings: what the runtime can hold.
    implicit_hi = {"duration": 30 * 86400,      # the fast path keeps milliseconds in 32 bits
                   "int": 2 ** 31 - 1,           # a C int
                   "size": 2 ** 62}.get(d.type)
    hi = d.hi if d.hi is not None else implicit_hi
    if d.type == "duration":
        fmt = format_duration
    elif d.type == "size":
        from .summary import format_size as fmt
    else:
        def fmt(x):
            return str(int(x)) if float(x).is_integer() else str(x)
    if d.lo is not None and d.hi is not None and not (d.lo <= value <= d.hi):
        return f"must be between {fmt(d.lo)} and {fmt(d.hi)}"
    if d.lo is not None and value < d.lo:
        return f"must be at least {fmt(d.lo)}"
    if hi is not None and value > hi:
        return f"must be at most {fmt(hi)}"
    return None
