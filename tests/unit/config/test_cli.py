"""`rproxy -t` as a real subprocess: exit status, stdout, stderr."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from support.proc import rproxy_command

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def run_t(*args, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    # Only the variables the corpus expects: the outcome must not depend on
    # the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPROXY_TEST_")}
    env.update(env_extra or {})
    return subprocess.run(rproxy_command() + ["-t", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


CONF = """\
workers = 2
server {
    addr = 127.0.0.1
    port = 8080
    read-timeout = 0
    disable-client-nagle = yes
    downstream app { addr = 127.0.0.1  port = 8081  connections = 4  pipeline = 2 }
    vhost "example.com" {
        aliases = { "www.example.com" }
        rule api { uri-prefix = "/api/"  downstreams = { app }  passthrough = true }
    }
}
"""


def test_valid_config_prints_the_summary_and_exits_0(tmp_path):
    path = tmp_path / "ok.conf"
    path.write_text(CONF)
    r = run_t("-c", str(path))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"""\
configuration {path} (RProxy 2.x form)
workers: 2 (from `workers`)
server 127.0.0.1:8080 (backlog 1024)
  client timeouts: read 60s, write 60s, keepalive 75s, pending 10s; max-pending unlimited
  limits: request line 8k, head 16k, 100 headers, body unlimited, buffer 32k
  downstream app -> 127.0.0.1:8081: 4 connection(s) per worker (up to 16 while requests wait), up to 2 pipelined requests each, connect 5s, read 60s, write 60s, retry 50ms
  vhost example.com (aliases www.example.com): adds no headers
    rule api: prefix '/api/' -> app [rtt]
notes:
  {path}:5:20: 'read-timeout = 0': RProxy read 0 as 'no timeout'; rproxy never disables it and uses its default (60s)
rproxy: configuration {path} is valid
"""


def test_invalid_config_prints_every_error_and_exits_1(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(CONF.replace("port = 8080", "port = 80;").replace("{ app }", "{ ap }"))
    r = run_t("-c", str(path))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"""\
{path}:4:12: 'port': invalid integer '80;'
        port = 80;
               ^
    hint: no ';' after values: options are separated by newlines or spaces
{path}:10:58: rule 'api': unknown downstream 'ap'
            rule api {{ uri-prefix = "/api/"  downstreams = {{ ap }}  passthrough = true }}
{" " * (4 + 57)}^
    hint: did you mean 'app'?
rproxy: configuration {path} is invalid (2 errors)
"""


def test_missing_file(tmp_path):
    path = tmp_path / "none.conf"
    r = run_t("-c", str(path))
    assert r.returncode == 1
    assert r.stderr == (f"rproxy: cannot read {path}: No such file or directory\n"
                        f"rproxy: configuration {path} is invalid (1 error)\n")


def test_bare_config_argument_as_rproxy_took_it(tmp_path):
    path = tmp_path / "ok.conf"
    path.write_text(CONF)
    r = run_t(str(path))
    assert r.returncode == 0 and r.stdout.endswith(f"rproxy: configuration {path} is valid\n")


def test_module_entry_point_checks_too(tmp_path):
    path = tmp_path / "ok.conf"
    path.write_text("server { }\n")
    r = subprocess.run([sys.executable, "-m", "rproxy", "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr


CORPUS_ENV = {"RPROXY_TEST_PORT": "9090", "RPROXY_TEST_HOST": "backend.test"}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CORPUS, "bad", "*.conf"))),
                         ids=lambda p: os.path.basename(p))
def test_bad_corpus_files_exit_1_with_their_errors(path):
    rel = os.path.relpath(path, CORPUS)
    r = run_t("-c", rel, cwd=CORPUS, env_extra=CORPUS_ENV)
    with open(path[:-4] + "err", encoding="utf-8") as f:
        expected = f.read().replace("$DIR/", CORPUS + os.sep)
    assert r.returncode == 1 and r.stdout == ""
    head, last = r.stderr.rsplit("rproxy: configuration", 1)
    assert head == expected
    assert last.startswith(f" {rel} is invalid (")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CORPUS, "good", "*.conf"))),
                         ids=lambda p: os.path.basename(p))
def test_good_corpus_files_exit_0(path):
    r = run_t("-c", path, env_extra=CORPUS_ENV)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.startswith(f"configuration {path} (RProxy ")
    assert r.stdout.endswith(f"rproxy: configuration {path} is valid\n")
