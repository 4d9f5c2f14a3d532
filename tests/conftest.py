"""Shared fixtures: a recording downstream and the real rproxy command."""
from __future__ import annotations

import pytest

from support.downstream import Downstream
from support.proc import Rproxy, free_port


@pytest.fixture
def downstream():
    ds = Downstream()
    yield ds
    ds.close()


@pytest.fixture
def start_rproxy(tmp_path):
    """start_rproxy(conf_text, port) -> Rproxy; every one is stopped afterwards."""
    started = []

    def start(conf_text: str, port=None, **kw):
        p = Rproxy(conf_text, tmp_path, port=port, name=f"rproxy{len(started)}", **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def port():
    return free_port()
