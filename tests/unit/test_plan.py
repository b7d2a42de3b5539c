"""Member ordering: listed, cheapest, fastest, weighted (pure; prices, latencies and rng in)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from asgi_router.graph import Deployment, Fallback, Price, Provider, Race
from asgi_router.routing import plan

P = Provider("p", "openai", "http://x", ())


def dep(name: str, price: tuple[float, float] | None = None) -> Deployment:
    return Deployment(name, P, name, Price(*price) if price else None, fingerprint=name)


A, B, C = dep("a", (3.0, 15.0)), dep("b", (0.15, 0.6)), dep("c", (1.0, 1.0))
NOPRICE = dep("free?")


@pytest.mark.parametrize(
    ("members", "inp", "out", "expected"),
    [
        ((A, B, C), 1000, 100, ["b", "c", "a"]),
        # output-heavy request: c's flat output price wins over b's
        ((A, B, C), 10, 100_000, ["b", "c", "a"]),
        ((A, dep("d", (0.5, 0.5)), B), 0, 1000, ["d", "b", "a"]),
        # a deployment without a price sorts last
        ((NOPRICE, A), 100, 100, ["a", "free?"]),
    ],
)
def test_cheapest(members, inp, out, expected):
    chain = Fallback("ch", members, order="cheapest")
    got = plan.order(chain, input_tokens=inp, output_tokens=out, latency=lambda d: None, rng=random.Random(0))
    assert [m.name for m in got] == expected


def test_cheapest_prices_a_nested_member_by_its_cheapest_leaf():
    race = Race("r", (A, B))
    chain = Fallback("ch", (C, race), order="cheapest")
    got = plan.order(chain, input_tokens=100, output_tokens=100, latency=lambda d: None, rng=random.Random(0))
    assert [m.name for m in got] == ["r", "c"]


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ({"a": 0.5, "b": 0.1, "c": 0.3}, ["b", "c", "a"]),
        ({"a": 0.5, "b": None, "c": 0.3}, ["b", "c", "a"]),  # unmeasured first, to get measured
        ({"a": 0.2, "b": 0.2, "c": 0.1}, ["c", "a", "b"]),  # stable among equals
    ],
)
def test_fastest(latencies, expected):
    chain = Fallback("ch", (A, B, C), order="fastest")
    got = plan.order(
        chain, input_tokens=1, output_tokens=1, latency=lambda d: latencies[d.name], rng=random.Random(0)
    )
    assert [m.name for m in got] == expected


def test_listed_keeps_order():
    chain = Fallback("ch", (C, A, B))
    got = plan.order(chain, input_tokens=1, output_tokens=1, latency=lambda d: 0.0, rng=random.Random(0))
    assert [m.name for m in got] == ["c", "a", "b"]


def test_weighted_first_pick_follows_weights_and_rest_follow():
    chain = Fallback("ch", (A, B, C), order="weighted", weights=(6.0, 3.0, 1.0))
    rng = random.Random(42)
    firsts: Counter[str] = Counter()
    for _ in range(10_000):
        got = plan.order(chain, input_tokens=1, output_tokens=1, latency=lambda d: None, rng=rng)
        assert sorted(m.name for m in got) == ["a", "b", "c"]  # every member stays as a fallback
        firsts[got[0].name] += 1
    assert 5700 < firsts["a"] < 6300 and 2700 < firsts["b"] < 3300 and 800 < firsts["c"] < 1200


def test_weighted_zero_weight_is_only_a_fallback():
    chain = Fallback("ch", (A, B), order="weighted", weights=(0.0, 1.0))
    for seed in range(50):
        got = plan.order(
            chain, input_tokens=1, output_tokens=1, latency=lambda d: None, rng=random.Random(seed)
        )
        assert [m.name for m in got] == ["b", "a"]
