"""Translators between client and upstream dialects: a two-by-two table of pairs."""

from __future__ import annotations

from asgi_router.translate.anthropic_passthrough import AnthropicPassthrough
from asgi_router.translate.anthropic_to_openai import AnthropicToOpenAI
from asgi_router.translate.base import StreamTranslator, Translation, TranslatorPair
from asgi_router.translate.openai_to_anthropic import OpenAIToAnthropic
from asgi_router.translate.passthrough import OpenAIPassthrough
from asgi_router.types import Dialect

__all__ = [
    "AnthropicPassthrough",
    "AnthropicToOpenAI",
    "OpenAIPassthrough",
    "OpenAIToAnthropic",
    "StreamTranslator",
    "Translation",
    "TranslatorPair",
    "pair_for",
]

_PAIRS: dict[tuple[Dialect, Dialect], TranslatorPair] = {
    ("openai", "openai"): OpenAIPassthrough,
    ("openai", "anthropic"): OpenAIToAnthropic,
    ("anthropic", "openai"): AnthropicToOpenAI,
    ("anthropic", "anthropic"): AnthropicPassthrough,
}


def pair_for(client: Dialect, upstream: Dialect) -> TranslatorPair | None:
    return _PAIRS.get((client, upstream))
