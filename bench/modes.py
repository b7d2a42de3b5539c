"""The other modes: --scaling (workers 2 vs 1), --config-scale (1,000 models), --memory.

Each returns a JSON-able dict for the results file and prints what it measured. Each is
bounded (rounds, durations, counts, time caps) and stops what it started in ``finally``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clients
import configs
import contenders
import procs
import wrk
from clients import Endpoint
from contenders import Contender
from procs import (
    StartError,
    free_port,
    set_tree_affinity,
    settle,
    stop,
    tree_cpu_s,
    tree_pss_bytes,
    tree_rss_bytes,
)

if TYPE_CHECKING:
    from overhead import Runner

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, flush=True)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- --scaling ---------------------------------------------------------------------------------


def scaling(run: Runner) -> dict[str, Any]:
    """asgi-router --workers 1 vs --workers 2, gateway, wrk and nginx all free on both cores;
    and beside it, in the same rounds, the stack passthrough in one process vs two.

    On a 2-core box the load generator and the upstream take their share of the second core
    too, so this is "what the box delivers", paired per round; the stack's own ratio shows what
    the harness leaves to any gateway on this stack. Streams are loaded twice: from the
    upstream that writes each stream at once (nginx ~31 µs per stream; the judged figure, as
    the harness takes least from the gateway's cores) and from the event-by-event one of the
    main comparison (nginx ~124 µs per stream), shown beside it (asgi-router only).
    """
    args = run.args
    log("")
    log(
        "== scaling: asgi-router --workers 1 vs --workers 2, the stack in 1 vs 2 processes;"
        " gateway, wrk and nginx on both cores =="
    )
    all_cpus: str | None = "0,1" if run.loadgen_cpu is not None else None
    set_tree_affinity(run.upstream.proc.pid, {0, 1})
    started: list[Contender] = []
    try:
        cs: dict[str, Contender] = {}
        for key, n in (("w1", 1), ("w2", 2), ("s1", 1), ("s2", 2)):
            try:
                if key[0] == "w":
                    c = contenders.router(
                        run.workdir, run.upstream, all_cpus, workers=n, name=f"asgi-router-w{n}"
                    )
                else:
                    c = contenders.stack(run.workdir, run.upstream, all_cpus, processes=n, name=f"stack-p{n}")
            except StartError as exc:
                log(f"  SKIP scaling: {exc}")
                return {"status": "skipped", "reason": str(exc)}
            started.append(c)
            problems, _ = clients.check(c.targets)
            if problems:
                log(f"  SKIP scaling: {c.name} answers wrong: {problems[:3]}")
                return {"status": "skipped", "reason": "wrong answers", "problems": problems}
            cs[key] = c
        conns = max(64, 2 * args.connections)
        rounds: list[dict[str, Any]] = []
        order = ["w1", "w2", "s1", "s2"]
        for r in range(args.rounds):
            rnd: dict[str, Any] = {}
            for key in order[r % 4 :] + order[: r % 4]:
                c = cs[key]
                rnd[key] = {}
                burst = c.targets.burst_stream
                assert burst is not None
                loads = [("plain", c.targets.plain), ("stream", burst)]
                if key[0] == "w":
                    loads.append(("stream_flushed", c.targets.stream))
                for kind, ep in loads:
                    body = ep.body(kind != "plain")
                    run.load(c, kind, ep.url, body, conns, 1, cpus=all_cpus)
                    rnd[key][kind] = run.load(c, kind, ep.url, body, conns, args.duration, all_cpus)
            rounds.append(rnd)
            w1, w2, s1, s2 = rnd["w1"], rnd["w2"], rnd["s1"], rnd["s2"]
            log(
                f"  round {r + 1}: plain {w1['plain']['rps']:,.0f} → {w2['plain']['rps']:,.0f} req/s,"
                f" streams {w1['stream']['rps']:,.0f} → {w2['stream']['rps']:,.0f}/s"
                f" (event by event {w1['stream_flushed']['rps']:,.0f}"
                f" → {w2['stream_flushed']['rps']:,.0f}/s);"
                f" the stack: plain {s1['plain']['rps']:,.0f} → {s2['plain']['rps']:,.0f},"
                f" streams {s1['stream']['rps']:,.0f} → {s2['stream']['rps']:,.0f}"
            )
        out: dict[str, Any] = {"status": "ok", "connections": conns, "rounds": rounds}
        for prefix, one, two, kinds in (
            ("ratio", "w1", "w2", ("plain", "stream", "stream_flushed")),
            ("stack_ratio", "s1", "s2", ("plain", "stream")),
        ):
            for kind in kinds:
                pairs = [(rnd[one][kind]["rps"], rnd[two][kind]["rps"]) for rnd in rounds]
                ratios = [b / a for a, b in pairs if a]
                out[f"{prefix}_{kind}"] = _median(ratios)
                out[f"{prefix}_{kind}_rounds"] = ratios
        log(
            f"  2 / 1 (median of per-round ratios): asgi-router plain {out['ratio_plain']:.2f}x,"
            f" streams {out['ratio_stream']:.2f}x (issue 6 wants ≥ 1.7x), streams from the"
            f" event-by-event upstream {out['ratio_stream_flushed']:.2f}x; the stack alone"
            f" plain {out['stack_ratio_plain']:.2f}x, streams {out['stack_ratio_stream']:.2f}x"
        )
        return out
    finally:
        for c in started:
            if c.proc is not None:
                stop(c.proc)
        if run.loadgen_cpu is not None:
            set_tree_affinity(run.upstream.proc.pid, {int(run.loadgen_cpu)})


# -- --config-scale ----------------------------------------------------------------------------

COMPILE_SNIPPET = r"""
import inspect, json, os, sys, time
from pathlib import Path
t0 = time.perf_counter()
try:
    from asgi_router.config import load
except Exception as exc:
    print(json.dumps({"error": "cannot import asgi_router.config.load: " + repr(exc)}))
    raise SystemExit(3)
t1 = time.perf_counter()
path = Path(sys.argv[1])
call = (path, dict(os.environ)) if len(inspect.signature(load).parameters) >= 2 else (path,)
times = []
for _ in range(int(sys.argv[2])):
    s = time.perf_counter()
    try:
        load(*call)
    except Exception as exc:
        print(json.dumps({"error": "load() raised: " + repr(exc)[:2000]}))
        raise SystemExit(4)
    times.append(time.perf_counter() - s)
print(json.dumps({"import_s": t1 - t0, "first_s": times[0], "best_s": min(times), "runs": times}))
"""


def compile_time(conf: Path, cpus: str | None, repeats: int = 3) -> dict[str, Any]:
    """Time ``asgi_router.config.load`` on ``conf`` in a fresh interpreter (import excluded)."""
    argv = [sys.executable, "-c", COMPILE_SNIPPET, str(conf), str(repeats)]
    argv = [*procs.prefix(cpus), *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "compile did not finish in 180 s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"no result (exit {out.returncode}): {out.stderr[-1500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def config_scale(run: Runner) -> dict[str, Any]:
    args = run.args
    log("")
    log("== config scale: router.toml with 1,000 models and 200 chains vs one with 3 models ==")
    out: dict[str, Any] = {}
    confs: dict[str, tuple[Path, int, list[str]]] = {}
    for label in ("small", "large"):
        port = free_port()
        if label == "small":
            text, picks = configs.small_router_toml(port, run.upstream.url)
        else:
            text, picks = configs.scale_router_toml(port, run.upstream.url, 1000, 200, 20)
        d = run.workdir / f"scale-{label}"
        d.mkdir(exist_ok=True)
        (d / "router.toml").write_text(text)
        confs[label] = (d / "router.toml", port, picks)
    for label, (conf, _, _) in confs.items():
        timing = compile_time(conf, run.gateway_cpu)
        out[f"compile_{label}"] = timing
        if "error" in timing:
            log(f"  compile {label}: SKIPPED: {timing['error']}")
        else:
            log(
                f"  compile {label}: first {timing['first_s'] * 1000:.1f} ms,"
                f" best {timing['best_s'] * 1000:.1f} ms (import {timing['import_s'] * 1000:.0f} ms)"
            )
    big = out["compile_large"]
    if "first_s" in big:
        verdict = "PASS" if big["first_s"] < 1.0 else "FAIL"
        log(f"  issue 6: 1,000 models / 200 chains compile in under 1 s: {verdict}")
        out["compile_verdict"] = verdict
    started: list[Contender] = []
    try:
        servers: dict[str, Contender] = {}
        for label, (conf, port, picks) in confs.items():
            try:
                c = contenders.router_on(conf, port, run.gateway_cpu, 1, f"asgi-router-{label}")
            except StartError as exc:
                log(f"  routing throughput SKIPPED: {exc}")
                out["routing"] = {"status": "skipped", "reason": str(exc)}
                return out
            started.append(c)
            url = c.targets.plain.url
            sample = [picks[0], picks[len(picks) // 2], picks[-1]]
            problems = clients.check_plain([Endpoint(url, name) for name in sample])
            if problems:
                log(f"  routing throughput SKIPPED: {label} config answers wrong: {problems[:3]}")
                out["routing"] = {"status": "skipped", "reason": "wrong answers", "problems": problems}
                return out
            servers[label] = c
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            rnd: dict[str, Any] = {}
            for label in ("small", "large") if r % 2 == 0 else ("large", "small"):
                c = servers[label]
                picks = confs[label][2]
                bodies = [clients.request_body(name, False) for name in picks]
                script = wrk.write_script(run.workdir / f"wrk-scale-{label}.lua", bodies)
                wrk.run(c.targets.plain.url, script, args.connections, 1, run.loadgen_cpu)
                settle(c.pid)
                cpu0 = tree_cpu_s(c.pid)
                res = wrk.run(c.targets.plain.url, script, args.connections, args.duration, run.loadgen_cpu)
                cpu = tree_cpu_s(c.pid) - cpu0
                rnd[label] = res.as_dict() | {"cpu_us_per_req": cpu * 1e6 / res.ok if res.ok else None}
                if res.error_count:
                    log(f"    ! {label}: wrk errors {res.errors}")
            rounds.append(rnd)
            log(
                f"  round {r + 1}: 3 models {rnd['small']['rps']:,.0f} req/s"
                f" ({rnd['small']['cpu_us_per_req'] or 0:,.0f} µs CPU/req),"
                f" 1,000 models {rnd['large']['rps']:,.0f} req/s"
                f" ({rnd['large']['cpu_us_per_req'] or 0:,.0f} µs CPU/req)"
            )
        ratio = _median([rnd["large"]["rps"] / rnd["small"]["rps"] for rnd in rounds if rnd["small"]["rps"]])
        cpu_ratio = _median(
            [
                rnd["large"]["cpu_us_per_req"] / rnd["small"]["cpu_us_per_req"]
                for rnd in rounds
                if rnd["small"]["cpu_us_per_req"] and rnd["large"]["cpu_us_per_req"]
            ]
        )
        out["routing"] = {
            "status": "ok",
            "rounds": rounds,
            "ratio_large_to_small": ratio,
            "cpu_ratio_large_to_small": cpu_ratio,
        }
        if ratio is not None and cpu_ratio is not None:
            log(
                f"  1,000-model / 3-model (median of per-round ratios): req/s {ratio:.2f}x,"
                f" CPU per request {cpu_ratio:.2f}x (want ≈ 1 for both)"
            )
        return out
    finally:
        for c in started:
            if c.proc is not None:
                stop(c.proc)


# -- --memory ----------------------------------------------------------------------------------


def _mib(n: int) -> float:
    return n / MIB


def memory(run: Runner) -> dict[str, Any]:
    args = run.args
    names = [n for n in ("asgi-router", "stack", "floor") if not args.only_set or n in args.only_set]
    if "asgi-router" in names:  # also on glibc's allocator: the operator's trade-off (README)
        names.insert(1, MALLOC_VARIANT)
    log("")
    log(
        f"== memory: RSS after start; after {args.memory_requests:,} requests"
        f" (cap {args.memory_max_s:.0f} s);"
        f" after {args.memory_waves} wave(s) of {args.memory_streams:,} concurrent slow streams =="
    )
    out: dict[str, Any] = {}
    for name in names:
        out[name] = _memory_one(run, name)
    return out


MALLOC_VARIANT = "asgi-router PYTHONMALLOC=malloc"


def _memory_one(run: Runner, name: str) -> dict[str, Any]:
    try:
        if name == "floor":
            c = contenders.floor(run.workdir, run.upstream, run.gateway_cpu)
        elif name == "stack":
            c = contenders.stack(run.workdir, run.upstream, run.gateway_cpu)
        elif name == MALLOC_VARIANT:
            env = {"PYTHONMALLOC": "malloc"}
            c = contenders.router(
                run.workdir, run.upstream, run.gateway_cpu, name="asgi-router-malloc", env=env
            )
        else:
            c = contenders.router(run.workdir, run.upstream, run.gateway_cpu, name="asgi-router-mem")
    except StartError as exc:
        log(f"  SKIP {name}: {str(exc)[:600]}")
        return {"status": "skipped", "reason": str(exc)}
    try:
        rss_start = tree_rss_bytes(c.pid)
        problems, _ = clients.check(c.targets, drip=True)
        if problems:
            log(f"  SKIP {name}: wrong answers: {problems[:3]}")
            return {"status": "skipped", "reason": "wrong answers", "problems": problems}
        log(f"  {name}: RSS after start {_mib(rss_start):.1f} MiB")
        res: dict[str, Any] = {"status": "ok", "rss_start_mib": _mib(rss_start)}
        res["requests"] = _many_requests(run, c)
        res["streams"] = _slow_streams(run, c)
        res["verdicts"] = _memory_verdicts(res)
        for what, verdict in res["verdicts"].items():
            log(f"  {name}: {what}: {verdict}")
        res["pss_end_mib"] = _mib(tree_pss_bytes(c.pid))
        return res
    finally:
        if c.proc is not None:
            stop(c.proc)


def _many_requests(run: Runner, c: Contender) -> dict[str, Any]:
    """Load in segments (plain and stream in turn) until the request target or the time cap."""
    args = run.args
    segment = 3 if args.quick else 30
    t0 = time.monotonic()
    total = 0
    samples: list[dict[str, Any]] = []
    n = 0
    while total < args.memory_requests and time.monotonic() - t0 < args.memory_max_s:
        kind = "plain" if n % 3 != 2 else "stream"  # two plain segments, then one of streams
        ep = c.targets.plain if kind == "plain" else c.targets.stream
        left = args.memory_max_s - (time.monotonic() - t0)
        seconds = max(1, int(min(segment, left)))
        script = run.script(c.name, kind, [ep.body(kind == "stream")])
        res = wrk.run(ep.url, script, args.connections, seconds, run.loadgen_cpu)
        total += res.ok
        rss = tree_rss_bytes(c.pid)
        samples.append(
            {"t_s": time.monotonic() - t0, "kind": kind, "ok": res.ok, "total": total, "rss_mib": _mib(rss)}
        )
        log(
            f"    {c.name}: {total:>10,} requests, RSS {_mib(rss):7.1f} MiB ({kind}, {res.rps:,.0f}/s"
            + (f", errors {res.errors}" if res.error_count else "")
            + ")"
        )
        n += 1
    reached = total >= args.memory_requests
    if not reached:
        log(f"    time cap reached at {total:,} requests (target {args.memory_requests:,})")
    return {
        "target": args.memory_requests,
        "total": total,
        "reached_target": reached,
        "samples": samples,
        "rss_warm_mib": samples[0]["rss_mib"] if samples else None,
        "rss_end_mib": samples[-1]["rss_mib"] if samples else None,
    }


def _slow_streams(run: Runner, c: Contender) -> dict[str, Any]:
    args = run.args
    drip = c.targets.drip
    if drip is None:
        return {"status": "skipped"}
    waves = []
    for w in range(args.memory_waves):
        before = tree_rss_bytes(c.pid)
        peak = [before]

        def tick(peak: list[int] = peak) -> None:
            peak[0] = max(peak[0], tree_rss_bytes(c.pid))

        wave = clients.slow_stream_wave(drip, args.memory_streams, ramp_s=1.0, timeout_s=120, on_tick=tick)
        time.sleep(1.0)
        after = tree_rss_bytes(c.pid)
        waves.append(
            {
                "streams": wave.streams,
                "ok": wave.ok,
                "failed": wave.failed,
                "errors": wave.errors,
                "wall_s": wave.wall_s,
                "rss_before_mib": _mib(before),
                "rss_peak_mib": _mib(peak[0]),
                "rss_after_mib": _mib(after),
            }
        )
        log(
            f"    {c.name}: wave {w + 1}: {wave.ok:,}/{wave.streams:,} streams ok in {wave.wall_s:.1f} s;"
            f" RSS {_mib(before):.1f} → peak {_mib(peak[0]):.1f} → {_mib(after):.1f} MiB"
            + (f"; errors {wave.errors}" if wave.errors else "")
        )
    # The gateway keeps a burst's upstream connections pooled for their keep-alive (15 s) and
    # hands memory back once idle (asgi_router/memory.py): RSS is read again after that.
    settle = [tree_rss_bytes(c.pid)]
    t_end = time.monotonic() + args.memory_settle_s
    while time.monotonic() < t_end:
        time.sleep(1.0)
        settle.append(tree_rss_bytes(c.pid))
    settled = {
        "after_s": args.memory_settle_s,
        "rss_mib": _mib(settle[-1]),
        "series_mib": [round(_mib(x), 1) for x in settle],
    }
    log(
        f"    {c.name}: idle for {args.memory_settle_s:.0f} s after the last wave:"
        f" RSS {_mib(settle[-1]):.1f} MiB"
    )
    return {
        "streams_per_wave": args.memory_streams,
        "drip_ms": args.drip_ms,
        "waves": waves,
        "settled": settled,
    }


def _memory_verdicts(res: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    start = res["rss_start_mib"]
    out["RSS after start ≤ 100 MiB"] = f"{'PASS' if start <= 100 else 'FAIL'} ({start:.1f} MiB)"
    req = res["requests"]
    if req["rss_warm_mib"] is not None:
        drift = req["rss_end_mib"] - req["rss_warm_mib"]
        grown = req["rss_end_mib"] - start
        verdict = "PASS" if abs(drift) <= 10 else "FAIL"
        if not req["reached_target"]:
            verdict += f" (only {req['total']:,} of {req['target']:,} requests: time cap)"
        out["flat (±10 MiB) after many requests"] = (
            f"{verdict}: {drift:+.1f} MiB from the first segment, {grown:+.1f} MiB from start"
        )
    waves = res["streams"].get("waves") or []
    if waves:
        base = waves[0]["rss_before_mib"]
        settled = res["streams"]["settled"]
        drift = settled["rss_mib"] - base
        failed = sum(w["failed"] for w in waves)
        verdict = "PASS" if abs(drift) <= 10 and not failed else "FAIL"
        text = (
            f"{verdict}: {drift:+.1f} MiB from before the first wave to {settled['after_s']:.0f} s"
            f" idle after the last ({waves[-1]['rss_after_mib'] - base:+.1f} MiB 1 s after it),"
            f" peak {max(w['rss_peak_mib'] for w in waves):.1f} MiB, {failed} failed streams"
        )
        if len(waves) > 1:
            text += f"; {waves[-1]['rss_after_mib'] - waves[0]['rss_after_mib']:+.1f} MiB after wave 1"
        out["flat (±10 MiB) after concurrent slow streams"] = text
    return out
