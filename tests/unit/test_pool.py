"""Provider clients across reloads: transports are reused, headers follow the key's value."""

from __future__ import annotations

import asyncio
from typing import Any

from asgi_router.graph import Graph, Provider
from asgi_router.types import Secret
from asgi_router.upstream.pool import UpstreamPool


class _T:
    closed = False

    async def aclose(self) -> None:
        self.closed = True

    async def send(self, req: Any) -> Any:
        raise AssertionError

    def stream(self, req: Any) -> Any:
        raise AssertionError


def _graph(value: str) -> Graph:
    p = Provider("p", "openai", "http://x", (Secret("env:K", value),), fingerprint="fp-p")
    return Graph(nodes={}, providers={"p": p})


def test_a_rotated_key_value_is_used_after_a_reload_on_the_same_transport():
    async def main() -> None:
        made: list[_T] = []
        pool = UpstreamPool(lambda p: made.append(_T()) or made[-1])  # type: ignore[func-returns-value]
        first = pool.build(_graph("old-key-value"))
        pool.commit(first)
        second = pool.build(_graph("new-key-value"))  # same reference, same fingerprint
        pool.commit(second)
        assert second["p"].transport is first["p"].transport and len(made) == 1
        assert second["p"].key_headers[0]["authorization"] == "Bearer new-key-value"
        await pool.aclose()

    asyncio.run(main())
