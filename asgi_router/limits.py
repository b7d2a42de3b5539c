"""Client-key limits over the state store: requests per minute and spend budgets. No HTTP."""

from __future__ import annotations

from asgi_router.errors import BudgetExceeded, RateLimited
from asgi_router.graph import ClientKey
from asgi_router.state.store import StateStore


def spend_id(key: ClientKey) -> str:
    """Spend is kept per key name and hash: changing a key's budget keeps its spend."""
    return f"{key.name}:{key.sha256[:12]}"


def admit(key: ClientKey, store: StateStore, now: float, wall: float) -> None:
    """Raise RateLimited (429 + Retry-After) or BudgetExceeded (402) before any upstream work."""
    if key.budget_usd is not None and store.spend(spend_id(key), key.budget_period, wall) >= key.budget_usd:
        raise BudgetExceeded(
            f"key {key.name!r} reached its budget of ${key.budget_usd:g} for this {key.budget_period}"
        )
    if key.rpm is not None:
        wait = store.hit("key-rpm:" + key.name, key.rpm, 60.0, now)
        if wait is not None:
            raise RateLimited(
                f"key {key.name!r} is over its limit of {key.rpm} requests per minute", retry_after_s=wait
            )


def book(key: ClientKey | None, usd: float, store: StateStore, wall: float) -> None:
    if key is not None and usd > 0:
        store.add_spend(spend_id(key), usd, key.budget_period, wall)
