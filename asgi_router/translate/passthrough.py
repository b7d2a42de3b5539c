"""OpenAI client → OpenAI-speaking upstream: the body is forwarded with a minimal edit.

The edit: the deployment's model id, its default params under the client's, the provider's
dropped and renamed params, and ``stream_options.include_usage`` so usage is always known
(the usage-only chunk is then hidden from a client that did not ask for it). Stream events
are relayed as they came, never rebuilt.
"""

from __future__ import annotations

from typing import Any

from asgi_router.graph import Deployment
from asgi_router.wire.openai import STREAM_DONE
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent


class PassthroughStream:
    __slots__ = ("_hide_usage_chunk",)

    def __init__(self, hide_usage_chunk: bool) -> None:
        self._hide_usage_chunk = hide_usage_chunk

    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        if probe.done or (probe.usage_only and self._hide_usage_chunk):
            return []
        return [b"data: " + ev.data + b"\n\n"]

    def close(self) -> list[bytes]:
        return [STREAM_DONE]


class OpenAIPassthrough:
    __slots__ = ("_client_wants_usage", "upstream_body")

    def __init__(self, body: dict[str, Any], deployment: Deployment, *, stream: bool) -> None:
        quirks = deployment.provider.quirks
        out = dict(deployment.params) if deployment.params else {}
        out.update(body)
        out["model"] = deployment.model
        opts = body.get("stream_options")
        self._client_wants_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        if stream:
            if quirks.stream_usage == "include_usage":
                out["stream_options"] = {**opts, "include_usage": True} if isinstance(opts, dict) else {
                    "include_usage": True
                }
            else:
                out.pop("stream_options", None)
        for name in quirks.drop_params.intersection(out):
            del out[name]
        for old, new in quirks.rename_params.items():
            if old in out:
                out.setdefault(new, out[old])
                del out[old]
        self.upstream_body = out

    def response(self, body: Any) -> Any:
        return body

    def stream(self) -> PassthroughStream:
        return PassthroughStream(hide_usage_chunk=not self._client_wants_usage)

    def error(self, status: int, body: bytes) -> bytes:
        return body
