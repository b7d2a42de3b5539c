"""Anthropic dialect: ``POST /v1/messages``, plain and streamed.

A stream is ``message_start``, ``content_block_start`` (text), ``ping``, ``content_block_delta``…,
``content_block_stop`` (then the same for a ``tool_use`` block with ``input_json_delta``
pieces), ``message_delta`` with cumulative usage, ``message_stop``; every event has both an
``event:`` and a ``data:`` line.
"""

from __future__ import annotations

from typing import Any

import orjson

from .answer import Answer, anthropic_error, anthropic_message, anthropic_usage, plan
from .exchange import Exchange, drive_stream, non_stream_wait, send_final_json

MALFORMED = b"event: content_block_delta\ndata: {not json\n\n"


def event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


async def messages(ex: Exchange) -> str:
    body: dict[str, Any] = ex.body
    step = ex.step
    answer = plan(step, body, str(body["model"]), ex.record["seq"], ex.created, anthropic=True)
    if body.get("stream") is not True:
        await ex.sleep(non_stream_wait(step))
        obj = anthropic_message(answer, with_usage=step.usage_mode != "none", finish=not step.no_finish)
        return await send_final_json(ex, obj)
    return await drive_stream(ex, answer, AnthropicStream(ex, answer))


class AnthropicStream:
    def __init__(self, ex: Exchange, answer: Answer) -> None:
        self.ex = ex
        self.a = answer
        self.with_usage = ex.step.usage_mode != "none"
        self.open_block: int | None = None
        self.next_block = 0

    async def _send(self, name: str, obj: dict[str, Any]) -> None:
        await self.ex.write(event(name, {"type": name, **obj}))

    async def _start_block(self, block: dict[str, Any]) -> None:
        await self._stop_block()
        self.open_block = self.next_block
        self.next_block += 1
        await self._send("content_block_start", {"index": self.open_block, "content_block": block})

    async def _stop_block(self) -> None:
        if self.open_block is not None:
            await self._send("content_block_stop", {"index": self.open_block})
            self.open_block = None

    async def preamble(self) -> None:
        a = self.a
        message: dict[str, Any] = {
            "id": a.id,
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if self.with_usage:
            message["usage"] = anthropic_usage(a, min(1, a.completion_tokens))
        await self._send("message_start", {"message": message})
        if a.text_pieces:
            await self._start_block({"type": "text", "text": ""})
        await self._send("ping", {})

    async def content(self, index: int) -> None:
        a = self.a
        if index < len(a.text_pieces):
            delta = {"type": "text_delta", "text": a.text_pieces[index]}
        else:
            tool = a.tool
            assert tool is not None
            j = index - len(a.text_pieces)
            if j == 0:
                await self._start_block({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}})
            delta = {"type": "input_json_delta", "partial_json": tool.pieces[j]}
        await self._send("content_block_delta", {"index": self.open_block, "delta": delta})

    async def error_event(self) -> None:
        step = self.ex.step
        body = anthropic_error(step.error_type or "overloaded_error", step.error_message or "Overloaded")
        await self.ex.write(event("error", body))

    async def malformed(self) -> None:
        await self.ex.write(MALFORMED)

    async def finish(self) -> None:
        step = self.ex.step
        await self._stop_block()
        stop_reason = None if step.no_finish else self.a.stop_reason
        delta: dict[str, Any] = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}}
        if self.with_usage:
            delta["usage"] = anthropic_usage(self.a, self.a.completion_tokens)
        await self._send("message_delta", delta)
        if not step.no_done:
            await self._send("message_stop", {})
