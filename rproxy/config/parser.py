"""Syntax layer: text -> a tree of nodes with positions (no semantics here).

The grammar (grammar.lark) is LALR with positions.  This module decodes
strings (escapes, `${VAR}` / `${VAR:-default}` in double quotes and bare),
expands `include "glob"` relative to the including file (cycles are errors),
and returns plain nodes that directives.py interprets.

Errors come in two weights.  A syntax error, an unreadable file or a missing
include leaves the tree incomplete: checking its meaning would only produce
follow-on noise, so loading stops after parsing.  An unset `${VAR}` or an
include cycle leaves a complete tree (the variable's scalar is marked broken
and skipped later; a cyclic include adds nothing new), so the semantic checks
still run and every error of the file is reported in one go.
"""
from __future__ import annotations

import functools
import glob
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import ConfigError, ConfigErrors, remember_source
from .model import Position


@dataclass
class Scalar:
    text: str                 # decoded value
    raw: str                  # as written
    quoted: Optional[str]     # '"', "'" or None for unquoted
    pos: Position
    broken: bool = False      # an error was already reported for it (unset ${VAR})

    def pos_at(self, offset: int) -> Position:
        """Position of character `offset` of the decoded text, when the raw
        text maps one to one onto it (no escapes, no substitution); else the
        start of the value."""
        body = self.raw[1:-1] if self.quoted else self.raw
        if body != self.text or offset < 0:
            return self.pos
        return _offset_pos(self.pos, self.raw, offset + (1 if self.quoted else 0))


@dataclass
class ListValue:
    items: list[Scalar]
    pos: Position

    @property
    def broken(self) -> bool:
        return any(i.broken for i in self.items)


Value = Union[Scalar, ListValue]


@dataclass
class Node:
    kind: str                 # "assign" | "append" | "block"
    name: str                 # as written
    pos: Position
    title: Optional[Scalar] = None
    value: Optional[Value] = None
    children: list["Node"] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Option names are case-insensitive."""
        return self.name.lower()


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    # No Lark cache on disk: the master may run as root from a read-only install.
    path = os.path.join(os.path.dirname(__file__), "grammar.lark")
    with open(path, encoding="utf-8") as f:
        return Lark(f.read(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _offset_pos(start: Position, raw: str, index: int) -> Position:
    """Position of raw[index] for a token that starts at `start`."""
    before = raw[:index]
    newlines = before.count("\n")
    if newlines == 0:
        return Position(start.file, start.line, start.column + index)
    return Position(start.file, start.line + newlines, index - before.rindex("\n"))


_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "a": "\a", "e": "\x1b", "v": "\v"}
_ENV_AT = re.compile(r"\$\{([^}:\s]*)(?::-([^}]*))?\}")
_SCALAR_TYPES = {"WORD", "DQSTRING", "SQSTRING", "ENVVAR"}


class _Decoder:
    def __init__(self, env: Mapping[str, str], errors: list[ConfigError]):
        self.env = env
        self.errors = errors

    def lookup(self, m: re.Match, pos: Position) -> Optional[str]:
        """The value of ${NAME} / ${NAME:-default}; None (and an error) if unset."""
        name, default = m.group(1), m.group(2)
        if name and name in self.env:
            return self.env[name]
        if default is not None:
            return default
        if not name:
            self.errors.append(ConfigError("empty variable name in ${}", pos,
                                           hint="write ${NAME}, or \\${ for a literal ${"))
            return None
        self.errors.append(ConfigError(
            f"environment variable ${{{name}}} is not set and has no default",
            pos, hint=f"set it, or write ${{{name}:-default}}"))
        return None

    def double_quoted(self, raw: str, pos: Position) -> tuple[str, bool]:
        """Decode a "..." token in one pass, as libconfuse's lexer does: an
        escape is consumed before `${` is looked at, so `\\${X}` is literal."""
        out: list[str] = []
        broken = False
        i, n = 1, len(raw) - 1          # skip the quotes
        while i < n:
            c = raw[i]
            if c == "$":
                m = _ENV_AT.match(raw, i, n)
                if m:
                    value = self.lookup(m, _offset_pos(pos, raw, i))
                    if value is None:
                        broken = True
                    else:
                        out.append(value)
                    i = m.end()
                    continue
            if c != "\\" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            e = raw[i + 1]
            if e == "\n":                       # line continuation
                i += 2
            elif e in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[e])
                i += 2
            elif e == "x":
                m = re.compile(r"[0-9a-fA-F]{1,2}").match(raw, i + 2, n)
                if m:
                    out.append(chr(int(m.group(0), 16)))
                    i = m.end()
                else:
                    out.append("x")
                    i += 2
            elif e in "01234567":
                m = re.compile(r"[0-7]{1,3}").match(raw, i + 1, n)
                out.append(chr(int(m.group(0), 8)))
                i = m.end()
            else:                               # \" \\ \$ and any other \c -> c
                out.append(e)
                i += 2
        return "".join(out), broken

    @staticmethod
    def single_quoted(body: str) -> str:
        return re.sub(r"\\([\\'])", r"\1", body)

    def scalar(self, tok: Token, file: str) -> Scalar:
        pos = Position(file, tok.line, tok.column)
        raw = str(tok)
        if tok.type == "DQSTRING":
            text, broken = self.double_quoted(raw, pos)
            return Scalar(text, raw, '"', pos, broken)
        if tok.type == "SQSTRING":
            return Scalar(self.single_quoted(raw[1:-1]), raw, "'", pos)
        if tok.type == "ENVVAR":
            m = _ENV_AT.fullmatch(raw)
            value = self.lookup(m, pos) if m else raw
            return Scalar(value or "", raw, None, pos, value is None)
        return Scalar(raw, raw, None, pos)


def _unclosed_brace(text: str) -> Optional[tuple[int, int]]:
    """(line, column) of the innermost '{' never closed, skipping strings and
    comments; used to point an end-of-file error at the block that is open."""
    stack: list[tuple[int, int]] = []
    line, col, i, n = 1, 1, 0, len(text)

    def advance(k: int) -> None:
        nonlocal line, col, i
        for ch in text[i:i + k]:
            if ch == "\n":
                line, col = line + 1, 1
            else:
                col += 1
        i += k

    while i < n:
        c = text[i]
        if c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            advance((j if j >= 0 else n) - i)
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            advance((j + 2 if j >= 0 else n) - i)
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            advance(min(j + 1, n) - i)
        elif c == "{":
            stack.append((line, col))
            advance(1)
        elif c == "}":
            if stack:
                stack.pop()
            advance(1)
        else:
            advance(1)
    return stack[-1] if stack else None


def _line_before(text: str, at: tuple[int, int]) -> str:
    """The text of line at[0] before column at[1]."""
    line = text.splitlines()[at[0] - 1]
    return line[:at[1] - 1]


_SHOWN = {"EQUAL": "'='", "LBRACE": "'{'", "RBRACE": "'}'", "WORD": "a name or value",
          "PLUSEQUAL": "'+='", "COMMA": "','", "DQSTRING": "a string", "SQSTRING": "a string",
          "ENVVAR": "${VAR}", "INCLUDE": "include", "$END": "end of file"}


def _syntax_error(exc: UnexpectedInput, file: str, text: str) -> ConfigError:
    pos = Position(file, getattr(exc, "line", 0) or 0, getattr(exc, "column", 0) or 0)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch == "*":
            return ConfigError("unexpected '*': a value containing '*' must be quoted", pos,
                               hint='write it in quotes, e.g. "*" or "localhost*"')
        if ch in "\"'":
            return ConfigError(f"unterminated string: no closing {ch}", pos)
        if ch == "(" and text[:exc.pos_in_stream].rstrip().endswith("include"):
            return ConfigError("unexpected '(': include takes a quoted file name or glob", pos,
                               hint='write include "file.conf" (no parentheses)')
        return ConfigError(f"unexpected character {ch!r}", pos)
    eof = isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END")
    if eof:
        opened = _unclosed_brace(text)
        if opened:
            return ConfigError("'{' is never closed: the file ends inside this block",
                               Position(file, *opened), hint="add the missing '}'")
        lines = text.splitlines() or [""]
        return ConfigError("unexpected end of file", Position(file, len(lines), len(lines[-1]) + 1))
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    expected = set(exc.expected)
    if expected == {"LBRACE"}:
        # `name title` was read and must be followed by a block: most often an
        # option written without its '='.
        return ConfigError(f"unexpected {str(tok)!r}: expected '{{' to open a block", pos,
                           hint="an option needs '=': write 'name = value'")
    if {"EQUAL", "LBRACE"} <= expected:
        return ConfigError(f"unexpected {str(tok)!r}: expected '=' after an option name "
                           "or '{' after a block name", pos)
    if tok.type == "COMMA":
        return ConfigError("unexpected ',': options are separated by blanks or newlines; "
                           "',' only separates list items", pos)
    opened = _unclosed_brace(text[:tok.start_pos])
    if tok.type == "RBRACE" and opened is None:
        return ConfigError("unexpected '}': no block is open here", pos)
    if tok.type == "EQUAL":
        in_list = opened is not None and _line_before(text, opened).rstrip().endswith("=")
        if in_list:
            return ConfigError("unexpected '=' inside a list", pos,
                               hint="a block takes no '=': write 'name { ... }', not 'name = { ... }'")
        return ConfigError("unexpected '='", pos,
                           hint="one 'name = value' per option; quote a value that contains '='")
    want = ", ".join(sorted(dict.fromkeys(_SHOWN.get(e, e) for e in expected)))
    return ConfigError(f"unexpected {str(tok)!r}; expected {want}", pos)


class _Builder:
    def __init__(self, env: Mapping[str, str]):
        self.errors: list[ConfigError] = []
        self.complete = True          # False once a file could not be read or parsed
        self.decoder = _Decoder(env, self.errors)
        self.stack: list[str] = []

    def parse_file(self, path: str, via: Optional[Position] = None) -> list[Node]:
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " -> ".join(self.stack[self.stack.index(real):] + [real])
            self.errors.append(ConfigError(f"include cycle: {chain}", via))
            return []
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            self.errors.append(ConfigError(f"cannot read {path}: {reason}", via))
            self.complete = False
            return []
        self.stack.append(real)
        try:
            return self.parse_text(text, path)
        finally:
            self.stack.pop()

    def parse_text(self, text: str, file: str) -> list[Node]:
        remember_source(file, text)
        try:
            tree = _lark().parse(text)
        except UnexpectedInput as e:
            self.errors.append(_syntax_error(e, file, text))
            self.complete = False
            return []
        return self.items(tree.children, file)

    def value(self, v, file: str) -> Value:
        if isinstance(v, Tree) and v.data == "list":
            items = [self.decoder.scalar(t, file) for t in v.children
                     if isinstance(t, Token) and t.type in _SCALAR_TYPES]
            return ListValue(items, Position(file, v.meta.line, v.meta.column))
        return self.decoder.scalar(v, file)

    def items(self, children, file: str) -> list[Node]:
        out: list[Node] = []
        for t in children:
            if t.data == "include":
                out.extend(self.include(self.decoder.scalar(t.children[0], file)))
                continue
            name_tok = t.children[0]
            npos = Position(file, name_tok.line, name_tok.column)
            if t.data in ("assign", "append"):
                out.append(Node(str(t.data), str(name_tok), npos, value=self.value(t.children[1], file)))
            else:  # block
                rest = t.children[1:]
                title = None
                if rest and isinstance(rest[0], Tree) and rest[0].data == "title":
                    title = self.decoder.scalar(rest[0].children[0], file)
                    rest = rest[1:]
                out.append(Node("block", str(name_tok), npos, title=title,
                                children=self.items(rest, file)))
        return out

    def include(self, pattern: Scalar) -> list[Node]:
        if pattern.broken:
            return []
        base = os.path.dirname(pattern.pos.file) or "."
        spec = pattern.text if os.path.isabs(pattern.text) else os.path.join(base, pattern.text)
        paths = sorted(glob.glob(spec))
        if not paths and not glob.has_magic(spec):
            self.errors.append(ConfigError(f"include: no such file {pattern.text!r}", pattern.pos))
            self.complete = False
            return []
        out: list[Node] = []
        for p in paths:
            out.extend(self.parse_file(p, via=pattern.pos))
        return out


@dataclass
class Parsed:
    nodes: list[Node]
    errors: list[ConfigError]
    complete: bool        # every file was read and parsed: semantic checks are meaningful


def parse_file_collecting(path: str, env: Optional[Mapping[str, str]] = None) -> Parsed:
    b = _Builder(os.environ if env is None else env)
    nodes = b.parse_file(path)
    return Parsed(nodes, b.errors, b.complete)


def parse_text_collecting(text: str, file: str = "<string>",
                          env: Optional[Mapping[str, str]] = None) -> Parsed:
    b = _Builder(os.environ if env is None else env)
    nodes = b.parse_text(text, file)
    return Parsed(nodes, b.errors, b.complete)


def parse_file(path: str, env: Optional[Mapping[str, str]] = None) -> list[Node]:
    """Parse a config file (and its includes) into nodes; raise ConfigErrors."""
    p = parse_file_collecting(path, env)
    if p.errors:
        raise ConfigErrors(p.errors)
    return p.nodes


def parse_text(text: str, file: str = "<string>", env: Optional[Mapping[str, str]] = None) -> list[Node]:
    p = parse_text_collecting(text, file, env)
    if p.errors:
        raise ConfigErrors(p.errors)
    return p.nodes
