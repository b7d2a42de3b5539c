"""Test helpers: start the gateway as a real process under hypercorn, scrape its metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider(name: str, base_url: str, api: str = "openai", **extra: Any) -> str:
    lines = [f"[providers.{name}]", f'api = "{api}"', f'base_url = "{base_url}"']
    if "api_keys" not in extra:
        lines.append("api_keys = []")
    for k, v in extra.items():
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def model(name: str, prov: str, upstream: str | None = None, **extra: Any) -> str:
    lines = [f"[models.{name}]", f'provider = "{prov}"', f'model = "{upstream or name}"']
    for k, v in extra.items():
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    return str(v)


@dataclass
class Gateway:
    path: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def openai(self, api_key: str = "unused", **kw: Any) -> Any:
        c = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=kw.pop("max_retries", 0), **kw)
        self.clients.append(c)
        return c

    def anthropic(self, api_key: str = "unused", **kw: Any) -> Any:
        c = anthropic.Anthropic(
            base_url=self.url, api_key=api_key, max_retries=kw.pop("max_retries", 0), **kw
        )
        self.clients.append(c)
        return c

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for fam in text_string_to_metric_families(self.get("/metrics").text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def write_config(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, self.path)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_gateway(
    tmp: Path,
    config: str,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    listen: bool = True,
    wait: bool = True,
    extra_args: tuple[str, ...] = (),
    server: str = "",
) -> Gateway:
    """``server``: extra lines for the generated ``[server]`` table (e.g. an admin_key)."""
    port = free_port()
    text = textwrap.dedent(config)
    if listen and "[server]" not in text:
        text = f'[server]\nlisten = "127.0.0.1:{port}"\nwatch = false\n{server}\n\n' + text
    path = tmp / "router.toml"
    path.write_text(text)
    log_path = tmp / "gateway.log"
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "asgi_router",
        "--log-level",
        "debug",
        "serve",
        "--config",
        str(path),
        "--workers",
        str(workers),
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
    gw = Gateway(path, port, proc, log_path, dict(env or {}))
    if wait:
        wait_ready(gw)
    return gw


def wait_ready(gw: Gateway, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n{gw.logs()}")
        try:
            if httpx.get(gw.url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gw.stop()
    raise RuntimeError(f"gateway did not become ready:\n{gw.logs()}")


def until(check: Callable[[], object], timeout: float = 5.0, every: float = 0.05) -> object:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {check}")
        time.sleep(every)
