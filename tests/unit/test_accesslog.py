"""Access log formats, escaping, the error log's lines and levels, log
output specs -- without sockets or processes (the e2e tests run them)."""
from __future__ import annotations

import datetime
import os
import re
import time

import pytest

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy import _fastpath as fp
from rproxy import accesslog, errorlog
from rproxy.accesslog import FormatError, Item, parse_format
from rproxy.master import logfiles

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_parse_format_splits_text_and_tokens():
    items = parse_format("{SRC} - [{ts}] \"{METH} {URI}\" {US_HDR}:'X-Id' {DS_HDR}:'Content-Type'")
    assert items == [Item("SRC"), Item(None, " - ["), Item("TS"), Item(None, '] "'), Item("METH"),
                     Item(None, " "), Item("URI"), Item(None, '" '), Item("US_HDR", "X-Id"),
                     Item(None, " "), Item("DS_HDR", "Content-Type")]


def test_double_brace_is_a_literal_brace():
    assert parse_format('{{"src":"{SRC}"}') == [Item(None, '{"src":"'), Item("SRC"), Item(None, '"}')]


def test_control_characters_in_literal_text_cannot_split_a_line():
    assert parse_format("a\nb\t{SRC}") == [Item(None, "a\\x0Ab\\x09"), Item("SRC")]


@pytest.mark.parametrize("fmt, offset, message", [
    ("{SRC} {NOPE}", 6, "unknown log format token '{NOPE}'"),
    ("{SRC} {", 6, "unknown log format token '{'"),
    ("x {US_HDR} y", 2, "{US_HDR} needs a header name: {US_HDR}:'Name'"),
    ("{DS_HDR}:'Bad Name'", 0, "{DS_HDR} needs a header name: {DS_HDR}:'Name'"),
])
def test_format_errors_say_where(fmt, offset, message):
    with pytest.raises(FormatError) as e:
        parse_format(fmt)
    assert (e.value.offset, e.value.message) == (offset, message)


def test_rproxy_tokens_are_all_there():
    assert accesslog.RPROXY_TOKENS == ("SRC", "US_SPORT", "PROXY", "DS_SPORT", "TS", "UA", "METH", "URI",
                                       "PROTO", "STATUS", "REF", "HOST", "US_HDR", "DS_HDR", "RULE")


def test_every_token_has_an_op_in_the_fast_path():
    assert set(fp.LOG_OPS) == set(accesslog.BY_NAME)


def test_every_token_is_documented_in_the_readme():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Logging"):]
    section = section[:section.index("\n## ", 1)]
    for t in accesslog.TOKENS:
        assert re.search(r"^\| `\{" + t.name + r"\}", section, re.M), t.name
        # the row says what the token table says (origin, nginx variable, meaning)
        name = "`{%s}:'Name'`" % t.name if t.header else "`{%s}`" % t.name
        nginx = f"`{t.nginx}`" if t.nginx else "–"
        assert f"| {name} | {t.origin} | {nginx} | {t.doc} |" in section, t.name


@pytest.mark.parametrize("raw, escaped", [
    (b'plain text/1.0 (x; y)', b'plain text/1.0 (x; y)'),
    (b'a"b', b'a\\x22b'),
    (b'a\\b', b'a\\x5cb'),
    (b"a\r\nb\x00c\x1f\x7f", b"a\\x0d\\x0ab\\x00c\\x1f\\x7f"),
    (b"caf\xc3\xa9 \xff", b"caf\\xc3\\xa9 \\xff"),
    (b"", b""),
])
def test_values_are_escaped_so_a_line_cannot_be_split_or_forged(raw, escaped):
    out = fp.log_escape(raw)
    assert out == escaped
    assert all(0x20 <= c < 0x7f and c != 0x22 for c in out)


def test_error_log_lines_have_a_timestamp_level_and_pid(tmp_path):
    path = tmp_path / "e.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    saved = (errorlog.fd(), errorlog.level())
    try:
        errorlog.configure(fd, "warn")
        errorlog.error("one %s %n")          # a message is never a format
        errorlog.warn("two")
        errorlog.notice("dropped: above the level")
        errorlog.info("dropped too")
    finally:
        errorlog.configure(saved[0], errorlog.LEVELS[saved[1]])
        os.close(fd)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    pid = os.getpid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} \[error\] %d: one %%s %%n" % pid, lines[0])
    assert lines[1].endswith(f"[warn] {pid}: two")


@pytest.mark.parametrize("name, number", [("emerg", 0), ("panic", 0), ("alert", 1), ("crit", 2),
                                          ("critical", 2), ("error", 3), ("err", 3), ("warn", 4),
                                          ("warning", 4), ("notice", 5), ("info", 6), ("debug", 7)])
def test_levels_and_their_syslog_spellings(name, number):
    assert errorlog.level_number(name) == number
    assert errorlog.level_number(name.upper()) == number


def test_syslog_line_is_the_local_rfc3164_form():
    now = time.mktime((2026, 2, 3, 4, 5, 6, 0, 0, -1))
    line = errorlog.syslog_line((16 << 3) | 3, "[error] x", now, 42)
    assert line == b"<131>Feb  3 04:05:06 rproxy[42]: [error] x"


@pytest.mark.parametrize("spec, parsed", [
    ("stderr", ("stderr", None, -1)),
    ("file:/dev/stderr", ("stderr", None, -1)),
    ("stdout", ("stdout", None, -1)),
    ("file:/dev/stdout", ("stdout", None, -1)),
    ("file:/var/log/rproxy/access.log", ("file", "/var/log/rproxy/access.log", -1)),
    ("syslog:local7", ("syslog", "/dev/log", 23 << 3)),
    ("syslog:daemon:/run/x.sock", ("syslog", "/run/x.sock", 3 << 3)),
])
def test_output_specs(spec, parsed):
    assert logfiles.parse(spec) == parsed


# ---- the compiled ops, on the fixed exchange of rproxy._fastpath.bench_accesslog ----------------

PROBE_REQUEST = (b"GET /a%20b/c?x=1&y=%22 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: ua \x80\xff\"/1\r\n"
                 b"Referer: http://ref.test/\r\nX-Id: 42\r\n\r\n")


def render(fmt, request=PROBE_REQUEST, response_headers=b""):
    return fp.bench_accesslog(request, parse_format(fmt), 1, response_headers)


def test_ops_render_a_known_exchange():
    fields = ("SRC US_SPORT PROXY DS_SPORT UA METH URI PROTO STATUS REF HOST RULE VHOST QUERY REQUEST_URI "
              "REQUEST BYTES_SENT BODY_BYTES_SENT BYTES_RECEIVED REQUEST_TIME DS_TIME DS_HEADER_TIME DS_ADDR "
              "TLS_PROTO TLS_CIPHER").split()
    line = render("|".join("{%s}" % f for f in fields) + "|{US_HDR}:'x-id'|{DS_HDR}:'Server'|{DS_HDR}:'Nope'",
                  response_headers=b"Server: test/1\r\n")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    got = dict(zip(fields + ["US_HDR", "DS_HDR", "DS_HDR2"], line[:-1].decode().split("|")))
    assert got == {
        "SRC": "192.0.2.1", "US_SPORT": "54321", "PROXY": "10.0.0.2:8081", "DS_SPORT": "40000",
        "UA": "ua \\x80\\xff\\x22/1", "METH": "GET", "URI": "/a%20b/c", "PROTO": "HTTP/1.1", "STATUS": "200",
        "REF": "http://ref.test/", "HOST": "example.com", "RULE": "api", "VHOST": "example.com",
        "QUERY": "x=1&y=%22", "REQUEST_URI": "/a%20b/c?x=1&y=%22", "REQUEST": "GET /a%20b/c?x=1&y=%22 HTTP/1.1",
        "BYTES_SENT": "1224", "BODY_BYTES_SENT": "1024", "BYTES_RECEIVED": str(len(PROBE_REQUEST)),
        "REQUEST_TIME": "2.500", "DS_TIME": "2.000", "DS_HEADER_TIME": "1.000", "DS_ADDR": "10.0.0.2:8081",
        "TLS_PROTO": "-", "TLS_CIPHER": "-", "US_HDR": "42", "DS_HDR": "test/1", "DS_HDR2": "-",
    }


def test_clock_tokens_agree_with_each_other():
    """{TS} and {TS_ISO}: when the request began (2.5 ms before the line,
    in the probe), local time; {MSEC}: when the line was written."""
    before = time.time()
    line = render("{TS}|{TS_ISO}|{MSEC}|{REQUEST_ID}").decode()
    after = time.time()
    ts, iso, msec, rid = line[:-1].split("|")
    began = datetime.datetime.strptime(ts, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    began_iso = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    assert ts[21:] == iso[23:] == time.strftime("%z", time.localtime(began))
    assert int(before) - 1 <= began <= after and before - 1 <= began_iso <= after
    assert int(began_iso) == int(began)
    assert before <= float(msec) + 0.001 and float(msec) <= after + 0.001
    assert 0.0015 <= float(msec) - began_iso <= 0.0035 + (after - before)
    assert re.fullmatch(r"[0-9a-f]{32}", rid)


def test_a_line_too_long_is_cut_and_still_one_line():
    long_ua = b"\x80" * 5000                  # 20000 bytes once escaped
    request = b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + long_ua + b"\r\n\r\n"
    line = fp.bench_accesslog(request, parse_format("{UA} {STATUS}"), 1)
    assert line.endswith(b"...\n") and line.count(b"\n") == 1 and len(line) <= 16384


def test_fast_path_error_lines_cannot_be_split(tmp_path):
    path = tmp_path / "e.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        fp.errorlog_output(fd, 7)
        fp.testhook_errorlog(fd, 3, b"a\r\nforged [error] 1: b\x1b[31m\x7f%n%s")
        fp.errorlog_output(fd, 0)
        fp.testhook_errorlog(fd, 3, b"filtered: error is above emerg")
    finally:
        os.close(fd)
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} \[error\] \d+: "
                        r"probe: a\?\?forged \[error\] 1: b\?\[31m\?%n%s", lines[0])
