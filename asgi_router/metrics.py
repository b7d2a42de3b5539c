"""Every metric of CONTRACT §4, on an own registry, with LLM-sized buckets.

Label children are resolved once per graph (:meth:`Metrics.bind`) and kept on small per-route
and per-deployment objects, so a request increments pre-made children instead of calling
``labels()``; label sets are pre-created so dashboards show 0 rather than "no data".

Under ``serve --workers N`` each worker writes its values to prometheus_client's per-process
files (multiprocess mode), through :func:`buffer_multiprocess_values`: see there.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.exposition import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from asgi_router.graph import Deployment, Fallback, Graph, Race, leaves

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.1)
TOKEN_KINDS = ("input", "output", "cached_input")
RACE_OUTCOMES = ("won", "lost", "failed")


@dataclass(slots=True)
class RouteMetrics:
    """Children for one public name (``route`` label)."""

    name: str
    ok: Any
    duration: Any
    inflight: Any
    overhead: Any


@dataclass(slots=True)
class DeploymentMetrics:
    """Children for one deployment (``provider``, ``model`` labels)."""

    provider: str
    model: str
    ok: Any
    duration: Any
    rate_limited: Any
    cooldown: Any
    ttft_by_route: dict[str, Any] = field(default_factory=dict)
    tokens_by_key: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    spend_by_key: dict[str, Any] = field(default_factory=dict)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # no *_created series: the text format exposes each as one more gauge family per label
        # set (twice the series, names outside CONTRACT §4). A process-wide switch of the client
        # library; the gateway has one Metrics per process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "router_requests", "Client requests by public name and status", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "router_request_duration_seconds",
            "Whole request duration",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "router_time_to_first_token_seconds",
            "Time to the first content byte of a stream",
            ["route", "model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "router_upstream_requests", "Upstream attempts", ["provider", "model", "status"], registry=r
        )
        self.upstream_duration = Histogram(
            "router_upstream_duration_seconds",
            "Upstream attempt duration",
            ["provider", "model"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter("router_rate_limited", "Upstream 429s", ["provider", "model"], registry=r)
        self.tokens = Counter(
            "router_tokens", "Tokens by kind", ["provider", "model", "key", "kind"], registry=r
        )
        self.spend = Counter("router_spend_usd", "Spend in USD", ["provider", "model", "key"], registry=r)
        self.fallbacks = Counter(
            "router_fallbacks", "Moves to the next chain member", ["route", "reason"], registry=r
        )
        self.race_outcomes = Counter(
            "router_race_outcomes", "Race member outcomes", ["race", "model", "outcome"], registry=r
        )
        self.race_wasted = Counter(
            "router_race_wasted_usd", "Estimated cost of cancelled race losers", ["race", "model"], registry=r
        )
        self.cooldown_active = Gauge(
            "router_cooldown_active",
            "1 while a deployment is cooling down",
            ["provider", "model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.inflight = Gauge(
            "router_inflight_requests",
            "Requests in flight",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.overhead = Histogram(
            "router_overhead_seconds",
            "Time the gateway itself spent on a request",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.reloads = Counter("router_config_reloads", "Config reloads", ["result"], registry=r)
        self.generation = Gauge(
            "router_config_generation",
            "Generation of the serving config",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.state_errors = Counter(
            "router_state_errors", "State backend errors", ["backend", "op"], registry=r
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.routes: dict[str, RouteMetrics] = {}
        self.deployments: dict[str, DeploymentMetrics] = {}
        self._bound: set[tuple[Any, tuple[str, ...]]] = set()
        self.unknown_route = self._route("unknown")

    # binding ---------------------------------------------------------------------------------
    def _route(self, name: str) -> RouteMetrics:
        return RouteMetrics(
            name,
            self.requests.labels(name, "200"),
            self.request_duration.labels(name),
            self.inflight.labels(name),
            self.overhead.labels(name),
        )

    def bind(self, graph: Graph) -> None:
        """Resolve children for ``graph`` and pre-create its label sets; remove stale ones."""
        want: set[tuple[Any, tuple[str, ...]]] = set()

        def child(metric: Any, *labels: str) -> Any:
            want.add((metric, labels))
            return metric.labels(*labels)

        key_names = [*graph.keys] or ["anonymous"]
        deployments: dict[str, DeploymentMetrics] = {}
        for d in graph.deployments:
            p = d.provider.name
            dm = DeploymentMetrics(
                p,
                d.name,
                child(self.upstream_requests, p, d.name, "200"),
                child(self.upstream_duration, p, d.name),
                child(self.rate_limited, p, d.name),
                child(self.cooldown_active, p, d.name),
            )
            for k in key_names:
                dm.tokens_by_key[k] = tuple(child(self.tokens, p, d.name, k, kind) for kind in TOKEN_KINDS)
                dm.spend_by_key[k] = child(self.spend, p, d.name, k)
            deployments[d.name] = dm
        routes = {"unknown": self.unknown_route}
        for name, node in graph.nodes.items():
            routes[name] = RouteMetrics(
                name,
                child(self.requests, name, "200"),
                child(self.request_duration, name),
                child(self.inflight, name),
                child(self.overhead, name),
            )
            for leaf in {d.name: d for d in leaves(node)}.values():
                deployments[leaf.name].ttft_by_route[name] = child(self.ttft, name, leaf.name)
            if isinstance(node, Fallback):
                for reason in ("429", "5xx", "timeout", "connect_error", "stream_error", "context_length"):
                    child(self.fallbacks, name, reason)
            if isinstance(node, Race):
                for leaf in {d.name: d for d in leaves(node)}.values():
                    for outcome in RACE_OUTCOMES:
                        child(self.race_outcomes, name, leaf.name, outcome)
                    child(self.race_wasted, name, leaf.name)
        # label sets no longer in the config go (not possible in multiprocess mode, where
        # prometheus_client keeps every series it has written until the workers restart)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            for metric, labels in self._bound - want:
                try:
                    metric.remove(*labels)
                except KeyError:
                    pass
        self._bound = want
        self.routes = routes
        self.deployments = deployments
        self.generation.set(graph.generation)

    def route(self, name: str) -> RouteMetrics:
        return self.routes.get(name) or self.unknown_route

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # serve --workers N: every worker's values
            from prometheus_client import multiprocess

            flush_values()  # this worker's own, up to this moment

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def deployment_metrics(metrics: Metrics, d: Deployment) -> DeploymentMetrics:
    dm = metrics.deployments.get(d.name)
    if dm is None or dm.provider != d.provider.name:  # a request that outlived a reload
        dm = DeploymentMetrics(
            d.provider.name,
            d.name,
            metrics.upstream_requests.labels(d.provider.name, d.name, "200"),
            metrics.upstream_duration.labels(d.provider.name, d.name),
            metrics.rate_limited.labels(d.provider.name, d.name),
            metrics.cooldown_active.labels(d.provider.name, d.name),
        )
    return dm


# -- serve --workers N: buffered multiprocess values ---------------------------------------------

FLUSH_S = 0.1


class _Files:
    """One worker's value files (one per metric type and gauge mode, named as prometheus_client
    names them, so its MultiProcessCollector and mark_process_dead work unchanged) and the
    values changed since they were last written."""

    def __init__(self, directory: str, pid: int, interval_s: float) -> None:
        self.directory = directory
        self.pid = pid
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.files: dict[str, MmapedDict] = {}
        self.dirty: list[_BufferedValue] = []
        self.scheduled = False

    def file(self, prefix: str) -> MmapedDict:
        f = self.files.get(prefix)
        if f is None:
            path = os.path.join(self.directory, f"{prefix}_{self.pid}.db")
            f = self.files[prefix] = MmapedDict(path)  # type: ignore[no-untyped-call]
        return f

    def mark(self, value: _BufferedValue) -> None:
        """``value`` changed (lock held): written within ``interval_s`` from the event loop,
        or at once when there is none (a thread, the CLI)."""
        self.dirty.append(value)
        if self.scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        self.scheduled = True
        loop.call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        with self.lock:
            self.scheduled = False
            self._write()

    def close(self) -> None:
        self.flush()
        with self.lock:
            for f in self.files.values():
                f.close()  # type: ignore[no-untyped-call]
            self.files.clear()

    def _write(self) -> None:
        for v in self.dirty:
            v.dirty = False
            v.file.write_value(v.key, v.value, v.timestamp)  # type: ignore[no-untyped-call]
        self.dirty.clear()


class _BufferedValue:
    """prometheus_client's value interface (what its Counter, Gauge and Histogram children
    hold), kept in memory and written to the worker's file by :class:`_Files`."""

    _multiprocess = True
    files: ClassVar[_Files]
    __slots__ = ("dirty", "file", "key", "timestamp", "value")
    dirty: bool
    file: MmapedDict
    key: str
    timestamp: float
    value: float

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **_: Any,
    ) -> None:
        prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        with self.files.lock:
            self.file = self.files.file(prefix)
            self.key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            # creates the entry at 0: a pre-created label set shows in every worker's scrape
            self.value, self.timestamp = self.file.read_value(self.key)  # type: ignore[no-untyped-call]
        self.dirty = False

    def inc(self, amount: float) -> None:
        files = self.files
        with files.lock:
            self.value += amount
            self.timestamp = 0.0
            if not self.dirty:
                self.dirty = True
                files.mark(self)

    def set(self, value: float, timestamp: float | None = None) -> None:
        files = self.files
        with files.lock:
            self.value = value
            self.timestamp = timestamp or 0.0
            if not self.dirty:
                self.dirty = True
                files.mark(self)

    def get(self) -> float:
        return self.value

    def set_exemplar(self, exemplar: Any) -> None:  # none in multiprocess mode (as upstream)
        return None

    def get_exemplar(self) -> None:
        return None


_files: list[_Files | None] = [None]


def buffer_multiprocess_values(interval_s: float = FLUSH_S) -> None:
    """Make this process's metric values write to its multiprocess file at most every
    ``interval_s`` instead of on every change. Call it in a worker before any metric exists.

    prometheus_client's multiprocess value takes a lock, checks the pid and packs the new float
    into the mmap file on every change: 1.0-1.3 µs a counter ``inc`` and 2 µs a histogram
    ``observe`` against 0.3 and 0.7 µs in one process, some 9 µs more per plain request (ten
    changes) than one worker, in process. Buffered, a change costs what it does in one process,
    and each changed value is written once per interval. A scrape writes the serving worker's
    own values first; another worker's are at most ``interval_s`` old, and a worker killed
    outright loses its last ``interval_s`` of counts (one stopped properly writes them:
    :func:`flush_values`).
    Workers are spawned, never forked after this, so unlike prometheus_client's class this one
    need not watch for a changed pid.
    """
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    files = _files[0] = _Files(directory, os.getpid(), interval_s)
    values.ValueClass = type("BufferedValue", (_BufferedValue,), {"files": files, "__slots__": ()})


def flush_values() -> None:
    """Write the values changed since the last write (a no-op without buffering)."""
    files = _files[0]
    if files is not None:
        files.flush()
