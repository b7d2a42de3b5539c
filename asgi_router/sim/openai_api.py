"""OpenAI dialect: chat completions (plain and streamed), embeddings, the model list."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import orjson

from .answer import Answer, openai_chunk, openai_completion, openai_error, openai_usage, plan
from .exchange import Exchange, drive_stream, non_stream_wait, send_final_json

MALFORMED = b"data: {not json\n\n"
MODEL_CREATED = 1_700_000_000


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def chat_completions(ex: Exchange) -> str:
    body: dict[str, Any] = ex.body
    step = ex.step
    seq = ex.record["seq"]
    answer = plan(step, body, str(body["model"]), seq, ex.created, anthropic=False)
    if body.get("stream") is not True:
        await ex.sleep(non_stream_wait(step))
        obj = openai_completion(answer, with_usage=step.usage_mode != "none", finish=not step.no_finish)
        return await send_final_json(ex, obj)
    options = body.get("stream_options")
    include_usage = (
        step.usage_mode == "auto" and isinstance(options, dict) and options.get("include_usage") is True
    )
    return await drive_stream(ex, answer, OpenAIStream(ex, answer, include_usage))


class OpenAIStream:
    """``chat.completion.chunk`` events: role, content / tool-call pieces, finish, usage, [DONE]."""

    def __init__(self, ex: Exchange, answer: Answer, include_usage: bool) -> None:
        self.ex = ex
        self.a = answer
        self.include_usage = include_usage

    async def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, usage: Any = None
    ) -> None:
        chunk = openai_chunk(self.a, delta, finish_reason)
        if self.include_usage:
            chunk["usage"] = None
        if usage is not None:
            chunk["usage"] = usage
        await self.ex.write(sse(chunk))

    async def preamble(self) -> None:
        await self._chunk({"role": "assistant", "content": ""})

    async def content(self, index: int) -> None:
        texts = self.a.text_pieces
        if index < len(texts):
            await self._chunk({"content": texts[index]})
            return
        tool = self.a.tool
        assert tool is not None
        j = index - len(texts)
        if j == 0:
            head = {
                "index": 0,
                "id": tool.id,
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
                **tool.openai_extra(),
            }
            await self._chunk({"tool_calls": [head]})
        await self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": tool.pieces[j]}}]})

    async def error_event(self) -> None:
        step = self.ex.step
        message = step.error_message or "The server had an error while processing your request."
        await self.ex.write(
            sse(openai_error(message, step.error_type or "server_error", None, step.error_code))
        )

    async def malformed(self) -> None:
        await self.ex.write(MALFORMED)

    async def finish(self) -> None:
        step = self.ex.step
        final_usage = openai_usage(self.a) if step.usage_mode == "final_chunk" else None
        if not step.no_finish:
            await self._chunk({}, self.a.finish_reason, final_usage)
        elif final_usage is not None:
            await self._chunk({}, None, final_usage)
        if self.include_usage:
            usage_chunk = openai_chunk(self.a, None)
            usage_chunk["usage"] = openai_usage(self.a)
            await self.ex.write(sse(usage_chunk))
        if not step.no_done:
            await self.ex.write(b"data: [DONE]\n\n")


# embeddings


def _inputs(value: Any) -> list[str | list[int]] | None:
    """``input`` as a list of items (text or token arrays); None if it has no valid shape."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value]
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
        return list(value)
    return None


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """Deterministic floats in [-1, 1), exact in float32 (multiples of 1/128)."""
    seed = orjson.dumps(item)
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        out.extend((b - 128) / 128 for b in digest)
        counter += 1
    return out[:dimensions]


def _tokens(item: str | list[int]) -> int:
    return len(item) if isinstance(item, list) else math.ceil(len(item) / 4)


def input_error(message: str) -> dict[str, Any]:
    return openai_error(message, "invalid_request_error", "input", None)


async def embeddings(ex: Exchange) -> str:
    body: dict[str, Any] = ex.body
    step = ex.step
    items = _inputs(body.get("input"))
    if items is None:
        await ex.send_json(
            400, input_error("'input' must be a string, or an array of strings or of token ids.")
        )
        return "error_status"
    dims = body.get("dimensions", body.get("output_dimension"))  # OpenAI's name, Mistral's
    dimensions = (
        dims if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0 else step.dimensions
    )
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(items):
        vector = embedding_vector(item, dimensions)
        packed: Any = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": packed})
    prompt = step.usage.prompt_tokens
    tokens = sum(_tokens(i) for i in items) if prompt is None else prompt
    obj: dict[str, Any] = {"object": "list", "data": data, "model": step.response_model or body["model"]}
    if step.usage_mode != "none":
        obj["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return await send_final_json(ex, obj)


def models_list(models: list[str], *, anthropic: bool) -> dict[str, Any]:
    data: list[dict[str, Any]]
    if anthropic:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
            for m in models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    data = [
        {"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "asgi-router-sim"} for m in models
    ]
    return {"object": "list", "data": data}
