"""The /v1/* handlers: parse → auth and limits → route → render. Thin on purpose."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from asgi_router import limits
from asgi_router.errors import BadRequest, ModelNotFound
from asgi_router.graph import ClientKey, Deployment, Node
from asgi_router.metrics import RouteMetrics, deployment_metrics
from asgi_router.reload import Runtime
from asgi_router.routing.execute import settle_losers
from asgi_router.routing.outcome import Call
from asgi_router.translate import pair_for
from asgi_router.translate.embeddings import EmbeddingsPassthrough
from asgi_router.types import Dialect
from asgi_router.web.auth import authenticate, check_allowed
from asgi_router.web.disconnect import CancelOnDisconnect
from asgi_router.web.exchange import Exchange
from asgi_router.web.render import JSON_CT, Headers
from asgi_router.web.stream import relay_stream
from asgi_router.wire.usage import Usage, cost

if TYPE_CHECKING:
    from asgi_router.web.app import App

log = structlog.get_logger("asgi_router.web")

CHAT_PATHS: dict[Dialect, str] = {"openai": "/chat/completions", "anthropic": "/messages"}
EMBEDDING_PATHS: dict[Dialect, str] = {"openai": "/embeddings"}


def _builder(body: dict[str, Any], client: Dialect, stream: bool) -> Any:
    def build(d: Deployment) -> Any:
        pair = pair_for(client, d.provider.api)
        if pair is None:
            raise BadRequest(f"{d.name!r} speaks {d.provider.api}; no translator from {client}")
        return pair(body, d, stream=stream)

    return build


def _embeddings_builder(body: dict[str, Any]) -> Any:
    def build(d: Deployment) -> Any:
        if d.provider.api != "openai":
            raise BadRequest(f"{d.name!r} speaks {d.provider.api}, which has no embeddings endpoint")
        return EmbeddingsPassthrough(body, d)

    return build


async def chat(app: App, ex: Exchange) -> None:
    """POST /v1/chat/completions and POST /v1/messages (``ex.dialect`` says which)."""
    rt = app.holder.current
    graph = rt.graph
    key = authenticate(graph, ex.headers)
    ex.key = key.name if key else "anonymous"
    raw, body = await ex.read_json(graph.server.max_body_bytes)
    node = _resolve(rt, ex, body, key)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    ex.stream = bool(stream)
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")
    call = Call(
        route=ex.route,
        build=_builder(body, ex.dialect, ex.stream),
        paths=CHAT_PATHS,
        stream=ex.stream,
        key=key,
        est_input_tokens=len(raw) // 4,
        est_output_tokens=max_out if isinstance(max_out, int) and max_out > 0 else 256,
        passed_headers=_passed_headers(ex),
    )
    await _routed(app, rt, ex, node, call)


def _passed_headers(ex: Exchange) -> dict[Dialect, dict[str, str]]:
    """An Anthropic client's beta flags go to Anthropic upstreams (other dialects have no use
    for them); nothing else of the client's headers goes upstream, its key least of all."""
    beta = ex.headers.get(b"anthropic-beta")
    if beta is None or ex.dialect != "anthropic":
        return {}
    return {"anthropic": {"anthropic-beta": beta.decode("latin-1")}}


async def embeddings(app: App, ex: Exchange) -> None:
    rt = app.holder.current
    graph = rt.graph
    key = authenticate(graph, ex.headers)
    ex.key = key.name if key else "anonymous"
    raw, body = await ex.read_json(graph.server.max_body_bytes)
    node = _resolve(rt, ex, body, key)
    if "input" not in body:
        raise BadRequest("'input' is required", param="input")
    call = Call(
        route=ex.route,
        build=_embeddings_builder(body),
        paths=EMBEDDING_PATHS,
        stream=False,
        key=key,
        est_input_tokens=len(raw) // 4,
        est_output_tokens=0,
    )
    await _routed(app, rt, ex, node, call)


def _resolve(rt: Runtime, ex: Exchange, body: dict[str, Any], key: ClientKey | None) -> Node:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    node = rt.graph.resolve(model)
    if node is None:
        ex.route = "unknown"
        raise ModelNotFound(
            f"the model {model!r} does not exist; GET /v1/models lists the names", param="model"
        )
    ex.route = model
    check_allowed(key, model)
    return node


async def _routed(app: App, rt: Runtime, ex: Exchange, node: Node, call: Call) -> None:
    if call.key is not None:  # after the request was found valid: a bad one costs no rpm
        limits.admit(call.key, app.store, time.monotonic(), time.time())
    rm = ex.route_metrics = app.metrics.route(ex.route)
    rm.inflight.inc()
    try:
        async with CancelOnDisconnect(ex):
            if call.stream:
                await relay_stream(app, rt, ex, node, call)
            else:
                await _plain(app, rt, ex, node, call, rm)
    finally:
        rm.inflight.dec()
        ex.attempts = call.upstream_attempts
        ex.overhead_s = (time.perf_counter() - ex.started) - call.upstream_wait_s  # counted after


async def _plain(app: App, rt: Runtime, ex: Exchange, node: Node, call: Call, rm: RouteMetrics) -> None:
    try:
        result = await rt.executor.call(node, call)
    finally:
        ex.attempts = call.upstream_attempts
    d = result.deployment
    out = result.translation.response(result.body)
    payload = result.reply.body if out is result.body else orjson.dumps(out)
    usd = account(app, ex, call, d, result.usage)
    headers: Headers = [JSON_CT, *router_headers(ex, d, call)]
    headers.append((b"x-router-cost-usd", f"{usd:.8f}".encode()))
    await ex.respond(200, headers, payload)


def router_headers(ex: Exchange, d: Deployment, call: Call) -> Headers:
    ex.deployment, ex.provider = d.name, d.provider.name
    return [
        (b"x-router-model", d.name.encode()),
        (b"x-router-provider", d.provider.name.encode()),
        (b"x-router-attempts", str(call.upstream_attempts).encode()),
    ]


def account(
    app: App, ex: Exchange, call: Call, d: Deployment, usage: Usage | None, *, output_chunks: int = 0
) -> float:
    """Book spend for the answer (and estimated waste of race losers) where limits and budgets
    read it, now; count tokens and spend in the metrics and the spend log after the answer."""
    if usage is None:
        # never silently zero: estimate from the request and what was streamed, and say so
        usage = Usage(input=call.est_input_tokens, output=output_chunks)
        ex.usage_estimated = True
        log.warning("usage_estimated", request_id=ex.request_id, model=d.name)
    usd = cost(usage, d.price)
    wasted = settle_losers(call, usage.input, app.metrics) if call.losers else 0.0
    limits.book(call.key, usd + wasted, app.store, time.time())
    if d.tpm is not None:
        app.store.hit("tpm:" + d.fingerprint, 1 << 62, 60.0, time.monotonic(), usage.input + usage.output)
    ex.tokens_in, ex.tokens_out, ex.cost_usd = usage.input, usage.output, round(usd, 8)
    app.after(_count, app, ex, d, usage, usd, wasted)
    return usd


def _count(app: App, ex: Exchange, d: Deployment, usage: Usage, usd: float, wasted: float) -> None:
    dm = deployment_metrics(app.metrics, d)
    key_label = ex.key or "anonymous"
    children = dm.tokens_by_key.get(key_label)
    if children is None:
        m = app.metrics.tokens
        children = (
            m.labels(d.provider.name, d.name, key_label, "input"),
            m.labels(d.provider.name, d.name, key_label, "output"),
            m.labels(d.provider.name, d.name, key_label, "cached_input"),
        )
    children[0].inc(usage.input - usage.cached_input)
    children[1].inc(usage.output)
    if usage.cached_input:
        children[2].inc(usage.cached_input)
    spend = dm.spend_by_key.get(key_label) or app.metrics.spend.labels(d.provider.name, d.name, key_label)
    if usd:
        spend.inc(usd)
    app.spend_log.add(ex, d, usage, usd, wasted)


async def models(app: App, ex: Exchange) -> None:
    rt = app.holder.current
    key = authenticate(rt.graph, ex.headers)
    if key is None or key.allow is None:
        await ex.respond(200, [JSON_CT], rt.models_body)
        return
    data = [m for m in orjson.loads(rt.models_body)["data"] if m["id"] in key.allow]
    await ex.respond_json(200, {"object": "list", "data": data})
