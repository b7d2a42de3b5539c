"""Upstream I/O behind one small interface. Only this package imports the HTTP client."""

from asgi_router.upstream.base import Transport, UpstreamReply, UpstreamRequest, UpstreamStream
from asgi_router.upstream.pool import UpstreamPool

__all__ = ["Transport", "UpstreamPool", "UpstreamReply", "UpstreamRequest", "UpstreamStream"]
