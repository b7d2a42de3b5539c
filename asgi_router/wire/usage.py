"""Token usage from either dialect, and its cost from a :class:`~asgi_router.graph.Price`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgi_router.graph import Price


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one answer, dialect-neutral.

    ``input`` counts every prompt token (OpenAI's ``prompt_tokens``: cached ones included);
    ``cached_input`` and ``cache_write`` are the parts of it read from or written to a cache.
    """

    input: int = 0
    output: int = 0
    cached_input: int = 0
    cache_write: int = 0

    @property
    def uncached_input(self) -> int:
        return max(self.input - self.cached_input - self.cache_write, 0)


def from_openai(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input=_int(u.get("prompt_tokens")),
        output=_int(u.get("completion_tokens")),
        cached_input=_int(cached),
    )


def from_anthropic(u: Any) -> Usage | None:
    """Anthropic's ``input_tokens`` excludes cache reads and writes: add them back."""
    if not isinstance(u, dict):
        return None
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    return Usage(
        input=_int(u.get("input_tokens")) + read + write,
        output=_int(u.get("output_tokens")),
        cached_input=read,
        cache_write=write,
    )


def cost(usage: Usage, price: Price | None) -> float:
    """USD for ``usage`` at ``price`` (per million tokens). Cache writes at the input price."""
    if price is None:
        return 0.0
    cached_price = price.input if price.cached_input is None else price.cached_input
    return (
        (usage.input - usage.cached_input) * price.input
        + usage.cached_input * cached_price
        + usage.output * price.output
    ) / 1_000_000


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
