"""Any model printed back as configuration text loads to the same model."""
from __future__ import annotations

import dataclasses
import glob
import os
import string

import pytest
from hypothesis import HealthCheck as HC, given, settings, strategies as st

from rproxy.config import directives as D, load, loads
from rproxy.config.loader import untitled_downstream_name
from rproxy.config.parser import parse_text
from rproxy.config.model import (CRL, SSL, TLS_PROTOCOLS, Config, Downstream, Headers, HealthCheck, Logging,
                                 LogStream, Rule, Server, Vhost, X509Extension)
from rproxy.config.printer import duration, print_config, quote

HERE = os.path.abspath(__file__)          # a file that exists, for TLS paths checked at load
HERE_DIR = os.path.dirname(HERE)
CORPUS = os.path.join(HERE_DIR, "corpus")


def reload(cfg: Config) -> Config:
    text = print_config(cfg)
    back = loads(text, env={})
    return dataclasses.replace(back, path=cfg.path)


# ---- pieces -----------------------------------------------------------------------

# Any text a quoted string can carry: controls, quotes, backslashes, $ and
# braces, non-ASCII.  Not NUL (names become C strings) and not surrogates
# (not encodable in a UTF-8 file).
any_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
name_text = any_text.filter(lambda s: 0 < len(s.encode()) <= 63)
token = st.text(string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-", min_size=1, max_size=10)
glob_text = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1,
                    max_size=10).filter(lambda s: not any(c.isspace() for c in s))
url_path = st.text(string.ascii_letters + string.digits + "/-._~%", max_size=10).map(lambda s: "/" + s)
positive_duration = st.floats(min_value=0.001, max_value=30 * 86400, allow_nan=False)
any_duration = st.one_of(st.just(0.0), positive_duration)
abs_path = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")).map(
    lambda s: "/var/lib/rproxy/" + s)
hostname = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9](\.[a-z]{2,6}){0,2}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
unix_addr = abs_path.map(lambda p: "unix:" + p)
regexes = st.sampled_from(["^/", "^/things/(.*)", "[a-z]+$", "^/(a|b)/[0-9]{2,4}", r"\.php$", "^$", "x*"])
log_format = st.lists(st.sampled_from(["{SRC}", "{HOST}", "{uri}", "{US_HDR}:'Accept'", "{DS_HDR}:'X-A'",
                                       " - ", "\"", "'", "[{TS}]", "{RULE}", "$ \\ %"]), max_size=6).map("".join)
log_output = st.one_of(st.sampled_from(["stderr", "stdout"]), abs_path.map(lambda p: "file:" + p),
                       st.sampled_from(D.SYSLOG_FACILITIES).map(lambda f: "syslog:" + f))


@st.composite
def tls_sets(draw):
    on = draw(st.lists(st.sampled_from(TLS_PROTOCOLS), min_size=1, unique=True))
    off = draw(st.lists(st.sampled_from(TLS_PROTOCOLS), unique=True).filter(lambda o: set(on) - set(o)))
    return tuple(p for p in TLS_PROTOCOLS if p in on), tuple(p for p in TLS_PROTOCOLS if p in off)


@st.composite
def ssls(draw, needs_cert: bool, force: bool = False):
    """force: a downstream's block with tls = true, in force even when not enabled."""
    enabled = draw(st.booleans())
    checked = enabled or force
    existing_or_none = st.one_of(st.none(), st.just(HERE))
    # paths are only checked to exist when the block is in force
    any_path = existing_or_none if checked else st.one_of(st.none(), abs_path)
    on, off = draw(tls_sets())
    crl = draw(st.one_of(st.none(), st.builds(
        CRL, file=st.just(HERE), dir=st.one_of(st.none(), st.just(HERE_DIR)), reload=any_duration)))
    return SSL(
        enabled=enabled,
        cert=HERE if (checked and needs_cert) else draw(any_path),
        key=draw(any_path),
        ca=draw(existing_or_none), capath=draw(st.one_of(st.none(), st.just(HERE_DIR))),
        ciphers=draw(st.sampled_from([None, "HIGH", "ECDHE+AESGCM:ECDHE+CHACHA20", "HIGH:!aNULL"])),
        protocols_on=on, protocols_off=off, verify_peer=draw(st.booleans()),
        enforce_peer_cert=draw(st.booleans()), verify_depth=draw(st.integers(1, 100)),
        context_timeout=draw(any_duration), cache_enabled=draw(st.booleans()),
        cache_size=draw(st.integers(1, 2 ** 31 - 1)), cache_timeout=draw(any_duration), crl=crl)


headers = st.builds(
    Headers, **{f.name: st.booleans() for f in dataclasses.fields(Headers)
                if f.type in ("bool", bool)},
    x_forwarded_for_mode=st.sampled_from(["append", "replace"]),
    x509_extensions=st.lists(st.builds(X509Extension, name=token,
                                       oid=st.from_regex(r"[0-2](\.(0|[1-9][0-9]{0,5})){1,6}", fullmatch=True)),
                             max_size=2).map(tuple))
log_streams = st.builds(LogStream, enabled=st.booleans(), output=log_output,
                        level=st.sampled_from(D.LOG_LEVELS), format=log_format)
loggings = st.builds(Logging, request=log_streams, error=log_streams)
health_checks = st.builds(
    HealthCheck, path=url_path, interval=st.floats(1, 3600), timeout=st.floats(0.001, 0.999),
    rise=st.integers(1, 100), fall=st.integers(1, 100))


@st.composite
def downstreams(draw, name: str):
    addr = draw(st.one_of(ipv4, ipv6, hostname, unix_addr))
    tls = draw(st.booleans())
    ssl = draw(st.one_of(st.none(), ssls(needs_cert=False, force=tls)))
    return Downstream(
        name=name, addr=addr, port=0 if addr.startswith("unix:") else draw(st.integers(1, 65535)),
        enabled=draw(st.booleans()), connections=draw(st.integers(1, 65535)),
        high_watermark=draw(st.integers(0, 2 ** 40)), read_timeout=draw(positive_duration),
        write_timeout=draw(positive_duration), connect_timeout=draw(positive_duration), retry=draw(any_duration),
        idle_timeout=draw(positive_duration), max_requests=draw(st.integers(0, 2 ** 31 - 1)),
        max_age=draw(any_duration), weight=draw(st.integers(1, 1000)), pipeline=draw(st.integers(1, 64)),
        health_check=draw(st.one_of(st.none(), health_checks)), tls=tls or bool(ssl and ssl.enabled), ssl=ssl)


def unique_names(min_size=0, max_size=4):
    return st.lists(name_text, min_size=min_size, max_size=max_size, unique_by=str.lower)


@st.composite
def rules(draw, name: str, ds_names: list):
    kind = draw(st.sampled_from(["exact", "glob", "regex", "prefix"]))
    pattern = {"exact": any_text, "glob": any_text, "regex": regexes, "prefix": url_path}[kind]
    return Rule(
        name=name, match=kind, pattern=draw(pattern),
        downstreams=tuple(draw(st.lists(st.sampled_from(ds_names), unique=True))) if ds_names else (),
        lb_method=draw(st.sampled_from(D.LB_METHODS)),
        replace_path=None if kind == "glob" else draw(st.one_of(st.none(), any_text)),
        passthrough=draw(st.booleans()), allow_redirect=draw(st.booleans()),
        redirect_filter=tuple(draw(st.lists(glob_text, max_size=2))),
        upstream_read_timeout=draw(st.one_of(st.none(), positive_duration)),
        upstream_write_timeout=draw(st.one_of(st.none(), positive_duration)),
        headers=draw(st.one_of(st.none(), headers)))


@st.composite
def vhosts(draw, name: str, ds_names: list, default: bool):
    return Vhost(
        name=name, aliases=tuple(draw(st.lists(glob_text, max_size=3))),
        strip_headers=tuple(draw(st.lists(token, max_size=2))), ssl=draw(st.one_of(st.none(), ssls(True))),
        headers=draw(st.one_of(st.none(), headers)), logging=draw(st.one_of(st.none(), loggings)),
        rules=tuple(draw(rules(n, ds_names)) for n in draw(unique_names(max_size=3))),
        default=default, https_redirect=draw(st.booleans()), https_redirect_port=draw(st.integers(1, 65535)))


def server_settings(draw) -> dict:
    return dict(
        addr=draw(st.one_of(ipv4, ipv6, unix_addr)), backlog=draw(st.integers(1, 2 ** 31 - 1)),
        threads=draw(st.one_of(st.none(), st.integers(1, 1024))), read_timeout=draw(positive_duration),
        write_timeout=draw(positive_duration), keepalive_timeout=draw(positive_duration),
        pending_timeout=draw(positive_duration), max_pending=draw(st.integers(0, 2 ** 31 - 1)),
        high_watermark=draw(st.integers(0, 2 ** 40)), disable_server_nagle=draw(st.booleans()),
        disable_client_nagle=draw(st.booleans()), disable_downstream_nagle=draw(st.booleans()),
        max_request_line=draw(st.integers(64, 1024 ** 2)), max_header_size=draw(st.integers(256, 16 * 1024 ** 2)),
        max_headers=draw(st.integers(1, 128)), client_max_body_size=draw(st.integers(0, 2 ** 40)),
        buffer_size=draw(st.integers(4096, 16 * 1024 ** 2)), ssl=draw(st.one_of(st.none(), ssls(True))),
        logging=draw(st.one_of(st.none(), loggings)))


@st.composite
def servers_2x(draw, port: int):
    names = draw(unique_names(max_size=3))
    dss = tuple(draw(downstreams(n)) for n in names)
    vnames = draw(st.lists(glob_text, min_size=1, max_size=3, unique_by=str.lower))
    default_at = draw(st.one_of(st.none(), st.integers(0, len(vnames) - 1)))
    vhs = tuple(draw(vhosts(n, names, i == default_at)) for i, n in enumerate(vnames))
    return Server(port=port, downstreams=dss, vhosts=vhs, dialect="2", **server_settings(draw))


@st.composite
def servers_1x(draw, port: int):
    dss = []
    for i in range(draw(st.integers(0, 3))):
        ds = draw(downstreams("tmp"))
        auto = untitled_downstream_name(ds.addr, ds.port, i)
        # untitled (the 1.x way) or titled with a name no auto-name can take
        name = draw(st.one_of(st.just(auto), st.text(string.ascii_letters, min_size=1, max_size=8)))
        if any(d.name.lower() == name.lower() for d in dss):
            name = auto
        dss.append(dataclasses.replace(ds, name=name))
    names = tuple(d.name for d in dss)
    lb = draw(st.sampled_from(D.LB_METHODS))
    rewrites = draw(st.lists(st.tuples(regexes, any_text), max_size=3))
    if rewrites:
        rs = tuple(Rule(name=f"rewrite{i}", match="regex", pattern=src, rewrite_dst=dst, downstreams=names,
                        lb_method=lb) for i, (src, dst) in enumerate(rewrites, start=1))
    else:
        rs = (Rule(name="default", match="prefix", pattern="/", downstreams=names, lb_method=lb),)
    vh = Vhost(name="*", rules=rs, default=True, headers=draw(headers))
    return Server(port=port, downstreams=tuple(dss), vhosts=(vh,), dialect="1", **server_settings(draw))


@st.composite
def configs(draw):
    kinds = draw(st.lists(st.booleans(), max_size=3))
    servers = tuple(draw(servers_1x(8000 + i) if v1 else servers_2x(8000 + i)) for i, v1 in enumerate(kinds))
    # listeners must differ: a unix address drawn twice would be a duplicate listener
    unix = [s.addr for s in servers if s.addr.startswith("unix:")]
    if len(unix) != len(set(unix)):
        servers = tuple(dataclasses.replace(s, addr=f"{s.addr}.{i}") if s.addr.startswith("unix:") else s
                        for i, s in enumerate(servers))
    forms = {s.dialect for s in servers}
    return Config(
        path="<string>", servers=servers, workers=draw(st.one_of(st.none(), st.integers(1, 1024))),
        daemonize=draw(st.booleans()), rootdir=draw(abs_path), user=draw(st.one_of(st.none(), st.just("0"))),
        group=draw(st.one_of(st.none(), st.just("0"))), max_nofile=draw(st.integers(0, 2 ** 31 - 1)),
        memtrim_sz=draw(st.integers(0, 2 ** 31 - 1)), pidfile=draw(st.one_of(st.none(), abs_path)),
        shutdown_timeout=draw(any_duration), error_log=draw(log_output),
        dialect="mixed" if len(forms) > 1 else (forms.pop() if forms else "2"),
        log_level=draw(st.sampled_from(D.LOG_LEVELS)))


# ---- properties -----------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HC.too_slow, HC.data_too_large])
@given(configs())
def test_any_model_printed_back_loads_to_the_same_model(cfg):
    assert reload(cfg) == cfg


@given(any_text)
def test_quote_round_trips_any_text(s):
    (node,) = parse_text(f"x = {quote(s)}\n", env={})
    assert node.value.text == s


@given(st.floats(min_value=0, max_value=30 * 86400, allow_nan=False))
def test_duration_text_round_trips_exactly(x):
    (node,) = parse_text(f"x = {duration(x)}\n", env={})
    assert D.t_duration(node.value) == x


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CORPUS, "good", "*.conf"))),
                         ids=lambda p: os.path.basename(p))
def test_every_good_corpus_config_prints_back_to_itself(path):
    env = {"RPROXY_TEST_PORT": "9090", "RPROXY_TEST_HOST": "backend.test"}
    cfg = load(path, env=env)
    assert reload(cfg) == cfg


def test_printing_a_rewrite_outside_a_1x_server_is_refused():
    bad = Config(path="x", servers=(Server(vhosts=(Vhost(name="*", rules=(
        Rule(name="r", match="regex", pattern="^/", rewrite_dst="/x"),)),)),))
    with pytest.raises(ValueError):
        print_config(bad)
