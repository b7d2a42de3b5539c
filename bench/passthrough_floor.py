"""The floor for Python: a minimal OpenAI passthrough on the gateway's own stack.

Starlette + httpx (its default transport) + hypercorn, as in issue 6's table: one
``httpx.AsyncClient`` for the process, the request body forwarded as it came, a non-stream
answer returned whole, a stream relayed chunk by chunk with a ``StreamingResponse``. It does
only what any gateway must: read the body, look at ``model`` and ``stream`` (orjson), pick
the upstream by model (a dict lookup), forward, relay. No routing, accounting or logging.

    python bench/passthrough_floor.py --port 4100 \\
        --route bench-plain=http://127.0.0.1:8080/plain/v1 --route ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FORWARD_HEADERS = {"content-type": "application/json"}


def create_app(routes: Mapping[str, str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        limits = httpx.Limits(max_connections=4096, max_keepalive_connections=1024)
        timeout = httpx.Timeout(60.0, connect=5.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            yield {"client": client}

    async def chat(request: Request) -> Response:
        body = await request.body()
        try:
            parsed = orjson.loads(body)
            base = routes[parsed["model"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return JSONResponse({"error": {"message": "bad request or unknown model"}}, status_code=400)
        client: httpx.AsyncClient = request.state.client
        url = base + "/chat/completions"
        if not parsed.get("stream"):
            upstream = await client.post(url, content=body, headers=FORWARD_HEADERS)
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )
        req = client.build_request("POST", url, content=body, headers=FORWARD_HEADERS)
        upstream = await client.send(req, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


async def _serve(app: Any, port: int, reuse_port: bool = False) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    # hypercorn sets SO_REUSEPORT on the sockets it makes when told of several workers: several
    # processes running this bind the same port and the kernel spreads connections over them
    config.workers = 2 if reuse_port else 1
    config.backlog = 4096
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.keep_alive_timeout = 300
    config.graceful_timeout = 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", action="append", default=[], help="MODEL=BASE_URL (repeatable)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    run(create_app(dict(r.split("=", 1) for r in args.route)), args.port, args.loop)
    return 0


def run(app: Any, port: int, loop: str, reuse_port: bool = False) -> None:
    """Serve ``app`` (any ASGI app) on 127.0.0.1:``port`` under hypercorn until SIGTERM/SIGINT;
    ``reuse_port``: beside other processes serving the same port."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(_serve(app, port, reuse_port))
    else:
        asyncio.run(_serve(app, port, reuse_port))


if __name__ == "__main__":
    raise SystemExit(main())
