"""Client keys: ``Authorization: Bearer KEY`` or ``x-api-key: KEY``; sha256 compared in
constant time; allow lists. The key itself is never stored, logged or forwarded."""

from __future__ import annotations

import hashlib
import hmac

from asgi_router.errors import Forbidden, Unauthorized
from asgi_router.graph import ClientKey, Graph


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.strip() if key else None


def authenticate(graph: Graph, headers: dict[bytes, bytes]) -> ClientKey | None:
    """The caller's key, or None with open access (no [keys] table). Raises Unauthorized."""
    if graph.open_access:
        return None
    raw = presented_key(headers)
    if not raw:
        raise Unauthorized("missing API key: send Authorization: Bearer <key> or x-api-key")
    digest = hashlib.sha256(raw).hexdigest()
    found = graph.keys_by_hash.get(digest)
    # the lookup finds the candidate; the comparison that decides is constant time
    if found is None or not hmac.compare_digest(found.sha256, digest):
        raise Unauthorized("invalid API key")
    return found


def check_allowed(key: ClientKey | None, name: str) -> None:
    if key is not None and key.allow is not None and name not in key.allow:
        raise Forbidden(f"key {key.name!r} may not use {name!r}")
