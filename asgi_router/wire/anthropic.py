"""Anthropic Messages on the wire: error bodies, event framing and stream probes.

Stream usage is cumulative: ``message_start`` carries the input side (and usually
``output_tokens: 1``), each ``message_delta`` the running totals, which override
``message_start``'s numbers where present. :func:`probe_event` is stateless, so the
:class:`~asgi_router.wire.probe.Probe` of one event carries only the numbers of that event;
combine them with :func:`merge_usage` (a field-wise maximum, right for cumulative counts and
harmless for OpenAI's single usage chunk).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NotRequired, TypedDict, get_args

import orjson

from asgi_router.wire import usage as _usage
from asgi_router.wire.probe import MalformedEvent, Probe
from asgi_router.wire.sse import SSEEvent

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
]

ERROR_TYPES: Mapping[int, ErrorType] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        # CONTRACT §3 lists 404 and 413 under invalid_request_error. The API also sends
        # not_found_error and request_too_large; the SDK's ErrorResponse union has no
        # request_too_large, and the SDK picks its exception class from the status alone.
        404: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
        500: "api_error",
        502: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
)
KNOWN_ERROR_TYPES: frozenset[str] = frozenset(get_args(ErrorType))


class ErrorDetail(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    type: Literal["error"]
    error: ErrorDetail
    request_id: NotRequired[str]


class UsageDict(TypedDict, total=False):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


def error_type(status: int) -> ErrorType:
    """Anthropic ``error.type`` for an HTTP status: the table, else by class (4xx, 5xx)."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(message: str, type_: str) -> bytes:
    """``{"type": "error", "error": {"type", "message"}}``."""
    body: ErrorBody = {"type": "error", "error": {"type": type_, "message": message}}
    return orjson.dumps(body)


def event(name: str, obj: Any) -> bytes:
    """One Anthropic SSE event: an ``event:`` line (the SDK dispatches on it), then ``data:``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def stream_error_event(message: str, type_: str) -> bytes:
    """The event that ends a broken stream for an Anthropic client (the SDK raises on it)."""
    return b"event: error\ndata: " + error_body(message, type_) + b"\n\n"


MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def probe_event(ev: SSEEvent) -> Probe:
    """Parse one event of an Anthropic stream. Raises :class:`MalformedEvent`."""
    data = ev.data
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"stream event is not valid JSON: {data[:80]!r}") from e
    if not isinstance(obj, dict):
        raise MalformedEvent("stream event is not a JSON object")
    p = Probe(obj=obj)
    kind = obj.get("type") or ev.event
    if kind == "content_block_delta":
        delta = obj.get("delta")
        if isinstance(delta, dict):
            dtype = delta.get("type")
            p.content = (dtype == "text_delta" and bool(delta.get("text"))) or dtype == "input_json_delta"
    elif kind == "content_block_start":
        block = obj.get("content_block")
        p.content = isinstance(block, dict) and block.get("type") == "tool_use"
    elif kind == "message_start":
        message = obj.get("message")
        if isinstance(message, dict):
            p.usage = _usage.from_anthropic(message.get("usage"))
    elif kind == "message_delta":
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            p.finish = delta["stop_reason"]
        p.usage = _usage.from_anthropic(obj.get("usage"))
    elif kind == "message_stop":
        p.done = True
    elif kind == "error":
        p.error = obj.get("error") or {"type": "api_error", "message": "upstream stream error"}
    # ping and unknown event types carry nothing routing needs
    return p


def merge_usage(seen: _usage.Usage | None, new: _usage.Usage | None) -> _usage.Usage | None:
    """Combine the usage of successive stream events: field-wise maximum.

    Anthropic's counts are cumulative and ``message_delta`` may omit input tokens (then 0
    here), so the maximum keeps ``message_start``'s input and the latest output count.
    """
    if new is None:
        return seen
    if seen is None:
        return new
    return _usage.Usage(
        input=max(seen.input, new.input),
        output=max(seen.output, new.output),
        cached_input=max(seen.cached_input, new.cached_input),
        cache_write=max(seen.cache_write, new.cache_write),
    )


def response_usage(body: Any) -> _usage.Usage | None:
    if isinstance(body, dict):
        return _usage.from_anthropic(body.get("usage"))
    return None


def usage_dict(u: _usage.Usage) -> UsageDict:
    """A :class:`Usage` in Anthropic's terms: ``input_tokens`` excludes cache reads and writes."""
    return {
        "input_tokens": u.uncached_input,
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached_input,
    }
