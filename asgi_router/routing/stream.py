"""A stream past its commit point: the first content (or a finish) has been seen.

The buffered events come first, then the rest of the upstream stream, each probed. The
stream's invariants are enforced here, not by callers: an event that is not valid JSON, an
error event, a stream that ends (or goes silent) without a finish reason, or a ``[DONE]``
without one, raise :class:`UpstreamError` (``stream_error`` or ``timeout``); a stream that
finished but did not send its end marker ends normally.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import orjson

from asgi_router.errors import UpstreamError
from asgi_router.graph import Deployment
from asgi_router.translate.base import Translation
from asgi_router.upstream.base import UpstreamStream
from asgi_router.wire.probe import MalformedEvent, Probe
from asgi_router.wire.sse import SSEDecoder, SSEEvent
from asgi_router.wire.usage import Usage

ProbeFn = Callable[[SSEEvent], Probe]


@dataclass(slots=True)
class StreamTally:
    """What a stream told us so far, for spend, metrics and the end-of-stream checks."""

    usage: Usage | None = None
    finish: str | None = None
    done: bool = False
    content_chunks: int = 0
    upstream_wait_s: float = 0.0


def merge_usage(old: Usage | None, new: Usage) -> Usage:
    """Streams report usage cumulatively and sometimes in parts (Anthropic's message_start has
    the input, message_delta the output): keep the largest value of each field."""
    if old is None:
        return new
    return Usage(
        max(old.input, new.input),
        max(old.output, new.output),
        max(old.cached_input, new.cached_input),
        max(old.cache_write, new.cache_write),
    )


def _error_text(err: object) -> str:
    if isinstance(err, dict):
        msg = err.get("message") or err.get("type")
        if isinstance(msg, str):
            return msg[:200]
    return "unknown error"


Batch = list[tuple[SSEEvent, Probe]]


class EventReader:
    """Decodes and probes ``chunks`` until the end marker or the end of the body, one batch per
    upstream read (events that arrived together go to the client in one write). An iterator
    class, not an async generator: those cost a loop hook on their first step and another on
    their way out, and three ran per stream. A batch that raises ends the reading."""

    __slots__ = ("_chunks", "_decoder", "_ended", "_probe", "_tally")

    def __init__(
        self, chunks: AsyncIterator[bytes], decoder: SSEDecoder, probe: ProbeFn, tally: StreamTally
    ) -> None:
        self._chunks = chunks
        self._decoder = decoder
        self._probe = probe
        self._tally = tally
        self._ended = False

    def __aiter__(self) -> EventReader:
        return self

    async def __anext__(self) -> Batch:
        tally = self._tally
        clock = time.perf_counter
        try:
            while not self._ended:
                t = clock()
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    tally.upstream_wait_s += clock() - t
                    self._ended = True
                    batch = _decode(self._decoder.flush(), self._probe, tally)
                    if batch:
                        return batch
                    break
                tally.upstream_wait_s += clock() - t
                batch = _decode(self._decoder.feed(chunk), self._probe, tally)
                if batch:
                    self._ended = tally.done
                    return batch
        except BaseException:
            self._ended = True
            raise
        raise StopAsyncIteration


def _decode(events: list[SSEEvent], probe: ProbeFn, tally: StreamTally) -> Batch:
    """Probe each event; a bad one raises, after the good ones before it were delivered.
    (The per-event path of every stream: kept to one loop without helper calls.)"""
    batch: Batch = []
    for ev in events:
        try:
            p = probe(ev)
        except MalformedEvent as e:
            err = UpstreamError("stream_error", str(e))
            err.delivered = batch  # type: ignore[attr-defined]
            raise err from e
        if p.error is not None:
            err = UpstreamError(
                "stream_error",
                f"upstream sent an error event: {_error_text(p.error)}",
                body=orjson.dumps(p.error),
            )
            err.delivered = batch  # type: ignore[attr-defined]
            raise err
        if p.usage is not None:
            tally.usage = merge_usage(tally.usage, p.usage)
        if p.content:
            tally.content_chunks += 1
        if p.finish:
            tally.finish = p.finish
        batch.append((ev, p))
        if p.done:
            tally.done = True
            break
    return batch


@dataclass(slots=True)
class CommittedStream:
    """Iterated once (``async for batch in cs``): every event from the commit point on, in
    batches as they arrived. Raises UpstreamError on a broken stream, after the events it
    delivered before breaking."""

    deployment: Deployment
    translation: Translation
    pending: Batch
    rest: AsyncIterator[Batch]
    upstream: UpstreamStream
    tally: StreamTally
    stack: AsyncExitStack
    ttft_s: float
    started: float  # perf_counter at the attempt's start
    closed: bool = field(default=False)
    _broken: UpstreamError | None = field(default=None)
    _over: bool = field(default=False)

    def __aiter__(self) -> CommittedStream:
        return self

    async def __anext__(self) -> Batch:
        if self.pending:
            batch, self.pending = self.pending, []
            return batch
        if self._over:
            raise StopAsyncIteration
        tally = self.tally
        if self._broken is None and not tally.done:
            try:
                return await self.rest.__anext__()
            except StopAsyncIteration:
                pass
            except UpstreamError as e:
                self._broken = e
                delivered: Batch | None = getattr(e, "delivered", None)
                if delivered:
                    return delivered
        self._over = True
        broken = self._broken
        if broken is not None:
            if broken.kind == "timeout" and tally.finish:
                raise StopAsyncIteration  # finished, then silent instead of closing: end it
            raise broken
        if not tally.finish:
            raise UpstreamError("stream_error", "upstream stream ended without a finish reason")
        self.upstream.complete = tally.done
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self.stack.aclose()
