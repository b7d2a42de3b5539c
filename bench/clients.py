"""Small Python clients: the answer check, time to first token, and many slow streams.

They run on the load generator's core, with aiohttp (and uvloop when present). Everything is
bounded: each request has a timeout, each loop a count and a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import fakeupstream as fu
import orjson

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "Say hello to the benchmark, in one sentence please."},
        ],
        "max_tokens": 64,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


@dataclass(frozen=True)
class Endpoint:
    """Where to send one kind of request: the full URL and the model name in the body."""

    url: str
    model: str

    def body(self, stream: bool) -> bytes:
        return request_body(self.model, stream)


@dataclass(frozen=True)
class Targets:
    """A contender's endpoints (the drip one only for --memory, burst for --scaling)."""

    plain: Endpoint
    stream: Endpoint
    slow_plain: Endpoint
    slow_stream: Endpoint
    drip: Endpoint | None = None
    burst_stream: Endpoint | None = None


HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


def _usage_ok(got: Any, want: dict[str, int]) -> bool:
    return isinstance(got, dict) and all(got.get(k) == v for k, v in want.items())


@dataclass
class StreamRead:
    status: int
    content_type: str
    content: str = ""
    content_events: int = 0
    usage: Any = None
    finish_reason: str | None = None
    done: bool = False
    after_done: bool = False
    bad_events: list[str] = field(default_factory=list)
    ttft_s: float | None = None


async def read_stream(session: aiohttp.ClientSession, ep: Endpoint, timeout_s: float) -> StreamRead:
    """POST a stream request and read it to the end, noting when the first content arrived."""
    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(ep.url, data=ep.body(True), headers=HEADERS, timeout=timeout) as resp:
        out = StreamRead(resp.status, resp.headers.get("Content-Type", ""))
        if resp.status != 200:
            out.bad_events.append((await resp.read())[:300].decode(errors="replace"))
            return out
        buf = b""
        async for data in resp.content.iter_any():
            buf += data.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                _take_event(out, event, t0)
        if buf.strip():
            _take_event(out, buf, t0)
    return out


def _take_event(out: StreamRead, event: bytes, t0: float) -> None:
    data_lines = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
    if not data_lines:
        return  # comment or keep-alive
    data = b"\n".join(data_lines)
    if out.done:
        out.after_done = True
    if data == b"[DONE]":
        out.done = True
        return
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        out.bad_events.append(data[:200].decode(errors="replace"))
        return
    if not isinstance(chunk, dict):
        out.bad_events.append(data[:200].decode(errors="replace"))
        return
    if chunk.get("usage"):
        out.usage = chunk["usage"]
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        piece = delta.get("content")
        if piece:
            if out.ttft_s is None:
                out.ttft_s = time.perf_counter() - t0
            out.content += piece
            out.content_events += 1
        if choice.get("finish_reason"):
            out.finish_reason = choice["finish_reason"]
    if "error" in chunk:
        out.bad_events.append(data[:300].decode(errors="replace"))


async def _check_plain(session: aiohttp.ClientSession, ep: Endpoint) -> list[str]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with session.post(ep.url, data=ep.body(False), headers=HEADERS, timeout=timeout) as resp:
        raw = await resp.read()
        if resp.status != 200:
            return [f"{ep.url} (model {ep.model}): status {resp.status}: {raw[:300]!r}"]
    try:
        body = orjson.loads(raw)
        content = body["choices"][0]["message"]["content"]
        usage = body.get("usage")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return [f"{ep.url} (model {ep.model}): not a chat completion ({exc!r}): {raw[:300]!r}"]
    problems = []
    if content != fu.CONTENT:
        problems.append(f"{ep.url} (model {ep.model}): content {content!r}, want {fu.CONTENT!r}")
    if not _usage_ok(usage, fu.PLAIN_USAGE):
        problems.append(f"{ep.url} (model {ep.model}): usage {usage!r}, want {fu.PLAIN_USAGE}")
    return problems


async def _check_stream(session: aiohttp.ClientSession, ep: Endpoint) -> tuple[list[str], list[str]]:
    got = await read_stream(session, ep, timeout_s=30)
    where = f"{ep.url} (model {ep.model}, stream)"
    if got.status != 200:
        return [f"{where}: status {got.status}: {got.bad_events}"], []
    problems = []
    notes = []
    if "text/event-stream" not in got.content_type:
        problems.append(f"{where}: Content-Type {got.content_type!r}")
    if got.content != fu.STREAM_CONTENT:
        problems.append(f"{where}: content {got.content!r}, want {fu.STREAM_CONTENT!r}")
    if not _usage_ok(got.usage, fu.STREAM_USAGE):
        problems.append(f"{where}: usage {got.usage!r}, want {fu.STREAM_USAGE}")
    if not got.done:
        problems.append(f"{where}: no data: [DONE]")
    if got.after_done:
        problems.append(f"{where}: events after data: [DONE]")
    if got.finish_reason != "stop":
        problems.append(f"{where}: finish_reason {got.finish_reason!r}, want 'stop'")
    if got.bad_events:
        problems.append(f"{where}: bad events {got.bad_events[:3]}")
    if got.content_events != len(fu.STREAM_PIECES):
        notes.append(
            f"{where}: {got.content_events} content events for {len(fu.STREAM_PIECES)} upstream "
            "chunks (re-chunked)"
        )
    return problems, notes


async def _check(targets: Targets, drip: bool) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    async with aiohttp.ClientSession() as session:
        for ep in (targets.plain, targets.slow_plain):
            for _ in range(2):  # twice: the second goes over a reused connection
                problems += await _check_plain(session, ep)
        stream_eps = [targets.stream, targets.slow_stream]
        if targets.burst_stream is not None:
            stream_eps.append(targets.burst_stream)
        if drip and targets.drip is not None:
            stream_eps.append(targets.drip)
        for ep in stream_eps:
            for _ in range(2):
                p, n = await _check_stream(session, ep)
                problems += p
                notes += n
    return problems, sorted(set(notes))


def check(targets: Targets, drip: bool = False) -> tuple[list[str], list[str]]:
    """Problems (wrong answers: do not load this contender) and notes (worth saying).

    ``drip``: check the slow drip stream too (several seconds; only --memory uses it).
    """
    try:
        return run_async(_check(targets, drip))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return [f"request failed: {exc!r}"], []


async def _check_plains(endpoints: list[Endpoint]) -> list[str]:
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        for ep in endpoints:
            problems += await _check_plain(session, ep)
    return problems


def check_plain(endpoints: list[Endpoint]) -> list[str]:
    """Problems with the non-stream answers of ``endpoints`` (empty: all right)."""
    try:
        return run_async(_check_plains(endpoints))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return [f"request failed: {exc!r}"]


async def _ttft(ep: Endpoint, duration_s: float, max_samples: int) -> tuple[list[float], int]:
    samples: list[float] = []
    failures = 0
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        await read_stream(session, ep, timeout_s=30)  # warm the connection
        while time.monotonic() < deadline and len(samples) < max_samples:
            got = await read_stream(session, ep, timeout_s=30)
            if got.status == 200 and got.ttft_s is not None and got.done:
                samples.append(got.ttft_s * 1000)
            else:
                failures += 1
                if failures > 20:
                    break
    return samples, failures


def ttft_ms(ep: Endpoint, duration_s: float, max_samples: int = 5000) -> tuple[float | None, int, int]:
    """Median time to the first content event over sequential streams: (p50 ms, n, failures)."""
    try:
        samples, failures = run_async(_ttft(ep, duration_s, max_samples))
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None, 0, 1
    if not samples:
        return None, 0, failures
    return statistics.median(samples), len(samples), failures


@dataclass
class WaveResult:
    streams: int
    ok: int
    failed: int
    errors: dict[str, int]
    wall_s: float


async def _wave(
    ep: Endpoint, n: int, ramp_s: float, timeout_s: float, on_tick: Callable[[], None]
) -> WaveResult:
    errors: dict[str, int] = {}
    ok = 0
    connector = aiohttp.TCPConnector(limit=n + 16, limit_per_host=n + 16, force_close=True)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> bool:
            await asyncio.sleep(ramp_s * i / max(n, 1))
            try:
                got = await read_stream(session, ep, timeout_s)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                return False
            good = got.status == 200 and got.done and got.content == fu.STREAM_CONTENT
            if not good:
                key = f"status {got.status}" if got.status != 200 else "wrong stream"
                errors[key] = errors.get(key, 0) + 1
            return good

        async def ticker() -> None:
            while True:
                on_tick()
                await asyncio.sleep(0.25)

        tick = asyncio.create_task(ticker())
        try:
            results = await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
        ok = sum(results)
    return WaveResult(n, ok, n - ok, errors, time.monotonic() - t0)


def slow_stream_wave(
    ep: Endpoint, n: int, ramp_s: float, timeout_s: float, on_tick: Callable[[], None]
) -> WaveResult:
    """``n`` concurrent slow streams (opened over ``ramp_s``); ``on_tick`` runs every 0.25 s."""
    return run_async(_wave(ep, n, ramp_s, timeout_s, on_tick))
