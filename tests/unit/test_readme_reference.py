"""The README's configuration reference is generated from the directive table."""
import os

from rproxy.config.reference import BEGIN, END, render_markdown

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_reference_is_current():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert section == render_markdown(), (
        "README.md is stale: run `python -m rproxy.config.reference --update-readme README.md`")


def test_man_page_renders_every_directive():
    from rproxy.config.directives import TABLE
    from rproxy.config.reference import render_man

    man = render_man("test")
    assert man.startswith(".TH RPROXY 8")
    for d in TABLE:
        assert d.name in man
