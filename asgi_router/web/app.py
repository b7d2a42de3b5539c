"""The ASGI application: a route table, the lifespan, and the one top-level error boundary.

The hot path is raw ASGI (a dict lookup per request, no middleware stack): Starlette's
Request/Response objects cost measurably per request (see README, Performance).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars

from asgi_router.errors import MethodNotAllowed, NotFound, RouterError, ServiceUnavailable
from asgi_router.memory import Releaser
from asgi_router.metrics import Metrics
from asgi_router.reload import GraphHolder
from asgi_router.routing.execute import refresh_cooldown_gauges
from asgi_router.spendlog import SpendLog
from asgi_router.state.memory import MemoryStore
from asgi_router.state.store import StateStore
from asgi_router.types import Dialect
from asgi_router.upstream.base import KEEPALIVE_S
from asgi_router.upstream.pool import UpstreamPool
from asgi_router.web import admin, endpoints
from asgi_router.web.after import Afterwards
from asgi_router.web.exchange import ClientGone, Exchange
from asgi_router.web.render import render_error

log = structlog.get_logger("asgi_router.web")
GAUGE_REFRESH_S = 1.0
GC_THRESHOLDS = (10_000, 2, 2)
Handler = Callable[["App", Exchange], Awaitable[None]]

ROUTES: dict[str, tuple[Dialect, dict[str, Handler]]] = {
    "/v1/chat/completions": ("openai", {"POST": endpoints.chat}),
    "/v1/messages": ("anthropic", {"POST": endpoints.chat}),
    "/v1/embeddings": ("openai", {"POST": endpoints.embeddings}),
    "/v1/models": ("openai", {"GET": endpoints.models}),
    "/metrics": ("openai", {"GET": admin.metrics}),
    "/healthz": ("openai", {"GET": admin.healthz}),
    "/readyz": ("openai", {"GET": admin.readyz}),
    "/admin/reload": ("openai", {"POST": admin.reload}),
    "/admin/config": ("openai", {"GET": admin.config}),
    "/admin/state": ("openai", {"GET": admin.state}),
}
# the same without the /v1 prefix, for clients whose base_url omits it
ROUTES.update({p[3:]: v for p, v in list(ROUTES.items()) if p.startswith("/v1/")})


@dataclass(slots=True)
class Settings:
    config_path: Path
    env: Mapping[str, str] | None = None
    watch: bool | None = None  # None: as [server] watch says
    last_good: Path | None = None  # a supervised worker's shared copy (reload.GraphHolder)


class App:
    """``App(settings)`` is the ASGI callable; its lifespan loads the config."""

    def __init__(
        self, settings: Settings, *, store: StateStore | None = None, pool: UpstreamPool | None = None
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store: StateStore = store or MemoryStore()
        self.pool = pool or UpstreamPool()
        self.after = Afterwards()  # a request's log line and counts, once its answer is out
        self.holder = GraphHolder(
            settings.config_path,
            self.store,
            self.metrics,
            self.pool,
            env=settings.env,
            last_good=settings.last_good,
            later=self.after,
        )
        self.spend_log = SpendLog(None)
        self._tasks: list[asyncio.Task[None]] = []
        self._gc_threshold: tuple[int, int, int] | None = None
        self.active = 0  # HTTP requests in flight, and those finished: what the Releaser watches
        self.finished = 0
        # after traffic, until the burst's pooled upstream connections have expired
        self.releaser = Releaser(self, window_s=2 * KEEPALIVE_S + 10)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = ROUTES.get(scope["path"])
        ex = Exchange(scope, receive, send, route[0] if route else "openai")
        if route is not None and route[1].get("POST") in (endpoints.chat, endpoints.embeddings):
            ex.route = "unknown"  # counted even when refused before a name is resolved (401, 413…)
        bind_contextvars(request_id=ex.request_id)  # this request's task only: every log line carries it
        self.active += 1
        try:
            if route is None:
                raise NotFound(f"no route {scope['path']!r}; see the README for the endpoints")
            handler = route[1].get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}")
            if not self.holder.loaded and handler not in (admin.healthz, admin.readyz, admin.metrics):
                raise ServiceUnavailable("the gateway is not ready (loading or draining)")
            await handler(self, ex)
        except RouterError as e:
            await self._error(ex, e)
        except ClientGone:
            ex.status, ex.outcome = 499, "cancelled"
        except Exception:  # the one boundary: anything unexpected is logged and answered
            log.exception("unhandled_error", request_id=ex.request_id)
            await self._error(ex, RouterError("internal error in the gateway; see its log"))
        finally:
            self.active -= 1
            self.finished += 1
            ex.ended = time.perf_counter()
            self.after(self._finish, ex)

    async def _error(self, ex: Exchange, err: RouterError) -> None:
        if ex.status:  # the answer already started: nothing more can be said
            return
        status, headers, body = render_error(err, ex.dialect)
        await ex.respond(status, headers, body)

    def _finish(self, ex: Exchange) -> None:
        if ex.route != "-":
            rm = ex.route_metrics or self.metrics.route(ex.route)
            if ex.status == 200 and ex.outcome is None:
                rm.ok.inc()
            else:
                self.metrics.requests.labels(rm.name, ex.outcome or str(ex.status)).inc()
            fields = ex.log_fields()
            rm.duration.observe(fields["duration_ms"] / 1000)
            if ex.overhead_s is not None:
                rm.overhead.observe(max(ex.overhead_s, 0.0))
            log.info("request", **fields)
        elif ex.status >= 400 and ex.scope["path"] != "/metrics":
            log.info("request", **ex.log_fields())

    # lifespan ----------------------------------------------------------------------------------
    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except StartupError as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        result = await self.holder.reload("startup")
        if not result.ok:
            raise StartupError("config rejected:\n" + "\n".join(result.errors))
        graph = self.holder.current.graph
        if graph.state.backend != "memory":
            # say it loudly rather than pretend: state is per process until the shared backend lands
            log.warning(
                "state_backend_unavailable",
                configured=graph.state.backend.split("://", 1)[0] + "://…",
                using="memory",
                note="cooldowns, limits and budgets are kept per worker process",
            )
        self.spend_log = SpendLog(graph.state.spend_log)
        self._tasks.append(asyncio.create_task(self.spend_log.run()))
        self._tasks.append(asyncio.create_task(self._refresh_gauges()))
        self._tasks.append(asyncio.create_task(self.releaser.run()))
        # Everything allocated so far (modules, the graph, metric children) lives as long as the
        # process: keep it out of the collector's scans, so a full collection stays short.
        gc.collect()
        gc.freeze()
        # A request allocates and frees its objects by reference counting; the collector only
        # needs to run for cycles (hypercorn leaves one per closed client connection). At the
        # default 700 it ran every ~12 requests under load and took 3-4% of the CPU, with
        # gen-2 pauses of 1-4.5 ms in the latency tail; at 10,000 a steady load never triggers
        # it (bench: plain req/s +10%). The older generations follow every 2nd collection, not
        # every 10th: a burst's cycles (1,000 streams: 33,000 objects) are then gone before
        # the next burst, instead of piling up (RSS 96 → 103 → 107 MiB over three bursts at
        # (10,000, 10, 10); 96 → 96 → 97 at (10,000, 2, 2), as at CPython's defaults).
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        watch = graph.server.watch if self.settings.watch is None else self.settings.watch
        if watch:
            self._tasks.append(asyncio.create_task(self.holder.watch()))

    async def _refresh_gauges(self) -> None:
        """router_cooldown_active follows the store once a second in every worker (a cooldown's
        end is not an event; with --workers N each worker's own view is what it exports)."""
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)
            rt = self.holder.current
            refresh_cooldown_gauges(self.metrics, rt.graph.deployments, self.store, time.monotonic())

    async def shutdown(self) -> None:
        self.holder.draining = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self.after.run()
        await self.spend_log.flush()
        await self.pool.aclose()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)


class StartupError(Exception):
    pass


def create_app(
    config_path: str | Path, *, env: Mapping[str, str] | None = None, watch: bool | None = None
) -> App:
    return App(Settings(Path(config_path), env, watch))
