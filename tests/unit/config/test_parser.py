"""The lexical and syntactic layer (reference §1.1): comments, strings,
variables, lists, includes, and syntax errors with their positions."""
from __future__ import annotations

import os

import pytest

from rproxy.config import ConfigErrors, load, loads
from rproxy.config.parser import ListValue, parse_file_collecting, parse_text, parse_text_collecting


def scalar(text: str, env=None) -> str:
    (node,) = parse_text(f"x = {text}\n", env=env or {})
    return node.value.text


def errors_of(text: str, env=None) -> list[str]:
    p = parse_text_collecting(text, env=env or {})
    return [f"{e.pos.line}:{e.pos.column}: {e.message}" for e in p.errors]


# ---- comments and structure -----------------------------------------------------

def test_all_three_comment_styles_are_ignored():
    nodes = parse_text("# a\n// b\n/* c\n d */ x = 1 # e\ny = 2 // f\nz = /* g */ 3\n", env={})
    assert [(n.name, n.value.text) for n in nodes] == [("x", "1"), ("y", "2"), ("z", "3")]


def test_comment_characters_inside_strings_are_text():
    assert scalar('"a # b // c /* d */"') == "a # b // c /* d */"


def test_a_slash_is_fine_in_unquoted_values_unless_it_starts_a_comment():
    assert scalar("/var/log/x.log") == "/var/log/x.log"
    assert scalar("file:./x.log") == "file:./x.log"
    # "file://..." starts a comment, exactly as in libconfuse: the value is "file:"
    assert scalar("file://tmp") == "file:"


def test_options_are_separated_by_blanks_only_and_names_keep_their_spelling():
    nodes = parse_text("a = 1 b = 2\n\tC = { x, y, }   d += z", env={})
    assert [(n.kind, n.name, n.key) for n in nodes] == [
        ("assign", "a", "a"), ("assign", "b", "b"), ("assign", "C", "c"), ("append", "d", "d")]
    assert [i.text for i in nodes[2].value.items] == ["x", "y"]


def test_blocks_titled_and_untitled_with_positions():
    (srv,) = parse_text('server {\n  downstream "ds 1" { port = 1 }\n  vhost x { }\n}\n', env={})
    assert srv.kind == "block" and srv.title is None
    ds, vh = srv.children
    assert (ds.title.text, ds.title.pos.line, ds.title.pos.column) == ("ds 1", 2, 14)
    assert (vh.name, vh.title.text, vh.pos.line, vh.pos.column) == ("vhost", "x", 3, 3)


def test_empty_list_has_a_position():
    (node,) = parse_text("x =\n   {}\n", env={})
    assert isinstance(node.value, ListValue) and node.value.items == []
    assert (node.value.pos.line, node.value.pos.column) == (2, 4)


def test_a_semicolon_is_part_of_an_unquoted_value_as_in_libconfuse():
    assert scalar("80;") == "80;"


# ---- strings -------------------------------------------------------------------

@pytest.mark.parametrize("raw,decoded", [
    (r'"\n\r\t\b\f\a\e\v"', "\n\r\t\b\f\a\x1b\v"),
    (r'"\101\60\7"', "A0\x07"),
    (r'"\x41\x4a\x4A\x7"', "AJJ\x07"),
    (r'"\x"', "x"),
    (r'"\"\\\q\$"', '"\\q$'),
    ('"two\nlines"', "two\nlines"),
    ('"con\\\ntinued"', "continued"),
    ("'single \\' \\\\ \\n \"x\" ${HOME}'", "single ' \\ \\n \"x\" ${HOME}"),
    ("plain-word_1.2:3/x", "plain-word_1.2:3/x"),
])
def test_string_forms(raw, decoded):
    assert scalar(raw) == decoded


def test_env_substitution_in_double_quotes_and_bare():
    env = {"A": "alpha", "EMPTY": ""}
    assert scalar('"x${A}y"', env) == "xalphay"
    assert scalar("${A}", env) == "alpha"
    assert scalar('"${B:-beta}"', env) == "beta"
    assert scalar("${B:-beta}", env) == "beta"
    assert scalar('"[${EMPTY:-default}]"', env) == "[]"      # set but empty: no default
    assert scalar('"${B:-}"', env) == ""


def test_an_escaped_dollar_is_never_substituted():
    assert scalar(r'"\${A}"', {"A": "alpha"}) == "${A}"
    assert scalar(r'"$\{A}"', {"A": "alpha"}) == "${A}"


def test_unset_variable_without_default_is_an_error_at_its_column():
    assert errors_of('x = "ab${NOPE}"\ny = ${ALSO_NOPE}\n') == [
        "1:8: environment variable ${NOPE} is not set and has no default",
        "2:5: environment variable ${ALSO_NOPE} is not set and has no default"]


def test_unset_variable_on_a_continued_line_points_at_the_right_line():
    assert errors_of('x = "a\nbc ${NOPE}"\n') == ["2:4: environment variable ${NOPE} is not set and has no default"]


def test_unset_variable_leaves_the_tree_complete():
    p = parse_text_collecting("a = ${NOPE}\nb = 2\n", env={})
    assert p.complete and len(p.errors) == 1
    assert [n.name for n in p.nodes] == ["a", "b"] and p.nodes[0].value.broken


def test_env_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("RPROXY_TEST_FROM_ENV", "8123")
    cfg = loads("server { port = ${RPROXY_TEST_FROM_ENV} }\n")
    assert cfg.servers[0].port == 8123


def test_include_keyword_does_not_swallow_longer_words():
    nodes = parse_text("includes = 1\nx = include\n", env={})
    assert [(n.name, n.value.text) for n in nodes] == [("includes", "1"), ("x", "include")]


# ---- include -------------------------------------------------------------------

def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_include_is_relative_to_the_including_file_sorted_and_works_inside_blocks(tmp_path):
    write(tmp_path / "conf.d" / "b.conf", "rule b { uri-prefix = /b }\n")
    write(tmp_path / "conf.d" / "a.conf", "rule a { uri-prefix = /a }\ninclude '../more/c.inc'\n")
    write(tmp_path / "more" / "c.inc", "rule c { uri-prefix = /c }\n")
    main = write(tmp_path / "main.conf", 'server {\n vhost "*" {\n  include "conf.d/*.conf"\n }\n}\n')
    cfg = load(main, env={})
    assert [r.name for r in cfg.servers[0].vhosts[0].rules] == ["a", "c", "b"]
    assert cfg.servers[0].vhosts[0].rules[1].pos.file == str(tmp_path / "conf.d" / "../more/c.inc")


def test_a_glob_that_matches_nothing_is_fine_a_missing_file_is_not(tmp_path):
    main = write(tmp_path / "main.conf", 'include "none.d/*.conf"\nworkers = 2\n')
    assert load(main, env={}).workers == 2
    main = write(tmp_path / "main2.conf", 'include "none.conf"\n')
    with pytest.raises(ConfigErrors) as e:
        load(main, env={})
    assert [x.message for x in e.value.errors] == ["include: no such file 'none.conf'"]


def test_include_cycle_names_the_whole_chain(tmp_path):
    a = write(tmp_path / "a.conf", 'include "b.conf"\n')
    b = write(tmp_path / "b.conf", 'workers = 1\ninclude "a.conf"\n')
    p = parse_file_collecting(a, env={})
    assert [e.message for e in p.errors] == [f"include cycle: {a} -> {b} -> {a}"]
    assert (p.errors[0].pos.file, p.errors[0].pos.line) == (b, 2)
    assert p.complete                       # the file itself was read once: its content is all there


def test_self_include_is_a_cycle(tmp_path):
    a = write(tmp_path / "a.conf", 'include "a.conf"\n')
    assert parse_file_collecting(a, env={}).errors[0].message == f"include cycle: {a} -> {a}"


def test_errors_in_several_files_are_reported_together_in_file_order(tmp_path):
    write(tmp_path / "inc.conf", "server {\n  prot = 1\n}\n")
    main = write(tmp_path / "main.conf", 'workerz = 1\ninclude "inc.conf"\n')
    with pytest.raises(ConfigErrors) as e:
        load(main, env={})
    assert [(os.path.basename(x.pos.file), x.pos.line, x.message) for x in e.value.errors] == [
        ("inc.conf", 2, "unknown option 'prot' in a 'server' block"),
        ("main.conf", 1, "unknown option 'workerz' in the top level")]
    rendered = e.value.render()
    assert "\n      prot = 1\n      ^\n" in rendered     # the included file's line is quoted too


def test_a_syntax_error_in_an_include_stops_before_the_meaning_checks(tmp_path):
    write(tmp_path / "broken.conf", "server {\n")
    main = write(tmp_path / "main.conf", 'workerz = 1\ninclude "broken.conf"\n')
    with pytest.raises(ConfigErrors) as e:
        load(main, env={})
    assert [x.message for x in e.value.errors] == ["'{' is never closed: the file ends inside this block"]


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigErrors) as e:
        load(str(tmp_path / "missing.conf"))
    assert e.value.render() == f"rproxy: cannot read {tmp_path}/missing.conf: No such file or directory"
    bad = tmp_path / "latin1.conf"
    bad.write_bytes(b"x = \xe9\n")
    with pytest.raises(ConfigErrors) as e:
        load(str(bad))
    assert e.value.errors[0].message.endswith("not UTF-8 text")


# ---- syntax errors ---------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("server {\n  port = 1\n", ["1:8: '{' is never closed: the file ends inside this block"]),
    ("server {\n  a { b = 1 }\n  c {\n", ["3:5: '{' is never closed: the file ends inside this block"]),
    ("a = 1\n}\n", ["2:1: unexpected '}': no block is open here"]),
    ("server {\n  port 80\n}\n", ["3:1: unexpected '}': expected '{' to open a block"]),
    ("server {\n  port\n}\n", ["3:1: unexpected '}': expected '=' after an option name or '{' after a block name"]),
    ("server = {\n  port = 1\n}\n", ["2:8: unexpected '=' inside a list"]),
    ("a = b = c\n", ["1:7: unexpected '='"]),
    ('vhost localhost* { }\n', ["1:16: unexpected '*': a value containing '*' must be quoted"]),
    ('a = "abc\n', ['1:5: unterminated string: no closing "']),
    ("a = {1,2\n", ["1:5: '{' is never closed: the file ends inside this block"]),
    ("a = (1)\n", ["1:5: unexpected character '('"]),
    ("a = 1, b = 2\n", ["1:6: unexpected ',': options are separated by blanks or newlines; "
                        "',' only separates list items"]),
    ("a {\n b = 1 }}\n", ["2:9: unexpected '}': no block is open here"]),
    ("a = { b c }\n", ["1:9: unexpected 'c'; expected ',', '}'"]),
])
def test_syntax_errors_point_at_their_cause(text, expected):
    assert errors_of(text) == expected
