"""Semantics layer: the directive table, value types, and the tree -> model builder.

Every directive rproxy knows is one row of TABLE: its name, the blocks it may
appear in, its type, default, validator and a one-line doc.  The README's
configuration reference is generated from this table (scripts/gen_config_reference.py).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import ConfigError
from .model import Position
from .parser import ListValue, Node, Scalar


# --------------------------------------------------------------------------
# value types: each takes the parsed value and returns a Python value or
# raises ConfigError at the value's position.
# --------------------------------------------------------------------------

def _scalar(v, what: str) -> Scalar:
    if isinstance(v, ListValue):
        if len(v.items) == 1:       # libconfuse: { x } is a one-element list
            return v.items[0]
        raise ConfigError(f"expected {what}, got a list", v.pos)
    return v


_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def t_bool(v) -> bool:
    s = _scalar(v, "a boolean")
    low = s.text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"invalid boolean {s.text!r}", s.pos, hint="use true/yes/on or false/no/off")


def _c_int(s: Scalar) -> int:
    """C strtol base 0, as libconfuse: 0x hex, leading 0 octal, sign allowed."""
    text = s.text.strip()
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        raise ConfigError(f"invalid integer {s.text!r}", s.pos)
    sign, body = m.groups()
    if body.lower().startswith("0x"):
        n = int(body, 16)
    elif body.startswith("0") and len(body) > 1:
        n = int(body, 8)
    else:
        n = int(body)
    return -n if sign == "-" else n


def t_int(v) -> int:
    return _c_int(_scalar(v, "an integer"))


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "g": 1024 ** 3, "gb": 1024 ** 3}


def t_size(v) -> int:
    """Bytes: an integer, or a number with a unit (64k, 5m, 1g)."""
    s = _scalar(v, "a size")
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", s.text)
    if m and m.group(2).lower() in _SIZE_UNITS:
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if m is None:
        try:
            return _c_int(s)
        except ConfigError:
            pass
    raise ConfigError(f"invalid size {s.text!r}", s.pos, hint="an integer of bytes or e.g. 64k, 5m, 1g")


_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0}


def t_duration(v) -> float:
    """Seconds: a bare integer (seconds), a value with a unit (5s, 250ms, 2m),
    or RProxy's `{ sec, usec }` pair."""
    if isinstance(v, ListValue) and len(v.items) == 2:
        sec, usec = (_c_int(x) for x in v.items)
        if sec < 0 or usec < 0:
            raise ConfigError("a { sec, usec } duration cannot be negative", v.pos)
        return sec + usec / 1e6
    s = _scalar(v, "a duration")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", s.text)
    if m and m.group(2).lower() in _DURATION_UNITS:
        return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    raise ConfigError(f"invalid duration {s.text!r}", s.pos,
                      hint="seconds (30), a unit (250ms, 5s, 2m) or { sec, usec }")


def t_string(v) -> str:
    return _scalar(v, "a string").text


def t_strlist(v) -> tuple:
    if isinstance(v, ListValue):
        return tuple(x.text for x in v.items)
    return (v.text,)


TYPES: dict[str, Callable[[Any], Any]] = {
    "bool": t_bool,
    "int": t_int,
    "size": t_size,
    "duration": t_duration,
    "string": t_string,
    "list": t_strlist,
}


# --------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------

def at_least(n: int) -> Callable[[Any], Optional[str]]:
    def check(x):
        return None if x >= n else f"must be at least {n}"
    return check


def port_number(x: int) -> Optional[str]:
    return None if 0 < x < 65536 else "must be a TCP port, 1-65535"


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Directive:
    name: str
    where: tuple[str, ...]            # contexts (block names) it may appear in
    type: str                         # a TYPES key, or "block"
    default: Any = None
    doc: str = ""
    field: Optional[str] = None       # key in the collected dict (default: name with '_')
    check: Optional[Callable[[Any], Optional[str]]] = None
    titled: str = "no"                # blocks: "no" | "yes" | "optional"
    repeat: bool = False              # blocks: may appear more than once
    active: bool = True               # False: parsed and validated, behaviour not built yet

    @property
    def key(self) -> str:
        return self.field or self.name.replace("-", "_")


MAIN, SERVER, DOWNSTREAM, VHOST, RULE, RETRY = "main", "server", "downstream", "vhost", "rule", "retry"

TABLE: tuple[Directive, ...] = (
    # top level
    Directive("workers", (MAIN,), "int", None, "worker processes (default: largest `threads`, else CPU count)",
              check=at_least(1)),
    Directive("daemonize", (MAIN,), "bool", False, "detach and run in the background (double fork, pidfile)",
              active=False),
    Directive("user", (MAIN,), "string", None, "drop privileges to this user after binding", active=False),
    Directive("group", (MAIN,), "string", None, "drop privileges to this group after binding", active=False),
    Directive("max-nofile", (MAIN,), "int", 0, "RLIMIT_NOFILE to set at start (0 = leave as is)",
              check=at_least(0), active=False),
    Directive("memtrim-sz", (MAIN,), "size", 0, "malloc trim threshold in each worker (mallopt M_TRIM_THRESHOLD)"),
    Directive("pidfile", (MAIN,), "string", None, "write the master's pid here (atomically; removed at exit)",
              active=False),
    Directive("shutdown-timeout", (MAIN,), "duration", 30.0,
              "longest a graceful stop or reload waits for busy connections"),
    Directive("server", (MAIN,), "block", doc="one listener", repeat=True),
    # server
    Directive("addr", (SERVER,), "string", "127.0.0.1", "listen address: IPv4, IPv6 or unix:/path"),
    Directive("port", (SERVER,), "int", 8080, "listen port", check=port_number),
    Directive("backlog", (SERVER,), "int", 1024, "listen() backlog", check=at_least(1)),
    Directive("threads", (SERVER,), "int", None, "RProxy's per-server thread count; sets the worker count "
              "when `workers` is not given", check=at_least(1)),
    Directive("downstream", (SERVER,), "block", doc="a backend (named in 2.x, untitled in 1.x)",
              titled="optional", repeat=True),
    Directive("vhost", (SERVER,), "block", doc="a virtual host, matched by Host / SNI", titled="yes",
              repeat=True),
    # downstream
    Directive("addr", (DOWNSTREAM,), "string", None, "backend address (required)"),
    Directive("port", (DOWNSTREAM,), "int", None, "backend port (required)", check=port_number),
    Directive("connections", (DOWNSTREAM,), "int", 1, "persistent connections per worker", check=at_least(1)),
    Directive("retry", (DOWNSTREAM,), "duration", 0.05, "delay before reconnecting a failed connection "
              "({ sec, usec }, a duration, or a 1.x `retry { seconds useconds }` block)"),
    Directive("retry", (DOWNSTREAM,), "block", doc="1.x form of the reconnect delay", field="retry_block"),
    Directive("seconds", (RETRY,), "int", 1, "1.x retry: whole seconds", check=at_least(0)),
    Directive("useconds", (RETRY,), "int", 0, "1.x retry: microseconds", check=at_least(0)),
    # vhost
    Directive("aliases", (VHOST,), "list", (), "more host globs for this vhost"),
    Directive("rule", (VHOST,), "block", doc="a path rule, tried in file order", titled="yes", repeat=True),
    # rule
    Directive("uri-match", (RULE,), "string", None, "exact path match"),
    Directive("uri-gmatch", (RULE,), "string", None, "glob path match (`*` matches anything)"),
    Directive("uri-rmatch", (RULE,), "string", None, "regular expression path search"),
    Directive("downstreams", (RULE,), "list", (), "downstream names this rule forwards to"),
    Directive("lb-method", (RULE,), "string", "rtt", "rtt | roundrobin | most-idle | none | random"),
)


def _index(table) -> dict[tuple[str, str], list[Directive]]:
    out: dict[tuple[str, str], list[Directive]] = {}
    for d in table:
        for w in d.where:
            out.setdefault((w, d.name), []).append(d)
    return out


_BY_CONTEXT = _index(TABLE)


def lookup(context: str, name: str, is_block: bool) -> Optional[Directive]:
    for d in _BY_CONTEXT.get((context, name), ()):
        if (d.type == "block") == is_block:
            return d
    return None


def names_in(context: str) -> list[str]:
    return sorted({n for (c, n) in _BY_CONTEXT if c == context})


def contexts_of(name: str) -> list[str]:
    return sorted({c for (c, n) in _BY_CONTEXT if n == name})


# --------------------------------------------------------------------------
# collecting a block's nodes into a dict, with errors
# --------------------------------------------------------------------------

@dataclass
class Block:
    """A block's collected settings: converted values plus where each came from."""
    name: str
    title: Optional[str]
    pos: Position
    values: dict
    where: dict                      # key -> Position of the setting
    blocks: dict                     # key -> list[Block]

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def pos_of(self, key: str) -> Position:
        return self.where.get(key, self.pos)


class Collector:
    def __init__(self):
        self.errors: list[ConfigError] = []

    def unknown(self, node: Node, context: str) -> None:
        kind = "block" if node.kind == "block" else "option"
        elsewhere = [c for c in contexts_of(node.key) if c != context]
        if elsewhere:
            msg = f"'{node.name}' is not allowed in {_ctx_name(context)}"
            hint = f"'{node.name}' belongs in: " + ", ".join(_ctx_name(c) for c in elsewhere)
        else:
            msg = f"unknown {kind} '{node.name}' in {_ctx_name(context)}"
            close = difflib.get_close_matches(node.key, names_in(context), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else None
        self.errors.append(ConfigError(msg, node.pos, hint))

    def collect(self, nodes: list[Node], context: str, name: str, title: Optional[str],
                pos: Position) -> Block:
        blk = Block(name, title, pos, {}, {}, {})
        for node in nodes:
            d = lookup(context, node.key, node.kind == "block")
            if d is None:
                alt = lookup(context, node.key, node.kind != "block")
                if alt is not None:
                    if node.kind == "block":
                        msg = f"'{node.name}' is an option, not a block: write '{node.name} = value'"
                    else:
                        msg = f"'{node.name}' is a block: write '{node.name} {{ ... }}'"
                    self.errors.append(ConfigError(msg, node.pos))
                else:
                    self.unknown(node, context)
                continue
            if d.type == "block":
                self.block(node, d, blk, context)
            else:
                self.option(node, d, blk)
        return blk

    def block(self, node: Node, d: Directive, parent: Block, context: str) -> None:
        if d.titled == "yes" and node.title is None:
            self.errors.append(ConfigError(f"'{node.name}' needs a name: {node.name} NAME {{ ... }}", node.pos))
            return
        if d.titled == "no" and node.title is not None:
            self.errors.append(ConfigError(f"'{node.name}' takes no name", node.title.pos))
            return
        existing = parent.blocks.setdefault(d.key, [])
        if not d.repeat and existing:
            self.errors.append(ConfigError(
                f"duplicate '{node.name}' block (first at line {existing[0].pos.line})", node.pos))
            return
        title = node.title.text if node.title is not None else None
        if title is not None:
            for other in existing:
                if other.title is not None and other.title.lower() == title.lower():
                    self.errors.append(ConfigError(
                        f"duplicate {node.name} name '{title}' (first at line {other.pos.line})",
                        node.title.pos))
                    return
        child_ctx = d.name
        existing.append(self.collect(node.children, child_ctx, node.key, title, node.pos))

    def option(self, node: Node, d: Directive, blk: Block) -> None:
        try:
            value = TYPES[d.type](node.value)
        except ConfigError as e:
            self.errors.append(e)
            return
        if d.check is not None:
            problem = d.check(value)
            if problem:
                self.errors.append(ConfigError(f"'{node.name}' {problem}", _value_pos(node)))
                return
        if node.kind == "append":
            if d.type != "list":
                self.errors.append(ConfigError(f"'+=' needs a list option; '{node.name}' is a {d.type}",
                                               node.pos))
                return
            value = tuple(blk.values.get(d.key, d.default or ())) + value
        blk.values[d.key] = value
        blk.where[d.key] = _value_pos(node)


def _value_pos(node: Node) -> Position:
    return node.value.pos if node.value is not None else node.pos


def _ctx_name(context: str) -> str:
    return "the top level" if context == MAIN else f"a '{context}' block"


def default_of(context: str, name: str):
    d = lookup(context, name, False)
    return None if d is None else d.default
