"""Provider presets: base URLs and known parameter quirks, as data (Portkey's parameter tables).

No behaviour lives here. ``compile.py`` starts a provider from its preset and lays the user's
table over it: fields set in router.toml win, and the user's ``drop_params`` are added to the
preset's. Translators read the resulting :class:`Quirks`; no code asks which provider it is.

Each quirk carries its source, with the legend of ``wire-formats.md``: ✅ verified from SDK
source or the provider's own docs · ⚠️ second-hand (another gateway's code, an issue with a
real error body) · ❓ an assumption, not verified against the live API.
Section numbers (§4.1 …) point into ``wire-formats.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from asgi_router.graph import Quirks
from asgi_router.types import Dialect


@dataclass(frozen=True, slots=True)
class Preset:
    api: Dialect
    base_url: str  # no trailing slash
    quirks: Quirks = field(default_factory=Quirks)
    keyless: bool = False
    """True: a local server that needs no key, so ``api_keys`` may be left out (default [])."""
    key_env: str | None = None
    """The environment variable its key usually lives in (for ``asgi-router init`` and docs)."""


_NO_MAX_COMPLETION_TOKENS = MappingProxyType({"max_completion_tokens": "max_tokens"})

PRESETS: Final[Mapping[str, Preset]] = MappingProxyType(
    {
        "openai": Preset(api="openai", base_url="https://api.openai.com/v1", key_env="OPENAI_API_KEY"),
        # Anthropic Messages: the adapter appends /messages to the base URL. anthropic-version
        # 2023-06-01 is the current (and only stable) version ✅ §2.1; max_tokens is required,
        # so a default is sent when the client gave none ✅ §2.2.
        "anthropic": Preset(
            api="anthropic",
            base_url="https://api.anthropic.com/v1",
            quirks=Quirks(anthropic_version="2023-06-01", default_max_tokens=4096),
            key_env="ANTHROPIC_API_KEY",
        ),
        "mistral": Preset(
            api="openai",
            base_url="https://api.mistral.ai/v1",  # ✅ §4.0
            quirks=Quirks(
                # Strict schema (pydantic extra="forbid", 422 extra_forbidden) ⚠️✅ §4.1: fields
                # outside the client-python request schema ✅; each one's 422 not quoted ❓, except
                # stream_options, store, max_completion_tokens, seen in real 422 bodies ⚠️.
                drop_params=frozenset(
                    {
                        "user",
                        "logprobs",
                        "top_logprobs",
                        "logit_bias",
                        "stream_options",
                        "store",
                        "service_tier",
                        "safety_identifier",
                        "verbosity",
                    }
                ),
                # seed is random_seed in Mistral's schema ✅; max_completion_tokens → 422 ⚠️;
                # embeddings: dimensions is output_dimension ✅ §4.1 (dimensions → 422 ❓).
                rename_params=MappingProxyType(
                    {
                        "seed": "random_seed",
                        "max_completion_tokens": "max_tokens",
                        "dimensions": "output_dimension",
                    }
                ),
                stream_usage="always",  # usage on the final chunk ⚠️; stream_options → 422 ⚠️
                developer_role=False,  # developer → system, as Portkey does ⚠️
                # The current request schema has `n` ✅, yet n > 1 was reported rejected ❓:
                # keep to 1 until a live test says otherwise.
                max_n=1,
                tool_call_ids="alnum9",  # "must be a-z, A-Z, 0-9, with a length of 9" ⚠️
                fix_message_order=True,  # "Unexpected role 'user' after role 'tool'" ⚠️
            ),
            key_env="MISTRAL_API_KEY",
        ),
        "groq": Preset(
            api="openai",
            base_url="https://api.groq.com/openai/v1",  # ✅ §4.0
            quirks=Quirks(
                # 400 for logprobs, logit_bias, top_logprobs, messages[].name; n must be 1 ✅ §4.3
                drop_params=frozenset({"logprobs", "logit_bias", "top_logprobs"}),
                message_name=False,
                max_n=1,
                # stream_options.include_usage works now ⚠️ (400 in May 2024); x_groq.usage also
            ),
            key_env="GROQ_API_KEY",
        ),
        "cerebras": Preset(
            api="openai",
            base_url="https://api.cerebras.ai/v1",  # ✅ §4.0
            quirks=Quirks(
                # 400 for the first five ⚠️ §4.4 (Portkey drops exactly these plus logprobs)
                drop_params=frozenset(
                    {
                        "frequency_penalty",
                        "presence_penalty",
                        "logit_bias",
                        "parallel_tool_calls",
                        "service_tier",
                        "logprobs",
                    }
                ),
                rename_params=_NO_MAX_COMPLETION_TOKENS,  # as LiteLLM forwards it ⚠️
                developer_role=False,  # developer role not exposed ✅ (official compat page)
                # stream usage ❓: include_usage assumed
            ),
            key_env="CEREBRAS_API_KEY",
        ),
        "deepinfra": Preset(
            api="openai",
            base_url="https://api.deepinfra.com/v1/openai",  # ✅ §4.5
            # Portkey forwards max_completion_tokens as max_tokens ⚠️; stream usage ❓
            quirks=Quirks(rename_params=_NO_MAX_COMPLETION_TOKENS),
            key_env="DEEPINFRA_API_KEY",
        ),
        "gemini": Preset(
            api="openai",
            # Google documents ".../v1beta/openai/" ✅; stored without the slash, paths are joined.
            base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            quirks=Quirks(
                # Usage comes on the final chunk by default ⚠️; whether stream_options is
                # accepted is unverified ❓, so it is not sent.
                stream_usage="always",
                # Streamed tool calls end with finish_reason "stop" ⚠️ (python-genai#2868).
                stream_tool_finish=True,
                # Gemini 3 rejects a replayed tool call without its thought signature ⚠️
                thought_signatures=True,
                # "The input token count (N) exceeds the maximum number of tokens allowed" ⚠️
                context_length_markers=(
                    *Quirks().context_length_markers,
                    "exceeds the maximum number of tokens",
                ),
            ),
            key_env="GEMINI_API_KEY",
        ),
        # OpenRouter and Together: OpenAI-compatible; no quirks known here ❓ (stream usage
        # assumed to take stream_options.include_usage).
        "openrouter": Preset(
            api="openai", base_url="https://openrouter.ai/api/v1", key_env="OPENROUTER_API_KEY"
        ),
        "together": Preset(api="openai", base_url="https://api.together.xyz/v1", key_env="TOGETHER_API_KEY"),
        # Local OpenAI-compatible servers at their default ports, keyless. vLLM takes
        # stream_options.include_usage ⚠️; Ollama's compat layer too in recent releases ❓.
        "vllm": Preset(api="openai", base_url="http://127.0.0.1:8000/v1", keyless=True),
        "ollama": Preset(api="openai", base_url="http://127.0.0.1:11434/v1", keyless=True),
    }
)
