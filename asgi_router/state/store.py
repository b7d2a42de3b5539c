"""The state protocol. State is keyed by member fingerprints, so it survives a reload exactly
for the members whose definition did not change. Times are monotonic seconds."""

from __future__ import annotations

from typing import Any, Literal, Protocol

CircuitState = Literal["closed", "open", "half_open"]


class StateStore(Protocol):
    # cooldowns (429s) -------------------------------------------------------------------
    def cooldown_remaining(self, member: str, now: float) -> float:
        """Seconds until ``member`` (a deployment or deployment:key id) may be used again."""
        ...

    def cool(self, member: str, seconds: float, now: float) -> None: ...

    def backoff(self, member: str) -> int:
        """How many 429s in a row ``member`` got without a success in between (then reset by ok)."""
        ...

    # circuit breaker -----------------------------------------------------------------------
    def circuit_allows(self, member: str, now: float) -> bool:
        """True if the circuit is closed, or open long enough that this caller is the probe."""
        ...

    def record_success(self, member: str) -> None: ...

    def record_failure(self, member: str, now: float, threshold: int, open_s: float) -> bool:
        """Count a failure; returns True when this failure opened the circuit."""
        ...

    # latency ------------------------------------------------------------------------------
    def observe_latency(self, member: str, total_s: float, ttft_s: float | None) -> None: ...

    def latency(self, member: str, *, stream: bool) -> float | None: ...

    # windows and spend ----------------------------------------------------------------------
    def hit(self, bucket: str, limit: int, window_s: float, now: float, cost: int = 1) -> float | None:
        """Count ``cost`` against ``bucket``; None if under ``limit``, else seconds to wait
        (and nothing counted)."""
        ...

    def peek(self, bucket: str, limit: int, window_s: float, now: float) -> float | None:
        """Like :meth:`hit` but counts nothing."""
        ...

    def add_spend(self, key: str, usd: float, period: str, wall: float) -> float:
        """Add spend for a client key in the current period; returns the period's total."""
        ...

    def spend(self, key: str, period: str, wall: float) -> float: ...

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything, JSON-able, for /admin/state."""
        ...
