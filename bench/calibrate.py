"""How fast the machine is right now: a fixed pure-Python workload timed on the gateway's core.

This box is shared; the same code runs 1.5-2x slower in some hours than in others, with no
steal time or other process to show for it. The benchmark times this loop (none of the
gateway's code, only the interpreter and the core) before and after a run and prints it, so
two runs' absolute figures can be told apart by the machine's speed, not guessed at. Lower is
faster. Run alone: ``python bench/calibrate.py [cpu]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

CALLS = 300
REPEATS = 7


def _unit() -> int:
    """Some of what a request costs an interpreter: small dicts, strings, tuples, JSON, calls."""
    d: dict[str, list[object]] = {}
    for i in range(40):
        k = f"k{i}"
        d[k] = [i, str(i), (i, k)]
    s = json.dumps(d)
    back = json.loads(s)
    return sum(len(str(v[1])) for v in back.values())


def measure() -> dict[str, float]:
    """µs per unit: the best and the median of ``REPEATS`` repeats of ``CALLS`` calls."""
    for _ in range(CALLS):  # warm-up
        _unit()
    runs = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(CALLS):
            _unit()
        runs.append((time.perf_counter() - t) / CALLS * 1e6)
    return {"best_us": round(min(runs), 2), "median_us": round(statistics.median(runs), 2)}


def on_cpu(cpu: str | None) -> dict[str, float] | None:
    """:func:`measure` in a fresh interpreter pinned to ``cpu``; None if it could not run."""
    argv = [sys.executable, os.path.abspath(__file__)]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        result: dict[str, float] = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return result


def text(result: dict[str, float] | None) -> str:
    if result is None:
        return "n/a"
    return f"{result['best_us']:.1f} µs (median {result['median_us']:.1f})"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(text(on_cpu(sys.argv[1])))
    else:
        print(json.dumps(measure()))
