"""An App served in process, with a transport that answers at once: for unit tests that go
through the whole request path (routing, accounting, the answer) without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from asgi_router.upstream.base import UpstreamReply, UpstreamRequest
from asgi_router.upstream.pool import UpstreamPool
from asgi_router.web.app import App, Settings

CONFIG = (
    '[server]\nwatch = false\n[providers.p]\napi = "openai"\nbase_url = "http://127.0.0.1:9"\n'
    'api_keys = []\n[models.m]\nprovider = "p"\nmodel = "m"\nprice = { input = 1, output = 1 }\n'
)


PLAIN = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM = (
    [_chunk({"role": "assistant", "content": ""})]
    + [_chunk({"content": f"t{i} "}) for i in range(20)]
    + [
        _chunk({}, "stop"),
        _chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 20}),
        b"data: [DONE]\n\n",
    ]
)


class _Stream:
    status: int = 200
    content_type: str = "text/event-stream"
    retry_after_s: float | None = None
    complete: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for c in STREAM:
            yield c

    async def read(self) -> bytes:
        return b""


class FastTransport:
    async def send(self, req: UpstreamRequest) -> UpstreamReply:
        return UpstreamReply(200, PLAIN, "application/json", None)

    @asynccontextmanager
    async def stream(self, req: UpstreamRequest) -> AsyncIterator[_Stream]:
        yield _Stream()

    async def aclose(self) -> None:
        pass


def app_for(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> App:
    """``CONFIG`` (one model ``m``, $1 per million tokens each way) plus ``extra`` TOML."""
    cfg = tmp_path / "router.toml"
    cfg.write_text(CONFIG + extra)
    return App(Settings(cfg, env), pool=UpstreamPool(lambda p: FastTransport()))


async def request(
    app: App,
    body: bytes,
    *,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[dict[str, Any]]:
    """One request through ``app``: the ASGI messages it sent back."""
    sent: list[dict[str, Any]] = []
    msgs = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if msgs:
            return msgs.pop()
        await asyncio.sleep(3600)  # the disconnect watcher waits here; cancelled at the end
        return {"type": "http.disconnect"}

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "client": ("127.0.0.1", 1),
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "state": {},
    }
    await app(scope, receive, send)
    await asyncio.sleep(0)  # the fake transport never yields; real I/O does, letting cancelled watchers end
    return sent
