"""The transport seam: what routing needs from an HTTP client, and nothing more.

A :class:`Transport` sends one request and either returns the whole answer or opens a
stream of raw bytes. It raises only :class:`~asgi_router.errors.UpstreamError`; every client
library exception is mapped in the transport module. Swapping aiohttp for httpx (or anything
else) means writing one more module like ``aiohttp_transport.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

# Idle pooled connections close after this (aiohttp's own default): long enough to carry steady
# traffic without new handshakes, short enough that a burst's connections do not stay for a
# minute (each idle one holds ~30 KB; memory.Releaser hands that back once they are gone).
KEEPALIVE_S = 15.0


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_s: float
    connect_timeout_s: float
    idle_timeout_s: float | None = None  # streams: longest silence between reads


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    body: bytes
    content_type: str
    retry_after_s: float | None = None


class UpstreamStream(Protocol):
    status: int
    content_type: str
    retry_after_s: float | None
    complete: bool
    """Set by the reader when the stream's end marker was seen: the connection may be reused."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Raises UpstreamError(stream_error | timeout)."""
        ...

    async def read(self) -> bytes:
        """The whole body (used for error answers to a stream request)."""
        ...


class Transport(Protocol):
    async def send(self, req: UpstreamRequest) -> UpstreamReply: ...

    def stream(self, req: UpstreamRequest) -> AbstractAsyncContextManager[UpstreamStream]:
        """Open a stream; leaving the context closes the connection unless fully read."""
        ...

    async def aclose(self) -> None: ...


def parse_retry_after(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Seconds from ``retry-after-ms`` (preferred) or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(ra).timestamp() - now_wall, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
