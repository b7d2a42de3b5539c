"""``python -m asgi_router.sim [--host 127.0.0.1] [--port 0] [--script FILE.json]``.

Prints exactly one line, ``asgi-router-sim listening on http://HOST:PORT``, once it accepts
connections; SIGTERM or SIGINT stop it. The script file holds one script object
(``{"model", "steps", "default"}``) or a list of them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson

from .app import SimRuntime, start_site, stop_site
from .server import url_host
from .state import SimState
from .steps import Script, StepError, parse_script


def load_scripts(path: Path) -> list[Script]:
    value = orjson.loads(path.read_bytes())
    return [parse_script(s) for s in (value if isinstance(value, list) else [value])]


async def serve(host: str, port: int, scripts: list[Script]) -> None:
    state = SimState()
    for script in scripts:
        state.set_script(script)
    rt = SimRuntime(state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, bound = await start_site(rt, host, port)
    try:
        print(f"asgi-router-sim listening on http://{url_host(host)}:{bound}", flush=True)
        await stop.wait()
    finally:
        await stop_site(rt, runner)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asgi_router.sim", description="Run one simulated OpenAI + Anthropic provider."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--script", type=Path, help="JSON file: a script object or a list of them")
    args = parser.parse_args(argv)
    try:
        scripts = load_scripts(args.script) if args.script else []
    except (OSError, orjson.JSONDecodeError, StepError) as exc:
        print(f"asgi-router-sim: bad script file {args.script}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.host, args.port, scripts))
    except OSError as exc:  # e.g. the port is taken
        print(f"asgi-router-sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
