"""Compression without processes: the directives and the encoders."""
from __future__ import annotations

import zlib

import brotli
import pytest
import zstandard

from rproxy.config import loads
from rproxy.config.errors import ConfigErrors
from rproxy.fastpath import compress_buffer, compress_memory


def conf(rule_body: str) -> str:
    return f"""
server {{
    addr = 127.0.0.1
    port = 8080
    downstream d {{ addr = 127.0.0.1  port = 9000 }}
    vhost "*" {{ rule app {{ uri-gmatch = "*"  downstreams = {{ d }}  {rule_body} }} }}
}}
"""


def rule(text):
    return loads(conf(text)).servers[0].vhosts[0].rules[0]


def test_issue_example_parses_bare_media_types():
    r = rule("compress = { br, zstd, gzip }  compress-types = { text/*, application/json, "
             "application/javascript, image/svg+xml }  compress-min-size = 256")
    assert r.compress == ("br", "zstd", "gzip")
    assert r.compress_types == ("text/*", "application/json", "application/javascript", "image/svg+xml")
    assert r.compress_min_size == 256


def test_defaults_leave_compression_off():
    r = rule("")
    assert r.compress == ()
    assert "text/*" in r.compress_types and r.compress_min_size == 256
    assert rule("compress = gzip  compress-min-size = 1k").compress_min_size == 1024


@pytest.mark.parametrize("text,msg", [
    ("compress = { gzip, deflate }", "unknown coding 'deflate'"),
    ("compress = { br, BR }", "listed twice"),
    ('compress-types = { "text" }', "invalid media type"),
    ('compress-types = { "text/html; charset=utf-8" }', "invalid media type"),
])
def test_bad_values_are_errors_with_a_position(text, msg):
    with pytest.raises(ConfigErrors) as e:
        loads(conf(text))
    assert msg in str(e.value)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("piece", [1, 1000, 32768])
def test_encoder_round_trip(coding, piece):
    data = b"".join(b'{"n": %d, "s": "%s"}\n' % (i, b"x" * (i % 50)) for i in range(3000))
    out = compress_buffer(coding, data, piece)
    back = {"gzip": lambda b: zlib.decompress(b, 16 + zlib.MAX_WBITS), "br": brotli.decompress,
            "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)}[coding](out)
    assert back == data
    assert compress_buffer(coding, b"", piece) != b""      # an empty body is still a valid stream


def test_memory_per_stream_is_bounded():
    m = compress_memory()
    assert m["gzip"] == 256 * 1024
    assert 0 < m["br"] < 2 << 20 and 0 < m["zstd"] < 2 << 20


def test_cache_directives_of_issue_21(tmp_path):
    """The names of the issue load; what is not built yet is listed as inactive."""
    cfg = loads(f"""
cache main {{
    path = {tmp_path}
    max-size = 1g
    keys-zone = 10m
    inactive = 10m
}}
""" + conf("cache = main  cache-lock = true  cache-use-stale = { error, timeout, updating }"))
    assert cfg.caches[0].name == "main" and cfg.caches[0].path == str(tmp_path)
    rule = cfg.servers[0].vhosts[0].rules[0]
    assert (rule.cache, rule.cache_lock, rule.cache_use_stale) == ("main", True, ("error", "timeout", "updating"))
    names = " ".join(n.message for n in cfg.inactive)
    for name in ("'path'", "'cache' in", "'max-size'", "'keys-zone'", "'inactive'", "'cache-lock'",
                 "'cache-use-stale'"):
        assert name not in names
    rule = loads(conf("cache-use-stale = { http_500, HTTP_503, http_502, http_504 }")).servers[0].vhosts[0].rules[0]
    assert rule.cache_use_stale == ("http_500", "http_503", "http_502", "http_504")      # nginx's names
    with pytest.raises(ConfigErrors) as e:
        loads(conf("cache-use-stale = { http_404 }"))
    assert "unknown cache-use-stale condition" in str(e.value)
    with pytest.raises(ConfigErrors) as e:
        loads(conf("cache = nope"))
    assert "no cache named 'nope'" in str(e.value)
    with pytest.raises(ConfigErrors) as e:
        loads("cache main { max-size = 1g }\n" + conf(""))
    assert "has no 'path'" in str(e.value)


def test_dash_t_reports_compression():
    from rproxy.config.summary import summary

    text = summary(loads(conf("compress = { zstd, gzip }  compress-min-size = 1k")))
    assert "compresses text/*" in text and "from 1024 bytes with zstd, gzip" in text
