"""Anthropic client (``/v1/messages``) → OpenAI-speaking upstream: request, response, stream
state machine and error.

Request (wire reference §3.4): ``system`` becomes a leading system message; user
``tool_result`` blocks become ``tool`` messages placed before the user message built from the
remaining blocks (images inside a tool result follow as user image parts; ``is_error`` prefixes
"Error: "); assistant ``tool_use`` blocks become ``tool_calls``; thinking blocks are dropped;
a Gemini thought signature on a tool call rides in its ``tool_use`` id (``…__thought__`` +
base64url) and goes back on the replayed call where ``quirks.thought_signatures`` says so;
server tools (a tool ``type`` other than absent or ``"custom"``) are a 400. The result then
goes through the OpenAI passthrough's edit (model, params, dropped/renamed params, message
quirks, ``stream_options.include_usage`` where ``quirks.stream_usage`` says so).

Stream (§3.6): ``message_start`` on the first chunk; one open block at a time with gap-free
indices; parallel tool calls that arrive interleaved are buffered (a tool block is closed only
once its arguments parse as JSON, or at the finish); ``message_delta`` is held after the
finish until a chunk carries usage, ``[DONE]`` arrives, or the core calls ``close()``, so the
usage chunk never reaches the client as such: it becomes ``message_delta.usage`` (with
``input_tokens`` and the cache counts, as LangChain reads them there).
"""

from __future__ import annotations

from typing import Any

import orjson

from asgi_router.errors import BadRequest
from asgi_router.graph import Deployment
from asgi_router.translate.common import (
    anthropic_id,
    as_dict,
    clamped,
    dropped,
    dump_arguments,
    error_message,
    image_url,
    index_of,
    msg_id,
    parse_arguments,
    signed_id,
    split_signed_id,
    stop_reason,
    text_of,
    thought_signature,
)
from asgi_router.translate.passthrough import ChunkFixer, build_openai_request
from asgi_router.wire import anthropic as wire
from asgi_router.wire.anthropic import event, merge_usage, usage_dict
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent
from asgi_router.wire.usage import Usage, from_openai

_HANDLED = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
        "metadata", "stream", "tools", "tool_choice", "output_config",
    }
)  # fmt: skip
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def build_request(body: dict[str, Any], deployment: Deployment, *, stream: bool) -> dict[str, Any]:
    """The OpenAI Chat Completions body for an Anthropic Messages request, before the
    passthrough's provider edit."""
    provider = deployment.provider.name
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list", param="messages")
    out: dict[str, Any] = {
        "model": deployment.model,
        "messages": convert_messages(
            body.get("system"), messages, signatures=deployment.provider.quirks.thought_signatures
        ),
    }
    limit = body.get("max_tokens")
    cap = deployment.max_output_tokens
    if isinstance(limit, int) and not isinstance(limit, bool):
        out["max_tokens"] = limit
        if cap is not None and limit > cap:  # litellm sends 128000 for unknown model names
            out["max_tokens"] = cap
            clamped(provider, "max_tokens", limit, cap)
    if isinstance(body.get("stop_sequences"), list) and body["stop_sequences"]:
        out["stop"] = body["stop_sequences"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        out["user"] = meta["user_id"]
    _tools_and_choice(body, out, provider)
    fmt = as_dict(body.get("output_config")).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.get("schema") or {}},
        }
    if stream:
        out["stream"] = True
    for key in body.keys() - _HANDLED:
        dropped(provider, key)
    return out


def _tools_and_choice(body: dict[str, Any], out: dict[str, Any], provider: str) -> None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        if body.get("tool_choice") is not None:
            dropped(provider, "tool_choice", "no_tools")
        return
    out["tools"] = [_tool(t) for t in tools]
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind in _CHOICES:
        out["tool_choice"] = _CHOICES[kind]
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "custom") not in ("custom", None):
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise BadRequest(f"tool type {kind!r} is not supported by this model's provider", param="tools")
    fn: dict[str, Any] = {"name": tool.get("name", "")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def convert_messages(system: Any, messages: list[Any], *, signatures: bool = False) -> list[dict[str, Any]]:
    """Anthropic ``system`` and ``messages`` → OpenAI ``messages``. ``signatures``: the
    provider wants the thought signatures kept in ``tool_use`` ids back on its tool calls."""
    out: list[dict[str, Any]] = []
    system_text = text_of(system, "\n\n") if isinstance(system, list) else system
    if isinstance(system_text, str) and system_text:
        out.append({"role": "system", "content": system_text})
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object", param="messages")
        role, content = m.get("role"), m.get("content")
        if role == "user":
            out.extend(_user_messages(content))
        elif role == "assistant":
            out.append(_assistant_message(content, signatures))
        elif role == "system":  # newer SDKs' mid-conversation system blocks
            out.append({"role": "system", "content": text_of(content, "\n\n")})
        else:
            raise BadRequest(f"message role {role!r} is not supported", param="messages")
    return out


def _user_messages(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    late_images: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tools.append(_tool_message(block, late_images))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "document" and as_dict(block.get("source")).get("type") == "base64":
            src = block["source"]
            data = f"data:{src.get('media_type', 'application/pdf')};base64,{src.get('data', '')}"
            parts.append(
                {
                    "type": "file",
                    "file": {"file_data": data, "filename": block.get("title") or "document.pdf"},
                }
            )
        else:
            raise BadRequest(
                f"content block {kind!r} is not supported by this model's provider", param="messages"
            )
    parts += late_images
    if not parts:
        return tools
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}]


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    url = image_url(block.get("source"))
    if url is None:
        raise BadRequest("image source must be base64 or url", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: dict[str, Any], late_images: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        late_images.extend(
            _image_part(b) for b in content if isinstance(b, dict) and b.get("type") == "image"
        )
        text = text_of(content, "\n")
    else:
        text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        text = "Error: " + text
    call_id, _ = split_signed_id(block.get("tool_use_id", ""))
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_message(content: Any, signatures: bool) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            fn = {"name": block.get("name", ""), "arguments": dump_arguments(block.get("input"))}
            call_id, sig = split_signed_id(block.get("id", ""))
            call: dict[str, Any] = {"id": call_id, "type": "function", "function": fn}
            if sig is not None and signatures:
                call["extra_content"] = {"google": {"thought_signature": sig}}
            calls.append(call)
        # thinking / redacted_thinking / server tool blocks: no OpenAI form, dropped
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def anthropic_response(body: Any, *, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion → an Anthropic Messages answer (first choice)."""
    body = body if isinstance(body, dict) else {}
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    refusal = message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    elif isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    seed = str(body.get("id"))
    for i, call in enumerate(message.get("tool_calls") or []):
        if not isinstance(call, dict):
            continue
        fn = as_dict(call.get("function"))
        tool_id = anthropic_id(call.get("id"), "toolu_", f"{seed}:{i}")
        content.append(
            {
                "type": "tool_use",
                "id": signed_id(tool_id, thought_signature(call)),
                "name": fn.get("name", ""),
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    reason = stop_reason(choice.get("finish_reason"))
    if not text and isinstance(refusal, str) and refusal:
        reason = "refusal"
    return {
        "id": msg_id(body.get("id"), seed),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage_dict(from_openai(body.get("usage")) or Usage()),
    }


def anthropic_error(status: int, body: bytes) -> bytes:
    """Any OpenAI-compatible provider's error body → Anthropic's, typed by status (§3.9)."""
    message, _ = error_message(body)
    return wire.error_body(message, wire.error_type(status))


class _Tool:
    __slots__ = ("args", "block", "checked", "complete", "id", "name", "signature")

    def __init__(self, id_: Any, name: Any) -> None:
        self.id = id_
        self.name = name
        self.signature: str | None = None
        self.args: list[str] = []
        self.block: int | None = None  # the Anthropic index once started
        self.checked = -1  # len(args) when ``complete`` was last computed
        self.complete = False

    def is_complete(self) -> bool:
        """The arguments so far parse as JSON: this call will get no more of them."""
        if self.checked != len(self.args):
            self.checked = len(self.args)
            try:
                orjson.loads("".join(self.args))
                self.complete = True
            except orjson.JSONDecodeError:
                self.complete = False
        return self.complete


class AnthropicFromOpenAIStream:
    """chat.completion.chunk events → Anthropic stream events (fresh per attempt)."""

    __slots__ = (
        "_ended", "_finish", "_fixer", "_late_text", "_model", "_msg_id", "_next", "_open",
        "_open_tool", "_pending", "_refusal_only", "_started", "_tools", "usage",
    )  # fmt: skip

    def __init__(self, *, model: str, fixer: ChunkFixer | None) -> None:
        self._model = model
        self._fixer = fixer
        self._msg_id = msg_id(None, model)
        self._started = False
        self._ended = False
        self._next = 0  # the next Anthropic block index
        self._open: int | None = None  # the open block's index
        self._open_tool: _Tool | None = None  # the open block's tool call, if it is one
        self._tools: dict[int, _Tool] = {}  # by OpenAI tool_calls index
        self._pending: list[_Tool] = []  # tool calls seen, not yet started
        self._late_text: list[str] = []  # text that came while a tool call was unfinished
        self._finish: str | None = None
        self._refusal_only: bool | None = None  # text so far came only as refusal deltas
        self.usage: Usage | None = None

    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        if self._ended:
            return []
        if probe.error is not None:
            self._ended = True
            err = probe.error if isinstance(probe.error, dict) else {}
            kind = err.get("type") if err.get("type") in wire.KNOWN_ERROR_TYPES else "api_error"
            return [wire.stream_error_event(str(err.get("message", probe.error)), str(kind))]
        if probe.done:
            return self._end()
        obj = probe.obj if isinstance(probe.obj, dict) else {}
        if self._fixer is not None:
            obj = self._fixer.fix(obj)
        out: list[bytes] = [] if self._started else [self._start(obj)]
        self.usage = merge_usage(self.usage, probe.usage)
        choices = obj.get("choices")
        if isinstance(choices, list) and self._finish is None:
            for choice in choices:
                if isinstance(choice, dict) and index_of(choice) == 0:
                    self._choice(choice, out)
        if self._finish is not None and probe.usage is not None:
            out += self._end()
        return out

    def _start(self, obj: dict[str, Any]) -> bytes:
        self._started = True
        if obj.get("id"):
            self._msg_id = msg_id(obj["id"], self._model)
        self._model = obj.get("model") or self._model
        message: dict[str, Any] = {
            "id": self._msg_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = as_dict(choice.get("delta"))
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                self._refusal_only = key == "refusal" and self._refusal_only is not False
                self._text(delta[key], out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for frag in calls:
                if isinstance(frag, dict):
                    self._fragment(frag, out)
        if choice.get("finish_reason"):
            fr = choice["finish_reason"]
            self._finish = fr if isinstance(fr, str) else "stop"
            self._flush(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open_tool is not None or self._pending:
            if self._pending or not self._open_tool or not self._open_tool.is_complete():
                self._late_text.append(text)
                return
            self._stop(out)
        if self._open is None:
            self._begin({"type": "text", "text": ""}, out)
        out.append(self._delta({"type": "text_delta", "text": text}))

    def _fragment(self, frag: dict[str, Any], out: list[bytes]) -> None:
        j = index_of(frag)
        fn = as_dict(frag.get("function"))
        name = fn.get("name") if isinstance(fn.get("name"), str) else None
        tool = self._tools.get(j)
        if tool is None:
            tool = self._tools[j] = _Tool(frag.get("id"), name)
            self._pending.append(tool)
        elif tool.block is None:
            tool.id = tool.id or frag.get("id")
            tool.name = tool.name or name
        if tool.block is None:  # once the block started, its id went out
            tool.signature = tool.signature or thought_signature(frag)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            if tool is self._open_tool:
                out.append(self._delta({"type": "input_json_delta", "partial_json": args}))
            elif tool.block is not None:
                return  # more arguments for a call already closed: cannot happen for valid JSON
            tool.args.append(args)
        self._advance(out)

    def _advance(self, out: list[bytes]) -> None:
        """Start buffered tool calls while the open one (if any) is complete."""
        while self._pending:
            if self._open_tool is not None and not self._open_tool.is_complete():
                return
            self._start_tool(self._pending.pop(0), out)

    def _start_tool(self, tool: _Tool, out: list[bytes]) -> None:
        self._stop(out)
        seed = f"{self._msg_id}:{self._next}"
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": signed_id(anthropic_id(tool.id, "toolu_", seed), tool.signature),
            "name": tool.name or "",
            "input": {},
        }
        self._begin(block, out)
        tool.block = self._open
        self._open_tool = tool
        if tool.args:
            out.append(self._delta({"type": "input_json_delta", "partial_json": "".join(tool.args)}))

    def _flush(self, out: list[bytes]) -> None:
        """The finish: every buffered call and late text goes out, each block closed."""
        while self._pending:
            self._start_tool(self._pending.pop(0), out)
        if self._late_text:
            self._stop(out)
            self._begin({"type": "text", "text": ""}, out)
            out.append(self._delta({"type": "text_delta", "text": "".join(self._late_text)}))
            self._late_text.clear()
        self._stop(out)

    def _begin(self, block: dict[str, Any], out: list[bytes]) -> None:
        self._open = self._next
        self._next += 1
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": self._open, "content_block": block},
            )
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}
        )

    def _stop(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._open}))
        self._open = None
        self._open_tool = None

    def _end(self) -> list[bytes]:
        if self._ended:
            return []
        self._ended = True
        out = [] if self._started else [self._start({})]
        self._flush(out)
        reason = "refusal" if self._refusal_only else stop_reason(self._finish)
        delta = {"stop_reason": reason, "stop_sequence": None}
        usage = usage_dict(self.usage or Usage())
        out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(wire.MESSAGE_STOP)
        return out

    def close(self) -> list[bytes]:
        return self._end()


class AnthropicToOpenAI:
    """One attempt of an Anthropic client at an OpenAI-speaking upstream."""

    __slots__ = ("_id_back", "_model", "_tool_finish", "upstream_body")

    def __init__(self, body: dict[str, Any], deployment: Deployment, *, stream: bool) -> None:
        converted = build_request(body, deployment, stream=stream)
        self.upstream_body, self._id_back = build_openai_request(converted, deployment, stream=stream)
        self._tool_finish = deployment.provider.quirks.stream_tool_finish
        self._model = deployment.model

    def _fixer(self) -> ChunkFixer | None:
        if self._id_back or self._tool_finish:
            return ChunkFixer(self._id_back, self._tool_finish)
        return None

    def response(self, body: Any) -> Any:
        fixer = self._fixer()
        return anthropic_response(body if fixer is None else fixer.response(body), model=self._model)

    def stream(self) -> AnthropicFromOpenAIStream:
        return AnthropicFromOpenAIStream(model=self._model, fixer=self._fixer())

    def error(self, status: int, body: bytes) -> bytes:
        return anthropic_error(status, body)
