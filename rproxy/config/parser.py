"""Syntax layer: text -> a tree of nodes with positions (no semantics here).

The grammar (grammar.lark) is LALR with positions.  This module decodes
strings (escapes, `${VAR}` / `${VAR:-default}` in double quotes and bare),
expands `include "glob"` relative to the including file (cycles are errors),
and returns plain nodes that directives.py interprets.
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


@dataclass
class ListValue:
    items: list[Scalar]
    pos: Position


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


_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "a": "\a", "e": "\x1b", "v": "\v"}
_ENV_RE = re.compile(r"\$\{([^}:\s]*)(?::-([^}]*))?\}")


class _Decoder:
    def __init__(self, env: Mapping[str, str], errors: list[ConfigError]):
        self.env = env
        self.errors = errors

    def substitute(self, text: str, pos: Position) -> str:
        def repl(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.errors.append(ConfigError(
                f"environment variable ${{{name}}} is not set and has no default",
                pos, hint=f"set it, or write ${{{name}:-default}}"))
            return ""
        return _ENV_RE.sub(repl, text)

    def double_quoted(self, body: str, pos: Position) -> str:
        out = []
        i, n = 0, len(body)
        while i < n:
            c = body[i]
            if c != "\\" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            e = body[i + 1]
            if e == "\n":                       # line continuation
                i += 2
            elif e in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[e])
                i += 2
            elif e == "x":
                m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
                if m:
                    out.append(chr(int(m.group(0), 16)))
                    i += 2 + len(m.group(0))
                else:
                    out.append("x")
                    i += 2
            elif e in "01234567":
                m = re.match(r"[0-7]{1,3}", body[i + 1:])
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
            else:                               # \" \\ and any other \c -> c
                out.append(e)
                i += 2
        # ${VAR} is substituted after escapes, so "\${X}" stays literal only if
        # written as "$\{X}"; the original behaves the same way.
        return self.substitute("".join(out), pos)

    @staticmethod
    def single_quoted(body: str) -> str:
        return re.sub(r"\\([\\'])", r"\1", body)

    def scalar(self, tok: Token, file: str) -> Scalar:
        pos = Position(file, tok.line, tok.column)
        raw = str(tok)
        if tok.type == "DQSTRING":
            return Scalar(self.double_quoted(raw[1:-1], pos), raw, '"', pos)
        if tok.type == "SQSTRING":
            return Scalar(self.single_quoted(raw[1:-1]), raw, "'", pos)
        if tok.type == "ENVVAR":
            return Scalar(self.substitute(raw, pos), raw, None, pos)
        return Scalar(raw, raw, None, pos)


def _syntax_error(exc: UnexpectedInput, file: str, text: str) -> ConfigError:
    pos = Position(file, getattr(exc, "line", 0) or 0, getattr(exc, "column", 0) or 0)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch == "*":
            return ConfigError("unexpected '*': a value containing '*' must be quoted", pos,
                               hint='write it in quotes, e.g. "*" or "localhost*"')
        if ch == ";":
            return ConfigError("unexpected ';': options are separated by newlines or spaces", pos)
        return ConfigError(f"unexpected character {ch!r}", pos)
    if isinstance(exc, UnexpectedEOF):
        lines = text.splitlines() or [""]
        pos = Position(file, len(lines), len(lines[-1]) + 1)
        return ConfigError("unexpected end of file: a block is not closed with '}'", pos)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            pos = Position(file, len(lines), len(lines[-1]) + 1)
            return ConfigError("unexpected end of file: a block is not closed with '}'", pos)
        expected = sorted(exc.expected)
        shown = {"EQUAL": "'='", "LBRACE": "'{'", "RBRACE": "'}'", "WORD": "a name or value",
                 "PLUSEQUAL": "'+='", "COMMA": "','", "DQSTRING": "a string", "SQSTRING": "a string",
                 "ENVVAR": "${VAR}", "INCLUDE": "include"}
        want = ", ".join(dict.fromkeys(shown.get(e, e) for e in expected))
        return ConfigError(f"unexpected {str(tok)!r}; expected {want}", pos)
    return ConfigError(str(exc).splitlines()[0], pos)


class _Builder:
    def __init__(self, env: Mapping[str, str]):
        self.errors: list[ConfigError] = []
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
        except OSError as e:
            self.errors.append(ConfigError(f"cannot read {path}: {e.strerror}", via))
            return []
        remember_source(path, text)
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
            return []
        return self.items(tree.children, file)

    def value(self, v, file: str) -> Value:
        if isinstance(v, Tree) and v.data == "list":
            items = [self.decoder.scalar(t, file) for t in v.children if t is not None]
            return ListValue(items, Position(file, v.meta.line, v.meta.column) if not v.meta.empty
                             else (items[0].pos if items else Position(file, 0, 0)))
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
        base = os.path.dirname(pattern.pos.file) or "."
        spec = pattern.text if os.path.isabs(pattern.text) else os.path.join(base, pattern.text)
        paths = sorted(glob.glob(spec))
        if not paths and not glob.has_magic(spec):
            self.errors.append(ConfigError(f"include: no such file {pattern.text!r}", pattern.pos))
            return []
        out: list[Node] = []
        for p in paths:
            out.extend(self.parse_file(p, via=pattern.pos))
        return out


def parse_file(path: str, env: Optional[Mapping[str, str]] = None) -> list[Node]:
    """Parse a config file (and its includes) into nodes; raise ConfigErrors."""
    b = _Builder(os.environ if env is None else env)
    nodes = b.parse_file(path)
    if b.errors:
        raise ConfigErrors(b.errors)
    return nodes


def parse_text(text: str, file: str = "<string>", env: Optional[Mapping[str, str]] = None) -> list[Node]:
    b = _Builder(os.environ if env is None else env)
    nodes = b.parse_text(text, file)
    if b.errors:
        raise ConfigErrors(b.errors)
    return nodes
