"""Scripted behaviour of a simulated model: the *step*.

A script is ``{"model": "m", "steps": [step, ...], "default": step?}`` (``POST /_sim/script``
or :meth:`SimServer.script`). Each request naming model ``m`` consumes the next step; when
none is left the script's ``default`` step applies (else a plain success). The model ``"*"``
scripts every model that has no script of its own. A step is a JSON object; every field is
optional and unknown fields are refused, so a typo never silently means "success".

Answer shape
    ``text`` (str)            the answer's content, split into ``chunks`` pieces of nearly equal
                              length. Default ``"Hello from <model>."``.
    ``chunks`` (int, 5)       number of content chunks in a stream (at most ``len(text)``).
    ``tool_call``             ``{"name", "arguments" (object or raw string), "id"?,
                              "thought_signature"?}``: answer with this tool call (arguments
                              streamed in 3 pieces; a signature goes out as Gemini's OpenAI
                              layer sends it, ``extra_content.google.thought_signature`` on the
                              call and on the stream's first piece of it), finish reason
                              ``tool_calls`` / stop reason ``tool_use``. ``true``: call the
                              request's first tool (or the one ``tool_choice`` forces) with
                              ``{}``, only if the request has tools. Text is sent before the
                              tool call only when ``text`` is given.
    ``finish_reason`` (str)   OpenAI finish reason to report (default ``stop`` / ``tool_calls``);
                              mapped for Anthropic (length→max_tokens, …), unknown values verbatim.
    ``response_model`` (str)  the ``model`` field answered (default: the model the request named).
    ``usage``                 ``{prompt_tokens (10), completion_tokens (number of content chunks,
                              tool argument pieces included), cached_tokens (0),
                              cache_write_tokens (0)}``. OpenAI-style: ``prompt_tokens`` includes
                              both cache counts; Anthropic gets ``input_tokens = prompt_tokens -
                              cached_tokens - cache_write_tokens``, ``cache_read_input_tokens =
                              cached_tokens`` and ``cache_creation_input_tokens =
                              cache_write_tokens`` (OpenAI has no field for cache writes).
    ``usage_mode``            ``"auto"`` (OpenAI streams: a ``choices: []`` usage chunk only when
                              ``stream_options.include_usage``, earlier chunks carry ``usage: null``;
                              Anthropic: always), ``"final_chunk"`` (Mistral style: usage on the
                              finish chunk, whatever was asked), ``"none"`` (never any usage, in
                              either dialect, streamed or not).
    ``dimensions`` (int, 8)   embedding length when the request does not ask for ``dimensions``
                              (nor, Mistral's name, ``output_dimension``).

Timing
    ``delay_s``               wait before the response headers (any endpoint).
    ``ttft_s``                streams: wait between the role chunk / ``message_start`` and the
                              first content. ``chunk_delay_s``: wait between content chunks.
                              Non-streamed chat answers wait ``delay_s + ttft_s + chunk_delay_s *
                              (chunks - 1)`` in total before the headers; embeddings only ``delay_s``.
    ``keepalive_s``           while a stream waits (ttft, chunk delays, stall) send a
                              ``: keep-alive`` comment line this often.

Errors (answered in the endpoint's dialect)
    ``status`` (int)          error status (values below 400 are ignored). Body
                              ``{"error": {message, type, param, code}}`` on OpenAI paths,
                              ``{"type": "error", "error": {type, message}}`` on
                              ``/v1/messages``; ``error_type``, ``error_code`` (OpenAI only),
                              ``error_message`` override the parts, ``error_body`` replaces the
                              whole body (a JSON value, or a string sent verbatim as text/plain).
    ``retry_after``           seconds (number, or a string sent verbatim) → ``retry-after``.
    ``retry_after_ms``        → ``retry-after-ms``.
    ``headers``               extra response headers, on success and error responses alike.
    ``check_auth`` (str)      expected key in ``Authorization: Bearer`` or ``x-api-key``; else 401.
    ``require_thought_signatures``  Gemini 3 on OpenAI paths: 400 "Function call is missing a
                              thought_signature" when an assistant message replays a tool call
                              without ``extra_content.google.thought_signature``.
    ``require_max_tokens``    400 when the request has no ``max_tokens`` (nor, on OpenAI paths,
                              ``max_completion_tokens``). Default: true on ``/v1/messages``
                              (Anthropic always requires it), false elsewhere.
    ``strict_params``         list of request fields the model rejects, or ``true`` for "every
                              field outside Mistral's request schema" (Anthropic's on
                              ``/v1/messages``). OpenAI paths answer Mistral's 422 ``extra_forbidden``
                              body; ``/v1/messages`` answers 400 ``invalid_request_error``. With
                              ``usage_mode: "final_chunk"`` a strict model also rejects
                              ``stream_options``. A list entry ``messages[].NAME`` rejects the field
                              ``NAME`` on any message (Groq's ``messages[].name``). ``true`` on chat
                              also applies Mistral's conversation rules, each a 400 in Mistral's flat
                              body: tool call ids must be exactly 9 of [a-zA-Z0-9], and no ``user``
                              message may follow a ``tool`` one.
    ``context_window`` (int)  if the prompt's estimated tokens (characters of message text / 4,
                              rounded up) exceed it: 400, OpenAI code ``context_length_exceeded``
                              / Anthropic "prompt is too long: X tokens > N maximum".

Connection and stream faults (``N`` counts content chunks already sent; ``0`` = before the first)
    ``hang``                  accept the request, never answer; wait until the client leaves.
    ``close_before_headers``  read the request, close the socket without any response.
    ``cut_after`` N           close the connection in the middle of the body after N chunks
                              (non-streamed: after half the body).
    ``reset``                 make ``cut_after`` / ``close_before_headers`` send a TCP RST instead
                              of a FIN.
    ``malformed_after`` N     send ``data: {not json`` after N chunks (non-streamed: the whole body
                              is that); ``malformed_then``: ``"continue"`` (default) or ``"close"``.
    ``stall_after`` N         after N chunks send nothing more (keep-alives aside) until the client
                              leaves (non-streamed: after half the body).
    ``mid_stream_error``      ``true`` or N: after N chunks (true: 0) send an error event
                              (OpenAI ``data: {"error": …}``; Anthropic ``event: error``, type
                              ``overloaded_error`` unless ``error_type``) and end the body.
    ``no_done``               streams: finish and usage but no ``data: [DONE]`` / ``message_stop``.
    ``no_finish``             streams: ``[DONE]`` / ``message_stop`` but never a finish reason /
                              stop reason (non-streamed: ``finish_reason`` / ``stop_reason`` null).
    ``linger_s``              streams: after the last event (``[DONE]`` / ``message_stop``) keep
                              the body open this long before ending it.
    ``burst``                 streams: hold the events and write them in one write when the stream
                              ends (or is cut): a short answer from a fast provider, in one packet.
    ``mid_stream_error``, ``no_done`` and ``keepalive_s`` do nothing to non-streamed answers.

Order of application: ``delay_s``, ``hang``, ``close_before_headers``, ``check_auth``, request
validation (messages, ``require_max_tokens``), ``strict_params``, ``context_window``, ``status``,
then the answer with its stream faults.

Outcomes recorded in the log (``GET /_sim/log``): ``pending`` while in flight, then ``ok``,
``error_status`` (any answer ≥ 400, scripted or from a check), ``cut``, ``malformed``,
``mid_stream_error``, ``no_done``, ``no_finish``, ``closed_before_headers``, ``stalled`` (the client
left during ``stall_after``), ``hung`` (the client left a ``hang``), ``disconnected`` (the client
left before we finished anything else), ``server_stopped``, ``sim_error`` (a bug here). The record's
``client_left`` is true whenever the client closed first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

UsageMode = Literal["auto", "final_chunk", "none"]
MalformedThen = Literal["continue", "close"]

DEFAULT_CHUNKS = 5
DEFAULT_PROMPT_TOKENS = 10
DEFAULT_DIMENSIONS = 8


class StepError(ValueError):
    """A step or script that does not parse; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str | None  # None: the request's first tool (``tool_call: true``)
    arguments: str  # JSON text, possibly invalid on purpose
    id: str | None = None
    thought_signature: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """One parsed step. ``raw`` keeps the JSON object as given (it goes into the log)."""

    raw: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    error_body: Any = None
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    ttft_s: float = 0.0
    chunk_delay_s: float = 0.0
    keepalive_s: float | None = None
    chunks: int = DEFAULT_CHUNKS
    text: str | None = None
    tool_call: ToolCall | None = None
    finish_reason: str | None = None
    response_model: str | None = None
    usage: Usage = Usage()
    usage_mode: UsageMode = "auto"
    dimensions: int = DEFAULT_DIMENSIONS
    cut_after: int | None = None
    reset: bool = False
    malformed_after: int | None = None
    malformed_then: MalformedThen = "continue"
    no_done: bool = False
    no_finish: bool = False
    burst: bool = False
    linger_s: float = 0.0
    stall_after: int | None = None
    hang: bool = False
    close_before_headers: bool = False
    mid_stream_error: int | None = None
    context_window: int | None = None
    strict_params: frozenset[str] | bool = False
    require_max_tokens: bool | None = None
    require_thought_signatures: bool = False
    check_auth: str | None = None

    @property
    def is_error(self) -> bool:
        return self.status is not None and self.status >= 400

    def response_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.retry_after is not None:
            out["retry-after"] = _number_text(self.retry_after)
        if self.retry_after_ms is not None:
            out["retry-after-ms"] = _number_text(self.retry_after_ms)
        return out


PLAIN = Step()


def _number_text(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _int(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StepError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or math.isnan(value):
        raise StepError(f"{name}: expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise StepError(f"{name}: expected true or false, got {value!r}")
    return value


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise StepError(f"{name}: expected a string, got {value!r}")
    return value


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise StepError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    assert isinstance(value, str)
    return value


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _tool_call(value: object) -> ToolCall | None:
    if value is False or value is None:
        return None
    if value is True:
        return ToolCall(name=None, arguments="{}")
    if not isinstance(value, dict):
        raise StepError(f"tool_call: expected an object or true, got {value!r}")
    unknown = set(value) - {"name", "arguments", "id", "thought_signature"}
    if unknown:
        raise StepError(f"tool_call: unknown fields {sorted(unknown)}")
    name = _str("tool_call.name", value.get("name"))
    args = value.get("arguments", {})
    arguments = args if isinstance(args, str) else _dumps(args)
    call_id = value.get("id")
    sig = value.get("thought_signature")
    return ToolCall(
        name,
        arguments,
        None if call_id is None else _str("tool_call.id", call_id),
        None if sig is None else _str("tool_call.thought_signature", sig),
    )


def _usage(value: object) -> Usage:
    if not isinstance(value, dict):
        raise StepError(f"usage: expected an object, got {value!r}")
    unknown = set(value) - {"prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"}
    if unknown:
        raise StepError(f"usage: unknown fields {sorted(unknown)}")
    prompt = value.get("prompt_tokens")
    completion = value.get("completion_tokens")
    return Usage(
        prompt_tokens=None if prompt is None else _int("usage.prompt_tokens", prompt),
        completion_tokens=None if completion is None else _int("usage.completion_tokens", completion),
        cached_tokens=_int("usage.cached_tokens", value.get("cached_tokens", 0)),
        cache_write_tokens=_int("usage.cache_write_tokens", value.get("cache_write_tokens", 0)),
    )


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise StepError(f"headers: expected an object of strings, got {value!r}")
    return tuple(
        (str(k), _number_text(v) if isinstance(v, int | float) else _str(f"headers.{k}", v))
        for k, v in value.items()
    )


def _strict(value: object) -> frozenset[str] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise StepError(f"strict_params: expected a list of field names or a boolean, got {value!r}")


def _after(name: str, value: object) -> int | None:
    if value is None or value is False:
        return None
    if value is True:
        return 0
    return _int(name, value)


def _retry_after(value: object) -> float | str:
    return value if isinstance(value, str) else _seconds("retry_after", value)


_PARSERS: dict[str, Any] = {
    "status": lambda v: _int("status", v, 100),
    "error_body": lambda v: v,
    "error_code": lambda v: _str("error_code", v),
    "error_type": lambda v: _str("error_type", v),
    "error_message": lambda v: _str("error_message", v),
    "retry_after": _retry_after,
    "retry_after_ms": lambda v: _seconds("retry_after_ms", v),
    "headers": _headers,
    "delay_s": lambda v: _seconds("delay_s", v),
    "ttft_s": lambda v: _seconds("ttft_s", v),
    "chunk_delay_s": lambda v: _seconds("chunk_delay_s", v),
    "keepalive_s": lambda v: _seconds("keepalive_s", v) or None,
    "chunks": lambda v: _int("chunks", v),
    "text": lambda v: _str("text", v),
    "tool_call": _tool_call,
    "finish_reason": lambda v: _str("finish_reason", v),
    "response_model": lambda v: _str("response_model", v),
    "usage": _usage,
    "usage_mode": lambda v: _choice("usage_mode", v, ("auto", "final_chunk", "none")),
    "dimensions": lambda v: _int("dimensions", v, 1),
    "cut_after": lambda v: _after("cut_after", v),
    "reset": lambda v: _bool("reset", v),
    "malformed_after": lambda v: _after("malformed_after", v),
    "malformed_then": lambda v: _choice("malformed_then", v, ("continue", "close")),
    "no_done": lambda v: _bool("no_done", v),
    "no_finish": lambda v: _bool("no_finish", v),
    "burst": lambda v: _bool("burst", v),
    "linger_s": lambda v: _seconds("linger_s", v),
    "stall_after": lambda v: _after("stall_after", v),
    "hang": lambda v: _bool("hang", v),
    "close_before_headers": lambda v: _bool("close_before_headers", v),
    "mid_stream_error": lambda v: _after("mid_stream_error", v),
    "context_window": lambda v: _int("context_window", v, 1),
    "strict_params": _strict,
    "require_max_tokens": lambda v: _bool("require_max_tokens", v),
    "require_thought_signatures": lambda v: _bool("require_thought_signatures", v),
    "check_auth": lambda v: _str("check_auth", v),
}

FIELDS: frozenset[str] = frozenset(_PARSERS)


def parse_step(value: object) -> Step:
    """A JSON object → :class:`Step`; raises :class:`StepError` naming the bad field."""
    if isinstance(value, Step):
        return value
    if not isinstance(value, dict):
        raise StepError(f"a step must be a JSON object, got {value!r}")
    unknown = set(value) - FIELDS
    if unknown:
        raise StepError(f"unknown step fields {sorted(unknown)}; known: {', '.join(sorted(FIELDS))}")
    kwargs = {name: _PARSERS[name](v) for name, v in value.items() if v is not None}
    return Step(raw=dict(value), **kwargs)


@dataclass(frozen=True, slots=True)
class Script:
    model: str
    steps: tuple[Step, ...]
    default: Step | None


def parse_script(value: object) -> Script:
    """``{"model", "steps"?, "default"?}`` → :class:`Script`."""
    if not isinstance(value, dict):
        raise StepError(f"a script must be a JSON object, got {value!r}")
    unknown = set(value) - {"model", "steps", "default"}
    if unknown:
        raise StepError(f"unknown script fields {sorted(unknown)}")
    model = _str("model", value.get("model"))
    steps = value.get("steps") or []
    if not isinstance(steps, list):
        raise StepError(f"steps: expected a list, got {steps!r}")
    parsed = []
    for i, step in enumerate(steps):
        try:
            parsed.append(parse_step(step))
        except StepError as exc:
            raise StepError(f"steps[{i}]: {exc}") from None
    default = value.get("default")
    try:
        default_step = None if default is None else parse_step(default)
    except StepError as exc:
        raise StepError(f"default: {exc}") from None
    return Script(model, tuple(parsed), default_step)


def split_text(text: str, chunks: int) -> list[str]:
    """``text`` in ``chunks`` contiguous pieces of nearly equal length, none empty."""
    n = min(chunks, len(text))
    if n <= 0:
        return []
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces
