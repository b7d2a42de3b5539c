"""The in-memory state store: cooldowns, backoff streaks, circuits, windows, spend (time injected)."""

from __future__ import annotations

import pytest

from asgi_router.state.memory import MemoryStore, period_start


def test_cooldown_counts_down_and_expires():
    s = MemoryStore()
    s.cool("m", 10.0, now=100.0)
    assert s.cooldown_remaining("m", 100.0) == 10.0
    assert s.cooldown_remaining("m", 105.5) == pytest.approx(4.5)
    assert s.cooldown_remaining("m", 110.0) == 0.0
    assert s.cooldown_remaining("other", 100.0) == 0.0


def test_a_shorter_cooldown_never_shortens_a_longer_one():
    s = MemoryStore()
    s.cool("m", 60.0, now=0.0)
    s.cool("m", 1.0, now=1.0)
    assert s.cooldown_remaining("m", 2.0) == 58.0


def test_backoff_streak_resets_on_success():
    s = MemoryStore()
    for _ in range(3):
        s.cool("m", 1.0, now=0.0)
    assert s.backoff("m") == 3
    s.record_success("m")
    assert s.backoff("m") == 0


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # (time, "fail"|"ok"|"ask") → what circuit_allows answered for each "ask"
        ([(0, "fail"), (1, "fail"), (2, "ask")], [True]),
        ([(0, "fail"), (1, "fail"), (2, "fail"), (3, "ask")], [False]),
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (9.9, "ask"), (10, "ask"), (10, "ask")],
            [False, True, False],
        ),
        # the probe fails: open again for another period
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (10, "ask"), (10, "fail"), (15, "ask"), (20, "ask")],
            [True, False, True],
        ),
        # the probe succeeds: closed
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (10, "ask"), (10, "ok"), (10, "ask"), (10, "ask")],
            [True, True, True],
        ),
        ([(0, "fail"), (0, "fail"), (0, "ok"), (0, "fail"), (0, "fail"), (1, "ask")], [True]),
    ],
)
def test_circuit(events, expected):
    s = MemoryStore()
    answers = []
    for t, what in events:
        if what == "fail":
            s.record_failure("m", t, threshold=3, open_s=10.0)
        elif what == "ok":
            s.record_success("m")
        else:
            answers.append(s.circuit_allows("m", t))
    assert answers == expected


def test_sliding_window_limits_and_says_when():
    s = MemoryStore()
    assert s.hit("k", 2, 60.0, now=0.0) is None
    assert s.hit("k", 2, 60.0, now=10.0) is None
    assert s.hit("k", 2, 60.0, now=20.0) == pytest.approx(40.0)  # the first hit leaves at t=60
    assert s.hit("k", 2, 60.0, now=60.0) is None
    assert s.peek("k", 2, 60.0, now=61.0) == pytest.approx(9.0)


def test_window_with_costs_for_tokens():
    s = MemoryStore()
    assert s.hit("t", 1000, 60.0, now=0.0, cost=600) is None
    assert s.hit("t", 1000, 60.0, now=1.0, cost=600) == pytest.approx(59.0)
    assert s.hit("t", 1000, 60.0, now=1.0, cost=400) is None


def test_spend_per_period():
    s = MemoryStore()
    jan1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    s.add_spend("k", 1.5, "day", jan1)
    s.add_spend("k", 2.0, "day", jan1 + 3600)
    assert s.spend("k", "day", jan1 + 7200) == 3.5
    assert s.spend("k", "day", jan1 + 86_400) == 0.0  # a new day
    s.add_spend("k", 1.0, "month", jan1)
    assert s.spend("k", "month", jan1 + 20 * 86_400) == 1.0
    assert period_start("total", jan1) == "total"
    assert period_start("month", jan1) == "2026-01" and period_start("day", jan1) == "2026-01-01"


def test_a_probe_without_a_verdict_expires():
    """A half-open probe that was cancelled (a race loser) or got a 429 records nothing: the
    next caller may probe after another open period instead of the circuit staying shut."""
    s = MemoryStore()
    for _ in range(3):
        s.record_failure("m", 0.0, threshold=3, open_s=10.0)
    assert s.circuit_allows("m", 10.0) is True  # the probe goes, and nothing is recorded
    assert s.circuit_allows("m", 15.0) is False
    assert s.circuit_allows("m", 20.0) is True
