"""OpenAI embeddings to an OpenAI-speaking upstream: model id, params and renames only.

``encoding_format`` (base64 is the openai SDK's default) is passed through: the upstream
answers in the format asked for, and the SDK decodes either.
"""

from __future__ import annotations

from typing import Any

from asgi_router.graph import Deployment


class EmbeddingsPassthrough:
    __slots__ = ("upstream_body",)

    def __init__(self, body: dict[str, Any], deployment: Deployment) -> None:
        quirks = deployment.provider.quirks
        out = {**deployment.params, **body} if deployment.params else dict(body)
        out["model"] = deployment.model
        for name in quirks.drop_params.intersection(out):
            del out[name]
        for old, new in quirks.rename_params.items():
            if old in out:
                out.setdefault(new, out.pop(old))
        self.upstream_body = out

    def response(self, body: Any) -> Any:
        return body

    def stream(self) -> Any:
        raise TypeError("embeddings do not stream")

    def error(self, status: int, body: bytes) -> bytes:
        return body
