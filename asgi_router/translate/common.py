"""Pieces shared by the translator pairs: reason maps, ids, images, usage, param rules, logging.

Everything here is pure. Logging is structlog at debug level: one line per parameter a
translator drops, renames or clamps, so a user can find out why a field never reached the
provider (the decision is made once per attempt, never per chunk).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
import structlog

from asgi_router.graph import Deployment, Quirks
from asgi_router.wire.usage import Usage

LOGGER = "asgi_router.translate"

# §3.7 of the wire reference. Rows marked "ours" there: refusal ↔ content_filter,
# model_context_window_exceeded → length.
STOP_TO_FINISH: Mapping[str, str] = MappingProxyType(
    {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "tool_use": "tool_calls",
        "pause_turn": "stop",
        "refusal": "content_filter",
        "model_context_window_exceeded": "length",
    }
)
FINISH_TO_STOP: Mapping[str, str] = MappingProxyType(
    {
        "stop": "end_turn",
        "length": "max_tokens",
        "model_length": "max_tokens",  # Mistral
        "tool_calls": "tool_use",
        "function_call": "tool_use",
        "content_filter": "refusal",
    }
)

_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w-]+=[^;,]*)*);base64,", re.ASCII)
EMPTY_SCHEMA: Mapping[str, Any] = MappingProxyType({"type": "object", "properties": {}})
RAW_ARGUMENTS_KEY = "raw_arguments"
"""Tool-call arguments that are not a JSON object reach Anthropic as ``{"raw_arguments": s}``."""


def debug(event: str, **kw: Any) -> None:
    """A debug line on the ``asgi_router.translate`` logger. The logger is looked up per call
    (only when something is dropped or rewritten, a few times per attempt at most), so a
    logger cached under an earlier configuration never hides these lines."""
    structlog.get_logger(LOGGER).debug(event, **kw)


def dropped(provider: str, param: str, reason: str = "unsupported") -> None:
    debug("param_dropped", provider=provider, param=param, reason=reason)


def renamed(provider: str, param: str, to: str) -> None:
    debug("param_renamed", provider=provider, param=param, to=to)


def clamped(provider: str, param: str, value: Any, to: Any) -> None:
    debug("param_clamped", provider=provider, param=param, value=value, to=to)


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty dict (for defensive reads)."""
    return value if isinstance(value, dict) else {}


def index_of(obj: dict[str, Any]) -> int:
    """An event's or choice's ``index`` (0 when absent or not an integer)."""
    i = obj.get("index", 0)
    return i if isinstance(i, int) and not isinstance(i, bool) else 0


def finish_reason(stop_reason: Any) -> str:
    """Anthropic ``stop_reason`` → OpenAI ``finish_reason`` (unknown or null: ``stop``)."""
    return STOP_TO_FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any) -> str:
    """OpenAI ``finish_reason`` → Anthropic ``stop_reason`` (anything else: ``end_turn``)."""
    return FINISH_TO_STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def short_hash(text: str, length: int) -> str:
    """A deterministic base-62 digest of ``text`` (``length`` ≤ 10 characters)."""
    n = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(out)


def anthropic_id(raw: Any, prefix: str, seed: str) -> str:
    """An id Anthropic accepts (``^[a-zA-Z0-9_-]+$``): other characters become ``_``;
    a missing id is minted from ``seed`` as ``prefix`` + hash."""
    if isinstance(raw, str) and raw:
        return _BAD_ID_CHARS.sub("_", raw)
    return prefix + short_hash(seed, 10)


THOUGHT_SEP = "__thought__"


def thought_signature(call: Any) -> str | None:
    """Gemini's signature on an OpenAI tool call (or a stream's piece of one), if any."""
    extra = call.get("extra_content") if isinstance(call, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


def signed_id(tool_id: str, signature: str | None) -> str:
    """A ``tool_use`` id carrying a thought signature (base64url, within Anthropic's id
    characters), so that the client's replay of the call brings it back."""
    if signature is None:
        return tool_id
    return tool_id + THOUGHT_SEP + base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode()


def split_signed_id(tool_id: Any) -> tuple[Any, str | None]:
    """:func:`signed_id` undone: (the upstream's id, the signature or None)."""
    if not isinstance(tool_id, str) or THOUGHT_SEP not in tool_id:
        return tool_id, None
    head, _, tail = tool_id.partition(THOUGHT_SEP)
    try:
        sig = base64.b64decode(tail + "=" * (-len(tail) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # not ours after all: leave the id as it is
        return tool_id, None
    return (head, sig) if sig else (tool_id, None)


def chatcmpl_id(msg_id: Any) -> str:
    """OpenAI completion id minted from an Anthropic message id: ``msg_X`` → ``chatcmpl-X``."""
    tail = msg_id.removeprefix("msg_") if isinstance(msg_id, str) and msg_id else "anthropic"
    return "chatcmpl-" + tail


def msg_id(completion_id: Any, seed: str) -> str:
    """Anthropic message id minted from an OpenAI completion id: ``chatcmpl-X`` → ``msg_X``."""
    if isinstance(completion_id, str) and completion_id:
        return "msg_" + _BAD_ID_CHARS.sub("_", completion_id.removeprefix("chatcmpl-"))
    return "msg_" + short_hash(seed, 10)


def image_source(url: str) -> dict[str, Any]:
    """An OpenAI ``image_url.url`` (data: URL or http(s) URL) → an Anthropic image ``source``."""
    m = _DATA_URL.match(url)
    if m:
        return {"type": "base64", "media_type": m.group(1), "data": url[m.end() :]}
    return {"type": "url", "url": url}


def image_url(source: Any) -> str | None:
    """An Anthropic image ``source`` → an OpenAI ``image_url.url`` (None: not representable)."""
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if kind == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def parse_arguments(raw: Any) -> dict[str, Any]:
    """OpenAI ``function.arguments`` (a JSON string) → an Anthropic ``input`` object.

    Empty → ``{}`` (Portkey); invalid JSON or a non-object → ``{"raw_arguments": raw}`` (ours:
    never lose what the model produced, never fail the request on it)."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return {RAW_ARGUMENTS_KEY: raw if isinstance(raw, str) else str(raw)}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: raw}


def dump_arguments(value: Any) -> str:
    """An Anthropic ``input`` object → OpenAI ``function.arguments`` (compact JSON)."""
    return orjson.dumps(value if value is not None else {}).decode()


def openai_usage(u: Usage) -> dict[str, Any]:
    """§3.8: ``prompt_tokens`` counts every prompt token, cache reads and writes included."""
    out: dict[str, Any] = {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached_input},
    }
    if u.cache_write:
        out["prompt_tokens_details"]["cache_write_tokens"] = u.cache_write
    return out


def text_of(content: Any, sep: str = "") -> str:
    """The text of OpenAI ``content`` (a string or a list of parts) or Anthropic blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        p["text"]
        for p in content
        if isinstance(p, dict) and p.get("type") in ("text", "refusal") and isinstance(p.get("text"), str)
    ]
    return sep.join(texts)


def merge_params(out: dict[str, Any], deployment: Deployment) -> None:
    """The deployment's default params, written in the upstream's dialect, under the request's."""
    for key, value in deployment.params.items():
        out.setdefault(key, value)


def apply_param_quirks(out: dict[str, Any], quirks: Quirks, provider: str) -> None:
    """The provider's dropped and renamed params (``Quirks.drop_params``/``rename_params``)."""
    for name in quirks.drop_params.intersection(out):
        del out[name]
        dropped(provider, name, "drop_params")
    for old, new in quirks.rename_params.items():
        if old in out:
            out.setdefault(new, out[old])
            del out[old]
            renamed(provider, old, new)


def anthropic_max_tokens(out: dict[str, Any], deployment: Deployment) -> None:
    """Anthropic requires ``max_tokens``: default it (the deployment's ``max_output_tokens``,
    else ``quirks.default_max_tokens``) and cap it at ``max_output_tokens`` (litellm sends
    128000 for model names it does not know)."""
    cap = deployment.max_output_tokens
    value = out.get("max_tokens")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        out["max_tokens"] = cap if cap is not None else deployment.provider.quirks.default_max_tokens
    elif cap is not None and value > cap:
        out["max_tokens"] = cap
        clamped(deployment.provider.name, "max_tokens", value, cap)


def anthropic_sampling(out: dict[str, Any], provider: str) -> None:
    """Temperature ≤ 1 (Anthropic's range); ``top_p`` dropped when temperature is also set
    (newer models reject both; Portkey's rule)."""
    temperature = out.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        out["temperature"] = 1.0
        clamped(provider, "temperature", temperature, 1.0)
    if "temperature" in out and "top_p" in out:
        del out["top_p"]
        dropped(provider, "top_p", "temperature_set")


def error_message(body: bytes) -> tuple[str, str | None]:
    """Message and type from any provider's error body, parsed defensively: OpenAI's
    ``{"error": {...}}``, Anthropic's, Mistral's flat or 422 shapes, FastAPI's ``detail``,
    Gemini's list-wrapped object, or plain text."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:2000] or "upstream error", None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if not isinstance(obj, dict):
        return _as_text(obj), None
    err = obj.get("error")
    if isinstance(err, dict):
        kind = err.get("type") if isinstance(err.get("type"), str) else err.get("status")
        return _as_text(err.get("message", err)), kind if isinstance(kind, str) else None
    if isinstance(err, str) and "message" not in obj:
        return err, None
    kind = obj.get("type")
    message = obj.get("message", obj.get("detail", obj))
    return _as_text(message), kind if isinstance(kind, str) and kind != "error" else None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
