"""Figures from the rounds: medians, added latency, per-round ratios, the table and the targets.

Added latency and ratios are computed within each round (contender against direct, the floor
or LiteLLM measured minutes apart in the same round), then the median over rounds is taken:
absolute figures move by a third from run to run on a shared box, ratios in one round less.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Round = dict[str, Any]

# metric key -> (column title, how to read it from one round)
METRICS: dict[str, tuple[str, Callable[[Round], float | None]]] = {
    "plain_rps": ("plain req/s", lambda r: r["plain"]["rps"] if "plain" in r else None),
    "stream_rps": ("streams/s", lambda r: r["stream"]["rps"] if "stream" in r else None),
    "cpu_us_req": ("CPU µs/req", lambda r: r["plain"].get("cpu_us_per_req") if "plain" in r else None),
    "cpu_us_stream": (
        "CPU µs/stream",
        lambda r: r["stream"].get("cpu_us_per_req") if "stream" in r else None,
    ),
    "p50_1": ("p50@1", lambda r: r["lat1"]["p50_ms"] if "lat1" in r else None),
    "p99_1": ("p99@1", lambda r: r["lat1"]["p99_ms"] if "lat1" in r else None),
    "p50_8": ("p50@8", lambda r: r["lat8"]["p50_ms"] if "lat8" in r else None),
    "p99_8": ("p99@8", lambda r: r["lat8"]["p99_ms"] if "lat8" in r else None),
    "ttft": ("TTFT p50", lambda r: r["ttft"]["p50_ms"] if "ttft" in r else None),
}
LATENCY_KEYS = ("p50_1", "p99_1", "p50_8", "p99_8", "ttft")
RATIO_KEYS = ("plain_rps", "stream_rps", "cpu_us_req", "cpu_us_stream")
MIB = 1024 * 1024


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def per_round(rounds: list[Round], key: str) -> list[float | None]:
    read = METRICS[key][1]
    out: list[float | None] = []
    for rnd in rounds:
        try:
            out.append(read(rnd))
        except (KeyError, TypeError):
            out.append(None)
    return out


def _paired(a: list[float | None], b: list[float | None], op: Callable[[float, float], float]) -> list[float]:
    return [op(x, y) for x, y in zip(a, b, strict=False) if x is not None and y is not None]


def summarize(results: dict[str, dict[str, Any]], references: tuple[str, ...]) -> dict[str, Any]:
    """Medians per contender, added latency against direct, ratios against each reference."""
    direct = results.get("direct", {}).get("rounds", [])
    summary: dict[str, Any] = {}
    for name, res in results.items():
        rounds = res.get("rounds", [])
        if not rounds:
            continue
        each = {key: [v for v in per_round(rounds, key) if v is not None] for key in METRICS}
        added_each = {
            key: _paired(per_round(rounds, key), per_round(direct, key), lambda x, y: x - y)
            for key in LATENCY_KEYS
        }
        ratios_each: dict[str, dict[str, list[float]]] = {}
        for ref in references:
            if ref == name or not results.get(ref, {}).get("rounds"):
                continue
            ref_rounds = results[ref]["rounds"]
            ratios_each[ref] = {
                key: _paired(
                    per_round(rounds, key), per_round(ref_rounds, key), lambda x, y: x / y if y else 0.0
                )
                for key in RATIO_KEYS
            }
        summary[name] = {
            "median": {key: _median(v) for key, v in each.items()},
            "added_ms": {key: _median(v) for key, v in added_each.items()},
            "ratios": {ref: {key: _median(v) for key, v in r.items()} for ref, r in ratios_each.items()},
            # the same figures round by round, to tell a target missed in every round from one
            # missed in the noisier half of them
            "per_round": each,
            "added_ms_per_round": added_each,
            "ratios_per_round": ratios_each,
            "rss_start_mib": res.get("rss_start", 0) / MIB,
            "rss_end_mib": res.get("rss_end", 0) / MIB,
        }
    return summary


def _fmt(value: float | None, digits: int = 0, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"
    return text


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.1:
        return f"{value:.4f}x"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def table(summary: dict[str, Any], order: list[str]) -> str:
    head = [
        "contender",
        "plain req/s",
        "streams/s",
        "CPU µs/req",
        "CPU µs/stream",
        "+p50@1 ms",
        "+p99@1 ms",
        "+p50@8 ms",
        "+p99@8 ms",
        "+TTFT p50 ms",
        "RSS start→end MiB",
    ]
    rows = [head]
    for name in order:
        if name not in summary:
            continue
        s = summary[name]
        m, a = s["median"], s["added_ms"]
        lat = [_fmt(a[k], 2, signed=True) if name != "direct" else "(base)" for k in LATENCY_KEYS]
        rows.append(
            [
                name,
                _fmt(m["plain_rps"]),
                _fmt(m["stream_rps"]),
                _fmt(m["cpu_us_req"]),
                _fmt(m["cpu_us_stream"]),
                *lat,
                f"{s['rss_start_mib']:.0f} → {s['rss_end_mib']:.0f}",
            ]
        )
    out = _grid(rows)
    if "direct" in summary:
        d = summary["direct"]["median"]
        out += (
            "\n(direct, the base of the + columns:"
            f" p50/p99 @1 {_fmt(d['p50_1'], 2)}/{_fmt(d['p99_1'], 2)} ms,"
            f" @8 {_fmt(d['p50_8'], 2)}/{_fmt(d['p99_8'], 2)} ms, TTFT p50 {_fmt(d['ttft'], 2)} ms;"
            " direct's CPU and RSS are nginx's, on the load generator's core)"
        )
    return out


def ratio_table(summary: dict[str, Any], order: list[str]) -> str:
    rows = [["ratio (median of per-round ratios)", "plain req/s", "streams/s", "CPU/req", "CPU/stream"]]
    for name in order:
        if name == "direct":
            continue
        for ref in ("direct", "stack", "floor", "litellm"):
            r = summary.get(name, {}).get("ratios", {}).get(ref)
            if r is None:
                continue
            rows.append(
                [
                    f"{name} / {ref}",
                    _ratio(r["plain_rps"]),
                    _ratio(r["stream_rps"]),
                    _ratio(r["cpu_us_req"]),
                    _ratio(r["cpu_us_stream"]),
                ]
            )
    return _grid(rows)


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(summary: dict[str, Any], name: str = "asgi-router") -> list[dict[str, Any]]:
    """Issue 6's targets for asgi-router, each with the measured figure and a verdict, and, where
    it means something, the same figure for the stack passthrough in the same run: the least any
    gateway on hypercorn + aiohttp adds (``stack``)."""
    s = summary.get(name)
    if s is None:
        return []
    st = summary.get("stack")

    def figure(of: dict[str, Any] | None, source: str, key: str) -> tuple[float | None, list[float]]:
        """The median and the per-round values of one figure: ``source`` is "median" (as
        measured), "added_ms" (against direct) or a reference's name (a ratio to it)."""
        if of is None:
            return None, []
        if source == "median":
            return of["median"][key], of.get("per_round", {}).get(key, [])
        if source == "added_ms":
            return of["added_ms"][key], of.get("added_ms_per_round", {}).get(key, [])
        per_round = of.get("ratios_per_round", {}).get(source, {})
        return of["ratios"].get(source, {}).get(key), per_round.get(key, [])

    # (target, figure's source, key, op, bound, whether the stack's own figure means something)
    checks: list[tuple[str, str, str, str, float, bool]] = [
        ("plain req/s", "median", "plain_rps", ">=", 2000, True),
        ("plain req/s vs LiteLLM", "litellm", "plain_rps", ">=", 10, False),
        ("plain req/s vs floor", "floor", "plain_rps", ">=", 2.5, False),
        ("CPU µs per plain request", "median", "cpu_us_req", "<=", 500, True),
        ("streams/s", "median", "stream_rps", ">=", 1600, True),
        ("streams/s vs LiteLLM", "litellm", "stream_rps", ">=", 30, False),
        ("TTFT added p50 ms", "added_ms", "ttft", "<=", 1.0, True),
        ("added p50 @1 conn ms", "added_ms", "p50_1", "<=", 1.5, True),
        ("added p99 @1 conn ms", "added_ms", "p99_1", "<=", 2.0, True),
        ("added p99 @8 conn ms", "added_ms", "p99_8", "<=", 5.0, True),
    ]
    out = []
    for what, source, key, op, bound, with_stack in checks:
        value, rounds = figure(s, source, key)
        stack, stack_rounds = figure(st, source, key) if with_stack else (None, [])
        out.append(target_row(what, value, op, bound, stack, rounds, stack_rounds))
    out.append(
        target_row("RSS after start MiB", s["rss_start_mib"], "<=", 100, st["rss_start_mib"] if st else None)
    )
    return out


def _passes(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def target_row(
    what: str,
    value: float | None,
    op: str,
    bound: float,
    stack: float | None,
    rounds: list[float] | None = None,
    stack_rounds: list[float] | None = None,
) -> dict[str, Any]:
    """One target: the verdict on the median, and in how many rounds the figure alone passed
    (for asgi-router and for the stack alone), since a latency tail moves with the machine's
    minute as much as with the code."""
    row: dict[str, Any] = {"target": what, "value": value, "op": op, "bound": bound, "stack": stack}
    if value is None:
        row["verdict"] = "not measured"
    else:
        row["verdict"] = "PASS" if _passes(value, op, bound) else "FAIL"
    for name, values in (("rounds_passed", rounds), ("stack_rounds_passed", stack_rounds)):
        if values:
            row[name] = [sum(_passes(v, op, bound) for v in values), len(values)]
    return row


def _shown(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def targets_text(rows: list[dict[str, Any]]) -> str:
    grid = [["issue 6 target (asgi-router)", "measured", "wanted", "verdict", "rounds passed", "stack alone"]]
    for row in rows:
        stack = row.get("stack")
        passed = row.get("rounds_passed")
        stack_passed = row.get("stack_rounds_passed")
        grid.append(
            [
                row["target"],
                _shown(row["value"]),
                f"{row['op']} {row['bound']:g}",
                row["verdict"],
                f"{passed[0]}/{passed[1]}" if passed else "",
                _shown(stack) + (f" ({stack_passed[0]}/{stack_passed[1]})" if stack_passed else ""),
            ]
        )
    return _grid(grid) + (
        "\n(rounds passed: in how many rounds the figure alone met the target; the verdict is on"
        " the median of the rounds)"
        "\n(stack alone: the raw ASGI + aiohttp passthrough on hypercorn in the same run, no routing,"
        " accounting, metrics or logs; a latency target it misses too is out of reach on this machine"
        " for any gateway on this stack)"
    )
