"""Per-provider clients built once per graph: URLs, auth headers and a pooled transport.

Everything a request needs from here is precomputed when the graph is compiled (header dicts
per key, URLs), so an attempt only picks a key index and sends bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from asgi_router.graph import Graph, Provider
from asgi_router.upstream.aiohttp_transport import AiohttpTransport
from asgi_router.upstream.base import Transport, UpstreamRequest

TransportFactory = Callable[[Provider], Transport]

RETIRE_GRACE_S = 60.0  # beyond the provider's own timeout, before a replaced transport closes


def default_transport(provider: Provider) -> Transport:
    return AiohttpTransport(max_connections=provider.max_concurrency)


@dataclass(frozen=True, slots=True)
class ProviderClient:
    provider: Provider
    transport: Transport
    key_headers: tuple[Mapping[str, str], ...]  # one complete header set per api key (or one, keyless)
    base_url: str

    def request(
        self, path: str, body: bytes, key_index: int, *, stream: bool, passed: Mapping[str, str] | None = None
    ) -> UpstreamRequest:
        """``passed``: client headers that go through to an upstream of the client's dialect
        (``anthropic-beta``); the precomputed header set is copied only then."""
        p = self.provider
        headers = self.key_headers[key_index]
        return UpstreamRequest(
            url=self.base_url + path,
            body=body,
            headers={**headers, **passed} if passed else headers,
            timeout_s=p.timeout_s,
            connect_timeout_s=p.connect_timeout_s,
            idle_timeout_s=p.stream_idle_timeout_s if stream else None,
        )


def _headers(provider: Provider) -> tuple[Mapping[str, str], ...]:
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if provider.api == "anthropic":
        base["anthropic-version"] = provider.quirks.anthropic_version
    base.update(provider.headers)
    if not provider.api_keys:
        return (base,)
    out = []
    for secret in provider.api_keys:
        h = dict(base)
        if provider.api == "anthropic":
            h["x-api-key"] = secret.reveal()
        else:
            h["authorization"] = "Bearer " + secret.reveal()
        out.append(h)
    return tuple(out)


class UpstreamPool:
    """Provider clients of the current graph, reusing transports of unchanged providers."""

    def __init__(self, factory: TransportFactory = default_transport) -> None:
        self._factory = factory
        self._by_fp: dict[str, ProviderClient] = {}
        self._retiring: dict[asyncio.Task[None], Transport] = {}

    def build(self, graph: Graph) -> dict[str, ProviderClient]:
        """Clients for ``graph``'s providers (by name). Call on every compile, then :meth:`commit`."""
        clients: dict[str, ProviderClient] = {}
        for name, provider in graph.providers.items():
            old = self._by_fp.get(provider.fingerprint)
            if old is not None:
                # the pooled transport stays; the headers are rebuilt, since a key's value may have
                # changed behind the same reference (a rotated env var or key file)
                clients[name] = ProviderClient(provider, old.transport, _headers(provider), old.base_url)
            else:
                clients[name] = ProviderClient(
                    provider, self._factory(provider), _headers(provider), provider.base_url.rstrip("/")
                )
        return clients

    def commit(self, clients: Mapping[str, ProviderClient]) -> None:
        """``clients`` now serve; transports no longer used close after in-flight work ends."""
        new = {c.provider.fingerprint: c for c in clients.values()}
        keep = {id(c.transport) for c in new.values()}
        for fp, old in self._by_fp.items():
            if fp not in new and id(old.transport) not in keep:
                self._retire(old)
        self._by_fp = new

    def discard(self, clients: Mapping[str, ProviderClient]) -> None:
        """A compile that will not serve (a failed reload): close what it opened."""
        live = {id(c.transport) for c in self._by_fp.values()}
        for c in clients.values():
            if id(c.transport) not in live:
                self._retire(c, delay=0.0)

    def _retire(self, client: ProviderClient, delay: float | None = None) -> None:
        # a request that started on the old graph may still be walking a chain on it: give it
        # several attempts' time (and one arriving even later fails over as a connect error)
        p = client.provider
        wait = p.timeout_s * (p.retries + 2) + RETIRE_GRACE_S if delay is None else delay

        async def later() -> None:
            await asyncio.sleep(wait)
            await client.transport.aclose()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring[task] = client.transport
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def aclose(self) -> None:
        seen: set[int] = set()
        for task, transport in list(self._retiring.items()):
            task.cancel()
            seen.add(id(transport))
            await transport.aclose()
        for c in self._by_fp.values():
            if id(c.transport) not in seen:
                seen.add(id(c.transport))
                await c.transport.aclose()
        self._by_fp = {}
