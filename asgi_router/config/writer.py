"""Writing router.toml: ``asgi-router keys new`` and ``asgi-router init``.

``keys new`` appends one ``[keys.NAME]`` table as text, leaving every existing byte (and
comment) as it was, and replaces the file atomically (a temporary file in the same folder,
then ``os.replace``). Only the key's SHA-256 is written; the key itself is returned once.
``init`` writes a starter file from the provider keys present in the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import tomli_w

from asgi_router.errors import ConfigError, ConfigErrors

KEY_PREFIX: Final = "sk-router-"

# (preset, model name, upstream model id, price per million tokens), for `init`. Prices are
# list prices in USD as of late 2025: check the provider's page before relying on them.
STARTER_MODELS: Final[tuple[tuple[str, str, str, dict[str, float]], ...]] = (
    ("openai", "gpt-4.1-mini", "gpt-4.1-mini", {"input": 0.40, "output": 1.60, "cached_input": 0.10}),
    (
        "anthropic",
        "claude-haiku",
        "claude-haiku-4-5",
        {"input": 1.00, "output": 5.00, "cached_input": 0.10},
    ),
    ("mistral", "mistral-small", "mistral-small-latest", {"input": 0.10, "output": 0.30}),
    ("groq", "groq-llama-70b", "llama-3.3-70b-versatile", {"input": 0.59, "output": 0.79}),
    ("gemini", "gemini-flash", "gemini-2.5-flash", {"input": 0.30, "output": 2.50}),
    ("cerebras", "cerebras-llama-8b", "llama3.1-8b", {"input": 0.10, "output": 0.10}),
    (
        "deepinfra",
        "deepinfra-llama-70b",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        {"input": 0.13, "output": 0.39},
    ),
    (
        "together",
        "together-llama-70b",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        {"input": 0.88, "output": 0.88},
    ),
    ("openrouter", "openrouter-gpt-4o-mini", "openai/gpt-4o-mini", {"input": 0.15, "output": 0.60}),
)
STARTER_ENV: Final[Mapping[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "deepinfra": "DEEPINFRA_API_KEY",
    "together": "TOGETHER_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}


def new_key_table(name: str, key_sha256: str) -> str:
    """The TOML text of one ``[keys.NAME]`` table holding only the key's hash."""
    return tomli_w.dumps({"keys": {name: {"key_sha256": key_sha256}}})


def append_key(path: Path, name: str) -> str:
    """Make a client key, append its ``[keys.NAME]`` table to ``path`` atomically, and return the
    key (the only time it is shown). Raises :class:`ConfigErrors` if the name exists already or
    the file cannot be read, parsed or extended."""

    def fail(message: str) -> ConfigErrors:
        return ConfigErrors([ConfigError(str(path), "keys", name, message)])

    if not name.strip():
        raise fail("a key name must not be empty")
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"cannot read the file as TOML: {exc}") from None
    existing = doc.get("keys")
    if isinstance(existing, dict) and name in existing:
        raise fail(f"a key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    table = new_key_table(name, hashlib.sha256(key.encode()).hexdigest())
    separator = "" if not text else "\n" if text.endswith("\n") else "\n\n"
    updated = text + separator + table
    try:
        tomllib.loads(updated)
    except tomllib.TOMLDecodeError as exc:  # e.g. keys written as an inline table
        raise fail(f"cannot append a [keys.{name}] table to this file: {exc}") from None
    _replace_atomically(path, updated)
    return key


def _replace_atomically(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_INIT_HEADER = """\
# router.toml: written by `asgi-router init` from the provider keys in your environment.
# Secrets are references (env:NAME or file:PATH), never the keys themselves.
# Prices are USD per million tokens (list prices, late 2025): check them.
# Check it with `asgi-router check`; add client keys with `asgi-router keys new NAME`
# (until a [keys] table exists, requests need no key and the server listens on loopback only).

"""


def init_toml(env: Mapping[str, str]) -> str:
    """A starter router.toml: a provider and a model for each provider key set in ``env``,
    and a fallback chain "chat" over them (a local Ollama server when no key is set)."""
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for preset, model_name, model_id, price in STARTER_MODELS:
        var = STARTER_ENV[preset]
        if env.get(var):
            providers[preset] = {"preset": preset, "api_keys": [f"env:{var}"]}
            models[model_name] = {"provider": preset, "model": model_id, "price": dict(price)}
    if not providers:
        providers["ollama"] = {"preset": "ollama"}
        models["local"] = {"provider": "ollama", "model": "llama3.2"}
    doc: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:4000", "max_body_bytes": 4_000_000, "watch": True},
        "providers": providers,
        "models": models,
        "fallbacks": {"chat": {"chain": list(models), "order": "listed"}},
        "state": {"backend": "memory", "spend_log": "router-spend.db"},
    }
    return _INIT_HEADER + tomli_w.dumps(doc)
