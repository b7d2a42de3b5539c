"""``asgi-router demo``: simulated providers on loopback and the gateway on a demo config.

No API keys. Three simulated providers answer in two dialects; the config has a fallback
chain whose first member is always rate limited (so every call shows a fallback), a race
between a fast and a slow member, and a chain that crosses dialects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from asgi_router.sim import SimServer

DEMO_TOML = """\
# The demo config: every provider is a simulated one on loopback.
[server]
listen = "127.0.0.1:{port}"
watch = true

[providers.acme]                 # OpenAI dialect
api = "openai"
base_url = "{acme}"
api_keys = []

[providers.globex]               # OpenAI dialect
api = "openai"
base_url = "{globex}"
api_keys = []

[providers.initech]              # Anthropic dialect
api = "anthropic"
base_url = "{initech}"
api_keys = []

[models.acme-flaky]              # always answers 429 with Retry-After
provider = "acme"
model = "acme-flaky"
price = {{ input = 0.5, output = 1.5 }}

[models.globex-small]
provider = "globex"
model = "globex-small"
price = {{ input = 0.15, output = 0.6 }}

[models.acme-large]              # slow to its first token
provider = "acme"
model = "acme-large"
price = {{ input = 2.5, output = 10.0 }}

[models.initech-claude]          # Anthropic dialect upstream
provider = "initech"
model = "initech-claude"
price = {{ input = 3.0, output = 15.0 }}

[races.fast]                     # first answer wins; the loser is cancelled
members = ["acme-large", "globex-small"]
hedge_ms = 0

[fallbacks.chat]                 # 429 on the first member → the next one answers
chain = ["acme-flaky", "fast"]

[fallbacks.cross]                # an OpenAI client reaching an Anthropic upstream
chain = ["acme-flaky", "initech-claude"]

[state]
spend_log = "demo-spend.db"
"""


def _free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def write_demo_config(folder: Path, port: int, sims: dict[str, SimServer]) -> Path:
    path = folder / "router.toml"
    path.write_text(DEMO_TOML.format(port=port, **{k: s.base_url for k, s in sims.items()}))
    return path


def script_sims(sims: dict[str, SimServer]) -> None:
    sims["acme"].script("acme-flaky", default={"status": 429, "retry_after": 2})
    sims["acme"].script(
        "acme-large", default={"ttft_s": 0.4, "chunk_delay_s": 0.02, "text": "A slow and thoughtful answer."}
    )
    sims["globex"].script(
        "globex-small", default={"ttft_s": 0.02, "chunk_delay_s": 0.01, "text": "A quick answer from globex."}
    )
    sims["initech"].script("initech-claude", default={"text": "Hello from a simulated Claude."})


def banner(base: str) -> str:
    return f"""
asgi-router demo is running. Base URL: {base}/v1  (no key needed on loopback)

  curl {base}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "chat", "messages": [{{"role": "user", "content": "hi"}}]}}' -i

  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="unused")
  r = client.chat.completions.with_raw_response.create(
      model="chat", messages=[{{"role": "user", "content": "hi"}}])
  print(r.headers["x-router-model"], r.parse().choices[0].message.content)

Names: chat (429 → race), fast (race), cross (OpenAI client → Anthropic upstream),
acme-flaky, globex-small, acme-large, initech-claude.
Metrics: {base}/metrics   State: {base}/admin/state   Ctrl-C stops.
"""


def _post(base: str, model: str, stream: bool = False) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json"}
    req = urllib.request.Request(base + "/v1/chat/completions", body.encode(), headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return dict(resp.headers), resp.read()


def run_smoke(base: str) -> int:
    """Send a few requests and print what routing did."""
    for model, stream in (
        ("chat", False),
        ("chat", True),
        ("fast", False),
        ("cross", False),
        ("cross", True),
    ):
        headers, body = _post(base, model, stream)
        if stream:
            text = "".join(
                c["choices"][0]["delta"].get("content") or ""
                for line in body.decode().splitlines()
                if line.startswith("data: {")
                for c in [json.loads(line[6:])]
                if c.get("choices")
            )
        else:
            text = json.loads(body)["choices"][0]["message"]["content"]
        print(
            f"{model:>6} stream={stream!s:<5} answered by {headers['x-router-model']:<15} "
            f"attempts={headers['x-router-attempts']}  {text!r}"
        )
    return 0


def _wait_ready(base: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(base + "/readyz", timeout=1):  # noqa: S310
            return
        time.sleep(0.05)
    raise RuntimeError("the gateway did not become ready")


def run_demo(port: int = 4000, smoke: bool = False) -> int:
    from asgi_router.serve import hypercorn_config, run_app
    from asgi_router.web.app import App, Settings

    port = _free(port)
    sims = {name: SimServer().start() for name in ("acme", "globex", "initech")}
    try:
        script_sims(sims)
        with tempfile.TemporaryDirectory(prefix="asgi-router-demo-") as tmp:
            path = write_demo_config(Path(tmp), port, sims)
            from asgi_router import config

            graph = config.load(path)
            app = App(Settings(path))
            base = f"http://127.0.0.1:{port}"

            async def main() -> int:
                server = asyncio.create_task(run_app(app, hypercorn_config(graph)))
                try:
                    await asyncio.to_thread(_wait_ready, base)
                    if smoke:
                        print(f"asgi-router demo on {base}: routing a few requests\n")
                        return await asyncio.to_thread(run_smoke, base)
                    print(banner(base), flush=True)
                    await server
                    return 0
                finally:
                    server.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await server

            return asyncio.run(main())
    finally:
        for s in sims.values():
            s.stop()
