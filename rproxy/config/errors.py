"""Configuration errors that read like a compiler's: file:line:col, the line, a caret."""
from __future__ import annotations

from typing import Iterable, Optional

from .model import Position

# file path -> its text, so an error can quote the offending line even for
# included files.  Filled by the parser as it reads files.
_SOURCES: dict[str, str] = {}


def remember_source(path: str, text: str) -> None:
    _SOURCES[path] = text


def source_line(pos: Position) -> Optional[str]:
    text = _SOURCES.get(pos.file)
    if text is None:
        return None
    lines = text.splitlines()
    if 1 <= pos.line <= len(lines):
        return lines[pos.line - 1]
    return None


class ConfigError(Exception):
    """One mistake in a configuration file, with its position."""

    def __init__(self, message: str, pos: Optional[Position] = None, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint

    def render(self) -> str:
        if self.pos is None:
            head = f"rproxy: {self.message}"
        else:
            head = f"{self.pos}: {self.message}"
        out = [head]
        if self.pos is not None:
            line = source_line(self.pos)
            if line is not None:
                expanded = line.expandtabs(1)
                out.append(f"    {expanded}")
                out.append("    " + " " * max(self.pos.column - 1, 0) + "^")
        if self.hint:
            out.append(f"    hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class ConfigErrors(Exception):
    """Every error found in one run, in file order."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors = sorted(
            errors,
            key=lambda e: (e.pos.file, e.pos.line, e.pos.column) if e.pos else ("", 0, 0),
        )
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)

    def __str__(self) -> str:
        return self.render()
