"""Edge policy directives (issue 19): what they load to, and their mistakes."""
from __future__ import annotations

import pytest

from rproxy.config.errors import ConfigErrors
from rproxy.config.loader import loads


def srv(body="", top=""):
    return f"""{top}
server {{
    downstream app {{ addr = 127.0.0.1  port = 9000 }}
    {body}
    vhost "v" {{ rule r {{ uri-prefix = "/"  downstreams = {{ app }} }} }}
}}
"""


def errors(text):
    with pytest.raises(ConfigErrors) as e:
        loads(text)
    return e.value.render()


def test_rates_keys_and_modes():
    cfg = loads(srv(top="rate-limit a { rate = 600/m  burst = 5  key = header:X-Api-Key  mode = delay }\n"
                        "rate-limit b { rate = 2.5/s  key = route  mode = dry-run  store = redis }\n"
                        "rate-limit-zone = 10m"))
    a, b = cfg.rate_limits
    assert (a.rate, a.burst, a.key, a.mode, a.store) == (10.0, 5, "header:X-Api-Key", "delay", "local")
    assert (b.rate, b.key, b.mode, b.store) == (2.5, "route", "dry-run", "redis")
    assert cfg.rate_limit_zone == 10 * 1024 ** 2
    assert cfg.redis is not None and cfg.redis.port == 6379 and cfg.redis.fail == "open"


@pytest.mark.parametrize("bad,needle", [
    ("rate-limit a { rate = 100 }", "invalid rate '100'"),
    ("rate-limit a { rate = 0/s }", "out of range"),
    ("rate-limit a { rate = 1/s  key = cookie:x }", "invalid key 'cookie:x'"),
    ("rate-limit a { rate = 1/s  mode = drop }", "invalid value 'drop'"),
    ("rate-limit a { burst = 3 }", "rate-limit 'a' has no 'rate'"),
    ("rate-limit-zone = 1k", "must be between 4k and 1g"),
    ("redis { addr = redis.example  port = 1 }", "must be an IPv4 or IPv6 address"),
])
def test_limit_mistakes(bad, needle):
    assert needle in errors(srv(top=bad))


def test_unknown_limit_names_and_access_lists():
    text = errors(srv(body='vhost "w" { rate-limit = { nope }  access { allow = { 10.0.0.0/33 } } '
                           'rule r { uri-prefix = "/"  rate-limit = { nope2 } } }'))
    assert "vhost 'w': unknown rate-limit 'nope'" in text
    assert "rule 'r': unknown rate-limit 'nope2'" in text
    assert "invalid address or network '10.0.0.0/33'" in text


def test_access_order_is_file_order():
    cfg = loads(srv().replace('vhost "v" {', 'vhost "v" { access { deny = { 10.1.0.0/16 }  allow = { all } }'))
    assert cfg.servers[0].vhosts[0].access == (("10.1.0.0/16", False), ("0.0.0.0/0", True), ("::/0", True))


def test_proxy_protocol_needs_its_sources():
    assert "proxy-protocol = true needs proxy-protocol-from" in errors(srv(body="proxy-protocol = true"))
    cfg = loads(srv(body="proxy-protocol = true  proxy-protocol-from = { 10.0.0.0/8, fd00::/8 }"))
    assert cfg.servers[0].proxy_protocol_from == ("10.0.0.0/8", "fd00::/8")


def test_deny_rule_status():
    cfg = loads(srv().replace('rule r {', 'rule blocked { uri-prefix = "/x"  deny = true  status = 451 }\n rule r {'))
    rule = cfg.servers[0].vhosts[0].rules[0]
    assert (rule.deny, rule.deny_status) == (True, 451)
    assert "must be between 301 and 499" in errors(srv().replace('rule r {', 'rule b { uri-prefix = "/x"  '
                                                                              'deny = true  status = 200 }\n rule r {'))
    # one `status` directive serves deny rules and redirect rules (issue 20), each with its own set
    assert "of a deny rule must be 403, 404, 410 or 451" in errors(
        srv().replace('rule r {', 'rule b { uri-prefix = "/x"  deny = true  status = 302 }\n rule r {'))
    assert "of a redirect must be 301, 302, 303, 307 or 308" in errors(
        srv().replace('rule r {', 'rule b { uri-prefix = "/x"  redirect = "/y"  status = 404 }\n rule r {'))
    assert "both redirect and deny" in errors(
        srv().replace('rule r {', 'rule b { uri-prefix = "/x"  redirect = "/y"  deny = true }\n rule r {'))


def test_runtime_bounds_are_config_errors():
    nets = ", ".join(f"10.0.{i}.0/24" for i in range(65))
    assert "at most 64 access entries per vhost" in errors(
        srv().replace('vhost "v" {', f'vhost "v" {{ access {{ allow = {{ {nets} }} }}'))
    top = "\n".join(f"rate-limit l{i} {{ rate = 1/s }}" for i in range(9))
    names = ", ".join(f"l{i}" for i in range(9))
    assert "at most 8 rate limits per request" in errors(
        srv(top=top).replace('vhost "v" {', f'vhost "v" {{ rate-limit = {{ {names} }}'))


def test_downstream_proxy_protocol_is_active_and_stated_by_t(tmp_path):
    import subprocess

    from rproxy.config.printer import print_config
    from rproxy.config.reference import render_markdown
    from support.proc import rproxy_command

    text = srv().replace("port = 9000 }", "port = 9000  proxy-protocol = v2  max-connections = 6 }")
    cfg = loads(text)
    ds = cfg.servers[0].downstreams[0]
    assert (ds.proxy_protocol, ds.max_connections) == ("v2", 6)
    assert cfg.inactive == ()
    assert loads(print_config(cfg)).servers[0].downstreams[0].proxy_protocol == "v2"
    assert loads(srv()).servers[0].downstreams[0].proxy_protocol == "off"
    noted = loads(srv().replace("port = 9000 }", "port = 9000  proxy-protocol = v1  pipeline = 4 }"))
    assert any("'pipeline' is not used with proxy-protocol" in n.message for n in noted.notes)
    assert "invalid value 'v3'" in errors(srv().replace("port = 9000 }", "port = 9000  proxy-protocol = v3 }"))
    path = tmp_path / "pp.conf"
    path.write_text(text)
    r = subprocess.run(rproxy_command() + ["-t", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ("downstream app -> 127.0.0.1:9000: PROXY protocol v2: private connections, one client each, "
            "opened on demand, up to 6 per worker") in r.stdout
    assert "not yet active" not in r.stdout and "proxy-protocol" not in r.stdout
    row = [ln for ln in render_markdown().splitlines() if ln.startswith("| `proxy-protocol` | enum")]
    assert len(row) == 1 and "private" in row[0] and "not yet active" not in row[0]
