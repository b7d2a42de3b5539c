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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from asgi_router import config, logs
from asgi_router.errors import ConfigErrors
from asgi_router.graph import Graph
from asgi_router.metrics import Metrics
from asgi_router.routing.execute import Executor, Later, at_once
from asgi_router.state.store import StateStore
from asgi_router.upstream.pool import ProviderClient, UpstreamPool
from asgi_router.wire.jsonbytes import dumps_kept

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


def _keep_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by this user only (it may hold keys)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def models_body(graph: Graph, created: int) -> bytes:
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "asgi-router"}
        for name in sorted(graph.nodes)
    ]
    return dumps_kept({"object": "list", "data": data})


class GraphHolder:
    """The current :class:`Runtime`. With ``last_good`` (a supervised worker), every graph that
    compiles leaves its text there, and a start that meets a broken file compiles that text
    instead: a restarted worker serves what its siblings serve, not nothing."""

    def __init__(
        self,
        path: Path,
        store: StateStore,
        metrics: Metrics,
        pool: UpstreamPool,
        *,
        env: Mapping[str, str] | None = None,
        last_good: Path | None = None,
        later: Later = at_once,
    ) -> None:
        self.path = path
        self._later = later
        self.last_good = last_good
        self._store = store
        self._metrics = metrics
        self._pool = pool
        self._env = env
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
                graph = await asyncio.to_thread(self._compile, generation)
            except ConfigErrors as e:
                errors = [str(err) for err in e.errors]
            except OSError as e:
                errors = [f"{self.path}: {e.strerror or e}"]
            except Exception as e:  # a compiler bug must not kill the watcher or the SIGHUP task
                log.exception("config_compile_crashed", reason=reason)
                errors = [f"{self.path}: cannot compile: {type(e).__name__}: {e}"]
            else:
                return self._swap(graph, reason, stamp)
            failed = self._failed(reason, errors, stamp)
            if self._current is None and self.last_good is not None:
                kept = await asyncio.to_thread(self._compile_last_good, generation)
                if kept is not None:
                    return self._swap(kept, f"{reason} (last good)", stamp)
            return failed

    def _compile(self, generation: int) -> Graph:
        graph, text = config.load_text(self.path, self._env, generation=generation)
        if self.last_good is not None:
            try:
                _keep_private(self.last_good, text)
            except OSError as e:
                log.warning("last_good_not_kept", path=str(self.last_good), error=str(e))
        return graph

    def _compile_last_good(self, generation: int) -> Graph | None:
        """The last text a sibling compiled, as if it were the file (relative paths, errors)."""
        assert self.last_good is not None
        try:
            text = self.last_good.read_text(encoding="utf-8")
            return config.loads(text, path=self.path, env=self._env, generation=generation)
        except FileNotFoundError:
            return None  # no worker has compiled a graph yet
        except (OSError, ConfigErrors) as e:
            errors = [str(err) for err in e.errors] if isinstance(e, ConfigErrors) else [str(e)]
            log.error("last_good_rejected", path=str(self.last_good), errors=errors)
            return None

    def _swap(self, graph: Graph, reason: str, stamp: tuple[int, int, int] | None) -> ReloadResult:
        if self._current is not None:
            _warn_restart_needed(self._current.graph, graph)
        logs.remember_secrets(_secret_values(graph))
        clients = self._pool.build(graph)
        self._pool.commit(clients)
        self._metrics.bind(graph)
        now = int(time.time())
        self._current = Runtime(
            graph,
            clients,
            Executor(clients, self._store, self._metrics, later=self._later),
            models_body(graph, now),
            now,
        )
        self._stamp = stamp
        self._metrics.reloads.labels("success").inc()
        log.info("config_loaded", reason=reason, generation=graph.generation, names=len(graph.nodes))
        return ReloadResult(True, graph.generation)

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
