"""The contenders: how each is started, where it listens, and what it is asked.

direct       nginx itself (the fake upstream), by path: the floor of the method
floor        bench/passthrough_floor.py: Starlette + httpx on hypercorn
asgi-router  `asgi-router serve --config <generated router.toml> --workers N`
litellm      LiteLLM proxy from bench/.venv-litellm, when installed (bench/run.sh --litellm)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import configs
import fakeupstream as fu
from clients import Endpoint, Targets
from fakeupstream import FakeUpstream
from procs import Proc, StartError, free_port, start, wait_http

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_VERSION = "1.81.16"
LITELLM_COMPROMISED = frozenset({"1.82.7", "1.82.8", "1.107.0"})


@dataclass
class Contender:
    name: str
    targets: Targets
    proc: Proc | None
    """None for direct, whose process (nginx) belongs to the fake upstream."""
    pid: int
    """Root of the process tree that is measured (CPU, RSS)."""
    notes: list[str] = field(default_factory=list)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    # The gateway measured is the one in this work tree, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def proxy_targets(base: str) -> Targets:
    url = base + "/v1/chat/completions"
    return Targets(
        plain=Endpoint(url, "bench-plain"),
        stream=Endpoint(url, "bench-stream"),
        slow_plain=Endpoint(url, "bench-slow-plain"),
        slow_stream=Endpoint(url, "bench-slow-stream"),
        drip=Endpoint(url, "bench-drip"),
        burst_stream=Endpoint(url, "bench-burst-stream"),
    )


def direct(upstream: FakeUpstream) -> Contender:
    def ep(base: str) -> Endpoint:
        return Endpoint(f"{upstream.url}{base}/chat/completions", "bench-direct")

    targets = Targets(
        ep(fu.PLAIN), ep(fu.STREAM), ep(fu.SLOW_PLAIN), ep(fu.SLOW_STREAM), ep(fu.DRIP), ep(fu.BURST_STREAM)
    )
    return Contender("direct", targets, None, upstream.proc.pid)


def floor(workdir: Path, upstream: FakeUpstream, cpus: str | None) -> Contender:
    """Starlette + httpx on hypercorn: issue 6's "floor for Python"."""
    return _passthrough("floor", "passthrough_floor.py", workdir, upstream, cpus)


def stack(
    workdir: Path, upstream: FakeUpstream, cpus: str | None, processes: int = 1, name: str = "stack"
) -> Contender:
    """Raw ASGI + aiohttp on hypercorn and uvloop: the least asgi-router's own stack adds.
    ``processes``: that many serving the port (``--scaling``)."""
    extra = ["--processes", str(processes)] if processes != 1 else []
    return _passthrough(name, "passthrough_stack.py", workdir, upstream, cpus, extra)


def _passthrough(
    name: str,
    script: str,
    workdir: Path,
    upstream: FakeUpstream,
    cpus: str | None,
    extra: list[str] | None = None,
) -> Contender:
    port = free_port()
    argv = [sys.executable, str(HERE / script), "--port", str(port), *(extra or [])]
    for model, base in configs.MODELS.items():
        argv += ["--route", f"{model}={upstream.url}{base}"]
    proc = start(name, argv, cpus, workdir / f"{name}.log", env=child_env(), cwd=HERE)
    base_url = f"http://127.0.0.1:{port}"
    wait_http(base_url + "/", proc, timeout_s=30)
    return Contender(name, proxy_targets(base_url), proc, proc.pid)


def router_argv() -> list[str]:
    """The interpreter running the benchmark, as for every other Python contender: an
    ``asgi-router`` script found on PATH may belong to another interpreter (a pyenv shim
    beside a venv's python), and the interpreter's build alone moves the figures (8% of CPU
    per plain request between Debian's python3.11 and this machine's pyenv build)."""
    return [sys.executable, "-m", "asgi_router"]


def router(
    workdir: Path,
    upstream: FakeUpstream,
    cpus: str | None,
    workers: int = 1,
    name: str = "asgi-router",
    env: dict[str, str] | None = None,
) -> Contender:
    """Start `asgi-router serve` on a generated router.toml; StartError if it does not come up."""
    port = free_port()
    conf_dir = workdir / name
    conf_dir.mkdir(exist_ok=True)
    conf = conf_dir / "router.toml"
    conf.write_text(configs.router_toml(port, upstream.url))
    return router_on(conf, port, cpus, workers, name, env)


def router_on(
    conf: Path, port: int, cpus: str | None, workers: int, name: str, env: dict[str, str] | None = None
) -> Contender:
    argv = [*router_argv(), "serve", "--config", str(conf), "--workers", str(workers)]
    proc = start(name, argv, cpus, conf.parent / f"{name}.log", env=child_env(env), cwd=conf.parent)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(base_url + "/healthz", proc, timeout_s=60)
    except StartError as exc:
        from procs import stop

        stop(proc)
        raise StartError(f"`{' '.join(argv)}` did not start: {exc}") from exc
    return Contender(name, proxy_targets(base_url), proc, proc.pid)


def litellm_version() -> str | None:
    """The version in bench/.venv-litellm, read from its dist-info name (nothing is imported)."""
    for dist in sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info")):
        return dist.name.removeprefix("litellm-").removesuffix(".dist-info")
    return None


def litellm_unavailable() -> str | None:
    """Why LiteLLM cannot run (None: it can)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    version = litellm_version()
    if version is None or not exe.exists():
        return "LiteLLM is not installed (bench/run.sh --litellm installs it into bench/.venv-litellm)"
    if version in LITELLM_COMPROMISED:
        return f"refusing LiteLLM {version}: a compromised release (delete bench/.venv-litellm)"
    if version != LITELLM_VERSION:
        return f"bench/.venv-litellm holds LiteLLM {version}, not the pinned {LITELLM_VERSION}"
    return None


def litellm(workdir: Path, upstream: FakeUpstream, cpus: str | None) -> Contender:
    why = litellm_unavailable()
    if why is not None:
        raise StartError(why)
    port = free_port()
    conf = workdir / "litellm-config.yaml"
    conf.write_text(configs.litellm_yaml(upstream.url))
    env = child_env(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "NO_DOCS": "True",
            "DISABLE_ADMIN_UI": "True",
        }
    )
    for var in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"):
        env.pop(var, None)
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(conf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = start("litellm", argv, cpus, workdir / "litellm.log", env=env, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    wait_http(base_url + "/health/liveliness", proc, timeout_s=240)
    return Contender("litellm", proxy_targets(base_url), proc, proc.pid, [f"LiteLLM {litellm_version()}"])
