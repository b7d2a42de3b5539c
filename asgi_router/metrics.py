"""Every metric of CONTRACT §4, on an own registry, with LLM-sized buckets.

Label children are resolved once per graph (:meth:`Metrics.bind`) and kept on small per-route
and per-deployment objects, so a request increments pre-made children instead of calling
``labels()``; label sets are pre-created so dashboards show 0 rather than "no data".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest

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
