"""config/isolated.py: the master parses in a child, so it never imports the
parser; what comes back must be what an in-process parse gives."""
from __future__ import annotations

import os
import subprocess
import sys

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

SCRIPT = r"""
import sys
from rproxy.config import ConfigErrors, isolated
path = sys.argv[1]
try:
    got = isolated.load(path)
    kind = "ok"
except ConfigErrors as e:
    got, kind = e.render(), "errors"
except OSError as e:
    got, kind = (e.errno, e.filename), "oserror"
print("parser imported:", "lark" in sys.modules or "rproxy.config.loader" in sys.modules)
from rproxy.config import loader
try:
    want = loader.load(path)
except ConfigErrors as e:
    want = e.render()
except OSError as e:
    want = (e.errno, e.filename)
print(kind, "same:", got == want)
"""


def run(path: str) -> list[str]:
    r = subprocess.run([sys.executable, "-P", "-c", SCRIPT, path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_a_valid_config_comes_back_equal_and_the_parser_stays_out():
    out = run(os.path.join(CORPUS, "good", "v2-full.conf"))
    assert out == ["parser imported: False", "ok same: True"]


def test_errors_come_back_rendered_with_their_source_lines():
    out = run(os.path.join(CORPUS, "bad", "all-errors-in-one-run.conf"))
    assert out == ["parser imported: False", "errors same: True"]


def test_a_missing_file_is_reported_as_in_process(tmp_path):
    out = run(str(tmp_path / "nope.conf"))
    assert out[0] == "parser imported: False"
    assert out[1].endswith("same: True")


def test_the_plain_run_forms_are_read_without_argparse():
    from rproxy.cli import run_config_of

    assert run_config_of(["-c", "a.conf"]) == "a.conf"
    assert run_config_of(["--config", "a.conf"]) == "a.conf"
    assert run_config_of(["--config=a.conf"]) == "a.conf"
    assert run_config_of(["a.conf"]) == "a.conf"            # RProxy's bare argument
    for other in (["-t", "-c", "a.conf"], ["-c", "a.conf", "-s", "reload"], ["-h"], ["-c"], []):
        assert run_config_of(other) is None, other         # everything else goes through argparse
    code = ("import sys; from rproxy import cli; cli.run_config_of(['-c', 'x']); "
            "print('argparse' in sys.modules, 'shutil' in sys.modules)")
    r = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr
