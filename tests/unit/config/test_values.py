"""Every value type of the directive table, fed through the real parser."""
from __future__ import annotations

import os

import pytest

from rproxy.config import directives as D
from rproxy.config.errors import ConfigError
from rproxy.config.model import Note, Position
from rproxy.config.parser import parse_text


def value(text: str, file: str = "<string>"):
    """The parsed value of `x = TEXT`."""
    (node,) = parse_text(f"x = {text}\n", file, env={})
    return node.value


def convert(type_name: str, text: str, file: str = "<string>", notes=None):
    return D.TYPES[type_name](value(text, file), D.TypeContext(notes if notes is not None else []))


def error(type_name: str, text: str, file: str = "<string>") -> ConfigError:
    with pytest.raises(ConfigError) as e:
        convert(type_name, text, file)
    return e.value


# ---- bool -------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("true", True), ("yes", True), ("on", True), ("TRUE", True), ("Yes", True), ("ON", True),
    ("false", False), ("no", False), ("off", False), ("False", False), ("NO", False), ("Off", False),
    ("{ yes }", True),
])
def test_bool_spellings(text, expected):
    assert convert("bool", text) is expected


@pytest.mark.parametrize("text", ["1", "0", "maybe", "y", '""'])
def test_bool_rejects_other_words(text):
    e = error("bool", text)
    assert e.message.startswith("invalid boolean")
    assert e.hint == "use true/yes/on or false/no/off"


# ---- int --------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("42", 42), ("-7", -7), ("0x1f", 31), ("0XFF", 255), ("010", 8), ("0777", 511),
    ("{ 5 }", 5), ('"12"', 12), ('"+7"', 7),
])
def test_int_is_c_syntax(text, expected):
    assert convert("int", text) == expected


def test_int_leading_zero_is_octal_so_08_is_an_error_with_a_hint():
    e = error("int", "08")
    assert e.message == "invalid integer '08'"
    assert "octal" in e.hint


def test_int_with_a_semicolon_explains_separators():
    e = error("int", "80;")
    assert e.message == "invalid integer '80;'"
    assert "';'" in e.hint


@pytest.mark.parametrize("text", ["abc", "1.5", "5k", "0x", "1e3", "--1"])
def test_int_rejects(text):
    assert error("int", text).message.startswith("invalid integer")


def test_int_list_of_two_is_an_error_at_the_list():
    e = error("int", "{ 1, 2 }")
    assert e.message == "expected an integer, got a list of 2"
    assert (e.pos.line, e.pos.column) == (1, 5)


# ---- size -------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("65536", 65536), ("0x100", 256), ("512b", 512), ("64k", 65536), ("64K", 65536),
    ("64kb", 65536), ("64KiB", 65536), ("5m", 5 * 1024 ** 2), ("5MB", 5 * 1024 ** 2), ("5mib", 5 * 1024 ** 2),
    ("1g", 1024 ** 3), ("2GiB", 2 * 1024 ** 3), ("1.5k", 1536), ("1.5m", 1572864), ("10 k", 10240),
])
def test_size_units_are_binary(text, expected):
    assert convert("size", f'"{text}"') == expected


def test_size_not_a_whole_number_of_bytes():
    assert error("size", "0.1k").message == "invalid size '0.1k': not a whole number of bytes"


def test_size_negative():
    assert error("size", "-1").message == "invalid size '-1': a size cannot be negative"


@pytest.mark.parametrize("text", ["5t", "k", "lots", "1.5", "5 m b"])
def test_size_rejects(text):
    e = error("size", f'"{text}"')
    assert e.message.startswith(f"invalid size '{text}'")


# ---- duration ---------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0", 0.0), ("30", 30.0), ("010", 8.0), ("0x10", 16.0), ("1.5", 1.5), ("{ 2, 0 }", 2.0),
    ("{ 1, 50000 }", 1.05), ("{ 0, 5000 }", 0.005), ("{ 2 }", 2.0), ("250ms", 0.25), ("1500us", 0.0015),
    ("5s", 5.0), ("2m", 120.0), ("2min", 120.0), ("1h", 3600.0), ("1d", 86400.0), ("1m30s", 90.0),
    ("1h30m", 5400.0), ("2M", 120.0), ("5S", 5.0), ("0.5s", 0.5), ("1.5h", 5400.0), ("1s500ms", 1.5),
])
def test_duration_forms(text, expected):
    assert convert("duration", text) == expected


def test_duration_units_are_exact():
    # 250 * 0.001 in floats is 0.25000000000000006; units are applied exactly
    assert convert("duration", "250ms") == 0.25
    assert convert("duration", "100ms") == 0.1
    assert convert("duration", "{ 0, 100000 }") == 0.1


@pytest.mark.parametrize("text,message", [
    ("-5", "invalid duration '-5': a duration cannot be negative"),
    ("{ -1, 0 }", "a { sec, usec } duration cannot be negative"),
    ("{ 1, 2, 3 }", "expected a duration or { sec, usec }, got a list of 3"),
    ("5x", "invalid duration '5x'"),
    ("s", "invalid duration 's'"),
    ('"5 s"', "invalid duration '5 s'"),
    ("1m30", "invalid duration '1m30'"),
    ("soon", "invalid duration 'soon'"),
])
def test_duration_rejects(text, message):
    assert error("duration", text).message == message


# ---- strings and lists --------------------------------------------------------

def test_list_accepts_a_single_value_as_a_one_element_list():
    assert convert("list", "a") == ("a",)
    assert convert("list", "{ a, b, }") == ("a", "b")
    assert convert("list", "{}") == ()


def test_glob_list_rejects_blank_items_at_their_position():
    e = error("glob list", '{ ok, "two words" }')
    assert e.message == "invalid glob 'two words': empty or containing blanks"
    assert e.pos.column == 11


def test_header_list_and_name():
    assert convert("header list", "{ Server, X-Powered-By }") == ("Server", "X-Powered-By")
    assert error("header name", '"X Bad"').message == "invalid header name 'X Bad'"
    assert error("header list", '{ Ok, "a:b" }').message == "invalid header name 'a:b'"


@pytest.mark.parametrize("oid", ["1.2", "1.3.6.1.4.1.99999.1", "2.5.29.17"])
def test_oid_valid(oid):
    assert convert("OID", oid) == oid


@pytest.mark.parametrize("oid", ["1", "3.1", "1..2", "1.02", "a.b", "1.2."])
def test_oid_invalid(oid):
    assert error("OID", f'"{oid}"').message == f"invalid OID '{oid}'"


def test_request_path():
    assert convert("request path", "/api/") == "/api/"
    assert error("request path", "api/").message == "invalid request path 'api/'"
    assert error("request path", '"/a b"').message == "invalid request path '/a b'"


def test_path_is_resolved_against_the_containing_file(tmp_path):
    conf = str(tmp_path / "sub" / "x.conf")
    assert convert("path", "certs/a.pem", conf) == str(tmp_path / "sub" / "certs" / "a.pem")
    assert convert("path", "/etc/a.pem", conf) == "/etc/a.pem"
    assert convert("path", "../a/./b", conf) == str(tmp_path / "a" / "b")
    assert error("path", '""').message == "empty path"


def test_path_in_a_string_config_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert convert("path", "a.pem") == os.path.join(str(tmp_path), "a.pem")


# ---- addresses ----------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ('"::"', "::"), ('"::1"', "::1"),
    ('"[::1]"', "::1"), ('"[2001:DB8:0::1]"', "2001:db8::1"), ("ipv4:10.0.0.1", "10.0.0.1"),
    ('"ipv6:::1"', "::1"), ("unix:/run/rproxy.sock", "unix:/run/rproxy.sock"),
])
def test_listen_address(text, expected):
    assert convert("listen address", text) == expected


def test_listen_address_unix_relative_and_length(tmp_path):
    conf = str(tmp_path / "x.conf")
    assert convert("listen address", "unix:run/s.sock", conf) == "unix:" + str(tmp_path / "run" / "s.sock")
    e = error("listen address", "unix:/" + "a" * 107)
    assert e.message == "unix socket path is 108 bytes long; the limit is 107"
    assert error("listen address", "unix:").message.startswith("unix: needs a socket path")


@pytest.mark.parametrize("text,message,hint", [
    ("localhost", "invalid listen address 'localhost'", "names are not resolved"),
    ('"127.0.0.1:80"', "invalid listen address '127.0.0.1:80'", "put the port in 'port'"),
    ('""', "empty listen address", "0.0.0.0"),
    ("256.0.0.1", "invalid listen address '256.0.0.1'", "names are not resolved"),
])
def test_listen_address_rejects(text, message, hint):
    e = error("listen address", text)
    assert e.message == message
    assert hint in e.hint


@pytest.mark.parametrize("text,expected", [
    ("10.1.2.3", "10.1.2.3"), ('"::1"', "::1"), ('"[fe80::1]"', "fe80::1"), ("backend.internal", "backend.internal"),
    ("localhost", "localhost"), ("my_host-1.example.com.", "my_host-1.example.com."),
    ("unix:/run/app.sock", "unix:/run/app.sock"),
])
def test_downstream_address(text, expected):
    assert convert("address", text) == expected


@pytest.mark.parametrize("text,message", [
    ('"127.0.0.1:8080"', "invalid address '127.0.0.1:8080'"),
    ("999.1.1.1", "invalid address '999.1.1.1'"),
    ('"bad host"', "invalid address 'bad host'"),
    ('""', "empty address"),
])
def test_downstream_address_rejects(text, message):
    assert error("address", text).message == message


# ---- TLS ----------------------------------------------------------------------

def test_protocols_are_canonicalised_and_deduplicated():
    assert convert("protocol list", "{ tlsv1.2, TLSv1.3, all, SSLV3, TLSv1.2 }") == (
        "TLSv1.2", "TLSv1.3", "ALL", "SSLv3")
    assert convert("protocol list", "tlsv1.0") == ("TLSv1",)


def test_unknown_protocol_suggests_the_name_rproxy_meant():
    e = error("protocol list", "{ TLSv1.2, TLS1 }")
    assert e.message == "unknown TLS protocol 'TLS1'"
    assert e.hint == "did you mean 'TLSv1'?"
    assert e.pos.column == 16


def test_ciphers_are_checked_by_openssl_and_weak_ones_noted():
    notes: list[Note] = []
    assert convert("cipher list", '"ECDHE+AESGCM"', notes=notes) == "ECDHE+AESGCM"
    assert notes == []
    convert("cipher list", '"RC4+RSA:HIGH:+MEDIUM:+LOW"', notes=notes)
    assert len(notes) == 1 and "always excluded" in notes[0].message
    assert error("cipher list", '"NO-SUCH-CIPHER"').message == (
        "no cipher in 'NO-SUCH-CIPHER' is available in this OpenSSL")


def test_regex_is_checked_with_the_fast_paths_engine():
    assert convert("regex", '"^/things/(.*)$"') == "^/things/(.*)$"
    # POSIX ERE has no \d: regcomp reads it as a literal d, so it compiles
    assert convert("regex", r'"\\d+"') == r"\d+"
    assert error("regex", '"(("').message.startswith("invalid regular expression '((': ")
    assert error("regex", '"a{2,1}"').message.startswith("invalid regular expression 'a{2,1}': ")


# ---- logging ------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("stderr", "stderr"), ("STDOUT", "stdout"), ("file:/var/log/a.log", "file:/var/log/a.log"),
    ("syslog:local0", "syslog:local0"), ("syslog:LOCAL7", "syslog:local7"), ("syslog:lptr", "syslog:lpr"),
    ("syslog:daemon", "syslog:daemon"),
])
def test_log_output(text, expected):
    assert convert("log output", text) == expected


def test_log_output_file_is_resolved(tmp_path):
    assert convert("log output", "file:logs/a.log", str(tmp_path / "x.conf")) == f"file:{tmp_path}/logs/a.log"


@pytest.mark.parametrize("text,message,hint", [
    ("/var/log/a.log", "invalid log output '/var/log/a.log'", "write file:/var/log/a.log"),
    ("syslog:local9", "unknown syslog facility 'local9'", "did you mean 'local7'?"),
    ("file:", "file: needs a path, e.g. file:/var/log/rproxy/access.log", None),
    ("http:x", "invalid log output 'http:x'", "stderr, stdout, file:PATH or syslog:FACILITY[:SOCKET]"),
])
def test_log_output_rejects(text, message, hint):
    e = error("log output", text)
    assert e.message == message
    assert e.hint == hint


@pytest.mark.parametrize("fmt", [
    "{SRC} {HOST} {URI} {HOST}", "{src} {us_sport} {proxy} {ds_sport} {ts} {ua} {meth} {uri} {proto} "
    "{status} {ref} {host} {rule}", "{US_HDR}:'Accept-Encoding' - {DS_HDR}:'Content-Type'", "no tokens at all",
])
def test_log_format_valid(fmt):
    quoted = '"' + fmt + '"' if "'" in fmt else "'" + fmt + "'"
    assert convert("log format", quoted) == fmt


def test_log_format_unknown_token_points_at_its_column():
    e = error("log format", '"{SRC} {USER} x"')
    assert e.message == "unknown log format token '{USER}'"
    assert e.hint == "did you mean '{QUERY}'?"
    assert e.pos.column == 5 + 1 + 6     # value column, quote, offset of the token


def test_log_format_stray_brace_and_missing_header_name():
    assert error("log format", '"a { b"').message == "unknown log format token '{ b'"
    assert error("log format", '"{DS_HDR}"').message == "{DS_HDR} needs a header name: {DS_HDR}:'Name'"
    assert error("log format", '"{US_HDR}:\'X"').message == "{US_HDR} needs a header name: {US_HDR}:'Name'"


# ---- enum (through the collector) and ranges ------------------------------------

def collect(text: str):
    col = D.Collector()
    blk = col.collect(parse_text(text, env={}), D.MAIN, "main", None, Position("<string>", 1, 1))
    return col, blk


def test_enum_is_case_insensitive_with_aliases_and_did_you_mean():
    col, blk = collect("log-level = WARNING\n")
    assert blk.values["log_level"] == "warn" and not col.errors
    col, _ = collect("log-level = verbos\n")
    assert col.errors[0].message == "'log-level': invalid value 'verbos'"
    col, _ = collect("log-level = debg\n")
    assert col.errors[0].hint == "did you mean 'debug'?"


@pytest.mark.parametrize("text,message", [
    ("workers = 0", "'workers' must be between 1 and 1024"),
    ("workers = 1025", "'workers' must be between 1 and 1024"),
    ("max-nofile = -1", "'max-nofile' must be at least 0"),
    ("max-nofile = 0x80000000", "'max-nofile' must be at most 2147483647"),
    ("shutdown-timeout = 31d", "'shutdown-timeout' must be at most 30d"),
    ("memtrim-sz = -1", "'memtrim-sz': invalid size '-1': a size cannot be negative"),
])
def test_ranges(text, message):
    col, _ = collect(text + "\n")
    assert [e.message for e in col.errors] == [message]


def test_format_duration_reads_well():
    f = D.format_duration
    assert [f(None), f(0), f(0.25), f(0.0015), f(1.05), f(60), f(90), f(120), f(5400), f(86400), f(172800)] == [
        "unset", "0s", "250ms", "1.5ms", "1.05s", "60s", "90s", "2m", "90m", "24h", "2d"]
