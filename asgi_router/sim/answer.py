"""Pure builders: what a step answers to a request, as OpenAI or Anthropic JSON.

No I/O here. :func:`plan` resolves a step against a request into an :class:`Answer` (model,
content pieces, tool call, usage, finish reason); the ``openai_*`` and ``anthropic_*``
functions shape it for the wire. Error bodies for both dialects live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from .steps import DEFAULT_PROMPT_TOKENS, Step, split_text

TOOL_ARGUMENT_PIECES = 3

ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

OPENAI_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to use this model."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict (simulated)."),
    422: ("invalid_request_error", None, "Unprocessable request (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
    529: ("overloaded_error", None, "Overloaded"),
}

ANTHROPIC_ERROR_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (simulated)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    id: str
    name: str
    arguments: str
    pieces: tuple[str, ...]
    thought_signature: str | None = None

    def openai_extra(self) -> dict[str, Any]:
        """Gemini's OpenAI layer: the signature on the call, for the client to replay."""
        if self.thought_signature is None:
            return {}
        return {"extra_content": {"google": {"thought_signature": self.thought_signature}}}


@dataclass(frozen=True, slots=True)
class Answer:
    """A step resolved against one request."""

    id: str
    model: str
    created: int
    text_pieces: tuple[str, ...]
    tool: ToolAnswer | None
    finish_reason: str  # OpenAI vocabulary
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def content_count(self) -> int:
        """Content chunks of a stream: text pieces, then tool-argument pieces."""
        return len(self.text_pieces) + (len(self.tool.pieces) if self.tool else 0)

    @property
    def stop_reason(self) -> str:
        return ANTHROPIC_STOP.get(self.finish_reason, self.finish_reason)


def plan(step: Step, body: dict[str, Any], model: str, seq: int, created: int, *, anthropic: bool) -> Answer:
    tool = _resolve_tool(step, body, seq, anthropic=anthropic)
    if step.text is not None:
        text = step.text
    elif tool is not None:
        text = ""
    else:
        text = f"Hello from {model}."
    pieces = tuple(split_text(text, step.chunks))
    count = len(pieces) + (len(tool.pieces) if tool else 0)
    usage = step.usage
    prompt = DEFAULT_PROMPT_TOKENS if usage.prompt_tokens is None else usage.prompt_tokens
    return Answer(
        id=f"msg_sim{seq:06d}" if anthropic else f"chatcmpl-sim{seq:06d}",
        model=step.response_model or model,
        created=created,
        text_pieces=pieces,
        tool=tool,
        finish_reason=step.finish_reason or ("tool_calls" if tool else "stop"),
        prompt_tokens=prompt,
        completion_tokens=count if usage.completion_tokens is None else usage.completion_tokens,
        cached_tokens=min(usage.cached_tokens, prompt),
        cache_write_tokens=min(usage.cache_write_tokens, prompt - min(usage.cached_tokens, prompt)),
    )


def _resolve_tool(step: Step, body: dict[str, Any], seq: int, *, anthropic: bool) -> ToolAnswer | None:
    call = step.tool_call
    if call is None:
        return None
    name = call.name or _requested_tool(body)
    if name is None:
        return None
    call_id = call.id or (f"toolu_sim{seq:06d}" if anthropic else f"call_sim{seq:06d}")
    pieces = tuple(split_text(call.arguments, TOOL_ARGUMENT_PIECES))
    return ToolAnswer(call_id, name, call.arguments, pieces, call.thought_signature)


def _requested_tool(body: dict[str, Any]) -> str | None:
    """The tool forced by ``tool_choice``, else the first of ``tools`` (either dialect)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        forced = choice.get("name") or (choice.get("function") or {}).get("name")
        if isinstance(forced, str):
            return forced
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    first = tools[0]
    name = first.get("name") or (first.get("function") or {}).get("name")
    return name if isinstance(name, str) else None


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Characters of message text (and Anthropic ``system``) / 4, rounded up."""
    chars = _text_chars(body.get("system")) + _text_chars(body.get("messages"))
    return math.ceil(chars / 4)


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return len(value["text"])
        return _text_chars(value.get("content"))
    return 0


# OpenAI


def openai_usage(a: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_completion(a: Answer, *, with_usage: bool, finish: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": a.text if a.text or a.tool is None else None,
        "refusal": None,
        "annotations": [],
    }
    if a.tool is not None:
        message["tool_calls"] = [
            {
                "id": a.tool.id,
                "type": "function",
                "function": {"name": a.tool.name, "arguments": a.tool.arguments},
                **a.tool.openai_extra(),
            }
        ]
    out: dict[str, Any] = {
        "id": a.id,
        "object": "chat.completion",
        "created": a.created,
        "model": a.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": a.finish_reason if finish else None,
            }
        ],
    }
    if with_usage:
        out["usage"] = openai_usage(a)
    return out


def openai_chunk(a: Answer, delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` makes the ``choices: []`` usage chunk."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": a.id,
        "object": "chat.completion.chunk",
        "created": a.created,
        "model": a.model,
        "choices": choices,
    }


def openai_error(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_status_error(step: Step, status: int) -> dict[str, Any]:
    default = OPENAI_ERROR_DEFAULTS.get(status) or (
        ("server_error", None, f"Simulated error {status}.")
        if status >= 500
        else ("invalid_request_error", None, f"Simulated error {status}.")
    )
    type_, code, message = default
    if status == 429 and step.retry_after is not None and not isinstance(step.retry_after, str):
        message += f" Please try again in {step.retry_after:g}s."
    return openai_error(
        step.error_message or message, step.error_type or type_, None, step.error_code or code
    )


def mistral_extra_forbidden(fields: list[str]) -> dict[str, Any]:
    """Mistral's 422: pydantic ``extra_forbidden`` per field (``messages.1.name`` → a nested loc)."""
    detail = [
        {"type": "extra_forbidden", "loc": ["body", *_loc(f)], "msg": "Extra inputs are not permitted"}
        for f in fields
    ]
    return {
        "object": "error",
        "message": {"detail": detail},
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def _loc(field: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in field.split(".")]


def mistral_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """Mistral's flat error body (400s about the conversation itself)."""
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


# Anthropic


def anthropic_usage(a: Answer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": a.prompt_tokens - a.cached_tokens - a.cache_write_tokens,
        "cache_creation_input_tokens": a.cache_write_tokens,
        "cache_read_input_tokens": a.cached_tokens,
        "output_tokens": output_tokens,
    }


def anthropic_message(a: Answer, *, with_usage: bool, finish: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if a.text:
        content.append({"type": "text", "text": a.text})
    if a.tool is not None:
        content.append(
            {"type": "tool_use", "id": a.tool.id, "name": a.tool.name, "input": tool_input(a.tool)}
        )
    out: dict[str, Any] = {
        "id": a.id,
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": a.stop_reason if finish else None,
        "stop_sequence": None,
    }
    if with_usage:
        out["usage"] = anthropic_usage(a, a.completion_tokens)
    return out


def tool_input(tool: ToolAnswer) -> Any:
    """The tool call's arguments as an object (``{}`` if they are not a JSON object)."""
    try:
        value = orjson.loads(tool.arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def anthropic_status_error(step: Step, status: int) -> dict[str, Any]:
    default = ANTHROPIC_ERROR_DEFAULTS.get(status) or (
        ("api_error", f"Simulated error {status}.")
        if status >= 500
        else ("invalid_request_error", f"Simulated error {status}.")
    )
    return anthropic_error(step.error_type or default[0], step.error_message or default[1])
