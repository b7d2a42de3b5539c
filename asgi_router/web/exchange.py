"""One HTTP exchange on the raw ASGI interface: reading the body under a limit, sending
answers, and the fields of the canonical log line."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import orjson

from asgi_router.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from asgi_router.types import Dialect
from asgi_router.web.render import JSON_CT, Headers

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def _new_request_id() -> str:
    """96 random bits as 24 hex digits. An id, not a secret: Python's generator (seeded from
    the OS at start, and again in a forked child) instead of os.urandom, a getrandom() system
    call per request."""
    return f"{random.getrandbits(96):024x}"


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Exchange:
    __slots__ = (
        "answered",
        "attempts",
        "cost_usd",
        "deployment",
        "dialect",
        "ended",
        "headers",
        "key",
        "outcome",
        "overhead_s",
        "provider",
        "receive",
        "request_id",
        "route",
        "route_metrics",
        "scope",
        "send",
        "started",
        "status",
        "stream",
        "tokens_in",
        "tokens_out",
        "ttft_s",
        "usage_estimated",
    )

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any, dialect: Dialect) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = time.perf_counter()
        self.ended = 0.0  # set when the request is done; its log line is written later
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        rid = self.headers.get(b"x-request-id")
        self.request_id = rid.decode() if rid and _REQUEST_ID.match(rid) else _new_request_id()
        self.dialect: Dialect = dialect
        self.route = "-"
        self.route_metrics: Any = None  # the route's metric children, kept across a reload
        self.status = 0
        self.outcome: str | None = None  # the metric status when not the HTTP one: stream_error, cancelled
        self.answered = False  # a stream's last byte went to the server: a hang-up now cancels nothing
        self.stream = False
        self.key: str | None = None
        self.deployment: str | None = None
        self.provider: str | None = None
        self.attempts = 0
        self.cost_usd: float | None = None
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.ttft_s: float | None = None
        self.overhead_s: float | None = None
        self.usage_estimated = False

    async def read_json(self, limit: int) -> tuple[bytes, dict[str, Any]]:
        """The body as a JSON object, refused early when over ``limit`` bytes."""
        ct = self.headers.get(b"content-type")
        if ct is not None and not ct.split(b";", 1)[0].strip().lower().endswith(b"json"):
            raise UnsupportedMediaType(f"content-type must be application/json, not {ct.decode('latin-1')!r}")
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone
            part = msg.get("body", b"")
            size += len(part)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(part)
            if not msg.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return raw, body

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        headers.append((b"x-request-id", self.request_id.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def respond_json(self, status: int, obj: Any, extra: Headers | None = None) -> None:
        await self.respond(status, [JSON_CT, *(extra or [])], orjson.dumps(obj))

    def log_fields(self) -> dict[str, Any]:
        f: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.scope.get("method"),
            "path": self.scope.get("path"),
            "route": self.route,
            "status": self.status,
            "stream": self.stream,
            "key": self.key,
            "duration_ms": round(((self.ended or time.perf_counter()) - self.started) * 1000, 3),
        }
        if self.outcome is not None:
            f["outcome"] = self.outcome
        if self.attempts:
            f["attempts"] = self.attempts
        if self.deployment is not None:
            f.update(
                model=self.deployment,
                provider=self.provider,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                cost_usd=self.cost_usd,
            )
        if self.ttft_s is not None:
            f["ttft_ms"] = round(self.ttft_s * 1000, 3)
        if self.overhead_s is not None:
            f["overhead_ms"] = round(self.overhead_s * 1000, 3)
        if self.usage_estimated:
            f["usage_estimated"] = True
        return f
