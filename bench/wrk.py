"""wrk runs: a Lua script POSTs JSON bodies; its done() hook prints the figures as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import procs
from procs import die_with_parent

MARK = "BENCH_WRK_JSON "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    MARK, summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def _lua_long_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_script(path: Path, bodies: list[bytes]) -> Path:
    """A wrk script POSTing ``bodies`` (in turn, per thread) as application/json."""
    if not bodies:
        raise ValueError("no request body")
    head = [
        f'MARK = "{MARK}"',
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        'wrk.headers["Authorization"] = "Bearer sk-bench"',
    ]
    if len(bodies) == 1:
        head.append(f"wrk.body = {_lua_long_string(bodies[0].decode())}")
    else:
        items = ",\n  ".join(_lua_long_string(b.decode()) for b in bodies)
        head.append(f"local bodies = {{\n  {items}\n}}")
        head.append("local n = 0")
        head.append(
            "request = function()\n  n = n % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[n])\nend"
        )
    path.write_text("\n".join(head) + "\n" + _DONE)
    return path


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class WrkError(RuntimeError):
    pass


def run(url: str, script: Path, connections: int, duration_s: float, cpus: str | None) -> WrkResult:
    """One wrk run with one thread; bounded by its duration plus a margin."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is missing (apt-get install wrk)")
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "15s",
        "-s",
        str(script),
        url,
    ]
    argv = [*procs.prefix(cpus), *argv]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=False,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(argv)}") from exc
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise WrkError(f"wrk printed no result (exit {out.returncode}): {out.stdout}\n{out.stderr}")
    raw = json.loads(line[len(MARK) :])
    errors = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")}
    duration = raw["duration_us"] / 1e6
    ok = max(0, int(raw["requests"]) - errors["status"])
    return WrkResult(
        connections=connections,
        duration_s=duration,
        requests=int(raw["requests"]),
        ok=ok,
        errors=errors,
        rps=ok / duration if duration > 0 else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
    )
