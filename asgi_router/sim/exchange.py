"""One request in flight: its record, its step, and the socket-level moves a step can make.

Waiting is done in short ticks that notice a client that left (its transport closing) and a
server that is stopping, so a slow stream whose client went away is recorded as such within
~20 ms even when aiohttp's handler cancellation does not reach it first.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from .answer import Answer
from .state import Record, SimState
from .steps import Step

TICK_S = 0.02
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


class ClientGone(Exception):
    """The client closed the connection before we finished."""


class Stopping(Exception):
    """The server is shutting down; in-flight requests are dropped."""


class Runtime(Protocol):
    """What an exchange needs from the server: the state and whether it is stopping."""

    state: SimState
    stopping: bool


class Exchange:
    __slots__ = (
        "body",
        "created",
        "held",
        "leave_outcome",
        "record",
        "request",
        "response",
        "rt",
        "step",
        "streaming",
    )

    def __init__(self, request: web.Request, rt: Runtime, record: Record, step: Step, body: Any) -> None:
        self.request = request
        self.rt = rt
        self.record = record
        self.step = step
        self.body = body
        self.response: web.StreamResponse | None = None
        self.streaming = False  # an SSE body has started: keep-alive comments may go out
        self.held: list[bytes] = []  # a burst step's events, written together at the end
        self.leave_outcome = "disconnected"  # recorded if the client leaves now
        self.created = int(time.time())  # the "created" field of answers (wall clock, by design)

    # connection

    def client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def close_connection(self) -> None:
        """Close the socket now: FIN after what was written, or RST with ``step.reset``."""
        transport = self.request.transport
        if transport is None:
            return
        if self.step.reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    async def flush_then_close(self) -> None:
        """Let the kernel take what we wrote before closing (an RST would discard it)."""
        await self._write_held()
        transport = self.request.transport
        for _ in range(100):
            if transport is None or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.001)
        self.close_connection()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (may be ``inf``), sending keep-alives once a stream has started.

        Raises :class:`ClientGone` or :class:`Stopping` as soon as either happens."""
        if seconds <= 0 and not self.client_gone():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + seconds
        every = self.step.keepalive_s
        next_keepalive = now + every if every and self.streaming else math.inf
        while True:
            if self.client_gone():
                raise ClientGone
            if self.rt.stopping:
                raise Stopping
            now = loop.time()
            if now >= deadline:
                return
            if now >= next_keepalive and every:
                await self.write(b": keep-alive\n\n")
                next_keepalive = now + every
            await asyncio.sleep(max(0.0, min(deadline, next_keepalive, now + TICK_S) - now))

    # responses

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        request_id = f"req_sim{self.record['seq']:06d}"
        out = {"x-request-id": request_id, "request-id": request_id}
        out.update(extra or {})
        out.update(self.step.response_headers())
        return out

    async def send_json(
        self,
        status: int,
        obj: Any,
        *,
        cut_half: bool = False,
        stall_half: bool = False,
        json_content_type: bool = False,
    ) -> None:
        """Send a whole JSON response now (``str``/``bytes``: verbatim, as text unless
        ``json_content_type``); optionally only half of it, then cut or stall."""
        if isinstance(obj, str | bytes):
            data = obj.encode() if isinstance(obj, str) else obj
            content_type = "application/json" if json_content_type else "text/plain; charset=utf-8"
        else:
            data = orjson.dumps(obj)
            content_type = "application/json"
        resp = web.StreamResponse(status=status, headers=self.headers({"content-type": content_type}))
        resp.content_length = len(data)
        self.response = resp
        self.rt.state.update(self.record, status=status)
        await resp.prepare(self.request)
        if cut_half or stall_half:
            await resp.write(data[: len(data) // 2])
            if cut_half:
                await self.flush_then_close()
                return
            self.leave_outcome = "stalled"
            await self.sleep(math.inf)
        await resp.write(data)
        await resp.write_eof()

    async def start_stream(self) -> None:
        resp = web.StreamResponse(
            status=200, headers=self.headers({"content-type": SSE_CONTENT_TYPE, "cache-control": "no-cache"})
        )
        self.response = resp
        self.streaming = True
        self.rt.state.update(self.record, status=200)
        await resp.prepare(self.request)

    async def write(self, data: bytes) -> None:
        if self.response is None:
            raise RuntimeError("stream not started")
        if self.step.burst:
            self.held.append(data)
        else:
            await self.response.write(data)

    async def _write_held(self) -> None:
        if self.held and self.response is not None:
            data, self.held = b"".join(self.held), []
            await self.response.write(data)

    async def end(self) -> None:
        if self.response is not None:
            await self._write_held()
            await self.response.write_eof()


async def send_final_json(ex: Exchange, obj: Any) -> str:
    """A non-streamed answer with the step's body faults (malformed, cut, stall) applied."""
    step = ex.step
    if step.malformed_after is not None:
        await ex.send_json(200, b"{not json", json_content_type=True)
        return "malformed"
    await ex.send_json(200, obj, cut_half=step.cut_after is not None, stall_half=step.stall_after is not None)
    return "cut" if step.cut_after is not None else "ok"


class StreamWriter(Protocol):
    """One dialect's stream: the driver below decides when each part goes out."""

    async def preamble(self) -> None: ...
    async def content(self, index: int) -> None: ...
    async def error_event(self) -> None: ...
    async def malformed(self) -> None: ...
    async def finish(self) -> None: ...


async def drive_stream(ex: Exchange, answer: Answer, writer: StreamWriter) -> str:
    """Send a stream with the step's timing and faults; returns the outcome to record.

    Faults "after N chunks" fire at position ``min(N, count)``, just before content chunk N+1
    (or before the finish when N is past the end)."""
    step = ex.step
    count = answer.content_count
    malformed_sent = False
    await ex.start_stream()
    await writer.preamble()
    for i in range(count + 1):
        if _at(step.malformed_after, i, count):
            await writer.malformed()
            malformed_sent = True
            if step.malformed_then == "close":
                await ex.flush_then_close()
                return "malformed"
        if _at(step.mid_stream_error, i, count):
            await writer.error_event()
            await ex.end()
            return "mid_stream_error"
        if _at(step.cut_after, i, count):
            await ex.flush_then_close()
            return "cut"
        if _at(step.stall_after, i, count):
            ex.leave_outcome = "stalled"
            await ex.sleep(math.inf)
        if i == count:
            break
        await ex.sleep(step.ttft_s if i == 0 else step.chunk_delay_s)
        await writer.content(i)
    await writer.finish()
    if step.linger_s:
        await ex.sleep(step.linger_s)
    await ex.end()
    if malformed_sent:
        return "malformed"
    if step.no_done:
        return "no_done"
    if step.no_finish:
        return "no_finish"
    return "ok"


def _at(after: int | None, i: int, count: int) -> bool:
    return after is not None and min(after, count) == i


def non_stream_wait(step: Step) -> float:
    """How long a non-streamed answer takes after ``delay_s``: its whole generation time."""
    return step.ttft_s + step.chunk_delay_s * max(0, step.chunks - 1)


Handler = Callable[[Exchange], Awaitable[str]]
