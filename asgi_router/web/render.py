"""Errors → status, body and headers in the client's dialect; the x-router-* headers."""

from __future__ import annotations

import math

import orjson

from asgi_router.errors import AllFailed, RateLimited, RouterError, UpstreamClientError
from asgi_router.types import Dialect
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai

Headers = list[tuple[bytes, bytes]]
JSON_CT = (b"content-type", b"application/json")


def anthropic_type(status: int) -> str:
    """Anthropic's error type for a status (wire/anthropic.py's table, CONTRACT §3); the
    gateway's own 503 (not ready, draining) reads as overloaded_error."""
    return "overloaded_error" if status == 503 else wire_anthropic.error_type(status)


# OpenAI's conventional type strings per status
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "server_error",
    504: "timeout",
}


def retry_headers(seconds: float) -> Headers:
    """``retry-after`` in whole seconds rounded up (≥ 1) and ``retry-after-ms`` exact."""
    return [
        (b"retry-after", str(max(1, math.ceil(seconds))).encode()),
        (b"retry-after-ms", str(max(1, round(seconds * 1000))).encode()),
    ]


def error_body(err: RouterError, dialect: Dialect) -> bytes:
    if dialect == "anthropic":
        return wire_anthropic.error_body(err.message, anthropic_type(err.status))
    return wire_openai.error_body(err.message, OPENAI_TYPES.get(err.status, err.type), err.code, err.param)


def render_error(err: RouterError, dialect: Dialect) -> tuple[int, Headers, bytes]:
    """The whole answer for a gateway error, in the client's dialect."""
    headers: Headers = [JSON_CT]
    if isinstance(err, UpstreamClientError):
        return err.status, headers, client_error_body(err, dialect)
    retry = err.retry_after_s if isinstance(err, RateLimited | AllFailed) else None
    if retry is not None:
        headers += retry_headers(retry)
    if err.should_retry is not None:
        headers.append((b"x-should-retry", b"true" if err.should_retry else b"false"))
    return err.status, headers, error_body(err, dialect)


def stream_error_event(message: str, status: int, dialect: Dialect) -> bytes:
    """The event that ends a stream broken after its first byte."""
    if dialect == "anthropic":
        return wire_anthropic.stream_error_event(message, anthropic_type(status))
    return wire_openai.stream_error_event(message, OPENAI_TYPES.get(status, "server_error"), "stream_error")


def client_error_body(err: UpstreamClientError, dialect: Dialect) -> bytes:
    """An upstream 4xx goes back as it is when it already has the client dialect's error shape;
    otherwise (another dialect, Mistral's flat or FastAPI bodies, Gemini's lists) its message is
    put into the client dialect's shape with the same status."""
    try:
        body = orjson.loads(err.body) if err.body else None
    except orjson.JSONDecodeError:
        body = None
    if dialect == "openai" and isinstance(body, dict) and isinstance(body.get("error"), dict):
        e = body["error"]
        if (
            isinstance(e.get("message"), str)
            and all(k in e for k in ("type", "param", "code"))
            and isinstance(e["param"], str | None)
            and isinstance(e["code"], str | None)  # vLLM, for one, sends a number
        ):
            return err.body
    if dialect == "anthropic" and isinstance(body, dict) and body.get("type") == "error":
        return err.body
    message = (
        upstream_message(body)
        or err.body[:500].decode("utf-8", "replace")
        or f"upstream answered {err.status}"
    )
    if dialect == "anthropic":
        return wire_anthropic.error_body(message, anthropic_type(err.status))
    code = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        c = body["error"].get("code")
        code = (
            c if isinstance(c, str) else (str(c) if isinstance(c, int) and not isinstance(c, bool) else None)
        )
    return wire_openai.error_body(message, OPENAI_TYPES.get(err.status, "invalid_request_error"), code)


def upstream_message(body: object) -> str | None:
    """The human message of an error body in any of the shapes providers use."""
    if isinstance(body, list) and body:
        return upstream_message(body[0])
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    if isinstance(inner, dict):
        return upstream_message(inner)
    if isinstance(inner, str):
        return inner
    for k in ("message", "detail"):
        v = body.get(k)
        if isinstance(v, str):
            return v
        if v is not None:
            return orjson.dumps(v).decode()[:500]
    return None
