"""The serving graph and its atomic replacement.

A :class:`Runtime` bundles one compiled graph with what serves it (provider clients, the
executor, pre-rendered bodies). :class:`GraphHolder` swaps it in one assignment; a request
reads ``holder.current`` once and keeps it, so in-flight work finishes on the graph it
started with. The file watcher, SIGHUP and ``POST /admin/reload`` all call :meth:`reload`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import structlog

from asgi_router import config, logs
from asgi_router.errors import ConfigErrors
from asgi_router.graph import Graph
from asgi_router.metrics import Metrics
from asgi_router.routing.execute import Executor
from asgi_router.state.store import StateStore
from asgi_router.upstream.pool import ProviderClient, UpstreamPool

log = structlog.get_logger("asgi_router.reload")
WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Runtime:
    graph: Graph
    clients: Mapping[str, ProviderClient]
    executor: Executor
    models_body: bytes  # GET /v1/models, rendered once per graph
    created: int = 0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    generation: int
    errors: list[str] = field(default_factory=list)
    changed: bool = True


def _warn_restart_needed(old: Graph, new: Graph) -> None:
    """What a reload cannot change in a running process: say so instead of ignoring it."""
    changed = [
        name
        for name, a, b in (
            ("server.listen", (old.server.host, old.server.port), (new.server.host, new.server.port)),
            ("state.backend", old.state.backend, new.state.backend),
            ("state.spend_log", old.state.spend_log, new.state.spend_log),
        )
        if a != b
    ]
    if changed:
        log.warning("restart_needed", changed=changed, note="these settings apply at the next start")


def _secret_values(graph: Graph) -> list[str]:
    values = [s.reveal() for p in graph.providers.values() for s in p.api_keys]
    if graph.server.admin_key is not None:
        values.append(graph.server.admin_key.reveal())
    return values


def models_body(graph: Graph, created: int) -> bytes:
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "asgi-router"}
        for name in sorted(graph.nodes)
    ]
    return orjson.dumps({"object": "list", "data": data})


class GraphHolder:
    def __init__(
        self,
        path: Path,
        store: StateStore,
        metrics: Metrics,
        pool: UpstreamPool,
        *,
        env: Mapping[str, str] | None = None,
        loader: Callable[..., Graph] = config.load,
    ) -> None:
        self.path = path
        self._store = store
        self._metrics = metrics
        self._pool = pool
        self._env = env
        self._loader = loader
        self._lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current: Runtime | None = None
        self.draining = False

    @property
    def current(self) -> Runtime:
        rt = self._current
        if rt is None:
            raise RuntimeError("no configuration loaded")
        return rt

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def ready(self) -> bool:
        return self._current is not None and not self.draining

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def reload(self, reason: str) -> ReloadResult:
        """Compile the file and swap it in; on any error keep serving the old graph."""
        async with self._lock:
            stamp = self._file_stamp()
            generation = (self._current.graph.generation if self._current else 0) + 1
            try:
                graph = await asyncio.to_thread(self._loader, self.path, self._env, generation=generation)
            except ConfigErrors as e:
                return self._failed(reason, [str(err) for err in e.errors], stamp)
            except OSError as e:
                return self._failed(reason, [f"{self.path}: {e.strerror or e}"], stamp)
            except Exception as e:  # a compiler bug must not kill the watcher or the SIGHUP task
                log.exception("config_compile_crashed", reason=reason)
                return self._failed(reason, [f"{self.path}: cannot compile: {type(e).__name__}: {e}"], stamp)
            if self._current is not None:
                _warn_restart_needed(self._current.graph, graph)
            logs.remember_secrets(_secret_values(graph))
            clients = self._pool.build(graph)
            self._pool.commit(clients)
            self._metrics.bind(graph)
            now = int(time.time())
            self._current = Runtime(
                graph, clients, Executor(clients, self._store, self._metrics), models_body(graph, now), now
            )
            self._stamp = stamp
            self._metrics.reloads.labels("success").inc()
            log.info("config_loaded", reason=reason, generation=generation, names=len(graph.nodes))
            return ReloadResult(True, generation)

    def _failed(self, reason: str, errors: list[str], stamp: tuple[int, int, int] | None) -> ReloadResult:
        self._stamp = stamp  # do not retry the same broken file every second
        self._metrics.reloads.labels("failure").inc()
        log.error("config_rejected", reason=reason, errors=errors)
        gen = self._current.graph.generation if self._current else 0
        return ReloadResult(False, gen, errors)

    async def watch(self) -> None:
        """Poll the file's stat once a second and reload when it changed (a rename-over included)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                await self.reload("file changed")
