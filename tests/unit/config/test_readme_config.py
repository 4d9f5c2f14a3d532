"""The configurations the README shows are valid, and so is the shipped rproxy.conf."""
from __future__ import annotations

import os
import re

import pytest

from rproxy.config import load, loads

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


def readme_examples() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Configuration\n"):text.index("### Configuration reference")]
    return re.findall(r"^```\n(.*?)^```$", section, re.S | re.M)


def test_the_configuration_section_has_examples_of_both_dialects():
    examples = readme_examples()
    assert len(examples) == 2
    assert {loads(e, env={}).dialect for e in examples} == {"1", "2"}


@pytest.mark.parametrize("index", range(2))
def test_readme_example_loads(index):
    loads(readme_examples()[index], env={})


def test_shipped_config_loads():
    cfg = load(os.path.join(ROOT, "rproxy.conf"), env={})
    assert cfg.workers == 2 and cfg.servers[0].downstreams[0].connections == 8
