"""Giving memory back after a burst.

CPython frees a burst's objects, but its allocators keep the pages. Measured after 1,000
concurrent slow streams (bench/run.sh --memory; +46 MiB at the peak, +0.1 MB of objects still
alive once the burst's pooled upstream connections have expired):

- glibc's heap (buffers, large objects, and every object under ``PYTHONMALLOC=malloc``) can
  give back any page with nothing alive on it, but only when asked: :class:`Releaser` calls
  ``malloc_trim(0)`` once the gateway is idle after traffic, after collecting cyclic garbage
  (hypercorn leaves a cycle of ~33 objects per closed client connection).
- pymalloc, CPython's default for small objects, returns a 1 MiB arena only when every object
  in it is gone, and a few objects that outlive a burst pin most of them: 31 MB of wholly free
  pools stayed mapped. tracemalloc names them: ~1,450 blocks, some 900 of them entries of
  C-level free lists (uvloop's handles and timers, asyncio's future iterators) that no
  collection empties, the rest the libraries' pooled and cached objects. Cycling those free
  lists when idle (allocate past them, free in reverse) reclaimed no arena: measured, not kept.
  So the default build keeps +35 MiB after such a burst (bounded: further bursts reuse it),
  and ``PYTHONMALLOC=malloc asgi-router serve`` comes back to +10 to +15 MiB, at 1-6% more CPU
  per request (README, Performance: the trade-off is the operator's).

The releaser runs only between requests (none in flight), for a while after the last activity:
long enough to see the burst's pooled upstream connections expire. Off glibc (musl, macOS)
there is no malloc_trim: it then only collects garbage.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger("asgi_router.memory")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


class Activity(Protocol):
    """What the releaser watches: requests in flight, and a count of those finished."""

    active: int
    finished: int


class Releaser:
    """Every ``tick_s``, when no request is in flight and traffic was seen within ``window_s``,
    trim the heap, and collect garbage first if requests finished since the last collection.

    Measured after 1,000 streams (idle, 1,000 pooled connections alive): the collection takes
    8-26 ms and the trim 1-7 ms; on a quiet heap both together take about 1 ms. They run only
    when nothing is in flight, and stop ``window_s`` after the last request.
    """

    def __init__(
        self,
        activity: Activity,
        *,
        tick_s: float = 5.0,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.activity = activity
        self.tick_s = tick_s
        self.window_s = window_s
        self.clock = clock
        self.trim = _malloc_trim()
        self.releases = 0
        self._seen = activity.finished
        self._until = -1.0
        self._collected_at = activity.finished

    def due(self) -> bool:
        """True when a release should run now; notes the activity seen since the last call."""
        now = self.clock()
        if self.activity.active or self.activity.finished != self._seen:
            self._seen = self.activity.finished
            self._until = now + self.window_s
        return not self.activity.active and now <= self._until

    def release(self) -> None:
        t0 = time.perf_counter()
        collected = 0
        if self._collected_at != self.activity.finished:  # once per quiet spell: it scans every object
            self._collected_at = self.activity.finished
            collected = gc.collect()
        t1 = time.perf_counter()
        trimmed = self.trim(0) if self.trim is not None else 0
        t2 = time.perf_counter()
        self.releases += 1
        log.debug(
            "memory_released",
            collected=collected,
            trimmed=bool(trimmed),
            gc_ms=round((t1 - t0) * 1000, 2),
            trim_ms=round((t2 - t1) * 1000, 2),
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if self.due():
                self.release()
