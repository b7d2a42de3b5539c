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
        med: dict[str, float | None] = {}
        for key in METRICS:
            med[key] = _median([v for v in per_round(rounds, key) if v is not None])
        added: dict[str, float | None] = {}
        for key in LATENCY_KEYS:
            added[key] = _median(_paired(per_round(rounds, key), per_round(direct, key), lambda x, y: x - y))
        ratios: dict[str, dict[str, float | None]] = {}
        for ref in references:
            if ref == name or not results.get(ref, {}).get("rounds"):
                continue
            ref_rounds = results[ref]["rounds"]
            ratios[ref] = {
                key: _median(
                    _paired(
                        per_round(rounds, key), per_round(ref_rounds, key), lambda x, y: x / y if y else 0.0
                    )
                )
                for key in RATIO_KEYS
            }
        summary[name] = {
            "median": med,
            "added_ms": added,
            "ratios": ratios,
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
    m, a, r = s["median"], s["added_ms"], s["ratios"]
    lite, floor = r.get("litellm", {}), r.get("floor", {})
    st = summary.get("stack")
    sm, sa = (st["median"], st["added_ms"]) if st else ({}, {})
    checks: list[tuple[str, float | None, str, float, float | None]] = [
        ("plain req/s", m["plain_rps"], ">=", 2000, sm.get("plain_rps")),
        ("plain req/s vs LiteLLM", lite.get("plain_rps"), ">=", 10, None),
        ("plain req/s vs floor", floor.get("plain_rps"), ">=", 2.5, None),
        ("CPU µs per plain request", m["cpu_us_req"], "<=", 500, sm.get("cpu_us_req")),
        ("streams/s", m["stream_rps"], ">=", 1600, sm.get("stream_rps")),
        ("streams/s vs LiteLLM", lite.get("stream_rps"), ">=", 30, None),
        ("TTFT added p50 ms", a["ttft"], "<=", 1.0, sa.get("ttft")),
        ("added p50 @1 conn ms", a["p50_1"], "<=", 1.5, sa.get("p50_1")),
        ("added p99 @1 conn ms", a["p99_1"], "<=", 2.0, sa.get("p99_1")),
        ("added p99 @8 conn ms", a["p99_8"], "<=", 5.0, sa.get("p99_8")),
        ("RSS after start MiB", s["rss_start_mib"], "<=", 100, st["rss_start_mib"] if st else None),
    ]
    out = []
    for what, value, op, bound, stack in checks:
        if value is None:
            verdict = "not measured"
        elif op == ">=":
            verdict = "PASS" if value >= bound else "FAIL"
        else:
            verdict = "PASS" if value <= bound else "FAIL"
        out.append(
            {"target": what, "value": value, "op": op, "bound": bound, "verdict": verdict, "stack": stack}
        )
    return out


def _shown(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def targets_text(rows: list[dict[str, Any]]) -> str:
    grid = [["issue 6 target (asgi-router)", "measured", "wanted", "verdict", "stack alone"]]
    for row in rows:
        stack = row.get("stack")
        grid.append(
            [
                row["target"],
                _shown(row["value"]),
                f"{row['op']} {row['bound']:g}",
                row["verdict"],
                _shown(stack),
            ]
        )
    return _grid(grid) + (
        "\n(stack alone: the raw ASGI + aiohttp passthrough on hypercorn in the same run, no routing,"
        " accounting, metrics or logs; a latency target it misses too is out of reach on this machine"
        " for any gateway on this stack)"
    )
