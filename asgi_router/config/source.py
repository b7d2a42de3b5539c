"""Reading router.toml: the text, the parsed document, and where each table and key sits.

``tomllib`` gives a line only for syntax errors. Every later error (an unknown key, a bad
reference) is located here, best effort, by scanning the text for ``[table.name]`` headers and
``key =`` lines. :class:`Problems` collects errors from every stage with their place as a path
of TOML keys, and turns them into :class:`ConfigError` values with lines at the end.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from asgi_router.errors import ConfigError

Where = tuple[str, ...]
"""A place in the document as its path of keys, e.g. ``("models", "gpt-4.1", "price")``."""

_KEY = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY_PATH = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_KEY_PATH})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN_RE = re.compile(rf"^\s*({_KEY_PATH})\s*=")
_PART_RE = re.compile(_KEY)
_BARE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_LINE_RE = re.compile(r"at line (\d+)")


def split_key_path(text: str) -> Where:
    """``models."gpt-4.1".price`` → ``("models", "gpt-4.1", "price")`` (quotes removed)."""
    parts: list[str] = []
    for m in _PART_RE.finditer(text):
        tok = m.group(0)
        if tok[0] in "\"'":
            tok = tok[1:-1]
            if m.group(0)[0] == '"':
                tok = tok.replace('\\"', '"').replace("\\\\", "\\")
        parts.append(tok)
    return tuple(parts)


def format_path(where: Where) -> str:
    """``("models", "gpt-4.1")`` → ``models."gpt-4.1"``: the way a user writes it in TOML."""
    return ".".join(p if _BARE_RE.match(p) else '"' + p.replace('"', '\\"') + '"' for p in where)


class LineMap:
    """Best-effort map from a key path to the line (1-based) where it is written."""

    __slots__ = ("_lines",)

    def __init__(self, text: str) -> None:
        self._lines: dict[Where, int] = {}
        table: Where = ()
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                in_multiline = _toggles_multiline(line, in_multiline)
                continue
            header = _HEADER_RE.match(line)
            if header:
                table = split_key_path(header.group(1))
                self._record(table, number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                self._record(table + split_key_path(assign.group(1)), number)
            in_multiline = _toggles_multiline(line, in_multiline)

    def _record(self, path: Where, number: int) -> None:
        """``path`` and each table it implies (``[a.b]`` defines ``a`` too) start at ``number``
        unless they appeared earlier."""
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def line(self, where: Where) -> int | None:
        """The line of ``where``, or of its closest written ancestor (its table header)."""
        for end in range(len(where), 0, -1):
            found = self._lines.get(where[:end])
            if found is not None:
                return found
        return None


def _toggles_multiline(line: str, inside: bool) -> bool:
    count = line.count('"""') + line.count("'''")
    return inside if count % 2 == 0 else not inside


class Problems:
    """Collects every configuration error with its place; never stops at the first."""

    __slots__ = ("_found", "file")

    def __init__(self, file: str) -> None:
        self.file = file
        self._found: list[tuple[ConfigError, Where]] = []

    def add(self, table: Where, key: str | Where, message: str, *, line: int | None = None) -> None:
        key_path: Where = ((key,) if key else ()) if isinstance(key, str) else key
        error = ConfigError(self.file, format_path(table), format_path(key_path), message, line)
        self._found.append((error, table + key_path))

    def __bool__(self) -> bool:
        return bool(self._found)

    def __len__(self) -> int:
        return len(self._found)

    def located(self, lines: LineMap | None) -> list[ConfigError]:
        """The errors, each with a line where one is known, in file order (unknown lines last)."""
        out = [
            e if e.line is not None or lines is None else replace(e, line=lines.line(where))
            for e, where in self._found
        ]
        return sorted(out, key=lambda e: e.line if e.line is not None else 1 << 30)


def read(path: Path, problems: Problems) -> str | None:
    """The file's text, or None (with a problem recorded) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add((), "", f"cannot read the file: {exc.strerror or type(exc).__name__}")
    except UnicodeDecodeError:
        problems.add((), "", "the file is not valid UTF-8")
    return None


def parse(text: str, problems: Problems) -> dict[str, Any] | None:
    """The parsed document, or None with the parser's error (and its line) recorded."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line: int | None = getattr(exc, "lineno", None)
        message = str(getattr(exc, "msg", "") or exc)
        if line is None:
            found = _TOML_LINE_RE.search(message)
            line = int(found.group(1)) if found else None
        if line is None and "end of document" in message:
            line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at line \d+, column \d+\)|\s*\(at end of document\)", "", message)
        problems.add((), "", f"invalid TOML: {message}", line=line)
        return None
