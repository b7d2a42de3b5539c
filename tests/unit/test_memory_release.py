"""memory.Releaser: when the heap is trimmed and garbage collected (injected clock, no sleeping)."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass

import pytest

from asgi_router import memory
from asgi_router.memory import Releaser


@dataclass
class Traffic:
    active: int = 0
    finished: int = 0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(traffic: Traffic, clock: Clock) -> tuple[Releaser, list[int]]:
    r = Releaser(traffic, tick_s=5, window_s=40, clock=clock)
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        return 1

    r.trim = trim
    return r, trims


def test_nothing_is_due_before_any_traffic() -> None:
    r, _ = make(Traffic(), Clock())
    assert not r.due()


def test_due_only_when_idle_and_within_the_window_after_traffic() -> None:
    traffic, clock = Traffic(), Clock()
    r, _ = make(traffic, clock)
    traffic.active = 3
    assert not r.due()  # requests in flight: never
    traffic.active, traffic.finished = 0, 3
    clock.t += 5
    assert r.due()
    clock.t += 39
    assert r.due()  # 39 s after the traffic was last seen
    clock.t += 5
    assert not r.due()  # window over: an idle gateway does no work
    traffic.finished = 4  # a request came and went: the window opens again
    clock.t += 5
    assert r.due()


def test_a_steady_trickle_keeps_the_window_open() -> None:
    traffic, clock = Traffic(), Clock()
    r, _ = make(traffic, clock)
    for _ in range(100):
        traffic.finished += 1
        clock.t += 5
        assert r.due()


def test_release_trims_every_time_and_collects_once_per_quiet_spell(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic, clock = Traffic(finished=0), Clock()
    r, trims = make(traffic, clock)
    collections: list[int] = []

    def collect() -> int:
        collections.append(1)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    traffic.finished = 10
    r.release()
    r.release()
    assert (len(trims), len(collections)) == (2, 1)
    traffic.finished = 11
    r.release()
    assert (len(trims), len(collections), r.releases) == (3, 2, 3)


def test_release_collects_cyclic_garbage() -> None:
    traffic = Traffic()
    r, _ = make(traffic, Clock())

    class Node:
        other: object = None

    gc.disable()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: only the collector frees it
        traffic.finished = 1
        r.release()
        assert gone() is None
    finally:
        gc.enable()


def test_malloc_trim_is_found_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    trim = memory._malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)
