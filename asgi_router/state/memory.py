"""In-process :class:`~asgi_router.state.store.StateStore`. One per worker process."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LATENCY_ALPHA = 0.2  # weight of a new sample in the moving average


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    open_s: float = 0.0
    probing: bool = False
    probe_since: float = 0.0


@dataclass(slots=True)
class _Latency:
    total: float | None = None
    ttft: float | None = None
    samples: int = 0


@dataclass(slots=True)
class _Window:
    stamps: deque[tuple[float, int]] = field(default_factory=deque)
    used: int = 0


def period_start(period: str, wall: float) -> str:
    """A label for the budget period containing wall-clock time ``wall`` (UTC)."""
    if period == "total":
        return "total"
    t = time.gmtime(wall)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}" + (f"-{t.tm_mday:02d}" if period == "day" else "")


class MemoryStore:
    def __init__(self) -> None:
        self._cool: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._circuits: dict[str, _Circuit] = {}
        self._lat: dict[str, _Latency] = {}
        self._windows: dict[str, _Window] = {}
        self._spend: dict[tuple[str, str], float] = {}

    # cooldowns --------------------------------------------------------------------------------
    def cooldown_remaining(self, member: str, now: float) -> float:
        until = self._cool.get(member)
        if until is None:
            return 0.0
        if until <= now:
            del self._cool[member]
            return 0.0
        return until - now

    def cool(self, member: str, seconds: float, now: float) -> None:
        self._cool[member] = max(self._cool.get(member, 0.0), now + seconds)
        self._streak[member] = self._streak.get(member, 0) + 1

    def backoff(self, member: str) -> int:
        return self._streak.get(member, 0)

    # circuit ----------------------------------------------------------------------------------
    def circuit_allows(self, member: str, now: float) -> bool:
        c = self._circuits.get(member)
        if c is None or c.open_until == 0.0:
            return True
        if now < c.open_until:
            return False
        # half-open: one probe at a time. A probe whose verdict never came (it lost a race, its
        # client left, it got a 429 or a 4xx) expires after another open period, so the
        # circuit can never stay half-open for good.
        if c.probing and now < c.probe_since + max(c.open_s, 1.0):
            return False
        c.probing, c.probe_since = True, now
        return True

    def record_success(self, member: str) -> None:
        self._circuits.pop(member, None)
        self._streak.pop(member, None)

    def record_failure(self, member: str, now: float, threshold: int, open_s: float) -> bool:
        c = self._circuits.setdefault(member, _Circuit())
        c.failures += 1
        if c.probing or (c.open_until == 0.0 and c.failures >= threshold):
            c.open_until, c.open_s = now + open_s, open_s
            c.probing = False
            return True
        return False

    def circuit_state(self, member: str, now: float) -> str:
        c = self._circuits.get(member)
        if c is None or c.open_until == 0.0:
            return "closed"
        return "half_open" if now >= c.open_until else "open"

    # latency ----------------------------------------------------------------------------------
    def observe_latency(self, member: str, total_s: float, ttft_s: float | None) -> None:
        lat = self._lat.setdefault(member, _Latency())
        lat.samples += 1
        lat.total = total_s if lat.total is None else lat.total + LATENCY_ALPHA * (total_s - lat.total)
        if ttft_s is not None:
            lat.ttft = ttft_s if lat.ttft is None else lat.ttft + LATENCY_ALPHA * (ttft_s - lat.ttft)

    def latency(self, member: str, *, stream: bool) -> float | None:
        lat = self._lat.get(member)
        if lat is None:
            return None
        return (lat.ttft if lat.ttft is not None else lat.total) if stream else lat.total

    # windows ----------------------------------------------------------------------------------
    def _window(self, bucket: str, window_s: float, now: float) -> _Window:
        w = self._windows.get(bucket)
        if w is None:
            w = self._windows[bucket] = _Window()
        edge = now - window_s
        stamps = w.stamps
        while stamps and stamps[0][0] <= edge:
            w.used -= stamps.popleft()[1]
        return w

    def _wait(self, w: _Window, limit: int, window_s: float, now: float, cost: int) -> float | None:
        if w.used + cost <= limit or not w.stamps:
            return None
        # the time until enough old entries leave the window for ``cost`` to fit
        need = w.used + cost - limit
        for stamp, n in w.stamps:
            need -= n
            if need <= 0:
                return max(stamp + window_s - now, 0.001)
        return window_s

    def hit(self, bucket: str, limit: int, window_s: float, now: float, cost: int = 1) -> float | None:
        w = self._window(bucket, window_s, now)
        wait = self._wait(w, limit, window_s, now, cost)
        if wait is None:
            w.stamps.append((now, cost))
            w.used += cost
        return wait

    def peek(self, bucket: str, limit: int, window_s: float, now: float) -> float | None:
        w = self._window(bucket, window_s, now)
        return self._wait(w, limit, window_s, now, 1) if w.used >= limit else None

    # spend ------------------------------------------------------------------------------------
    def add_spend(self, key: str, usd: float, period: str, wall: float) -> float:
        k = (key, period_start(period, wall))
        total = self._spend.get(k, 0.0) + usd
        self._spend[k] = total
        return total

    def spend(self, key: str, period: str, wall: float) -> float:
        return self._spend.get((key, period_start(period, wall)), 0.0)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "cooldowns": {m: round(u - now, 3) for m, u in self._cool.items() if u > now},
            "circuits": {
                m: {"state": self.circuit_state(m, now), "failures": c.failures}
                for m, c in self._circuits.items()
            },
            "latency": {
                m: {"total_s": lat.total, "ttft_s": lat.ttft, "samples": lat.samples}
                for m, lat in self._lat.items()
            },
            "spend": [{"key": k, "period": p, "usd": round(v, 6)} for (k, p), v in self._spend.items()],
        }
