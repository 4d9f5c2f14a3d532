"""Meaning: the directive table covers both dialects, 1.x is normalised into
the 2.x shape, safe defaults replace RProxy's unsafe ones, and nothing is
accepted silently without effect."""
from __future__ import annotations

import dataclasses
import os

import pytest

from rproxy.config import ConfigErrors, directives as D, loads
from rproxy.config.model import Config, Headers, Rule, Server

HERE = os.path.abspath(__file__)


def load_text(text: str, **kw) -> Config:
    return loads(text, env=kw.pop("env", {}), **kw)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as e:
        load_text(text)
    return [x.message for x in e.value.errors]


def notes(cfg: Config) -> list[str]:
    return [n.message for n in cfg.notes]


# ---- the table ------------------------------------------------------------------

# Every directive of reference §1.3-§1.10, by the block it lives in.
RPROXY_DIRECTIVES = {
    D.MAIN: "daemonize rootdir user group max-nofile memtrim-sz server",
    D.SERVER: "addr port threads backlog read-timeout write-timeout pending-timeout max-pending high-watermark "
              "disable-server-nagle disable-client-nagle disable-downstream-nagle ssl logging downstream vhost "
              "host lb-method rewrite headers",
    D.DOWNSTREAM: "enabled addr port connections high-watermark read-timeout write-timeout retry",
    D.RETRY: "seconds useconds",
    D.REWRITE: "src dst",
    D.SSL: "enabled cert key ca capath ciphers protocols-on protocols-off verify-peer enforce-peer-cert "
           "verify-depth context-timeout cache-enabled cache-size cache-timeout crl",
    D.CRL: "file dir reload",
    D.VHOST: "aliases strip-headers ssl headers logging rule",
    D.RULE: "uri-match uri-gmatch uri-rmatch downstreams lb-method headers upstream-read-timeout "
            "upstream-write-timeout passthrough allow-redirect redirect-filter",
    D.HEADERS: "x-forwarded-for x-ssl-subject x-ssl-issuer x-ssl-notbefore x-ssl-notafter x-ssl-serial "
               "x-ssl-sha1 x-ssl-cipher x-ssl-certificate x509-extension",
    D.X509: "name oid",
    D.LOGGING: "request error general enabled type filename format facility errorlog",
    D.LOG_STREAM: "enabled output level format",
}

# rproxy's extensions, as issue 4 lists them.
EXTENSIONS = {
    D.MAIN: "workers pidfile shutdown-timeout error-log log-level",
    D.SERVER: "keepalive-timeout max-request-line max-header-size max-headers client-max-body-size buffer-size",
    D.DOWNSTREAM: "connect-timeout idle-timeout max-requests max-age weight pipeline tls ssl health-check",
    D.HEALTH: "path interval timeout rise fall",
    D.VHOST: "https-redirect https-redirect-port default",
    D.RULE: "replace-path uri-prefix",
    D.HEADERS: "x-forwarded-for-mode x-real-ip x-forwarded-proto x-forwarded-host x-forwarded-port forwarded via",
}


@pytest.mark.parametrize("table", [RPROXY_DIRECTIVES, EXTENSIONS], ids=["rproxy", "extensions"])
def test_every_directive_is_in_the_table(table):
    missing = [(ctx, name) for ctx, names in table.items() for name in names.split()
               if name not in D.names_in(ctx)]
    assert missing == []


def test_retry_is_both_a_2x_value_and_a_1x_block():
    assert D.lookup(D.DOWNSTREAM, "retry", False).type == "duration"
    assert D.lookup(D.DOWNSTREAM, "retry", True).type == "block"


# What the runtime acts on today.  uri-prefix and lb-method least-pending are
# active because the fast path already routes prefix rules (its default rule
# is one); vhost `default`, rewrite `src` and server-level 1.x lb-method feed
# the same routing tables.
ACTIVE = {
    D.MAIN: "workers accept-spread daemonize rootdir user group max-nofile memtrim-sz pidfile shutdown-timeout server "
            "error-log log-level access-log-buffer access-log-flush status reload-on-change temp-dir state-dir cache "
            "rate-limit-zone rate-limit redis acme",
    D.CACHE: "path max-size keys-zone inactive",
    D.STATUS: "addr port allow",
    D.ACME: "directory email state-dir challenge ca renew-before",
    D.RATE_LIMIT: "key rate burst mode store",
    D.REDIS: "addr port timeout fail",
    D.ACCESS: "allow deny",
    D.SERVER: "addr port backlog proxy-protocol proxy-protocol-from threads read-timeout write-timeout "
              "keepalive-timeout pending-timeout "
              "max-pending high-watermark disable-server-nagle disable-client-nagle disable-downstream-nagle "
              "max-request-line max-header-size max-headers client-max-body-size buffer-size "
              "underscores-in-headers lb-method rewrite headers downstream vhost logging ssl client-body-buffer-size "
              "response-buffer-size max-temp-file-size client-body-timeout send-timeout request-buffering "
              "response-buffering http2 http2-max-concurrent-streams http2-max-resets-per-second "
              "http2-max-control-frames-per-second http2-max-continuations",
    D.DOWNSTREAM: "addr port enabled connections high-watermark read-timeout write-timeout connect-timeout retry "
                  "idle-timeout max-requests max-age weight max-fails fail-timeout pipeline health-check ssl tls tls-name "
                  "max-connections proxy-protocol",
    D.RETRY: "seconds useconds",
    D.HEALTH: "path interval timeout rise fall",
    D.REWRITE: "src dst",
    D.VHOST: "aliases strip-headers default rule headers logging ssl https-redirect https-redirect-port "
             "rate-limit access security-headers request-headers response-headers",
    D.RULE: "uri-match uri-gmatch uri-rmatch uri-prefix downstreams lb-method replace-path passthrough "
            "allow-redirect redirect-filter upstream-read-timeout upstream-write-timeout headers "
            "root index autoindex open-file-cache open-file-cache-valid redirect status sticky sticky-cookie sticky-key security-headers "
            "request-headers response-headers request-buffering response-buffering rate-limit deny "
            "compress compress-types compress-min-size cache cache-lock cache-use-stale",
    D.HDR_RULES: "set add remove",
    D.SECHDR: "profile strict-transport-security content-security-policy x-content-type-options "
              "referrer-policy x-frame-options permissions-policy cross-origin-opener-policy",
    D.HEADERS: "x-forwarded-for x-forwarded-for-mode x-real-ip x-forwarded-proto x-forwarded-host "
               "x-forwarded-port forwarded via x-ssl-subject x-ssl-issuer x-ssl-notbefore x-ssl-notafter "
               "x-ssl-serial x-ssl-sha1 x-ssl-cipher x-ssl-certificate x509-extension",
    D.X509: "name oid",
    # cache-size stays inactive: pyOpenSSL's binding cannot set OpenSSL's cache size
    D.SSL: "enabled cert key ca capath ciphers protocols-on protocols-off verify-peer enforce-peer-cert "
           "verify-depth context-timeout cache-enabled cache-timeout crl mode",
    D.CRL: "file dir reload",
    D.LOGGING: "request error general enabled type filename format facility errorlog",
    D.LOG_STREAM: "enabled output level format",
}


def test_exactly_the_built_directives_are_active():
    actual = {(ctx, d.name) for d in D.TABLE if d.active for ctx in d.where}
    expected = {(ctx, name) for ctx, names in ACTIVE.items() for name in names.split()}
    assert actual == expected


# A value each type accepts, and what a directive needs around it.
SAMPLES = {"bool": "false", "string": "x", "list": "{ a }", "path": f'"{HERE}"', "listen address": "127.0.0.2",
           "address": "127.0.0.1", "glob list": "{ a }", "header name": "X-A", "header list": "{ X-A }",
           "OID": "1.2.3", "request path": "/", "regex": '"^/"', "protocol list": "{ TLSv1.2 }",
           "cipher list": '"HIGH"', "log output": "stderr", "log format": '"{SRC}"', "duration": "1s",
           "int": "1", "size": "65536", "CIDR list": "{ 10.0.0.0/8 }", "access list": "{ 10.0.0.0/8, all }",
           "rate": "10/s", "limit key": "header:X-Key", "coding list": "{ gzip }",
           "media type list": "{ text/* }", "stale list": "{ error }"}
SAMPLE_OVERRIDES = {"downstreams": "{ d }", "cache": "c", "directory": '"https://ca.test/dir"', "renew-before": "30d", "buffer-size": "4096", "max-request-line": "1024",
                    "max-header-size": "1024", "port": "1", "interval": "10s", "rate-limit": "{}",
                    "root": f'"{os.path.dirname(HERE)}"', "status": "301"}
COMPANIONS = {D.CACHE: {"path": '"/tmp"'}, D.DOWNSTREAM: {"addr": "127.0.0.1", "port": "1"},
              D.RULE: {"uri-prefix": '"/"'},
              D.X509: {"name": "X-A", "oid": "1.2"}, D.REWRITE: {"src": '"^/"', "dst": '"/"'},
              D.CRL: {"file": f'"{HERE}"'}, D.RATE_LIMIT: {"rate": "1/s"}}
# the blocks that lead to a context, outermost first (context, head)
PATHS = {D.MAIN: [], D.SERVER: [(D.SERVER, "server")], D.STATUS: [(D.STATUS, "status")],
         D.CACHE: [(D.CACHE, "cache c")],
         D.ACME: [(D.ACME, "acme")],
         D.RATE_LIMIT: [(D.RATE_LIMIT, "rate-limit L")], D.REDIS: [(D.REDIS, "redis")],
         D.ACCESS: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.ACCESS, "access")],
         D.DOWNSTREAM: [(D.SERVER, "server"), (D.DOWNSTREAM, "downstream d")],
         D.RETRY: [(D.SERVER, "server"), (D.DOWNSTREAM, "downstream d"), (D.RETRY, "retry")],
         D.HEALTH: [(D.SERVER, "server"), (D.DOWNSTREAM, "downstream d"), (D.HEALTH, "health-check")],
         D.REWRITE: [(D.SERVER, "server"), (D.REWRITE, "rewrite")],
         D.VHOST: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"')],
         D.RULE: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.RULE, "rule r")],
         D.HDR_RULES: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.RULE, "rule r"),
                       (D.HDR_RULES, "response-headers")],
         D.SECHDR: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.SECHDR, "security-headers")],
         D.HEADERS: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.HEADERS, "headers")],
         D.X509: [(D.SERVER, "server"), (D.VHOST, 'vhost "v"'), (D.HEADERS, "headers"),
                  (D.X509, "x509-extension")],
         D.SSL: [(D.SERVER, "server"), (D.SSL, "ssl")],
         D.CRL: [(D.SERVER, "server"), (D.SSL, "ssl"), (D.CRL, "crl")],
         D.LOGGING: [(D.SERVER, "server"), (D.LOGGING, "logging")],
         D.LOG_STREAM: [(D.SERVER, "server"), (D.LOGGING, "logging"), (D.LOG_STREAM, "request")]}
BLOCK_HEADS = {"cache": "cache c", "server": "server", "downstream": "downstream d", "vhost": 'vhost "v"', "rule": "rule r",
               "rate-limit": "rate-limit L"}


def config_using(d: D.Directive, ctx: str) -> str:
    """A minimal valid config that uses directive `d` in context `ctx`."""
    if d.type == "block":
        head = BLOCK_HEADS.get(d.name, d.name)
        body = " ".join(f"{k} = {v}" for k, v in COMPANIONS.get(d.body, {}).items())
        line = f"{head} {{ {body} }}"
    else:
        sample = SAMPLE_OVERRIDES.get(d.name) or (d.choices[0] if d.choices else SAMPLES[d.type])
        line = f"{d.name} = {sample}"
    text = line
    path = PATHS[ctx]
    for i in range(len(path) - 1, -1, -1):
        pctx, head = path[i]
        companions = {k: v for k, v in COMPANIONS.get(pctx, {}).items()
                      if not (i == len(path) - 1 and k == d.name)}
        if pctx == D.RULE and i == len(path) - 1 and d.name.startswith("uri-"):
            companions = {}
        if pctx == D.LOGGING and i == len(path) - 1 and d.name in D.LOGGING_1X_KEYS:
            companions = {}
        inner = " ".join(f"{k} = {v}" for k, v in companions.items())
        text = f"{head} {{ {inner} {text} }}"
    if any(c == D.VHOST for c, _ in path) or d.name == "vhost":
        text = text.replace("server {", "server { downstream d { addr = 127.0.0.1 port = 1 }", 1)
    if d.name == "cache" and ctx == D.RULE:
        text = 'cache c { path = "/tmp" }\n' + text
    return text + "\n"


ALL_USES = [(d, ctx) for d in D.TABLE for ctx in d.where]


@pytest.mark.parametrize("d,ctx", ALL_USES, ids=[f"{ctx}.{d.name}{'{}' if d.type == 'block' else ''}"
                                                  for d, ctx in ALL_USES])
def test_no_directive_is_silently_ignored(d, ctx):
    """Each directive loads in each of its contexts, and -t lists it (or the
    inactive block around it) unless its runtime exists."""
    text = config_using(d, ctx)
    cfg = load_text(text)
    listed = [n.message for n in cfg.inactive]
    # the blocks around the directive whose runtime does not exist yet
    path_blocks = [head.split()[0] for _, head in PATHS[ctx]]
    inactive_around = [b for b in path_blocks if not D.lookup(_parent(ctx, b), b, True).active]
    if inactive_around:
        # listed once, as the outermost inactive block
        assert any(m.startswith(f"'{inactive_around[0]}' in") for m in listed), (text, listed)
        assert not any(m.startswith(f"'{d.name}' in a '{path_blocks[-1]}'") for m in listed), (text, listed)
    elif not d.active:
        assert any(m.startswith(f"'{d.name}' in") for m in listed), (text, listed)
    else:
        assert not any(m.startswith(f"'{d.name}' in") for m in listed), (text, listed)


def _parent(ctx: str, block: str) -> str:
    """The context a block of the path to `ctx` sits in."""
    heads = [h.split()[0] for _, h in PATHS[ctx]]
    i = heads.index(block)
    return D.MAIN if i == 0 else PATHS[ctx][i - 1][0]


def test_inactive_directives_inside_an_inactive_block_are_listed_once(monkeypatch):
    # every block is active now (ssl with TLS, logging with the logs): mark
    # the server's `logging` block inactive for this check of the listing
    key = (D.SERVER, "logging")
    monkeypatch.setitem(D._BY_CONTEXT, key, [dataclasses.replace(d, active=False) for d in D._BY_CONTEXT[key]])
    cfg = load_text('server { logging { request { enabled = true  format = "{SRC}" } } }\n')
    assert [n.message for n in cfg.inactive] == ["'logging' in a 'server' block"]


def test_every_directive_has_a_doc_line():
    assert [d.name for d in D.TABLE if len(d.doc) < 8] == []


# ---- 1.x normalised into the 2.x shape ----------------------------------------------

V1 = """
server {
    port = 8001
    lb-method = most-idle
    rewrite { src = "^/a/(.*)"  dst = "/x/" }
    rewrite { src = "^/b"       dst = "/y" }
    downstream { addr = 127.0.0.1  port = 9001 }
    downstream { addr = 127.0.0.1  port = 9002 }
    downstream { addr = 127.0.0.1  port = 9001 }
}
"""


def test_1x_rewrites_become_regex_rules_of_one_catch_all_vhost_in_file_order():
    srv = load_text(V1).servers[0]
    assert srv.dialect == "1"
    assert [d.name for d in srv.downstreams] == ["127.0.0.1:9001", "127.0.0.1:9002#2", "127.0.0.1:9001#3"]
    (vh,) = srv.vhosts
    assert (vh.name, vh.default, vh.aliases) == ("*", True, ())
    names = tuple(d.name for d in srv.downstreams)
    assert vh.rules == (
        Rule(name="rewrite1", match="regex", pattern="^/a/(.*)", rewrite_dst="/x/", downstreams=names,
             lb_method="most-idle"),
        Rule(name="rewrite2", match="regex", pattern="^/b", rewrite_dst="/y", downstreams=names,
             lb_method="most-idle"))
    assert vh.rules[1].pos.line == 6


def test_1x_without_rewrites_gets_one_prefix_rule_for_every_path():
    srv = load_text("server { downstream { addr = 10.0.0.1  port = 80 } }\n").servers[0]
    assert srv.vhosts[0].rules == (Rule(name="default", match="prefix", pattern="/",
                                        downstreams=("10.0.0.1:80",), lb_method="rtt"),)


def test_1x_always_has_a_headers_policy_2x_only_where_written():
    v1 = load_text("server { downstream { port = 80 } }\n")
    assert v1.servers[0].vhosts[0].headers == Headers()          # X-Forwarded-For on
    v1_off = load_text("server { headers { x-forwarded-for = no }  downstream { port = 80 } }\n")
    assert v1_off.servers[0].vhosts[0].headers.x_forwarded_for is False
    v2 = load_text('server { downstream d { addr = 127.0.0.1  port = 80 }\n'
                   ' vhost "*" { rule r { uri-prefix = "/"  downstreams = { d } } } }\n')
    assert v2.servers[0].vhosts[0].headers is None and v2.servers[0].vhosts[0].rules[0].headers is None


def test_1x_downstreams_keep_1x_defaults_titled_ones_2x_defaults():
    srv = load_text("server {\n downstream { }\n downstream named { addr = 127.0.0.1  port = 81 }\n}\n").servers[0]
    untitled, named = srv.downstreams
    assert (untitled.name, untitled.addr, untitled.port, untitled.connections, untitled.retry) == (
        "127.0.0.1:80", "127.0.0.1", 80, 8, 1.0)
    assert (named.connections, named.retry) == (1, 0.05)


def test_1x_retry_block_and_value_the_later_one_wins():
    def retry(body):
        return load_text(f"server {{ downstream {{ port = 80 {body} }} }}\n").servers[0].downstreams[0].retry
    assert retry("retry { seconds = 2  useconds = 500000 }") == 2.5
    assert retry("retry { useconds = 5000 }") == 1.005               # seconds defaults to 1, as in 1.x
    assert retry("retry { seconds = 2 }  retry = 250ms") == 0.25
    assert retry("retry = 250ms  retry { seconds = 2 }") == 2.0


def test_1x_logging_maps_onto_request_and_error_streams():
    srv = load_text("server {\n logging { enabled = yes  type = syslog  facility = local5  format = '{URI}'\n"
                    "  errorlog = /var/log/e.log }\n downstream { port = 80 }\n}\n").servers[0]
    assert srv.logging.request.enabled and srv.logging.request.output == "syslog:local5"
    assert srv.logging.request.format == "{URI}"
    assert srv.logging.error.enabled and srv.logging.error.output == "file:/var/log/e.log"
    default = load_text("server { logging { enabled = yes } }\n").servers[0].logging
    assert default.request.output == "file:/dev/stdout" and not default.error.enabled


def test_dialect_of_the_config():
    assert load_text("").dialect == "2"
    assert load_text("server { }\n").dialect == "1"
    assert load_text('server { vhost "*" { } }\n').dialect == "2"
    assert load_text('server { }\nserver { port = 1\n vhost "*" { } }\n').dialect == "mixed"


def test_1x_only_syntax_in_a_server_with_vhosts_is_an_error():
    assert errors('server { lb-method = rtt  vhost "*" { } }\n') == [
        "server-level 'lb-method' is RProxy 1.x syntax, for servers without vhosts"]


# ---- safe defaults ------------------------------------------------------------------

def test_explicit_zero_client_timeouts_mean_the_default_with_a_note():
    cfg = load_text("server {\n read-timeout = 0\n write-timeout = { 0, 0 }\n pending-timeout = 0ms\n}\n")
    srv = cfg.servers[0]
    assert (srv.read_timeout, srv.write_timeout, srv.pending_timeout) == (60.0, 60.0, 10.0)
    assert [(n.pos.line, n.message) for n in cfg.notes] == [
        (2, "'read-timeout = 0': RProxy read 0 as 'no timeout'; rproxy never disables it and uses its default (60s)"),
        (3, "'write-timeout = { 0, 0 }': RProxy read 0 as 'no timeout'; rproxy never disables it and uses its "
            "default (60s)"),
        (4, "'pending-timeout = 0ms': RProxy read 0 as 'wait forever'; rproxy uses its default (10s)")]


def test_zero_after_a_value_resets_to_the_default():
    assert load_text("server { read-timeout = 5  read-timeout = 0 }\n").servers[0].read_timeout == 60.0


def test_rule_upstream_timeouts_unset_or_zero_mean_the_servers():
    cfg = load_text('server { downstream d { addr = 127.0.0.1  port = 1 }\n vhost "*" {\n'
                    '  rule a { uri-prefix = "/a"  upstream-read-timeout = { 0, 0 } }\n'
                    '  rule b { uri-prefix = "/b"  upstream-write-timeout = 5 } } }\n')
    a, b = cfg.servers[0].vhosts[0].rules
    assert (a.upstream_read_timeout, a.upstream_write_timeout) == (None, None)
    assert (b.upstream_read_timeout, b.upstream_write_timeout) == (None, 5.0)
    assert "rproxy keeps the server's timeout instead" in notes(cfg)[0]


def test_tls_defaults_are_safe():
    ssl = load_text("server { ssl { enabled = false } }\n").servers[0].ssl
    assert ssl.protocols_on == ("TLSv1.2", "TLSv1.3") and ssl.protocols_off == ()
    assert ssl.verify_depth == 9 and ssl.ciphers is None


@pytest.mark.parametrize("on,off,expected_on,expected_off,note", [
    ("{ ALL }", "{}", ("TLSv1.2", "TLSv1.3"), (), None),
    ("{ SSLv3, TLSv1.2 }", "{ SSLv2, SSLv3 }", ("TLSv1.2",), (), "SSLv3: never enabled"),
    ("{ TLSv1 }", "{}", ("TLSv1.2", "TLSv1.3"), (), "the modern protocols stay on"),
    ("{ ALL }", "{ TLSv1.3 }", ("TLSv1.2", "TLSv1.3"), ("TLSv1.3",), None),
])
def test_tls_protocols(on, off, expected_on, expected_off, note):
    cfg = load_text(f"server {{ ssl {{ protocols-on = {on}  protocols-off = {off} }} }}\n")
    ssl = cfg.servers[0].ssl
    assert (ssl.protocols_on, ssl.protocols_off) == (expected_on, expected_off)
    assert (note is None and not cfg.notes) or note in notes(cfg)[0]


def test_verify_depth_zero_means_the_default():
    cfg = load_text("server { ssl { verify-depth = 0 } }\n")
    assert cfg.servers[0].ssl.verify_depth == 9
    assert "rejected every CA-issued certificate" in notes(cfg)[0]


# ---- files, names, references ---------------------------------------------------------

def test_certificate_paths_are_checked_only_when_tls_is_in_force():
    load_text("server { ssl { enabled = false  cert = /nope.crt } }\n")
    assert errors("server { ssl { enabled = true  cert = /nope.crt } }\n") == [
        "ssl cert: certificate file /nope.crt does not exist"]
    load_text("server { downstream d { addr = 127.0.0.1  port = 1  ssl { ca = /nope.pem } } }\n")
    assert errors("server { downstream d { addr = 127.0.0.1  port = 1  tls = yes\n"
                  "  ssl { ca = /nope.pem } } }\n") == [
        "ssl ca: CA file /nope.pem does not exist"]


def test_downstream_tls_follows_its_ssl_block():
    cfg = load_text('server { downstream d { addr = 127.0.0.1  port = 1\n'
                    f'  ssl {{ enabled = yes  ca = "{HERE}" }} }} }}\n')
    assert cfg.servers[0].downstreams[0].tls is True


def test_a_setting_given_twice_is_noted_and_the_last_wins():
    cfg = load_text("workers = 2\nworkers = 3\n")
    assert cfg.workers == 3
    assert [(n.pos.line, n.message) for n in cfg.notes] == [
        (2, "'workers' is set again: this value replaces the one at line 1")]


def test_plus_equals_appends_to_the_default_and_to_earlier_values():
    cfg = load_text('server { downstream a { addr = 127.0.0.1  port = 1 }\n'
                    ' downstream b { addr = 127.0.0.1  port = 2 }\n'
                    ' vhost "x" { aliases += "y"  aliases += { z, w }\n'
                    '  rule r { uri-prefix = "/"  downstreams = { a }  downstreams += b } } }\n')
    vh = cfg.servers[0].vhosts[0]
    assert vh.aliases == ("y", "z", "w") and vh.rules[0].downstreams == ("a", "b")
    assert errors("workers += 2\n") == ["'+=' only appends to lists; 'workers' is not a list"]


def test_unknown_accounts_are_a_note_not_an_error():
    cfg = load_text("user = no-such-user-rproxy\ngroup = 0\n")
    assert notes(cfg) == ["user 'no-such-user-rproxy' does not exist on this machine; rproxy will not start here"]
    assert load_text("user = root\n").notes == ()


def test_names_longer_than_the_fast_path_holds_are_errors():
    long = "d" * 64
    assert errors(f'server {{ downstream {long} {{ addr = 127.0.0.1  port = 1 }}\n vhost "*" {{ }} }}\n') == [
        "downstream name is longer than 63 bytes"]


def test_duplicate_listeners_and_default_vhosts():
    assert errors("server { port = 1 }\nserver { port = 1 }\n") == [
        "listener 127.0.0.1:1 is defined twice (first at line 1)"]
    assert errors("server { addr = unix:/tmp/a.sock }\nserver { addr = unix:/tmp/a.sock  port = 2 }\n") == [
        "listener unix:/tmp/a.sock is defined twice (first at line 1)"]


def test_an_invalid_downstream_is_not_also_an_unknown_name():
    msgs = errors('server { downstream d { addr = "1.2.3.4:80" }\n'
                  ' vhost "*" { rule r { uri-prefix = "/"  downstreams = { d } } } }\n')
    assert msgs == ["'addr': invalid address '1.2.3.4:80'"]


# ---- workers and the model ----------------------------------------------------------

def test_worker_count_and_what_decided_it():
    assert load_text("workers = 3\nserver { threads = 8 }\n").worker_count() == (3, "workers")
    assert load_text("server { threads = 2 }\nserver { port = 1  threads = 6 }\n").worker_count() == (6, "threads")
    assert load_text("server { }\n").worker_count() == (os.cpu_count() or 1, "cpus")


def test_model_objects_carry_their_position_but_compare_without_it():
    a = load_text("server { port = 1 }\n").servers[0]
    b = load_text("\n\nserver {\n port = 1 }\n").servers[0]
    assert (a.pos.line, b.pos.line) == (1, 3)
    assert a == b
    assert isinstance(a, Server)


# ---- underscores-in-headers (issue 14: no spelling of a proxy-owned header reaches a downstream) --

def test_underscores_in_headers_defaults_to_drop_and_takes_each_mode():
    base = 'server { %s downstream d { addr = 127.0.0.1 port = 1 } vhost "*" { } }\n'
    assert load_text(base % "").servers[0].underscores_in_headers == "drop"
    for mode in ("drop", "allow", "reject", "Reject"):
        cfg = load_text(base % f"underscores-in-headers = {mode}")
        assert cfg.servers[0].underscores_in_headers == mode.lower()


def test_underscores_in_headers_bad_value_is_an_error_with_its_position():
    text = 'server {\n    underscores-in-headers = yes\n}\n'
    with pytest.raises(ConfigErrors) as e:
        load_text(text)
    (err,) = e.value.errors
    assert err.message == "'underscores-in-headers': invalid value 'yes'"
    assert (err.pos.line, err.pos.column) == (2, 30)
    assert err.hint == "one of drop, allow, reject"


def test_underscores_in_headers_is_a_server_setting_only():
    text = 'server { downstream d { addr = 127.0.0.1 port = 1 } vhost "*" { underscores-in-headers = allow } }\n'
    assert errors(text) == ["'underscores-in-headers' is not allowed in a 'vhost' block"]


# ---- HTTP/2 (issue 16) -------------------------------------------------------------------

def test_http2_directives_defaults_and_limits():
    srv = load_text("server { port = 8080  downstream { addr = 127.0.0.1  port = 9000 } }").servers[0]
    assert (srv.http2, srv.http2_max_concurrent_streams, srv.http2_max_resets_per_second,
            srv.http2_max_control_frames_per_second, srv.http2_max_continuations) \
        == (None, 100, 100, 500, 8)    # None: on with TLS only
    srv = load_text("server { port = 8080  http2 = yes  http2-max-concurrent-streams = 32 "
                    "http2-max-continuations = 2  downstream { addr = 127.0.0.1  port = 9000 } }").servers[0]
    assert (srv.http2, srv.http2_max_concurrent_streams, srv.http2_max_continuations) == (True, 32, 2)
    with pytest.raises(ConfigErrors, match="http2-max-concurrent-streams"):
        load_text("server { port = 8080  http2-max-concurrent-streams = 0 "
                  "downstream { addr = 127.0.0.1  port = 9000 } }")
