"""Running a request through the graph: chains, races, cooldowns, circuits, retries, commit.

``Executor.call`` answers a plain request; ``Executor.open`` returns a stream past its commit
point (the first content or tool call), so a chain or race can still switch members while
nothing has gone to the client. Failures are recorded as :class:`Attempt` records on the
:class:`Call`; members signal failure by raising :class:`Failed`, which chains and races
catch. Only the top level turns that into the client's error.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import orjson

from asgi_router.errors import RouterError, UpstreamClientError, UpstreamError
from asgi_router.graph import Deployment, Fallback, Node, Race
from asgi_router.metrics import Metrics, deployment_metrics
from asgi_router.routing import plan
from asgi_router.routing.outcome import Attempt, Call, Failed, Loser, Result, all_failed, reason_label
from asgi_router.routing.stream import Batch, CommittedStream, EventReader, StreamTally
from asgi_router.state.store import StateStore
from asgi_router.types import Clock
from asgi_router.upstream.base import UpstreamRequest
from asgi_router.upstream.pool import ProviderClient
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.jsonbytes import dumps_kept
from asgi_router.wire.sse import SSEDecoder
from asgi_router.wire.usage import Usage, cost

T = TypeVar("T")
Runner = Callable[[Node, Call], Awaitable[T]]
Later = Callable[..., None]  # later(fn, *args): run fn(*args) once the answer is out (web/after.py)


def at_once(fn: Callable[..., None], *args: Any) -> None:
    fn(*args)


def count_upstream(metrics: Metrics, d: Deployment, elapsed: float, status: str | None) -> None:
    """An upstream call's counts, after the answer: ``ok``, ``cancelled``, or None (an error,
    counted where it came) and its duration in any case."""
    dm = deployment_metrics(metrics, d)
    if status == "ok":
        dm.ok.inc()
    elif status == "cancelled":
        metrics.upstream_requests.labels(d.provider.name, d.name, "cancelled").inc()
    dm.duration.observe(elapsed)


DEFAULT_BACKOFF_S = 1.0  # first 429 without Retry-After; doubles per 429 in a row
MAX_BACKOFF_S = 60.0
MAX_COOLDOWN_S = 300.0  # cap on an upstream's Retry-After
QUOTA_COOLDOWN_S = 600.0
OVERLOADED = "#overloaded"  # the store member of a deployment's capacity cooldown (529)
OVERLOAD_MARKERS = (
    "overloaded_error",
    "overloaded",
)  # a 429 that says the quota is exhausted is not a passing limit
PROBES = {"openai": wire_openai.probe_event, "anthropic": wire_anthropic.probe_event}
RESPONSE_USAGE = {"openai": wire_openai.response_usage, "anthropic": wire_anthropic.response_usage}

_race: contextvars.ContextVar[str | None] = contextvars.ContextVar("race", default=None)


class Executor:
    """One per compiled graph (it holds that graph's provider clients); state and metrics
    outlive it."""

    def __init__(
        self,
        clients: Mapping[str, ProviderClient],
        store: StateStore,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        later: Later = at_once,
    ) -> None:
        self._clients = clients
        self._store = store
        self._metrics = metrics
        self._later = later
        self._clock = clock
        self._rng = rng or random.Random()
        self._next_key: dict[str, int] = {}

    # entry points ------------------------------------------------------------------------------
    async def call(self, node: Node, call: Call) -> Result:
        return await self._top(node, call, self._call_node)

    async def open(self, node: Node, call: Call) -> CommittedStream:
        return await self._top(node, call, self._open_node)

    async def _top(self, node: Node, call: Call, run: Runner[T]) -> T:
        try:
            return await run(node, call)
        except Failed as f:
            if f.client_error is not None:
                raise f.client_error from None
            if f.candidate is not None and f.candidate.status != 429:
                raise f.candidate from None
            if f.refusal is not None and all(a.status == "refused" for a in call.attempts):
                raise f.refusal from None  # no member could take the request: say why
            raise all_failed(call.route, call.attempts) from None

    async def _call_node(self, node: Node, call: Call) -> Result:
        if isinstance(node, Deployment):
            return await self._with_retries(node, call, self._call_deployment)
        if isinstance(node, Fallback):
            return await self._chain(node, call, self._call_node)
        return await self._race_members(node, call, self._call_node)

    async def _open_node(self, node: Node, call: Call) -> CommittedStream:
        if isinstance(node, Deployment):
            return await self._with_retries(node, call, self._open_deployment)
        if isinstance(node, Fallback):
            return await self._chain(node, call, self._open_node)
        return await self._race_members(node, call, self._open_node)

    # chains ------------------------------------------------------------------------------------
    async def _chain(self, chain: Fallback, call: Call, run: Runner[T]) -> T:
        members = plan.order(
            chain,
            input_tokens=call.est_input_tokens,
            output_tokens=call.est_output_tokens,
            latency=lambda d: self._store.latency(d.fingerprint, stream=call.stream),
            rng=self._rng,
        )
        candidate: RouterError | None = None
        refusal: RouterError | None = None
        for i, member in enumerate(members):
            try:
                return await run(member, call)
            except Failed as f:
                if f.client_error is not None:
                    raise
                # an upstream 4xx that retry_on moved past is not the answer if all fail (that is
                # 429/502/504); a prompt too long for every member is worth saying, though
                if f.candidate is not None and (
                    f.reason == "context_length" or not isinstance(member, Deployment)
                ):
                    candidate = f.candidate
                refusal = f.refusal or refusal
                moves_on = (
                    f.skipped
                    or not isinstance(member, Deployment)
                    or f.reason == "stream_error"  # a broken stream before the first byte always moves on
                    or f.reason in chain.retry_on
                )
                if not moves_on:
                    if f.candidate is not None and f.candidate.status != 429:
                        raise Failed(client_error=f.candidate) from None
                    raise
                if not f.skipped and i + 1 < len(members):
                    last = next((a for a in reversed(call.attempts) if not a.skipped), None)
                    reason = f.reason if f.reason is not None or last is None else last.reason
                    label = reason_label(reason, last.status if last else "member_failed")
                    self._metrics.fallbacks.labels(chain.name, label).inc()
        raise Failed(candidate=candidate, refusal=refusal)

    # races -------------------------------------------------------------------------------------
    async def _race_members(self, race: Race, call: Call, run: Runner[T]) -> T:
        members = race.members
        tasks: list[asyncio.Task[T]] = []
        failures: list[Failed] = []

        async def member(node: Node) -> T:
            _race.set(race.name)
            return await run(node, call)

        def start_next() -> None:
            tasks.append(asyncio.create_task(member(members[len(tasks)])))

        winner: Any = None
        wait_before, t0 = call.upstream_wait_s, time.perf_counter()
        try:
            start_next()
            while race.hedge_s <= 0 and len(tasks) < len(members):
                start_next()
            while winner is None:
                pending = [t for t in tasks if not t.done()]
                hedging = race.hedge_s > 0 and len(tasks) < len(members)
                if not pending:
                    if len(tasks) < len(members):
                        start_next()  # a member failed: the next starts without waiting for the hedge
                        continue
                    break
                done, _ = await asyncio.wait(
                    pending, timeout=race.hedge_s if hedging else None, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    start_next()
                    continue
                for t in done:
                    exc = t.exception()
                    if exc is None:
                        winner = t.result()
                        break
                    if not isinstance(exc, Failed):
                        raise exc
                    failures.append(exc)
        finally:
            await self._end_race(tasks, winner)
            # members waited in parallel: the race waited for its wall time, not their sum
            call.upstream_wait_s = wait_before + (time.perf_counter() - t0)
        if winner is None:
            cand = next(
                (f.client_error or f.candidate for f in failures if f.client_error or f.candidate), None
            )
            refusal = next((f.refusal for f in failures if f.refusal), None)
            raise Failed(candidate=cand, refusal=refusal)
        dep: Deployment = winner.deployment
        self._metrics.race_outcomes.labels(race.name, dep.name, "won").inc()
        return winner  # type: ignore[no-any-return]

    async def _end_race(self, tasks: list[asyncio.Task[Any]], winner: Any) -> None:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            try:
                res = await t
            except (asyncio.CancelledError, Failed):
                continue
            except Exception:  # noqa: S112 - the race already has its answer; a loser's error is logged by its attempt
                continue
            if res is not winner and isinstance(res, CommittedStream):
                await res.aclose()  # two members committed together: the later one loses

    # one deployment ----------------------------------------------------------------------------
    async def _with_retries(
        self, d: Deployment, call: Call, once: Callable[[Deployment, Call, ProviderClient, int], Awaitable[T]]
    ) -> T:
        client, key_index = self._admit(d, call)
        tries = d.provider.retries
        while True:
            try:
                return await once(d, call, client, key_index)
            except Failed as f:
                if (
                    tries <= 0
                    or f.skipped
                    or not (f.reason == "connect" or (isinstance(f.reason, int) and f.reason >= 500))
                    or self._store.cooldown_remaining(d.fingerprint + OVERLOADED, self._clock()) > 0
                    or not self._store.circuit_allows(d.fingerprint, self._clock())
                ):
                    raise  # no retry into an overloaded deployment or through a circuit just opened
                tries -= 1

    def _admit(self, d: Deployment, call: Call) -> tuple[ProviderClient, int]:
        """Skip (without an attempt) a member that is cooling, limited or whose circuit is open;
        else pick its next api key that is not cooling."""
        store, now, fp = self._store, self._clock(), d.fingerprint
        wait = store.cooldown_remaining(fp, now)
        if wait > 0:
            self._skip(call, d, "cooldown", wait)
        wait = store.cooldown_remaining(fp + OVERLOADED, now)
        if wait > 0:
            self._skip(call, d, "overloaded", wait)
        key_index = 0
        n = len(d.provider.api_keys)
        if n > 1:
            start = self._next_key.get(fp, 0)
            waits = []
            for j in range(n):
                i = (start + j) % n
                w = store.cooldown_remaining(f"{fp}#k{i}", now)
                if w <= 0:
                    key_index = i
                    self._next_key[fp] = i + 1
                    break
                waits.append(w)
            else:
                self._skip(call, d, "cooldown", min(waits))
        # checks first, then the one that takes a slot: a skipped request must not use up the rpm
        if d.tpm is not None and (w3 := store.peek("tpm:" + fp, d.tpm, 60.0, now)) is not None:
            self._skip(call, d, "rpm_limited", w3)
        if d.rpm is not None and (w2 := store.peek("rpm:" + fp, d.rpm, 60.0, now)) is not None:
            self._skip(call, d, "rpm_limited", w2)
        if not store.circuit_allows(fp, now):
            self._skip(call, d, "circuit_open", None)
        if d.rpm is not None:
            store.hit("rpm:" + fp, d.rpm, 60.0, now)
        return self._clients[d.provider.name], key_index

    def _skip(self, call: Call, d: Deployment, why: str, wait: float | None) -> None:
        call.attempts.append(Attempt(d.name, d.provider.name, why, None, wait))
        raise Failed(skipped=True)

    async def _call_deployment(
        self, d: Deployment, call: Call, client: ProviderClient, key_index: int
    ) -> Result:
        translation, req = self._prepare(d, call, client, key_index, stream=False)
        t0 = time.perf_counter()
        try:
            reply = await client.transport.send(req)
        except UpstreamError as e:
            raise self._failed(d, call, key_index, e, time.perf_counter() - t0) from None
        except asyncio.CancelledError:
            self._cancelled(d, call, time.perf_counter() - t0, 0)
            raise
        finally:
            call.upstream_wait_s += time.perf_counter() - t0
        elapsed = time.perf_counter() - t0
        if reply.status >= 300:
            err = UpstreamError(
                "status",
                f"upstream {reply.status}",
                status=reply.status,
                retry_after_s=reply.retry_after_s,
                body=reply.body,
                content_type=reply.content_type,
            )
            raise self._failed(d, call, key_index, err, elapsed)
        try:
            body = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            err = UpstreamError("stream_error", "upstream answered invalid JSON")
            raise self._failed(d, call, key_index, err, elapsed) from None
        self._succeeded(d, call, elapsed, None, key_index)
        return Result(d, translation, reply, body, RESPONSE_USAGE[d.provider.api](body))

    async def _open_deployment(
        self, d: Deployment, call: Call, client: ProviderClient, key_index: int
    ) -> CommittedStream:
        translation, req = self._prepare(d, call, client, key_index, stream=True)
        stack = AsyncExitStack()
        tally = StreamTally()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(d.provider.first_token_timeout_s):
                s = await stack.enter_async_context(client.transport.stream(req))
                if s.status >= 300:
                    raise UpstreamError(
                        "status",
                        f"upstream {s.status}",
                        status=s.status,
                        retry_after_s=s.retry_after_s,
                        body=await s.read(),
                        content_type=s.content_type,
                    )
                if "text/event-stream" not in s.content_type:
                    raise UpstreamError(
                        "stream_error",
                        f"upstream answered {s.content_type or 'no content type'}, not a stream",
                    )
                rest = EventReader(s.chunks(), SSEDecoder(), PROBES[d.provider.api], tally)
                pending: Batch = []
                async for batch in rest:
                    pending += batch
                    if tally.content_chunks or tally.finish or tally.done:
                        break
                if not tally.finish and not tally.content_chunks:
                    raise UpstreamError("stream_error", "upstream stream ended before any content")
        except (UpstreamError, TimeoutError) as e:
            await stack.aclose()
            err = e if isinstance(e, UpstreamError) else UpstreamError("timeout", "no first token in time")
            call.upstream_wait_s += time.perf_counter() - t0
            raise self._failed(d, call, key_index, err, time.perf_counter() - t0) from None
        except asyncio.CancelledError:
            await stack.aclose()
            self._cancelled(d, call, time.perf_counter() - t0, tally.content_chunks)
            raise
        except BaseException:
            await stack.aclose()
            raise
        ttft = time.perf_counter() - t0
        call.upstream_wait_s += tally.upstream_wait_s + (ttft - tally.upstream_wait_s)
        tally.upstream_wait_s = 0.0
        self._record_success(d, key_index)
        call.attempts.append(Attempt(d.name, d.provider.name, "200", None, None, ttft))
        return CommittedStream(d, translation, pending, rest, s, tally, stack, ttft, t0)

    def _prepare(
        self, d: Deployment, call: Call, client: ProviderClient, key_index: int, *, stream: bool
    ) -> tuple[Any, UpstreamRequest]:
        """This attempt's translation and the upstream request built from it."""
        translation = self._translate(d, call)
        req = client.request(
            call.paths[d.provider.api],
            dumps_kept(translation.upstream_body),
            key_index,
            stream=stream,
            passed=call.passed_headers.get(d.provider.api),
        )
        return translation, req

    def _translate(self, d: Deployment, call: Call) -> Any:
        try:
            return call.build(d)
        except RouterError as e:  # this upstream cannot take the request (e.g. n > 1)
            call.attempts.append(Attempt(d.name, d.provider.name, "refused"))
            raise Failed(refusal=e, skipped=True) from None

    # bookkeeping -------------------------------------------------------------------------------
    def _record_success(self, d: Deployment, key_index: int) -> None:
        store, fp = self._store, d.fingerprint
        store.record_success(fp)
        store.record_success(fp + OVERLOADED)  # its backoff starts again at 1 s
        if len(d.provider.api_keys) > 1:
            store.record_success(f"{fp}#k{key_index}")

    def _succeeded(
        self, d: Deployment, call: Call, elapsed: float, ttft: float | None, key_index: int
    ) -> None:
        self._record_success(d, key_index)
        self._store.observe_latency(d.fingerprint, elapsed, ttft)
        self._later(count_upstream, self._metrics, d, elapsed, "ok")  # only counts: after the answer
        call.attempts.append(Attempt(d.name, d.provider.name, "200", None, None, elapsed))

    def _cancelled(self, d: Deployment, call: Call, elapsed: float, output_chunks: int) -> None:
        call.attempts.append(Attempt(d.name, d.provider.name, "cancelled", None, None, elapsed))
        self._metrics.upstream_requests.labels(d.provider.name, d.name, "cancelled").inc()
        race = _race.get()
        if race is not None:
            call.losers.append(Loser(race, d, output_chunks))
            self._metrics.race_outcomes.labels(race, d.name, "lost").inc()

    def _failed(self, d: Deployment, call: Call, key_index: int, e: UpstreamError, elapsed: float) -> Failed:
        """Record a failed attempt (metrics, cooldown, circuit) and build the Failed to raise."""
        dm = deployment_metrics(self._metrics, d)
        self._metrics.upstream_requests.labels(d.provider.name, d.name, e.label).inc()
        dm.duration.observe(elapsed)
        reason: Any = {"timeout": "timeout", "connect": "connect", "stream_error": "stream_error"}.get(e.kind)
        candidate: RouterError | None = None
        retry_after: float | None = None
        now = self._clock()
        if e.kind == "stream_error" and _mentions(e.body, OVERLOAD_MARKERS):
            retry_after = self._cool_overloaded(d, e, now)  # Anthropic: overloaded_error after message_start
        if e.kind == "status" and e.status is not None:
            reason = e.status
            if e.status == 429:
                dm.rate_limited.inc()
                retry_after = self._cool(d, key_index, e, now)
            elif e.status == 529 or (e.status >= 500 and _mentions(e.body, OVERLOAD_MARKERS)):
                retry_after = self._cool_overloaded(d, e, now)
            elif 400 <= e.status < 500:
                candidate = UpstreamClientError(
                    e.status, _without_secrets(e.body, d), d.provider.api, e.content_type
                )
                if e.status == 400 and _mentions(e.body, d.provider.quirks.context_length_markers):
                    reason = "context_length"
        if reason != 429 and (not isinstance(reason, int) or reason >= 500) and reason != "context_length":
            p = d.provider
            self._store.record_failure(d.fingerprint, now, p.circuit_failures, p.circuit_open_s)
        call.attempts.append(Attempt(d.name, d.provider.name, e.label, reason, retry_after, elapsed))
        race = _race.get()
        if race is not None:
            self._metrics.race_outcomes.labels(race, d.name, "failed").inc()
        return Failed(candidate=candidate, reason=reason)

    def _cool_overloaded(self, d: Deployment, e: UpstreamError, now: float) -> float:
        """A provider out of capacity (529, overloaded_error) is not our quota: the deployment
        sits out briefly (Retry-After when given, else a backoff doubling from 1 s) so the next
        requests go straight to the chain's other members; it also counts toward the circuit."""
        member = d.fingerprint + OVERLOADED
        if e.retry_after_s is not None:
            seconds = min(e.retry_after_s, MAX_COOLDOWN_S)
        else:
            seconds = min(DEFAULT_BACKOFF_S * 2 ** self._store.backoff(member), MAX_BACKOFF_S)
        self._store.cool(member, seconds, now)
        deployment_metrics(self._metrics, d).cooldown.set(1)
        return seconds

    def _cool(self, d: Deployment, key_index: int, e: UpstreamError, now: float) -> float:
        store, fp = self._store, d.fingerprint
        if _mentions(e.body, d.provider.quirks.quota_markers):
            seconds = QUOTA_COOLDOWN_S
        elif e.retry_after_s is not None:
            seconds = min(e.retry_after_s, MAX_COOLDOWN_S)
        else:
            n_keys = len(d.provider.api_keys)
            streak = store.backoff(f"{fp}#k{key_index}" if n_keys > 1 else fp)  # the member that cools
            seconds = min(DEFAULT_BACKOFF_S * 2**streak, MAX_BACKOFF_S)
        n = len(d.provider.api_keys)
        if n <= 1:
            store.cool(fp, seconds, now)
        else:
            store.cool(f"{fp}#k{key_index}", seconds, now)
            waits = [store.cooldown_remaining(f"{fp}#k{i}", now) for i in range(n)]
            if min(waits) > 0:
                store.cool(fp, min(waits), now)
        if store.cooldown_remaining(fp, now) > 0:
            deployment_metrics(self._metrics, d).cooldown.set(1)
        return seconds


def _without_secrets(body: bytes, d: Deployment) -> bytes:
    """An upstream error body goes back to the client: never with the provider's key in it
    (some providers echo the key they were sent in a 401)."""
    for secret in d.provider.api_keys:
        value = secret.reveal().encode()
        if value and value in body:
            body = body.replace(value, b"[redacted]")
    return body


def _mentions(body: bytes, markers: tuple[str, ...]) -> bool:
    if not body:
        return False
    text = body[:4096].decode("utf-8", "replace").lower()
    return any(m in text for m in markers)


def settle_losers(call: Call, input_tokens: int, metrics: Metrics) -> float:
    """Book the estimated cost of cancelled race losers; returns the USD total."""
    total = 0.0
    for loser in call.losers:
        usd = cost(Usage(input=input_tokens, output=loser.output_tokens), loser.deployment.price)
        if usd:
            metrics.race_wasted.labels(loser.race, loser.deployment.name).inc(usd)
        total += usd
    return total


def refresh_cooldown_gauges(
    metrics: Metrics, deployments: tuple[Deployment, ...], store: StateStore, now: float
) -> None:
    """Set router_cooldown_active from the store (called on each /metrics scrape)."""
    for d in deployments:
        dm = metrics.deployments.get(d.name)
        if dm is not None:
            fp = d.fingerprint
            cooling = (
                store.cooldown_remaining(fp, now) > 0 or store.cooldown_remaining(fp + OVERLOADED, now) > 0
            )
            dm.cooldown.set(1 if cooling else 0)


__all__ = ["Executor", "refresh_cooldown_gauges", "settle_losers"]
