"""OpenAI embeddings to an OpenAI-speaking upstream: model id, params and renames only.

``encoding_format`` (base64 is the openai SDK's default) is passed through: the upstream
answers in the format asked for, and the SDK decodes either. The provider's dropped and
renamed params apply as for chat, each logged at debug like there.
"""

from __future__ import annotations

from typing import Any

from asgi_router.graph import Deployment
from asgi_router.translate.common import apply_param_quirks, merge_params


class EmbeddingsPassthrough:
    __slots__ = ("upstream_body",)

    def __init__(self, body: dict[str, Any], deployment: Deployment) -> None:
        out = dict(body)
        merge_params(out, deployment)
        out["model"] = deployment.model
        apply_param_quirks(out, deployment.provider.quirks, deployment.provider.name)
        self.upstream_body = out

    def response(self, body: Any) -> Any:
        return body

    def stream(self) -> Any:
        raise TypeError("embeddings do not stream")

    def error(self, status: int, body: bytes) -> bytes:
        return body
