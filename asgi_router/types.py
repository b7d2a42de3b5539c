"""Small shared types. Imports nothing from the package, so every module may use it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

JSON: TypeAlias = Any
JSONObject: TypeAlias = dict[str, Any]

Dialect = Literal["openai", "anthropic"]
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic")

Clock = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic`` in production, a fake in tests)."""


class Secret:
    """A secret value read from a reference (``env:NAME`` or ``file:PATH``).

    ``repr`` and ``str`` show only the reference, never the value. The value comes out
    only through :meth:`reveal`, called where an upstream auth header is built.
    """

    __slots__ = ("_value", "ref")

    def __init__(self, ref: str, value: str) -> None:
        self.ref = ref
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.ref == self.ref and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.ref)
