"""The order in which a chain tries its members. Pure: statistics, prices and rng come in."""

from __future__ import annotations

import random
from collections.abc import Callable

from asgi_router.graph import Deployment, Fallback, Node, leaves


def price_of(node: Node, input_tokens: int, output_tokens: int) -> float:
    """This request's estimated price on ``node`` (a chain or race: its cheapest leaf).
    A deployment without a price sorts last."""
    best = float("inf")
    for d in leaves(node):
        if d.price is not None:
            best = min(best, (input_tokens * d.price.input + output_tokens * d.price.output) / 1e6)
    return best


def latency_of(node: Node, latency: Callable[[Deployment], float | None]) -> float:
    """Measured latency of ``node`` (its fastest leaf). Unmeasured members sort first, so
    they get measured."""
    best = float("inf")
    for d in leaves(node):
        v = latency(d)
        if v is None:
            return -1.0
        best = min(best, v)
    return best


def weighted_order(members: tuple[Node, ...], weights: tuple[float, ...], rng: random.Random) -> list[Node]:
    """A weighted random permutation: the first is picked by weight, then the rest likewise."""
    pool = list(zip(members, weights, strict=True))
    out: list[Node] = []
    while pool:
        total = sum(w for _, w in pool)
        if total <= 0:
            out.extend(m for m, _ in pool)
            break
        x = rng.random() * total
        for i, (m, w) in enumerate(pool):
            x -= w
            if x < 0 or i == len(pool) - 1:
                out.append(m)
                del pool[i]
                break
    return out


def order(
    chain: Fallback,
    *,
    input_tokens: int,
    output_tokens: int,
    latency: Callable[[Deployment], float | None],
    rng: random.Random,
) -> list[Node]:
    members = chain.members
    if chain.order == "listed":
        return list(members)
    if chain.order == "cheapest":
        return sorted(members, key=lambda m: price_of(m, input_tokens, output_tokens))
    if chain.order == "fastest":
        return sorted(members, key=lambda m: latency_of(m, latency))
    return weighted_order(members, chain.weights or tuple(1.0 for _ in members), rng)
