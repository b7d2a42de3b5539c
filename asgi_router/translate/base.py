"""The translator interface: one object per upstream attempt, built from the client's body.

A :class:`Translation` never mutates the client's body (it is built again for every attempt
and every member). It holds whatever state must travel from request to response (for example
tool-call ids rewritten for a provider and mapped back).
"""

from __future__ import annotations

from typing import Any, Protocol

from asgi_router.graph import Deployment
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent


class StreamTranslator(Protocol):
    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        """One upstream event (already parsed into ``probe``) → encoded client events."""
        ...

    def close(self) -> list[bytes]:
        """The upstream finished (a finish reason was seen): the client's terminal events
        (``[DONE]`` or ``message_delta``/``message_stop``), whether or not the upstream sent
        its own end marker."""
        ...


class Translation(Protocol):
    upstream_body: dict[str, Any]
    """What is sent upstream for this attempt (a new dict: the client's body is untouched)."""

    def response(self, body: Any) -> Any:
        """The upstream's non-streamed JSON answer → the client's dialect."""
        ...

    def stream(self) -> StreamTranslator:
        """A fresh stream state machine for this attempt."""
        ...

    def error(self, status: int, body: bytes) -> bytes:
        """An upstream error body (a 4xx passed back to the client) → the client's dialect."""
        ...


class TranslatorPair(Protocol):
    def __call__(self, body: dict[str, Any], deployment: Deployment, *, stream: bool) -> Translation:
        """Begin one attempt. Raises ``BadRequest`` for a request this upstream cannot take."""
        ...
