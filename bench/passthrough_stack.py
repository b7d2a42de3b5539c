"""The stack's own floor: a raw ASGI passthrough with aiohttp's client, on hypercorn and uvloop.

Issue 6's table calls this "raw ASGI + aiohttp client": the least any gateway built on
asgi-router's stack (hypercorn, uvloop, aiohttp for upstream calls) can add. It reads the body,
picks the upstream by ``model`` (orjson, a dict lookup), forwards the body as it came, returns a
plain answer whole (with its length) and relays a stream chunk by chunk as aiohttp reads it.
No routing, accounting, metrics or logging; one pooled ``ClientSession``.

Measured next to asgi-router it splits the added latency and memory into what the stack costs
and what the gateway adds. So that the memory figure compares the same policy, it does what
asgi-router does once idle after traffic: collects garbage and calls glibc's ``malloc_trim``.

    python bench/passthrough_stack.py --port 4101 \\
        --route bench-plain=http://127.0.0.1:8080/plain/v1 --route ...

``--processes 2`` serves the port from two processes (SO_REUSEPORT, as ``asgi-router serve
--workers 2`` does): the benchmark's ``--scaling`` measures what two processes of the bare stack
reach on the same harness, beside asgi-router's two workers.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from passthrough_floor import run
from procs import die_with_parent

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
FORWARD_HEADERS = {"content-type": "application/json"}
BAD = orjson.dumps({"error": {"message": "bad request or unknown model"}})
IDLE_CHECK_S = 5.0


class StackPassthrough:
    def __init__(self, routes: Mapping[str, str]) -> None:
        self.urls = {model: base + "/chat/completions" for model, base in routes.items()}
        self.session: aiohttp.ClientSession | None = None
        self.served = 0
        self._idle: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=4096, keepalive_timeout=15)
                self.session = aiohttp.ClientSession(connector=connector)
                self._idle = asyncio.get_running_loop().create_task(self._trim_when_idle())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._idle is not None:
                    self._idle.cancel()
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            parsed = orjson.loads(body)
            url = self.urls[parsed["model"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await _respond(send, 400, b"application/json", BAD)
            return
        assert self.session is not None
        self.served += 1
        async with self.session.post(url, data=body, headers=FORWARD_HEADERS) as resp:
            ctype = resp.headers.get("content-type", "application/json").encode()
            if not parsed.get("stream"):
                await _respond(send, resp.status, ctype, await resp.read())
                return
            await send(
                {"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", ctype)]}
            )
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _trim_when_idle(self) -> None:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
        seen = self.served
        busy = False
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            if self.served != seen:
                seen, busy = self.served, True
            elif busy:
                busy = False
                gc.collect()
                trim(0)


async def _respond(send: Send, status: int, ctype: bytes, body: bytes) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", action="append", default=[], help="MODEL=BASE_URL (repeatable)")
    parser.add_argument(
        "--processes", type=int, default=1, help="processes on the port (1; 0: one of several)"
    )
    args = parser.parse_args(argv)
    app = StackPassthrough(dict(r.split("=", 1) for r in args.route))
    if args.processes == 1:
        run(app, args.port, "uvloop")
        return 0
    # this process serves too; the others are its children (--processes 0), stopped with it
    argv = [sys.executable, __file__, "--port", str(args.port), "--processes", "0"]
    argv += [f"--route={r}" for r in args.route]
    others = [subprocess.Popen(argv, preexec_fn=die_with_parent) for _ in range(args.processes - 1)]
    try:
        run(app, args.port, "uvloop", reuse_port=True)
    finally:
        for p in others:
            p.send_signal(signal.SIGTERM)
        for p in others:
            p.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
