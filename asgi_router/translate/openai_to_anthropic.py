"""OpenAI client → Anthropic upstream: request, response, stream state machine and error.

Request (wire reference §3.1): system and developer messages anywhere become ``system``
(joined with a blank line; text blocks when a part carries ``cache_control``); consecutive
``tool`` messages become one user message that starts with their ``tool_result`` blocks;
empty text is dropped (Anthropic rejects it); ids are made Anthropic-safe; ``max_tokens`` is
required (defaulted, capped); temperature ≤ 1; ``top_p`` dropped beside temperature;
``n`` > 1 is a 400 here. Every other OpenAI-only field is dropped, each logged at debug.
``deployment.params`` are written in Anthropic's dialect and go under the translated body.

Response (§3.2) and stream (§3.3): Anthropic events become chat.completion.chunks whose
``tool_calls[].index`` counts tool blocks (k), not Anthropic block indices. The usage chunk
(``choices: []``) is sent only when the client asked with ``stream_options.include_usage``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from asgi_router.errors import BadRequest
from asgi_router.graph import Deployment
from asgi_router.translate.common import (
    EMPTY_SCHEMA,
    anthropic_id,
    anthropic_max_tokens,
    anthropic_sampling,
    apply_param_quirks,
    as_dict,
    chatcmpl_id,
    dropped,
    dump_arguments,
    error_message,
    finish_reason,
    image_source,
    index_of,
    merge_params,
    openai_usage,
    parse_arguments,
)
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.anthropic import merge_usage
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent
from asgi_router.wire.usage import Usage, from_anthropic

# Fields translated below; anything else in an OpenAI request is dropped (and logged).
_HANDLED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature",
        "top_p", "tools", "tool_choice", "parallel_tool_calls", "user", "n", "stream",
        "response_format",
    }
)  # fmt: skip
# Anthropic-only fields an OpenAI client may add through its SDK's extra_body.
_NATIVE = frozenset({"top_k", "thinking"})


def build_request(body: dict[str, Any], deployment: Deployment, *, stream: bool) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI Chat Completions request (a new dict)."""
    provider = deployment.provider.name
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list", param="messages")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise BadRequest("n > 1 is not supported by this model's provider (Anthropic)", param="n")
    system, turns = convert_messages(messages)
    out: dict[str, Any] = {"model": deployment.model, "messages": turns}
    if system is not None:
        out["system"] = system
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        out["max_tokens"] = limit
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [s for s in stop if isinstance(s, str) and s]
    for key in ("temperature", "top_p", *_NATIVE):
        if body.get(key) is not None:
            out[key] = body[key]
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _tools_and_choice(body, out, provider)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        # Structured outputs (unverified per model): Anthropic's output_config.format.
        schema = as_dict(fmt.get("json_schema")).get("schema") or dict(EMPTY_SCHEMA)
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif fmt is not None:
        dropped(provider, "response_format", "no_equivalent")
    if stream:
        out["stream"] = True
    for key in body.keys() - _HANDLED - _NATIVE:
        dropped(provider, key)
    merge_params(out, deployment)
    anthropic_max_tokens(out, deployment)
    anthropic_sampling(out, provider)
    apply_param_quirks(out, deployment.provider.quirks, provider)
    return out


def _tools_and_choice(body: dict[str, Any], out: dict[str, Any], provider: str) -> None:
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [_tool(t) for t in tools]
    elif body.get("tool_choice") is not None:
        dropped(provider, "tool_choice", "no_tools")
        return
    else:
        return
    choice = _tool_choice(body.get("tool_choice"), provider)
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise BadRequest(f"tool type {kind!r} is not supported by this model's provider", param="tools")
    fn = as_dict(tool.get("function"))
    schema = fn.get("parameters")
    if not isinstance(schema, dict) or not schema:
        schema = dict(EMPTY_SCHEMA)
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    out: dict[str, Any] = {"name": fn.get("name", ""), "input_schema": schema}
    if fn.get("description"):
        out["description"] = fn["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any, provider: str) -> dict[str, Any] | None:
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": as_dict(choice.get("function")).get("name", "")}
    dropped(provider, "tool_choice", "no_equivalent")
    return {"type": "auto"}


def convert_messages(messages: list[Any]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """OpenAI ``messages`` → Anthropic ``system`` and alternating ``messages``."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object", param="messages")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(m.get("content")))
        elif role == "user":
            _append(turns, "user", _user_blocks(m.get("content")))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(m))
        elif role == "tool":
            _append(turns, "user", [_tool_result(m)])
        else:
            raise BadRequest(f"message role {role!r} is not supported", param="messages")
    if turns and turns[-1]["role"] == "assistant":
        _trim_prefill(turns)
    if not system:
        return None, turns
    if any("cache_control" in b for b in system):
        return system, turns
    return "\n\n".join(b["text"] for b in system), turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging with the previous one of the same role; tool results first."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        merged = turns[-1]["content"] + blocks
        if role == "user":
            merged.sort(key=lambda b: b.get("type") != "tool_result")  # stable: results first
        turns[-1]["content"] = merged
    else:
        turns.append({"role": role, "content": blocks})


def _trim_prefill(turns: list[dict[str, Any]]) -> None:
    """A final assistant turn is a prefill; Anthropic rejects trailing whitespace in it."""
    blocks = turns[-1]["content"]
    if blocks and blocks[-1].get("type") == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


def _text_block(text: Any, part: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        block = _text_block(content)
        return [block] if block else []
    out = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            block = _text_block(part.get("text", part.get("refusal")), part)
            if block:
                out.append(block)
    return out


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content)
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.extend(_text_blocks([part]))
        elif kind == "image_url":
            out.append(_image_block(part))
        elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data"):
            out.append({"type": "document", "source": image_source(part["file"]["file_data"])})
        else:
            raise BadRequest(
                f"content part {kind!r} is not supported by this model's provider", param="messages"
            )
    return out


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise BadRequest("image_url.url must be a non-empty string", param="messages")
    return {"type": "image", "source": image_source(url)}


def _assistant_blocks(m: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _text_blocks(m.get("content"))
    if not blocks and isinstance(m.get("refusal"), str):
        blocks = _text_blocks(m["refusal"])
    for i, call in enumerate(m.get("tool_calls") or []):
        if not isinstance(call, dict):
            continue
        fn = as_dict(call.get("function"))
        name = fn.get("name", "")
        blocks.append(
            {
                "type": "tool_use",
                "id": anthropic_id(call.get("id"), "toolu_", f"{name}:{i}:{fn.get('arguments')}"),
                "name": name,
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    return blocks


def _tool_result(m: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": anthropic_id(m.get("tool_call_id"), "toolu_", orjson.dumps(m).decode()),
    }
    content = m.get("content")
    if isinstance(content, list):
        blocks: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                blocks.append(_image_block(part))
            else:
                blocks.extend(_text_blocks([part]))
        if blocks:
            block["content"] = blocks
    elif isinstance(content, str) and content:
        block["content"] = content
    return block


def openai_response(body: Any, *, created: int, model: str) -> dict[str, Any]:
    """An Anthropic Messages answer → an OpenAI chat.completion (refusal and logprobs keys
    present, null, as the OpenAPI spec requires)."""
    body = body if isinstance(body, dict) else {}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in body.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(_openai_call(block))
        # thinking, redacted_thinking and server tool blocks have no OpenAI form: dropped
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": chatcmpl_id(body.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": body.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(body.get("stop_reason")),
                "logprobs": None,
            }
        ],
    }
    usage = from_anthropic(body.get("usage"))
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def _openai_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": dump_arguments(block.get("input"))},
    }


def openai_error(status: int, body: bytes) -> bytes:
    """An Anthropic error body → OpenAI's ``{"error": {message, type, param, code}}``; the
    Anthropic ``error.type`` is kept as ``type`` (§3.9)."""
    message, kind = error_message(body)
    if kind is None:
        kind = "invalid_request_error" if status < 500 else "api_error"
    return wire_openai.error_body(message, kind)


class OpenAIFromAnthropicStream:
    """Anthropic stream events → chat.completion.chunk events (fresh per attempt)."""

    __slots__ = ("_closed", "_created", "_finished", "_id", "_model", "_tool_k", "_wants_usage", "usage")

    def __init__(self, *, created: int, model: str, wants_usage: bool) -> None:
        self._id = chatcmpl_id(None)
        self._model = model
        self._created = created
        self._wants_usage = wants_usage
        self._tool_k: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._finished = False
        self._closed = False
        self.usage: Usage | None = None  # merged from message_start and message_delta

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        self.usage = merge_usage(self.usage, probe.usage)
        if probe.error is not None:
            err = probe.error if isinstance(probe.error, dict) else {}
            return [
                wire_openai.stream_error_event(
                    str(err.get("message", probe.error)), str(err.get("type", "api_error"))
                )
            ]
        obj = as_dict(probe.obj)
        kind = obj.get("type")
        if kind == "message_start":
            message = as_dict(obj.get("message"))
            self._id = chatcmpl_id(message.get("id"))
            self._model = message.get("model") or self._model
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "content_block_delta":
            return self._block_delta(obj)
        if kind == "message_delta" and probe.finish and not self._finished:
            self._finished = True
            return [self._chunk({}, finish_reason(probe.finish))]
        return []  # ping, content_block_stop, message_stop, unknown events

    def _block_start(self, obj: dict[str, Any]) -> list[bytes]:
        block = as_dict(obj.get("content_block"))
        if block.get("type") == "tool_use":
            k = len(self._tool_k)
            self._tool_k[index_of(obj)] = k
            args = dump_arguments(block["input"]) if block.get("input") else ""
            call = {"index": k, "id": block.get("id", ""), "type": "function"}
            return [
                self._chunk(
                    {"tool_calls": [{**call, "function": {"name": block.get("name", ""), "arguments": args}}]}
                )
            ]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, obj: dict[str, Any]) -> list[bytes]:
        delta = as_dict(obj.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            k = self._tool_k.get(index_of(obj))
            if k is not None:
                return [
                    self._chunk(
                        {"tool_calls": [{"index": k, "function": {"arguments": delta["partial_json"]}}]}
                    )
                ]
        return []  # thinking, signature and citations deltas have no OpenAI form

    def close(self) -> list[bytes]:
        if self._closed:
            return []
        self._closed = True
        out = []
        if self._wants_usage and self.usage is not None:
            obj = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": openai_usage(self.usage),
            }
            out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
        out.append(wire_openai.STREAM_DONE)
        return out


class OpenAIToAnthropic:
    """One attempt of an OpenAI client at an Anthropic upstream."""

    __slots__ = ("_created", "_model", "_wants_usage", "upstream_body")

    def __init__(
        self,
        body: dict[str, Any],
        deployment: Deployment,
        *,
        stream: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream_body = build_request(body, deployment, stream=stream)
        opts = body.get("stream_options")
        self._wants_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        self._model = deployment.model
        self._created = int(clock())

    def response(self, body: Any) -> Any:
        return openai_response(body, created=self._created, model=self._model)

    def stream(self) -> OpenAIFromAnthropicStream:
        return OpenAIFromAnthropicStream(
            created=self._created, model=self._model, wants_usage=self._wants_usage
        )

    def error(self, status: int, body: bytes) -> bytes:
        return openai_error(status, body)
