"""OpenAI Chat Completions and Embeddings on the wire: error bodies and stream probes."""

from __future__ import annotations

from typing import Any

import orjson

from asgi_router.wire import usage as _usage
from asgi_router.wire.probe import MalformedEvent, Probe
from asgi_router.wire.sse import DONE, SSEEvent

STREAM_DONE = b"data: [DONE]\n\n"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``: all four keys, strings or null."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def stream_error_event(message: str, type_: str, code: str | None = None) -> bytes:
    """The event that ends a broken stream for an OpenAI client (the SDK raises on it)."""
    return b"data: " + error_body(message, type_, code) + b"\n\n"


def probe_event(ev: SSEEvent) -> Probe:
    """Parse one chunk of an OpenAI-dialect stream. Raises :class:`MalformedEvent`.
    (Once per event of every stream: locals, then one Probe built positionally.)"""
    data = ev.data
    if data == DONE:
        return Probe(done=True)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"stream event is not valid JSON: {data[:80]!r}") from e
    if type(obj) is not dict:
        raise MalformedEvent("stream event is not a JSON object")
    err = obj.get("error")
    if err:
        return Probe(obj, error=err)
    u = obj.get("usage")
    usage = None
    if u:
        usage = _usage.from_openai(u)
    else:
        xg = obj.get("x_groq")  # Groq puts usage under x_groq on the finish chunk
        if type(xg) is dict and xg.get("usage"):
            usage = _usage.from_openai(xg["usage"])
    choices = obj.get("choices")
    if not choices:
        return Probe(obj, False, None, usage, usage_only=choices == [] and usage is not None)
    if type(choices) is not list:
        raise MalformedEvent("stream chunk has no choices list")
    content = False
    finish = None
    for choice in choices:
        if type(choice) is not dict:
            raise MalformedEvent("stream chunk choice is not an object")
        delta = choice.get("delta")
        if type(delta) is dict and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
            content = True
        fr = choice.get("finish_reason")
        if fr:
            finish = fr
    return Probe(obj, content, finish, usage)


def response_usage(body: Any) -> _usage.Usage | None:
    if isinstance(body, dict):
        return _usage.from_openai(body.get("usage"))
    return None
