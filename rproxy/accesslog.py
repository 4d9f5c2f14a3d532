"""Access log formats: the token table, and a format string parsed into items.

A format is literal text and `{TOKEN}`s, RProxy's syntax:

    '{SRC} - - [{TS}] "{REQUEST}" {STATUS} {BODY_BYTES_SENT} "{REF}" "{UA}"'

`{US_HDR}` and `{DS_HDR}` take a header name right after them, as
`{US_HDR}:'X-Request-Id'`.  Token names are case-insensitive, as in RProxy;
`{{` is a literal `{` (RProxy had no way to write one).

The configuration validator (config/directives.py, t_log_format) and the
worker use the same `parse_format`, so a format the config accepts is exactly
a format the worker can run.  The worker hands the parsed items to the fast
path (`rproxy._fastpath.accesslog_add`), which turns each into an op of its
cdef op table once, at start-up: logging a request runs those ops in C, with
no Python call per request or per token.

This module imports nothing heavy: the config layer imports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Token:
    name: str
    origin: str             # "RProxy" (its format tokens, bugs fixed) or "rproxy" (added)
    doc: str                # one line for the README's token table
    header: bool = False    # takes :'Header-Name'
    nginx: str = ""         # the nginx variable an nginx user would reach for


# Every token, in the README's order.  Values that carry bytes a client or a
# downstream chose are escaped: `"`, `\`, control bytes, DEL and non-ASCII
# bytes are written as \xHH, so a line can be neither split nor forged.
# A value that does not exist prints `-`.
TOKENS: tuple[Token, ...] = (
    Token("SRC", "RProxy", "client address: IPv4 or IPv6 (RProxy printed IPv6 as garbage), `unix:` for a unix socket",
          nginx="$remote_addr"),
    Token("US_SPORT", "RProxy", "client source port (`-` on a unix socket)", nginx="$remote_port"),
    Token("PROXY", "RProxy", "the downstream used, as configured (`addr:port`); `-` if none was used",
          nginx="$proxy_host"),
    Token("DS_SPORT", "RProxy", "local port of the connection to that downstream"),
    Token("TS", "RProxy", "when the request began (its first byte), local time, `20/Aug/2013:04:02:42 -0400` "
                          "(`%d/%b/%Y:%H:%M:%S %z`; RProxy printed the time the line was written)",
          nginx="$time_local"),
    Token("UA", "RProxy", "`User-Agent` request header (escaped)", nginx="$http_user_agent"),
    Token("METH", "RProxy", "request method (escaped)", nginx="$request_method"),
    Token("URI", "RProxy", "request path, without the query, as sent (escaped)", nginx="$uri"),
    Token("PROTO", "RProxy", "`HTTP/1.1` or `HTTP/1.0`; `-` if the request line was not complete",
          nginx="$server_protocol"),
    Token("STATUS", "RProxy", "status the client was sent (RProxy printed the downstream's, e.g. 377 for "
                              "an internal redirect); for a passthrough rule or an internal redirect, the "
                              "status line the relayed bytes began with (`-` if none).  With no response "
                              "delivered: 499 the client went away first, 502/504 the downstream failed "
                              "after its head was queued, 444 rproxy closed the connection (fast stop)",
          nginx="$status"),
    Token("REF", "RProxy", "`Referer` request header (RProxy read a `Referrer` header nobody sends)",
          nginx="$http_referer"),
    Token("HOST", "RProxy", "`Host` request header (escaped)", nginx="$http_host"),
    Token("US_HDR", "RProxy", "the named request header as the client sent it, its first occurrence "
                              "(escaped)", header=True, nginx="$http_NAME"),
    Token("DS_HDR", "RProxy", "the named response header as the downstream sent it, its first "
                              "occurrence (escaped)", header=True, nginx="$upstream_http_NAME"),
    Token("RULE", "RProxy", "name of the rule that routed the request"),
    Token("VHOST", "rproxy", "the vhost that took the request (its first name)", nginx="$server_name"),
    Token("CACHE", "rproxy", "what the response cache did: HIT, MISS, EXPIRED, REVALIDATED, STALE, UPDATING "
                             "or BYPASS (`-`: no cache, or a method that invalidates)", nginx="$upstream_cache_status"),
    Token("QUERY", "rproxy", "query string, without the `?` (escaped)", nginx="$args"),
    Token("REQUEST_URI", "rproxy", "request target as sent: path and query (escaped)", nginx="$request_uri"),
    Token("REQUEST", "rproxy", "request line: `METHOD target HTTP/1.1` (escaped)", nginx="$request"),
    Token("BYTES_SENT", "rproxy", "bytes sent to the client for this exchange: head and body",
          nginx="$bytes_sent"),
    Token("BODY_BYTES_SENT", "rproxy", "the same without the response head(s)", nginx="$body_bytes_sent"),
    Token("BYTES_RECEIVED", "rproxy", "bytes received from the client: request head and body (and a "
                                      "tunnel's client bytes)", nginx="$request_length"),
    Token("REQUEST_TIME", "rproxy", "milliseconds (3 decimals) from the first request byte to the end "
                                    "of the exchange", nginx="$request_time"),
    Token("DS_TIME", "rproxy", "milliseconds from handing the request to a downstream connection to the "
                               "end of its response; `-` if no downstream was used",
          nginx="$upstream_response_time"),
    Token("DS_HEADER_TIME", "rproxy", "milliseconds from handing the request to the downstream to its "
                                      "response head; `-` if none arrived", nginx="$upstream_header_time"),
    Token("DS_ADDR", "rproxy", "address of the downstream connection used (`ip:port`, `[ip6]:port` or "
                               "`unix:path`), as resolved when it connected; after an internal redirect, "
                               "the redirect target's", nginx="$upstream_addr"),
    Token("TLS_PROTO", "rproxy", "TLS protocol of the client connection (`TLSv1.3`); `-` on plain TCP",
          nginx="$ssl_protocol"),
    Token("TLS_CIPHER", "rproxy", "TLS cipher of the client connection, OpenSSL's name "
                                  "(`TLS_AES_256_GCM_SHA384`); `-` on plain TCP", nginx="$ssl_cipher"),
    Token("REQUEST_ID", "rproxy", "32 hex digits unique to this request (per-worker random prefix and "
                                  "sequence)", nginx="$request_id"),
    Token("TS_ISO", "rproxy", "when the request began, ISO 8601 local time with milliseconds: "
                              "`2026-11-23T12:00:00.123+0100`", nginx="$time_iso8601"),
    Token("MSEC", "rproxy", "when the line was written, Unix time in seconds with milliseconds", nginx="$msec"),
    Token("RATE_LIMIT", "rproxy", "the rate limit that refused (429), delayed, or in dry-run would have "
                                  "refused the request; `-` for none"),
)
BY_NAME = {t.name: t for t in TOKENS}
RPROXY_TOKENS = tuple(t.name for t in TOKENS if t.origin == "RProxy")

# RProxy's default format, repeated {HOST} included (reference 1.9).
DEFAULT_FORMAT = "{SRC} {HOST} {URI} {HOST}"

_TOKEN = re.compile(r"\{([A-Za-z_]+)\}")
_HEADER_ARG = re.compile(r":'([!#$%&*+.^_`|~0-9A-Za-z-]+)'")


class FormatError(ValueError):
    """A format that cannot be parsed: `offset` is where, in the text."""

    def __init__(self, message: str, offset: int, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint


@dataclass(frozen=True)
class Item:
    """One piece of a parsed format: literal text (token None) or a token,
    with its header name for US_HDR / DS_HDR."""
    token: Optional[str]
    text: str = ""


def escape_literal(text: str) -> str:
    """Literal text of a format goes into every line as is, except control
    characters: a newline there would split each line in two."""
    return "".join(c if (" " <= c != "\x7f") else f"\\x{ord(c):02X}" for c in text)


def parse_format(text: str) -> list[Item]:
    """The items of a format, literal runs merged; FormatError if a `{` does
    not start a token (RProxy then dropped the whole logger, silently)."""
    items: list[Item] = []
    literal: list[str] = []
    i = 0
    while True:
        j = text.find("{", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        if text.startswith("{{", j):
            literal.append("{")
            i = j + 2
            continue
        m = _TOKEN.match(text, j)
        name = m.group(1).upper() if m else None
        if name not in BY_NAME:
            shown = m.group(0) if m else text[j:j + 12]
            import difflib
            close = difflib.get_close_matches(name, BY_NAME, n=1) if name else []
            raise FormatError(f"unknown log format token {shown!r}", j,
                              hint=(f"did you mean '{{{close[0]}}}'?" if close else
                                    "tokens: " + " ".join("{" + t.name + "}" for t in TOKENS)
                                    + "; write {{ for a literal {"))
        i = m.end()
        header = ""
        if BY_NAME[name].header:
            h = _HEADER_ARG.match(text, i)
            if not h:
                raise FormatError(f"{m.group(0)} needs a header name: {m.group(0)}:'Name'", j)
            header = h.group(1)
            i = h.end()
        if literal and "".join(literal):
            items.append(Item(None, escape_literal("".join(literal))))
        literal = []
        items.append(Item(name, header))
    if "".join(literal):
        items.append(Item(None, escape_literal("".join(literal))))
    return items


def configure_worker(cfg) -> None:
    """Give a worker's fast path (its Worker built from `cfg`, tables set)
    its access logs and the routing of its error lines.  The outputs are the
    descriptors master/logfiles.py holds; each output gets one buffer, each
    distinct (output, format) pair one compiled op list."""
    import os

    from . import _fastpath as fp
    from . import errorlog
    from .master import logfiles

    proc = logfiles.error_output(cfg.error_log, cfg.log_level)
    fp.errorlog_output(proc.fd, errorlog.level_number(cfg.log_level), proc.facility,
                       proc.path if proc.kind == "syslog" else "")
    sinks: dict[str, int] = {}
    logs: dict[tuple[str, str], int] = {}

    def access_log(lg) -> int:
        if lg is None or not lg.request.enabled:
            return -1
        st = lg.request
        if st.output not in sinks:
            out = logfiles.access_output(st.output)
            sinks[st.output] = fp.accesslog_sink(
                out.fd, out.kind, out.spec, buffer_size=cfg.access_log_buffer,
                pri=(out.facility | 6) if out.kind == "syslog" else 0,      # LOG_INFO
                sock=out.path if out.kind == "syslog" else "")
        key = (st.output, st.format)
        if key not in logs:
            logs[key] = fp.accesslog_add(sinks[st.output], parse_format(st.format))
        return logs[key]

    def error_fd(lg) -> int:
        if lg is None or not lg.error.enabled:
            return 0
        out = logfiles.error_output(lg.error.output, lg.error.level)
        fp.errorlog_output(out.fd, errorlog.level_number(lg.error.level), out.facility,
                           out.path if out.kind == "syslog" else "")
        return out.fd

    servers, vhosts, downstreams = [], [], []
    for si, srv in enumerate(cfg.servers):
        srv_err = error_fd(srv.logging)
        servers.append((si, access_log(srv.logging), srv_err))
        for vi, vh in enumerate(srv.vhosts):
            vhosts.append((si, vi, access_log(vh.logging), error_fd(vh.logging)))
        downstreams += [(len(downstreams), srv_err) for _ in srv.downstreams]   # worker.build's order
    fp.accesslog_route(servers=servers, vhosts=vhosts, downstreams=downstreams)
    fp.accesslog_start(cfg.access_log_flush, int.from_bytes(os.urandom(8), "big"))
