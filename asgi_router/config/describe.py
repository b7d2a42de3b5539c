"""The compiled graph for people: a tree for ``asgi-router check``, a dict for GET /admin/config.

Neither output ever holds a secret: secrets show as their reference (``env:NAME``), client key
hashes are cut to 8 hex digits, header values and URL passwords are masked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asgi_router.graph import (
    DEFAULT_RETRY_ON,
    ClientKey,
    Deployment,
    Fallback,
    Graph,
    Node,
    Price,
    Provider,
    Race,
    RetryReason,
)
from asgi_router.types import Secret

MASK = "***"
HASH_SHOWN = 8


def describe(graph: Graph) -> str:
    """A readable tree of the whole graph: every public name, its kind and members."""
    lines = [f"config {graph.source or '(text)'} (generation {graph.generation})"]
    s = graph.server
    admin = s.admin_key.ref if s.admin_key else "none (admin from loopback only)"
    lines.append(
        f"server   listen {_host_port(s.host, s.port)}  admin_key {admin}  "
        f"max_body_bytes {s.max_body_bytes}  watch {'on' if s.watch else 'off'}"
    )
    spend = str(graph.state.spend_log) if graph.state.spend_log else "off"
    backend = mask_url(graph.state.backend)
    if graph.state.backend != "memory":
        backend += " (not available in this version: memory, per worker, is used)"
    lines.append(f"state    backend {backend}  spend_log {spend}")
    lines.append("providers")
    for provider in graph.providers.values():
        lines.extend("  " + line for line in _provider_lines(provider))
    lines.append("routes")
    by_kind = sorted(graph.nodes.values(), key=lambda n: ("fallback", "race", "model").index(n.kind))
    for node in by_kind:
        lines.append("  " + _label(node))
        if not isinstance(node, Deployment):
            _tree(node.members, "  ", lines)
    if graph.keys:
        lines.append("keys")
        lines.extend("  " + _key_line(key) for key in graph.keys.values())
    else:
        lines.append("keys     none: requests need no key (loopback only)")
    return "\n".join(lines) + "\n"


def _tree(members: tuple[Node, ...], prefix: str, lines: list[str]) -> None:
    for index, member in enumerate(members):
        last = index == len(members) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_label(member)}")
        if not isinstance(member, Deployment):
            _tree(member.members, prefix + ("   " if last else "│  "), lines)


def _label(node: Node) -> str:
    if isinstance(node, Deployment):
        parts = [f"{node.name}  model  {node.provider.name} / {node.model}", _price(node.price)]
        if node.context_window:
            parts.append(f"context {node.context_window}")
        if node.max_output_tokens:
            parts.append(f"max_output {node.max_output_tokens}")
        parts.extend(f"{n} {v}" for n, v in (("rpm", node.rpm), ("tpm", node.tpm)) if v)
        if node.params:
            parts.append("params " + ", ".join(sorted(node.params)))
        return "  ".join(p for p in parts if p)
    if isinstance(node, Race):
        return f"{node.name}  race  hedge {node.hedge_s * 1000:g} ms"
    parts = [f"{node.name}  fallback  order {node.order}"]
    if node.weights is not None:
        parts.append("weights " + " ".join(f"{w:g}" for w in node.weights))
    if node.retry_on != DEFAULT_RETRY_ON:
        parts.append("retry_on " + (" ".join(str(r) for r in _sorted_reasons(node.retry_on)) or "nothing"))
    return "  ".join(parts)


def _provider_lines(p: Provider) -> list[str]:
    keys = ", ".join(k.ref for k in p.api_keys) or "none (keyless)"
    head = f"{p.name}  {p.api}  {p.base_url}  keys {keys}"
    if p.preset:
        head += f"  preset {p.preset}"
    detail = [f"timeout {p.timeout_s:g}s", f"connect {p.connect_timeout_s:g}s"]
    if p.first_token_timeout_s is not None:
        detail.append(f"first_token {p.first_token_timeout_s:g}s")
    if p.stream_idle_timeout_s is not None:
        detail.append(f"stream_idle {p.stream_idle_timeout_s:g}s")
    detail += [f"retries {p.retries}", f"max_concurrency {p.max_concurrency}"]
    if p.headers:
        detail.append("headers " + ", ".join(sorted(p.headers)))
    lines = [head, "    " + "  ".join(detail)]
    q = p.quirks
    if q.drop_params:
        lines.append("    drops " + ", ".join(sorted(q.drop_params)))
    if q.rename_params:
        lines.append("    renames " + ", ".join(f"{a}→{b}" for a, b in sorted(q.rename_params.items())))
    return lines


def _key_line(key: ClientKey) -> str:
    parts = [f"{key.name}  sha256 {key.sha256[:HASH_SHOWN]}…"]
    parts.append("allow " + (", ".join(sorted(key.allow)) if key.allow is not None else "all"))
    if key.rpm:
        parts.append(f"rpm {key.rpm}")
    if key.budget_usd is not None:
        parts.append(f"budget ${key.budget_usd:.2f}/{key.budget_period}")
    return "  ".join(parts)


def _price(price: Price | None) -> str:
    if price is None:
        return "no price"
    text = f"${_usd(price.input)} in / ${_usd(price.output)} out"
    if price.cached_input is not None:
        text += f" / ${_usd(price.cached_input)} cached"
    return text + " per Mtok"


def _usd(value: float) -> str:
    text = f"{value:.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.partition(".")[2]))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sorted_reasons(reasons: frozenset[RetryReason]) -> list[RetryReason]:
    return sorted(reasons, key=lambda r: (isinstance(r, str), r))


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (``redis://:pw@host`` → ``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


# --- JSON for GET /admin/config --------------------------------------------------------------


def redacted(graph: Graph) -> dict[str, Any]:
    """The whole compiled graph as JSON-able data, secrets as references only."""
    server = _jsonable(graph.server)
    return {
        "generation": graph.generation,
        "source": str(graph.source) if graph.source else None,
        "server": server,
        "state": {
            "backend": mask_url(graph.state.backend),
            "spend_log": str(graph.state.spend_log) if graph.state.spend_log else None,
        },
        "providers": {name: _provider(p) for name, p in graph.providers.items()},
        "nodes": {name: _node(n) for name, n in graph.nodes.items()},
        "keys": {name: _key(k) for name, k in graph.keys.items()},
        "open_access": graph.open_access,
    }


def _provider(p: Provider) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(p)
    out["headers"] = dict.fromkeys(p.headers, MASK)
    return out


def _node(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": node.kind, "fingerprint": node.fingerprint}
    if isinstance(node, Deployment):
        out |= {
            "provider": node.provider.name,
            "model": node.model,
            "price": _jsonable(node.price),
            "context_window": node.context_window,
            "max_output_tokens": node.max_output_tokens,
            "rpm": node.rpm,
            "tpm": node.tpm,
            "params": _jsonable(node.params),
        }
    elif isinstance(node, Fallback):
        out |= {
            "members": [m.name for m in node.members],
            "order": node.order,
            "weights": list(node.weights) if node.weights is not None else None,
            "retry_on": _sorted_reasons(node.retry_on),
        }
    else:
        out |= {"members": [m.name for m in node.members], "hedge_ms": node.hedge_s * 1000}
    return out


def _key(key: ClientKey) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(key)
    out["sha256"] = key.sha256[:HASH_SHOWN]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.ref
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted((_jsonable(v) for v in value), key=lambda v: (isinstance(v, str), v))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value
