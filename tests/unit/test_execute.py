"""The executor with a fake transport and an injected clock: cooldown arithmetic, key rotation,
retries, the all-failed answers. (The same behaviour end to end is in tests/integration.)"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from asgi_router.errors import AllFailed, UpstreamClientError, UpstreamError
from asgi_router.graph import Deployment, Fallback, Provider
from asgi_router.metrics import Metrics
from asgi_router.routing.execute import DEFAULT_BACKOFF_S, MAX_COOLDOWN_S, QUOTA_COOLDOWN_S, Executor
from asgi_router.routing.outcome import Call
from asgi_router.state.memory import MemoryStore
from asgi_router.translate.passthrough import OpenAIPassthrough
from asgi_router.types import Secret
from asgi_router.upstream.base import UpstreamReply, UpstreamRequest
from asgi_router.upstream.pool import ProviderClient

OK = orjson.dumps(
    {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
)


class FakeTransport:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.sent: list[UpstreamRequest] = []

    async def send(self, req: UpstreamRequest) -> UpstreamReply:
        self.sent.append(req)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple):
            status, retry, body = step
            return UpstreamReply(status, body, "application/json", retry)
        return UpstreamReply(step, OK if step == 200 else b"{}", "application/json", None)

    def stream(self, req: UpstreamRequest) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(scripts: Mapping[str, list[Any]], keys: int = 0, retries: int = 0):
    clock, store, metrics = Clock(), MemoryStore(), Metrics()
    clients, deps, transports = {}, {}, {}
    for name, script in scripts.items():
        secrets = tuple(Secret(f"env:K{i}", f"key-{i}") for i in range(keys))
        p = Provider(name, "openai", "http://x", secrets, retries=retries, fingerprint="p" + name)
        t = transports[name] = FakeTransport(list(script))
        headers = tuple({"authorization": f"Bearer {s.reveal()}"} for s in secrets) or ({},)
        clients[name] = ProviderClient(p, t, headers, "http://x")
        deps[name] = Deployment(name, p, name, fingerprint="d" + name)
    ex = Executor(clients, store, metrics, clock=clock)
    return ex, clock, store, deps, transports


def call(route: str = "chat") -> Call:
    body = {"model": route, "messages": [{"role": "user", "content": "x"}]}
    return Call(
        route, lambda d: OpenAIPassthrough(body, d, stream=False), {"openai": "/chat/completions"}, False
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("reply", "expected_cooldown"),
    [
        ((429, 7.0, b"{}"), 7.0),
        ((429, 10_000.0, b"{}"), MAX_COOLDOWN_S),  # an absurd Retry-After is capped
        ((429, None, b"{}"), DEFAULT_BACKOFF_S),  # none given: the backoff starts small
        ((429, 1.0, b'{"error": {"code": "insufficient_quota"}}'), QUOTA_COOLDOWN_S),
    ],
)
def test_cooldown_after_429(reply, expected_cooldown):
    ex, clock, store, deps, _ = setup({"a": [reply], "b": [200]})
    res = run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert res.deployment.name == "b"
    assert store.cooldown_remaining("da", clock()) == pytest.approx(expected_cooldown)


def test_backoff_doubles_without_retry_after():
    ex, clock, store, deps, _ = setup({"a": [(429, None, b"")] * 3, "b": [200] * 3})
    chain = Fallback("chat", (deps["a"], deps["b"]))
    waits = []
    for _ in range(3):
        run(ex.call(chain, call()))
        waits.append(store.cooldown_remaining("da", clock()))
        clock.t += 100
    assert waits == [1.0, 2.0, 4.0]


def test_cooling_member_is_skipped_without_an_attempt_until_it_expires():
    ex, clock, store, deps, tr = setup({"a": [(429, 5.0, b"")], "b": [200, 200]})
    chain = Fallback("chat", (deps["a"], deps["b"]))
    run(ex.call(chain, call()))
    c = call()
    run(ex.call(chain, c))
    assert len(tr["a"].sent) == 1 and c.upstream_attempts == 1 and c.attempts[0].status == "cooldown"
    clock.t += 5.0
    assert run(ex.call(chain, call())).deployment.name == "a"


def test_keys_rotate_and_cool_one_by_one():
    ex, clock, store, deps, tr = setup({"a": [200, (429, 30.0, b""), 200, 200]}, keys=2)
    run(ex.call(deps["a"], call()))
    with pytest.raises(AllFailed):
        run(ex.call(deps["a"], call()))
    run(ex.call(deps["a"], call()))
    run(ex.call(deps["a"], call()))
    used = [r.headers["authorization"] for r in tr["a"].sent]
    # round robin; key-1 got the 429 and sits out while key-0 serves
    assert used == ["Bearer key-0", "Bearer key-1", "Bearer key-0", "Bearer key-0"]
    assert store.cooldown_remaining("da", clock()) == 0.0  # the deployment itself is not cooling


def test_all_keys_cooling_cools_the_deployment():
    ex, clock, store, deps, _ = setup({"a": [(429, 10.0, b""), (429, 20.0, b"")]}, keys=2)
    for _ in range(2):
        with pytest.raises(AllFailed):
            run(ex.call(deps["a"], call()))
    assert store.cooldown_remaining("da", clock()) == pytest.approx(10.0)


def test_all_rate_limited_is_429_with_the_shortest_wait():
    ex, clock, store, deps, _ = setup({"a": [(429, 9.0, b"")], "b": [(429, 4.0, b"")]})
    with pytest.raises(AllFailed) as e:
        run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert e.value.status == 429 and e.value.retry_after_s == 4.0
    clock.t += 1.0
    with pytest.raises(AllFailed) as e:  # both skipped while cooling: still 429, with what remains
        run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert e.value.status == 429 and e.value.retry_after_s == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("a", "b", "status"),
    [
        (UpstreamError("timeout", "t"), UpstreamError("timeout", "t"), 504),
        (UpstreamError("timeout", "t"), 500, 502),
        (UpstreamError("connect", "c"), 503, 502),
    ],
)
def test_all_failed_status(a, b, status):
    ex, _, _, deps, _ = setup({"a": [a], "b": [b]})
    with pytest.raises(AllFailed) as e:
        run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert e.value.status == status


def test_retries_same_deployment_on_5xx_and_connect_only():
    ex, _, _, deps, tr = setup({"a": [500, UpstreamError("connect", "c"), 200]}, retries=2)
    c = call()
    assert run(ex.call(deps["a"], c)).deployment.name == "a"
    assert len(tr["a"].sent) == 3 and c.upstream_attempts == 3
    ex, _, _, deps, tr = setup({"a": [UpstreamError("timeout", "t")], "b": [200]}, retries=2)
    run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert len(tr["a"].sent) == 1  # never after a timeout


def test_client_4xx_goes_back_and_stops_the_chain():
    ex, _, _, deps, tr = setup({"a": [(400, None, b'{"error": {"message": "bad"}}')], "b": [200]})
    with pytest.raises(UpstreamClientError) as e:
        run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert e.value.status == 400 and tr["b"].sent == []


def test_the_clients_body_is_never_mutated():
    ex, _, _, deps, _ = setup({"a": [(500, None, b"")], "b": [200]})
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream_options": {"x": 1}}
    snapshot = orjson.dumps(body)
    c = Call(
        "chat", lambda d: OpenAIPassthrough(body, d, stream=True), {"openai": "/chat/completions"}, False
    )
    run(ex.call(Fallback("chat", (deps["a"], deps["b"])), c))
    assert orjson.dumps(body) == snapshot


def test_529_overloaded_cools_the_deployment_briefly_without_calling_it_rate_limited():
    ex, clock, store, deps, tr = setup(
        {
            "a": [(529, None, b'{"type":"error","error":{"type":"overloaded_error"}}')] * 2,
            "b": [200, 200, 200],
        }
    )
    chain = Fallback("chat", (deps["a"], deps["b"]))
    assert run(ex.call(chain, call())).deployment.name == "b"
    c = call()
    assert run(ex.call(chain, c)).deployment.name == "b"
    assert c.attempts[0].status == "overloaded" and len(tr["a"].sent) == 1  # skipped, no request
    assert store.cooldown_remaining("da", clock()) == 0.0  # its 429 cooldown is untouched
    clock.t += 1.0
    run(ex.call(chain, call()))  # the cooldown (1 s) is over: tried again, overloaded again
    assert len(tr["a"].sent) == 2


def test_all_failed_with_an_overloaded_member_is_502_not_429():
    ex, clock, store, deps, _ = setup(
        {"a": [(529, 30.0, b"")], "b": [(503, None, b'{"error": "overloaded"}')]}
    )
    chain = Fallback("chat", (deps["a"], deps["b"]))
    with pytest.raises(AllFailed) as e:
        run(ex.call(chain, call()))
    assert e.value.status == 502
    with pytest.raises(AllFailed) as e:  # both now sit out: still not a rate limit
        run(ex.call(chain, call()))
    assert e.value.status == 502 and [a.status for a in e.value.attempts] == ["overloaded", "overloaded"]


def test_a_4xx_that_retry_on_moved_past_is_not_the_final_answer():
    ex, _, _, deps, _ = setup({"a": [(409, None, b'{"error": {"message": "conflict"}}')], "b": [503]})
    with pytest.raises(AllFailed) as e:
        run(ex.call(Fallback("chat", (deps["a"], deps["b"])), call()))
    assert e.value.status == 502 and [a.status for a in e.value.attempts] == ["409", "503"]


def test_a_skipped_request_uses_no_rpm_slot():
    ex, clock, store, deps, tr = setup({"a": [200, 200], "b": [200] * 5})
    a = Deployment("a", deps["a"].provider, "a", rpm=2, fingerprint="da")  # same provider, an rpm
    store.record_failure("da", clock(), threshold=1, open_s=5.0)  # its circuit is open
    chain = Fallback("chat", (a, deps["b"]))
    for _ in range(3):  # skipped three times while open: no rpm slot used
        assert run(ex.call(chain, call())).deployment.name == "b"
    clock.t += 5.0
    assert run(ex.call(chain, call())).deployment.name == "a"  # the probe, within rpm = 2
    assert run(ex.call(chain, call())).deployment.name == "a"
    assert len(tr["a"].sent) == 2


def test_fallback_reason_of_a_failed_race_member_is_its_last_attempt():
    from asgi_router.graph import Race

    ex, _, _, deps, _ = setup({"a": [503], "b": [200]})
    chain = Fallback("chat", (Race("r", (deps["a"],)), deps["b"]))
    assert run(ex.call(chain, call())).deployment.name == "b"
    value = ex._metrics.registry.get_sample_value(
        "router_fallbacks_total", {"route": "chat", "reason": "5xx"}
    )
    assert value == 1.0


def test_backoff_without_retry_after_doubles_per_key():
    ex, clock, store, deps, _ = setup({"a": [(429, None, b"")] * 4}, keys=2)
    waits = []
    for _ in range(4):
        with pytest.raises(AllFailed):
            run(ex.call(deps["a"], call()))
        waits.append(max(store.cooldown_remaining(f"da#k{i}", clock()) for i in range(2)))
        clock.t += 100
    assert waits == [1.0, 1.0, 2.0, 2.0]  # each key's own streak: 1 s, then 2 s


def test_the_upstream_body_kept_for_the_call_is_its_own_size():
    """orjson's buffer is not shrunk: a request body kept for a whole upstream call (a slow model,
    a long stream) held 4 KiB for a 90-byte body and 32 KiB for a 3 KB one. The executor keeps a
    right-sized copy; tracemalloc sees what the bytes really hold."""
    import tracemalloc

    ex, _, _, deps, transports = setup({"a": [200] * 200})
    prompt = "word " * 600  # a 3 KB chat request
    sent = transports["a"].sent

    def request() -> Call:
        body = {"model": "chat", "messages": [{"role": "user", "content": prompt}]}
        return Call(
            "chat", lambda d: OpenAIPassthrough(body, d, stream=False), {"openai": "/chat/completions"}, False
        )

    run(ex.call(deps["a"], request()))  # warm up: first-call caches are not the body
    sent.clear()
    tracemalloc.start()
    try:
        for _ in range(100):
            run(ex.call(deps["a"], request()))
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(sent) == 100
    size = len(sent[0].body)
    assert 3000 < size < 3300
    big = [t for t in snapshot.traces if t.size >= size]
    # one block per kept body, each within a few bytes of the body's length
    assert len(big) >= 100
    assert all(t.size < size + 100 for t in big), sorted({t.size for t in big})[-5:]
