"""The configuration corpus: good files load to their expected model (JSON),
bad files fail with their expected error text, compared exactly.

corpus/good/NAME.conf -> corpus/good/NAME.json   (rproxy.config.dump of the model)
corpus/bad/NAME.conf  -> corpus/bad/NAME.err     (every error, rendered)

Files are loaded by a path relative to the corpus directory, so positions in
the expected text read `bad/NAME.conf:3:5`; absolute paths (resolved
certificates, logs) appear as `$DIR/...`.  After a deliberate change, rewrite
the expectations with RPROXY_REGEN_CORPUS=1 and review the diff.
"""
from __future__ import annotations

import glob
import os

import pytest

from rproxy.config import ConfigErrors, load
from rproxy.config.dump import to_json

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# The only environment the corpus sees (env.conf and unset-env.conf rely on it).
ENV = {"RPROXY_TEST_PORT": "9090", "RPROXY_TEST_HOST": "backend.test"}
REGEN = os.environ.get("RPROXY_REGEN_CORPUS") == "1"


def _names(kind: str) -> list[str]:
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CORPUS, kind, "*.conf")))


def _check(expected_path: str, actual: str) -> None:
    if REGEN:
        with open(expected_path, "w", encoding="utf-8") as f:
            f.write(actual)
        pytest.skip("expectation rewritten")
    with open(expected_path, encoding="utf-8") as f:
        expected = f.read()
    assert actual == expected


def _machine_independent(cfg):
    """Whether the user/group of a corpus file exists depends on the machine
    running the tests; that note is checked in test_loader.py instead."""
    import dataclasses

    notes = tuple(n for n in cfg.notes if "does not exist on this machine" not in n.message)
    return dataclasses.replace(cfg, notes=notes)


@pytest.mark.parametrize("name", _names("good"))
def test_good_config_loads_to_expected_model(name, monkeypatch):
    monkeypatch.chdir(CORPUS)
    cfg = load(f"good/{name}.conf", env=ENV)
    _check(os.path.join(CORPUS, "good", f"{name}.json"), to_json(_machine_independent(cfg), CORPUS))


@pytest.mark.parametrize("name", _names("bad"))
def test_bad_config_fails_with_expected_errors(name, monkeypatch):
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ConfigErrors) as exc:
        load(f"bad/{name}.conf", env=ENV)
    text = exc.value.render().replace(CORPUS + os.sep, "$DIR/") + "\n"
    _check(os.path.join(CORPUS, "bad", f"{name}.err"), text)


def test_corpus_has_the_reference_sample_and_every_seed_example():
    good = set(_names("good"))
    assert "rproxy-c-sample" in good
    # seed 003's examples: global options, server skeleton, downstream (+retry),
    # SSL, rewrite and logging; the SSL one also verbatim among the bad ones.
    assert {"seed003-global", "seed003-server", "seed003-downstream", "seed003-ssl",
            "seed003-rewrite", "seed003-logging"} <= good
    assert "seed003-ssl-verbatim" in set(_names("bad"))


def test_every_expectation_has_its_config():
    # a renamed config must not leave a stale expectation behind
    for kind, ext in (("good", "json"), ("bad", "err")):
        for path in glob.glob(os.path.join(CORPUS, kind, f"*.{ext}")):
            assert os.path.exists(path[: -len(ext)] + "conf"), path
