"""Anthropic client → Anthropic upstream: the body is forwarded with a minimal edit.

The edit: the deployment's model id, its default params under the client's, ``max_tokens``
defaulted when absent (the deployment's ``max_output_tokens``, else
``quirks.default_max_tokens``) and capped at ``max_output_tokens`` (litellm sends 128000 for
model names it does not know), then the provider's dropped and renamed params. Everything
else (content blocks, ``"type": "custom"`` tools, cache_control, thinking) goes as it came.
Stream events are relayed unchanged; ``message_stop`` is written by ``close()`` so a stream
that finished without it still ends properly for the client.
"""

from __future__ import annotations

from typing import Any

from asgi_router.graph import Deployment
from asgi_router.translate.common import anthropic_max_tokens, apply_param_quirks, merge_params
from asgi_router.wire.anthropic import MESSAGE_STOP
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent, encode


class AnthropicRelay:
    """Relays upstream events as they came, with their ``event:`` lines."""

    __slots__ = ("_closed",)

    def __init__(self) -> None:
        self._closed = False

    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        if probe.done or self._closed:
            return []  # message_stop comes from close()
        name = ev.event
        if name is None and isinstance(probe.obj, dict) and isinstance(probe.obj.get("type"), str):
            name = probe.obj["type"]
        return [encode(ev.data, name)]

    def close(self) -> list[bytes]:
        if self._closed:
            return []
        self._closed = True
        return [MESSAGE_STOP]


class AnthropicPassthrough:
    __slots__ = ("upstream_body",)

    def __init__(self, body: dict[str, Any], deployment: Deployment, *, stream: bool) -> None:
        out = dict(body)
        merge_params(out, deployment)
        out["model"] = deployment.model
        anthropic_max_tokens(out, deployment)
        apply_param_quirks(out, deployment.provider.quirks, deployment.provider.name)
        self.upstream_body = out

    def response(self, body: Any) -> Any:
        return body

    def stream(self) -> AnthropicRelay:
        return AnthropicRelay()

    def error(self, status: int, body: bytes) -> bytes:
        return body
