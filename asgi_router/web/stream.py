"""A streamed answer: commit, relay event by event, end properly or with an error event.

Nothing is sent before the executor returns a committed stream, so a chain or race can still
switch members. After that, each upstream event is translated and written at once (no
buffering to the end: the events of one upstream read go out in one write, and a stream that
had wholly arrived by the commit point goes out as one body with its length). A client that
disconnects cancels the relay, which closes the upstream connection; spend for what was
streamed is booked either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from asgi_router.errors import UpstreamError
from asgi_router.graph import Deployment, Node
from asgi_router.metrics import Metrics, deployment_metrics
from asgi_router.reload import Runtime
from asgi_router.routing.execute import count_upstream
from asgi_router.routing.outcome import Call
from asgi_router.routing.stream import Batch, CommittedStream
from asgi_router.web.exchange import Exchange
from asgi_router.web.render import Headers, stream_error_event
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent

if TYPE_CHECKING:
    from asgi_router.web.app import App

log = structlog.get_logger("asgi_router.web")

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def relay_stream(app: App, rt: Runtime, ex: Exchange, node: Node, call: Call) -> None:
    """Commit, then relay. A client that leaves cancels this (see web/disconnect.py): the
    upstream stream is closed and what was streamed is still booked."""
    committed: CommittedStream | None = None
    try:
        committed = await rt.executor.open(node, call)
        await _relay(app, ex, call, committed)
    finally:
        if committed is not None:
            # booked first: closing the upstream awaits (its body's last bytes), and a client
            # that hangs up meanwhile cancels this task, which must not cost the booking
            _settle(app, ex, call, committed)
            await committed.aclose()


async def _relay(app: App, ex: Exchange, call: Call, cs: CommittedStream) -> None:
    from asgi_router.web.endpoints import router_headers

    d = cs.deployment
    send = ex.send
    headers = [*SSE_HEADERS, *router_headers(ex, d, call), (b"x-request-id", ex.request_id.encode())]
    translator = cs.translation.stream()
    feed = translator.feed
    tally = cs.tally
    if tally.done and tally.finish:
        # The whole upstream stream came before the answer started (a short answer from a fast
        # provider): it goes out as one body with its length, without chunked framing, so
        # hypercorn writes headers and body and no terminator.
        outs = [_render(feed, batch) async for batch in cs]  # the pending batch: no read
        body = b"".join(outs + translator.close())
        await _start(app, ex, d, [*headers, (b"content-length", str(len(body)).encode())])
        await _end(ex, body)
        return
    await _start(app, ex, d, headers)
    held = b""  # the batch that ended the stream: it goes out with the end, in one write
    try:
        async for batch in cs:
            body = _render(feed, batch)
            if not body:
                continue
            if tally.done:  # the end marker came: nothing more will be read
                held = body
            else:
                await send({"type": "http.response.body", "body": body, "more_body": True})
    except UpstreamError as e:
        log.warning("stream_broken", request_id=ex.request_id, model=d.name, error=str(e))
        app.metrics.upstream_requests.labels(d.provider.name, d.name, "stream_error").inc()
        ex.outcome = "stream_error"  # the 200 already went out: the error event ends the stream
        error = stream_error_event(f"upstream stream from {d.name!r} broke: {e}", 502, ex.dialect)
        await _end(ex, held + error)
        return
    await _end(ex, held + b"".join(translator.close()))


async def _end(ex: Exchange, body: bytes) -> None:
    """The stream's last bytes. A client that hangs up after them has its whole answer: the
    disconnect watcher then lets the upstream's close (its body's end, up to a moment) finish."""
    await ex.send({"type": "http.response.body", "body": body, "more_body": False})
    ex.answered = True


def _render(feed: Callable[[SSEEvent, Probe], list[bytes]], batch: Batch) -> bytes:
    """One upstream read's events, translated, as one write (b"".join of one item is that item)."""
    if len(batch) == 1:
        return b"".join(feed(*batch[0]))
    return b"".join([b for ev, p in batch for b in feed(ev, p)])


async def _start(app: App, ex: Exchange, d: Deployment, headers: Headers) -> None:
    """The 200 and its headers; the time to first token is taken here."""
    ex.status = 200
    await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
    ex.ttft_s = time.perf_counter() - ex.started
    # counted after the answer: the head goes out with the first body, which comes next
    app.after(_count_ttft, app.metrics, d, ex.route, ex.ttft_s)


def _count_ttft(metrics: Metrics, d: Deployment, route: str, ttft_s: float) -> None:
    child = deployment_metrics(metrics, d).ttft_by_route.get(route)
    (child or metrics.ttft.labels(route, d.name)).observe(ttft_s)


def _settle(app: App, ex: Exchange, call: Call, cs: CommittedStream) -> None:
    from asgi_router.web.endpoints import account

    d = cs.deployment
    elapsed = time.perf_counter() - cs.started
    call.upstream_wait_s += cs.tally.upstream_wait_s
    task = asyncio.current_task()
    if task is not None and task.cancelling():  # the client left (or the server is stopping)
        status: str | None = "cancelled"
    else:
        status = "ok" if ex.outcome is None else None  # a stream error was counted where it came
    app.after(count_upstream, app.metrics, d, elapsed, status)
    app.store.observe_latency(d.fingerprint, elapsed, cs.ttft_s)
    account(app, ex, call, d, cs.tally.usage, output_chunks=cs.tally.content_chunks)
