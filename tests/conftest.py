"""Shared fixtures: a recording downstream and the real rproxy command."""
from __future__ import annotations

import os

import pytest

from support.downstream import Downstream
from support.proc import Rproxy, free_port
from support.stats import assert_quiet


def pytest_runtest_logreport(report):
    """Each failure, one line, appended to $RPROXY_FAILED_LIST: run-tests.sh
    prints the list last, so a CI log that keeps only its tail still names
    what failed (a long assertion diff would push pytest's own summary out)."""
    path = os.environ.get("RPROXY_FAILED_LIST")
    if not path or not report.failed:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    why = crash.message.splitlines()[0][:160] if crash is not None and crash.message else ""
    with open(path, "a") as f:
        f.write(f"{report.nodeid} ({report.when}): {why}\n")


@pytest.fixture
def downstream():
    ds = Downstream()
    yield ds
    ds.close()


@pytest.fixture
def start_rproxy(tmp_path):
    """start_rproxy(conf_text, port) -> Rproxy; every one is stopped afterwards.

    Before stopping a proxy that is still running, its workers must be back
    to zero (no client, exchange, buffer or pending request left, pools
    consistent) -- pass check_quiet=False for a test that leaves one busy."""
    started = []

    def start(conf_text: str, port=None, check_quiet=True, **kw):
        p = Rproxy(conf_text, tmp_path, port=port, name=f"rproxy{len(started)}", **kw)
        p.check_quiet = check_quiet
        started.append(p)
        return p

    yield start
    try:
        for p in started:
            if p.check_quiet and p.poll() is None and p.workers():
                assert_quiet(p)
    finally:
        for p in started:
            p.stop()


@pytest.fixture
def port():
    return free_port()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory):
    """The TLS tests' certificates (support/certs.py), made once."""
    from support.certs import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("pki"))
