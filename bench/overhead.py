"""Issue 6's fixed-method overhead benchmark: asgi-router against direct, the stack, the floor, LiteLLM.

Method: a fast fake upstream (nginx + echo, one worker) and the load generator (wrk, one
thread) share core 1; each contender runs alone on core 0 (one worker). Before any load every
contender's answers are checked (content, usage, ``[DONE]``). Then, interleaved over several
rounds, each contender gets: plain req/s and streams/s (20 content chunks) at --connections,
CPU µs per request from /proc (its whole process tree, before/after the load), latency p50/p99
at 1 and 8 connections against the upstream delayed by --delay-ms (minus direct's, same round),
time to first token on the delayed stream (minus direct's), and RSS after start and at the end.
Ratios to direct, the stack, the floor and LiteLLM are computed within each round, then the median.

Usually run through ``bench/run.sh`` (installs nginx, the echo module and wrk if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import calibrate
import clients
import contenders
import modes
import procs
import report
import wrk
from contenders import Contender
from fakeupstream import FakeUpstream, start_fake_upstream
from procs import (
    StartError,
    cpu_times,
    settle,
    signals_raise,
    stop,
    stop_all,
    tree_cpu_s,
    tree_pss_bytes,
    tree_rss_bytes,
)

HERE = Path(__file__).resolve().parent
GATEWAY_CPU = "0"
LOADGEN_CPU = "1"
ORDER = ["direct", "asgi-router", "stack", "floor", "litellm"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="bench/run.sh also takes --litellm (install LiteLLM 1.81.16 into bench/.venv-litellm)"
        " and --install-only.",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=int, default=5, help="seconds per load (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s (and small modes)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections for req/s (default 32)")
    p.add_argument("--delay-ms", type=float, default=20, help="delayed upstream for latency/TTFT (20)")
    p.add_argument("--drip-ms", type=float, default=200, help="gap between events of slow streams (200)")
    p.add_argument("--only", default="", help="comma list of contenders (direct always runs)")
    p.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out even if installed")
    p.add_argument("--scaling", action="store_true", help="also asgi-router --workers 2 vs 1 on 2 cores")
    p.add_argument("--config-scale", action="store_true", help="1,000 models / 200 chains vs 3 models")
    p.add_argument("--memory", action="store_true", help="RSS after start, many requests, slow streams")
    p.add_argument("--main", action="store_true", help="the comparison too, with --config-scale/--memory")
    p.add_argument("--memory-requests", type=int, default=1_000_000, help="phase A target (1,000,000)")
    p.add_argument("--memory-max-s", type=float, default=900, help="phase A time cap in s (900)")
    p.add_argument("--memory-streams", type=int, default=1000, help="concurrent slow streams (1000)")
    p.add_argument("--memory-waves", type=int, default=3, help="waves of slow streams (3)")
    p.add_argument(
        "--memory-settle-s",
        type=float,
        default=45,
        help="idle time after the last wave before RSS is read again (45: the gateway's 15 s"
        " upstream keep-alive, twice, and its 5 s idle tick, with a margin)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for contenders, nginx, wrk and this process (e.g. -10 on a machine shared"
        " with other work: the measured processes then get their cores first; default 0)",
    )
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument("--keep-tmp", action="store_true", help="keep the generated configs and logs")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2
        args.memory_requests = min(args.memory_requests, 20_000)
        args.memory_max_s = min(args.memory_max_s, 20)
        args.memory_streams = min(args.memory_streams, 200)
        args.memory_waves = 1
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    args.only_set = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = args.only_set - set(ORDER)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; known: {ORDER}")
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


class Runner:
    """Holds the run's state: work dir, upstream, scripts, and the results document."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: Path,
        upstream: FakeUpstream,
        cpus: tuple[str | None, str | None],
    ) -> None:
        self.args = args
        self.workdir = workdir
        self.upstream = upstream
        self.scripts: dict[tuple[str, str], Path] = {}
        self.gateway_cpu, self.loadgen_cpu = cpus

    def script(self, name: str, kind: str, bodies: list[bytes]) -> Path:
        key = (name, kind)
        if key not in self.scripts:
            self.scripts[key] = wrk.write_script(self.workdir / f"wrk-{name}-{kind}.lua", bodies)
        return self.scripts[key]

    def load(
        self,
        c: Contender,
        kind: str,
        url: str,
        body: bytes,
        conns: int,
        seconds: float,
        cpus: str | None = None,
    ) -> dict[str, Any]:
        """One wrk load against ``c``; adds the CPU the contender's process tree used."""
        script = self.script(c.name, kind, [body])
        waited = settle(c.pid)
        cores0 = cpu_times()
        cpu0 = tree_cpu_s(c.pid)
        res = wrk.run(url, script, conns, seconds, cpus or self.loadgen_cpu)
        cpu = tree_cpu_s(c.pid) - cpu0
        cores1 = cpu_times()
        out = res.as_dict()
        out["cpu_s"] = cpu
        out["cpu_us_per_req"] = cpu * 1e6 / res.ok if res.ok else None
        out["cpu_util"] = cpu / res.duration_s if res.duration_s else None
        out["settle_s"] = waited
        if cpus is None:  # the contender alone on the gateway core: others there are disturbance
            out.update(self._disturbance(c, cpu, res.duration_s, cores0, cores1))
        if res.error_count:
            log(f"    ! {c.name} {kind}: wrk errors {res.errors} of {res.requests} requests")
        return out

    def _disturbance(
        self,
        c: Contender,
        cpu: float,
        seconds: float,
        before: dict[int, tuple[float, float]],
        after: dict[int, tuple[float, float]],
    ) -> dict[str, float]:
        """CPU that other processes (other sessions, tests) took on the gateway core meanwhile."""
        if self.gateway_cpu is None or seconds <= 0 or int(self.gateway_cpu) not in after:
            return {}
        core = int(self.gateway_cpu)
        busy = after[core][0] - before[core][0]
        ours = cpu if c.proc is not None else 0.0  # direct's nginx is not on the gateway core
        steal = sum(after[k][1] - before[k][1] for k in after if k in before)
        return {"foreign_gateway_core": max(0.0, busy - ours) / seconds, "steal_s": steal}


# -- the comparison ----------------------------------------------------------------------------


def start_contender(run: Runner, name: str) -> Contender:
    if name == "direct":
        return contenders.direct(run.upstream)
    if name == "floor":
        return contenders.floor(run.workdir, run.upstream, run.gateway_cpu)
    if name == "stack":
        return contenders.stack(run.workdir, run.upstream, run.gateway_cpu)
    if name == "asgi-router":
        return contenders.router(run.workdir, run.upstream, run.gateway_cpu)
    if name == "litellm":
        return contenders.litellm(run.workdir, run.upstream, run.gateway_cpu)
    raise ValueError(name)


def bring_up(run: Runner, names: list[str], info: dict[str, dict[str, Any]]) -> list[Contender]:
    """Start each contender, note its RSS, check its answers; skip (with the reason) what fails."""
    up: list[Contender] = []
    for name in names:
        log(f"starting {name} ...")
        t0 = time.monotonic()
        try:
            c = start_contender(run, name)
        except StartError as exc:
            reason = str(exc)
            if name == "asgi-router":
                reason = "asgi-router serve failed to start (is `serve` implemented yet?): " + reason
            log(f"  SKIP {name}: {_short(reason)}")
            info[name] = {"status": "skipped", "reason": reason}
            continue
        rss, pss = tree_rss_bytes(c.pid), tree_pss_bytes(c.pid)
        problems, notes = clients.check(c.targets)
        if problems:
            log(f"  SKIP {name}: wrong answers:\n    " + "\n    ".join(problems[:8]))
            info[name] = {"status": "skipped", "reason": "wrong answers", "problems": problems}
            if c.proc is not None:
                stop(c.proc)
            continue
        for note in notes + c.notes:
            log(f"  note: {note}")
        log(f"  {name} up in {time.monotonic() - t0:.1f} s, answers right, RSS {rss / report.MIB:.1f} MiB")
        info[name] = {
            "status": "ok",
            "rss_start": rss,
            "pss_start": pss,
            "notes": notes + c.notes,
            "rounds": [],
            "argv": c.proc.argv if c.proc else None,
        }
        up.append(c)
    return up


def suite(run: Runner, c: Contender, others: list[Contender]) -> dict[str, Any]:
    args, t = run.args, c.targets
    others_cpu0 = sum(tree_cpu_s(o.pid) for o in others)
    rnd: dict[str, Any] = {}
    for kind, ep in (("plain", t.plain), ("stream", t.stream)):
        body = ep.body(kind == "stream")
        run.load(c, kind, ep.url, body, args.connections, 1)  # warm-up, not counted
        rnd[kind] = run.load(c, kind, ep.url, body, args.connections, args.duration)
    body = t.slow_plain.body(False)
    rnd["lat1"] = run.load(c, "slow-plain", t.slow_plain.url, body, 1, args.duration)
    rnd["lat8"] = run.load(c, "slow-plain", t.slow_plain.url, body, 8, args.duration)
    settle(c.pid)
    p50, n, failures = clients.ttft_ms(t.slow_stream, args.duration)
    rnd["ttft"] = {"p50_ms": p50, "samples": n, "failures": failures}
    rnd["others_cpu_s"] = sum(tree_cpu_s(o.pid) for o in others) - others_cpu0
    return rnd


def _round_line(name: str, rnd: dict[str, Any]) -> str:
    pl, st, l1, l8 = rnd["plain"], rnd["stream"], rnd["lat1"], rnd["lat8"]
    cpu = pl["cpu_us_per_req"] or 0
    util = pl["cpu_util"] or 0
    ttft = rnd["ttft"]["p50_ms"]
    line = (
        f"  {name:<12} plain {pl['rps']:>8,.0f} req/s ({cpu:,.0f} µs CPU/req, core {util:.0%})"
        f"  streams {st['rps']:>7,.0f}/s  p50/p99 @1 {l1['p50_ms']:.2f}/{l1['p99_ms']:.2f} ms"
        f" @8 {l8['p50_ms']:.2f}/{l8['p99_ms']:.2f} ms  TTFT {ttft if ttft is None else round(ttft, 2)} ms"
    )
    if _foreign(rnd) > 0.05:
        shares = ", ".join(
            f"{kind} {rnd[kind]['foreign_gateway_core']:.0%}"
            for kind in ("plain", "stream", "lat1", "lat8")
            if "foreign_gateway_core" in rnd.get(kind, {})
        )
        line += f"\n    ! other processes' share of core {GATEWAY_CPU} during the loads: {shares}"
    return line


def _foreign(rnd: dict[str, Any]) -> float:
    """The largest share of the gateway core other processes took during one of a round's loads."""
    return max((v.get("foreign_gateway_core", 0.0) for v in rnd.values() if isinstance(v, dict)), default=0.0)


def comparison(run: Runner, doc: dict[str, Any]) -> None:
    args = run.args
    names = [n for n in ORDER if n == "direct" or not args.only_set or n in args.only_set]
    if args.no_litellm and "litellm" in names:
        names.remove("litellm")
    info: dict[str, dict[str, Any]] = {}
    doc["contenders"] = info
    up: list[Contender] = []
    try:
        up = bring_up(run, names, info)
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}")
            k = r % len(up)
            for c in up[k:] + up[:k]:  # rotate the order from round to round
                others = [o for o in up if o is not c and o.proc is not None]
                rnd = suite(run, c, others)
                rnd["round"] = r
                info[c.name]["rounds"].append(rnd)
                log(_round_line(c.name, rnd))
                if rnd["others_cpu_s"] > 0.02 * 4 * args.duration:
                    log(f"    ! idle contenders used {rnd['others_cpu_s']:.2f} s CPU meanwhile")
        for c in up:
            info[c.name]["rss_end"] = tree_rss_bytes(c.pid)
            info[c.name]["pss_end"] = tree_pss_bytes(c.pid)
        if args.scaling:
            doc["scaling"] = modes.scaling(run)
    finally:
        for c in up:
            if c.proc is not None:
                stop(c.proc)
    present = [n for n in ORDER if info.get(n, {}).get("rounds")]
    summary = report.summarize(info, ("direct", "stack", "floor", "litellm"))
    doc["summary"] = summary
    log("")
    log(
        f"== overhead, one worker on core {GATEWAY_CPU}, wrk + nginx on core {LOADGEN_CPU}; "
        f"{args.rounds} round(s) x {args.duration} s, {args.connections} connections; "
        f"delayed upstream {args.delay_ms:g} ms =="
    )
    log(report.table(summary, present))
    log("")
    log(report.ratio_table(summary, present))
    worst = max((_foreign(r) for i in info.values() for r in i.get("rounds", [])), default=0.0)
    doc["max_foreign_gateway_core"] = worst
    if worst > 0.05:
        log(
            f"! other processes on this machine took up to {worst:.0%} of core {GATEWAY_CPU} during"
            " some loads: req/s and latencies are disturbed (CPU µs per request much less so);"
            " run again when the machine is idle"
        )
    for name, i in info.items():
        if i.get("status") == "skipped":
            log(f"skipped {name}: {_short(i['reason'])}")
    rows = report.targets(summary)
    scaling_rows = (
        ("plain", "--workers 2 / 1 plain req/s"),
        ("stream", "--workers 2 / 1 streams/s (upstream writes each stream at once)"),
    )
    sc = doc.get("scaling", {})
    for kind, label in scaling_rows:
        ratio = sc.get(f"ratio_{kind}")
        if ratio is not None:
            rows.append(
                report.target_row(
                    label,
                    ratio,
                    ">=",
                    1.7,
                    sc.get(f"stack_ratio_{kind}"),  # its 2 processes / 1
                    sc.get(f"ratio_{kind}_rounds"),
                    sc.get(f"stack_ratio_{kind}_rounds"),
                )
            )
    doc["targets"] = rows
    if rows:
        log("")
        log(report.targets_text(rows))
        if worst > 0.05:
            log("(a disturbed run: verdicts on req/s and latency are not conclusive)")


def _short(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


# -- the run -----------------------------------------------------------------------------------


def _cmd_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else None
    return None


def environment() -> dict[str, Any]:
    pkgs = {}
    for name in ("asgi-router", "starlette", "hypercorn", "httpx", "aiohttp", "orjson", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pkgs[name] = metadata.version(name)
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = _cmd_version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_version(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "asgi_router"])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": pkgs,
        "litellm": contenders.litellm_version(),
        "nginx": _cmd_version(["nginx", "-v"]),
        "wrk": _cmd_version(["wrk", "-v"]),
        "git_commit": commit,
        "asgi_router_dirty": bool(dirty),
    }


def _prepare_process(nice: int) -> tuple[str | None, str | None]:
    """Raise the open-files limit; pin this process beside wrk. Returns (gateway, loadgen) CPUs."""
    if nice:
        procs.NICE = nice
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if (os.cpu_count() or 1) < 2:
        log("! fewer than 2 CPUs: nothing is pinned; figures are not comparable with the issue's")
        return None, None
    # This process (the answer checks, TTFT and slow-stream clients) runs beside wrk.
    os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    return GATEWAY_CPU, LOADGEN_CPU


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {"started": stamp, "args": {k: v for k, v in vars(args).items() if k != "only_set"}}
    doc["args"]["results_dir"] = str(args.results_dir)
    doc["environment"] = environment()
    workdir = Path(tempfile.mkdtemp(prefix="asgi-router-bench-"))
    rc = 0
    try:
        with signals_raise():
            cpus = _prepare_process(args.nice)
            upstream = start_fake_upstream(workdir, cpus[1], args.delay_ms, args.drip_ms)
            run = Runner(args, workdir, upstream, cpus)
            log(f"fake upstream: nginx on {upstream.url} (core {run.loadgen_cpu}); work dir {workdir}")
            speed = doc["machine_speed_us"] = {"start": calibrate.on_cpu(run.gateway_cpu)}
            log(f"machine speed (bench/calibrate.py, lower is faster): {calibrate.text(speed['start'])}")
            steps: list[tuple[str, Callable[[], Any]]] = []
            if args.main or not (args.config_scale or args.memory):
                steps.append(("comparison", lambda: comparison(run, doc)))
            if args.config_scale:
                steps.append(("config_scale", lambda: modes.config_scale(run)))
            if args.memory:
                steps.append(("memory", lambda: modes.memory(run)))
            for key, step in steps:
                out = step()
                if out is not None:
                    doc[key] = out
            speed["end"] = calibrate.on_cpu(run.gateway_cpu)
            log(
                f"\nmachine speed at the start {calibrate.text(speed['start'])},"
                f" at the end {calibrate.text(speed['end'])}"
            )
    except KeyboardInterrupt:
        log("\ninterrupted: stopping everything this run started")
        doc["interrupted"] = True
        rc = 130
    except (StartError, wrk.WrkError) as exc:
        log(f"\nbenchmark failed: {exc}")
        doc["error"] = str(exc)
        rc = 1
    finally:
        stop_all()
        args.results_dir.mkdir(parents=True, exist_ok=True)
        out_path = args.results_dir / f"{stamp}.json"
        out_path.write_text(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")
        log(f"\nresults: {out_path}")
        if args.keep_tmp:
            log(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
