"""Specs + presets → :class:`Graph`. Pure: no I/O, no environment; secrets come in resolved.

Resolves the references between fallbacks, races and models (members may be any public name,
nested freely), rejects cycles, duplicate names, unknown providers and names, empty groups and
bad values, and records every problem rather than stopping at the first. Each compiled value
gets a fingerprint over its resolved definition (secret *references*, never values; members by
their fingerprints), so runtime state carries over a reload exactly when a definition did not
change, and a change in a member changes every group above it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from asgi_router.config.presets import PRESETS, Preset
from asgi_router.config.schema import (
    ConfigSpec,
    FallbackSpec,
    KeySpec,
    ModelSpec,
    ProviderSpec,
    RaceSpec,
    ServerSpec,
    StateSpec,
)
from asgi_router.config.secrets import is_ref
from asgi_router.config.source import Problems, Where
from asgi_router.graph import (
    ORDERS,
    BudgetPeriod,
    ClientKey,
    Deployment,
    Fallback,
    Graph,
    Node,
    Order,
    Price,
    Provider,
    Quirks,
    Race,
    RetryReason,
    ServerSettings,
    StateSettings,
)
from asgi_router.types import DIALECTS, Dialect, Secret

BUDGET_PERIODS: Final[tuple[BudgetPeriod, ...]] = ("day", "month", "total")
RETRY_WORDS: Final = ("timeout", "connect", "context_length")
RESERVED_PARAMS: Final = ("model", "messages", "stream")
"""Request fields a deployment's ``params`` may not set: the router or the client owns them."""
CREDENTIAL_HEADERS: Final = ("authorization", "x-api-key")
STATE_SCHEMES: Final = ("redis://", "rediss://", "unix://")
DEFAULT_LISTEN: Final = "127.0.0.1:4000"
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def compile_specs(
    spec: ConfigSpec,
    secrets: Mapping[str, Secret],
    problems: Problems,
    *,
    base_dir: Path,
    presets: Mapping[str, Preset] = PRESETS,
    source: Path | None = None,
    generation: int = 0,
) -> Graph:
    """Build the graph. Check ``problems`` afterwards: with any recorded, the graph is partial."""
    providers: dict[str, Provider] = {}
    for ps in spec.providers:
        provider = compile_provider(ps, secrets, presets, problems)
        if provider is not None:
            providers[ps.name] = provider
    nodes = _Nodes(spec, providers, problems).build()
    public = {m.name for m in spec.models} | {f.name for f in spec.fallbacks} | {r.name for r in spec.races}
    public |= {name for section, name in spec.broken if section in ("models", "fallbacks", "races")}
    keys = compile_keys(spec.keys, secrets, public, problems)
    has_keys = bool(spec.keys) or any(section == "keys" for section, _ in spec.broken)
    return Graph(
        nodes=MappingProxyType(nodes),
        providers=MappingProxyType(providers),
        keys=MappingProxyType({k.name: k for k in keys}),
        keys_by_hash=MappingProxyType({k.sha256: k for k in keys}),
        server=compile_server(spec.server, secrets, has_keys, problems),
        state=compile_state(spec.state, base_dir, problems),
        source=source,
        generation=generation,
    )


# --- providers and deployments ---------------------------------------------------------------


def compile_provider(
    ps: ProviderSpec, secrets: Mapping[str, Secret], presets: Mapping[str, Preset], problems: Problems
) -> Provider | None:
    where: Where = ("providers", ps.name)
    before = len(problems)
    preset = presets.get(ps.preset) if ps.preset is not None else None
    if ps.preset is not None and preset is None:
        problems.add(where, "preset", f"unknown preset {ps.preset!r} (known: {', '.join(presets)})")
    if ps.api is not None and ps.api not in DIALECTS:
        problems.add(where, "api", 'must be "openai" or "anthropic"')
    api = ps.api or (preset.api if preset else None)
    base_url = ps.base_url or (preset.base_url if preset else None)
    if (api is None or base_url is None) and (ps.preset is None or preset is not None):
        missing = " and ".join(n for n, v in (("api", api), ("base_url", base_url)) if v is None)
        problems.add(where, "", f"needs a known `preset`, or both `api` and `base_url` ({missing} missing)")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        problems.add(where, "base_url", "must start with http:// or https://")
    api_keys = _api_keys(ps, preset, secrets, problems)
    _check_headers(ps.headers, where, problems)
    if len(problems) != before or api_keys is None or base_url is None:
        return None
    base = preset.quirks if preset else Quirks()
    quirks = replace(
        base,
        drop_params=base.drop_params | frozenset(ps.drop_params),
        anthropic_version=ps.anthropic_version or base.anthropic_version,
        default_max_tokens=ps.default_max_tokens or base.default_max_tokens,
    )
    dialect: Dialect = "anthropic" if api == "anthropic" else "openai"
    optional = {
        name: getattr(ps, name)
        for name in (
            "timeout_s",
            "connect_timeout_s",
            "first_token_timeout_s",
            "stream_idle_timeout_s",
            "retries",
            "circuit_failures",
            "circuit_open_s",
            "max_concurrency",
        )
        if getattr(ps, name) is not None
    }
    provider = Provider(
        name=ps.name,
        api=dialect,
        base_url=base_url.rstrip("/"),
        api_keys=api_keys,
        headers=MappingProxyType(dict(ps.headers)),
        quirks=quirks,
        preset=ps.preset,
        **optional,
    )
    return replace(provider, fingerprint=fingerprint(provider))


def _api_keys(
    ps: ProviderSpec, preset: Preset | None, secrets: Mapping[str, Secret], problems: Problems
) -> tuple[Secret, ...] | None:
    where: Where = ("providers", ps.name)
    if ps.api_keys is None:
        if preset is not None and preset.keyless:
            return ()
        hint = f' (e.g. ["env:{preset.key_env}"])' if preset is not None and preset.key_env else ""
        problems.add(
            where,
            "api_keys",
            f"is required: a list of env:NAME or file:PATH references{hint}, or [] for a keyless server",
        )
        return None
    seen: set[str] = set()
    for index, ref in enumerate(ps.api_keys, start=1):
        if ref in seen:  # name a literal (a secret) only by its position
            problems.add(where, "api_keys", f"{ref if is_ref(ref) else f'entry {index}'} is listed twice")
        seen.add(ref)
    keys = tuple(secrets[ref] for ref in ps.api_keys if ref in secrets)
    return keys if len(keys) == len(ps.api_keys) else None  # the others are reported already


def _check_headers(headers: Mapping[str, str], where: Where, problems: Problems) -> None:
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS:
            problems.add(where, ("headers", name), "credentials go in api_keys (as references), not headers")
        if not name or any(c in name for c in " :\r\n\t") or "\r" in value or "\n" in value:
            problems.add(where, ("headers", name), "is not a valid HTTP header")


def compile_deployment(
    ms: ModelSpec, providers: Mapping[str, Provider], declared: set[str] | None, problems: Problems
) -> Deployment | None:
    """``declared``: every provider name written in the file (None: unknowable, [providers] broken)."""
    where: Where = ("models", ms.name)
    before = len(problems)
    provider = providers.get(ms.provider) if ms.provider is not None else None
    if ms.provider is not None and provider is None and declared is not None and ms.provider not in declared:
        known = ", ".join(sorted(declared)) or "none defined"
        problems.add(where, "provider", f"unknown provider {ms.provider!r} (known: {known})")
    for name in RESERVED_PARAMS:
        if name in ms.params:
            problems.add(where, ("params", name), f"params may not set {name!r}")
    if ms.context_window and ms.max_output_tokens and ms.max_output_tokens > ms.context_window:
        problems.add(where, "max_output_tokens", "must not exceed context_window")
    if provider is None or ms.model is None or len(problems) != before:
        return None
    price = None if ms.price is None else Price(ms.price.input, ms.price.output, ms.price.cached_input)
    deployment = Deployment(
        name=ms.name,
        provider=provider,
        model=ms.model,
        price=price,
        context_window=ms.context_window,
        max_output_tokens=ms.max_output_tokens,
        rpm=ms.rpm,
        tpm=ms.tpm,
        params=MappingProxyType(dict(ms.params)),
    )
    return replace(deployment, fingerprint=fingerprint(deployment, provider=provider.fingerprint))


# --- the public namespace: models, fallbacks, races -----------------------------------------


class _Nodes:
    """Builds every public name once, depth first, so cycles and unknown names surface once."""

    def __init__(self, spec: ConfigSpec, providers: Mapping[str, Provider], problems: Problems) -> None:
        self.problems = problems
        self.built: dict[str, Node] = {}
        self.failed: set[str] = {name for section, name in spec.broken if section in _SECTIONS}
        self.groups: dict[str, FallbackSpec | RaceSpec] = {}
        self.settings: dict[str, dict[str, Any] | None] = {}
        declared_providers: set[str] | None = {p.name for p in spec.providers} | {
            name for section, name in spec.broken if section == "providers"
        }
        if ("providers", "") in spec.broken:
            declared_providers = None
        owner = {name: section for section, name in spec.broken if section in _SECTIONS}
        for section, entries in (
            ("models", spec.models),
            ("fallbacks", spec.fallbacks),
            ("races", spec.races),
        ):
            for entry in entries:
                if entry.name in owner:
                    self._duplicate(section, entry.name, owner[entry.name])
                    continue
                owner[entry.name] = section
                if isinstance(entry, ModelSpec):
                    node = compile_deployment(entry, providers, declared_providers, problems)
                    if node is None:
                        self.failed.add(entry.name)
                    else:
                        self.built[entry.name] = node
                else:
                    self.groups[entry.name] = entry
                    self.settings[entry.name] = _group_settings(entry, problems)
        self.order = list(owner)

    def _duplicate(self, section: str, name: str, first: str) -> None:
        self.problems.add(
            (section, name),
            "",
            f"the name {name!r} is already used by [{first}.{name}]: "
            "models, fallbacks and races share one namespace",
        )

    def build(self) -> dict[str, Node]:
        for name in self.groups:
            self._node(name, [])
        return {name: self.built[name] for name in self.order if name in self.built}

    def _node(self, name: str, stack: list[str]) -> Node | None:
        if name in self.built:
            return self.built[name]
        if name in self.failed:
            return None
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            group = self.groups[name]
            self.problems.add(_where(group), _members_key(group), "cycle: " + " → ".join(cycle))
            return None
        group = self.groups[name]
        stack.append(name)
        members: list[Node | None] = []
        for member in _members(group):
            if member in self.groups or member in self.built or member in self.failed:
                members.append(self._node(member, stack))
            else:
                self.problems.add(
                    _where(group),
                    _members_key(group),
                    f"unknown name {member!r} (not a model, fallback or race)",
                )
                members.append(None)
        stack.pop()
        settings = self.settings[name]
        resolved = [m for m in members if m is not None]
        if settings is None or len(resolved) != len(members) or name in self.failed:
            self.failed.add(name)
            return None
        node = _group_node(group, tuple(resolved), settings)
        self.built[name] = node
        return node


_SECTIONS: Final = ("models", "fallbacks", "races")


def _where(group: FallbackSpec | RaceSpec) -> Where:
    return ("fallbacks" if isinstance(group, FallbackSpec) else "races", group.name)


def _members_key(group: FallbackSpec | RaceSpec) -> str:
    return "chain" if isinstance(group, FallbackSpec) else "members"


def _members(group: FallbackSpec | RaceSpec) -> tuple[str, ...]:
    return (group.chain if isinstance(group, FallbackSpec) else group.members) or ()


def _group_settings(group: FallbackSpec | RaceSpec, problems: Problems) -> dict[str, Any] | None:
    """A group's own fields, checked (members aside); None when any is wrong or missing."""
    before = len(problems)
    members = _members(group)
    key = _members_key(group)
    if (group.chain if isinstance(group, FallbackSpec) else group.members) is None:
        return None  # missing, or not a list of strings: reported by the schema
    if not members:
        problems.add(_where(group), key, f"{key} is empty")
    if isinstance(group, RaceSpec):
        settings: dict[str, Any] = {"hedge_s": (group.hedge_ms or 0.0) / 1000.0}
    else:
        settings = _fallback_settings(group, problems)
    return settings if len(problems) == before else None


def _fallback_settings(fs: FallbackSpec, problems: Problems) -> dict[str, Any]:
    where: Where = ("fallbacks", fs.name)
    count = len(fs.chain or ())
    order: Order = "listed"
    if fs.order is not None:
        if fs.order in ORDERS:
            order = next(o for o in ORDERS if o == fs.order)
        else:
            problems.add(where, "order", f"must be one of {', '.join(ORDERS)}")
    weights = fs.weights
    if weights is not None:
        if order != "weighted":
            problems.add(where, "weights", 'only apply with order = "weighted"')
        elif len(weights) != count:
            problems.add(where, "weights", f"has {len(weights)} entries for {count} chain members")
        elif not any(w > 0 for w in weights):
            problems.add(where, "weights", "at least one weight must be > 0")
    elif order == "weighted":
        weights = (1.0,) * count
    settings: dict[str, Any] = {"order": order, "weights": weights}
    if fs.retry_on is not None:
        reasons: list[RetryReason] = []
        for entry in fs.retry_on:
            reason = _retry_reason(entry)
            if reason is None:
                problems.add(
                    where,
                    "retry_on",
                    f"{entry!r} is not an HTTP status 400-599 or one of {', '.join(RETRY_WORDS)}",
                )
            else:
                reasons.append(reason)
        settings["retry_on"] = frozenset(reasons)
    return settings


def _retry_reason(entry: int | str) -> RetryReason | None:
    if isinstance(entry, int):
        return entry if 400 <= entry <= 599 else None
    for word in RETRY_WORDS:
        if entry == word:
            return word
    return None


def _group_node(group: FallbackSpec | RaceSpec, members: tuple[Node, ...], settings: dict[str, Any]) -> Node:
    node: Fallback | Race
    if isinstance(group, FallbackSpec):
        node = Fallback(name=group.name, members=members, **settings)
    else:
        node = Race(name=group.name, members=members, **settings)
    return replace(node, fingerprint=fingerprint(node, members=[m.fingerprint for m in members]))


# --- client keys, server, state --------------------------------------------------------------


def compile_keys(
    specs: tuple[KeySpec, ...], secrets: Mapping[str, Secret], public: set[str], problems: Problems
) -> list[ClientKey]:
    out: list[ClientKey] = []
    owners: dict[str, str] = {}
    for ks in specs:
        key = _client_key(ks, secrets, public, problems)
        if key is None:
            continue
        if key.sha256 in owners:
            problems.add(("keys", ks.name), "", f"is the same key as [keys.{owners[key.sha256]}]")
            continue
        owners[key.sha256] = ks.name
        out.append(key)
    return out


def _client_key(
    ks: KeySpec, secrets: Mapping[str, Secret], public: set[str], problems: Problems
) -> ClientKey | None:
    where: Where = ("keys", ks.name)
    before = len(problems)
    digest: str | None = None
    if (ks.key_sha256 is None) == (ks.key is None):
        problems.add(where, "", 'needs exactly one of key_sha256 or key (a reference like "env:TEAM_KEY")')
    elif ks.key_sha256 is not None:
        if _SHA256_RE.fullmatch(ks.key_sha256):
            digest = ks.key_sha256.lower()
        else:
            problems.add(where, "key_sha256", "must be 64 hex digits (the SHA-256 of the key)")
    elif ks.key is not None and ks.key in secrets:
        digest = hashlib.sha256(secrets[ks.key].reveal().encode()).hexdigest()
    for name in ks.allow or ():
        if name not in public:
            problems.add(where, "allow", f"unknown name {name!r} (not a model, fallback or race)")
    period: BudgetPeriod = "month"
    if ks.budget_period is not None:
        if ks.budget_period in BUDGET_PERIODS:
            period = next(p for p in BUDGET_PERIODS if p == ks.budget_period)
        else:
            problems.add(where, "budget_period", f"must be one of {', '.join(BUDGET_PERIODS)}")
    if digest is None or len(problems) != before:
        return None
    key = ClientKey(
        name=ks.name,
        sha256=digest,
        allow=frozenset(ks.allow) if ks.allow is not None else None,
        rpm=ks.rpm,
        budget_usd=ks.budget_usd,
        budget_period=period,
    )
    return replace(key, fingerprint=fingerprint(key))


def parse_listen(value: str) -> tuple[str, int] | None:
    """``"127.0.0.1:4000"`` / ``"[::1]:4000"`` / ``"localhost:4000"`` → (host, port); None if malformed."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host:
            return None
    if not _PORT_RE.fullmatch(port_text) or int(port_text) > 65535:
        return None
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def compile_server(
    ss: ServerSpec, secrets: Mapping[str, Secret], has_keys: bool, problems: Problems
) -> ServerSettings:
    listen = parse_listen(ss.listen or DEFAULT_LISTEN)
    if listen is None:
        problems.add(("server",), "listen", "must be HOST:PORT, e.g. 127.0.0.1:4000 or [::1]:4000")
        listen = parse_listen(DEFAULT_LISTEN)
        assert listen is not None
    host, port = listen
    if not has_keys and not is_loopback(host):
        problems.add(
            ("server",),
            "listen",
            "with no [keys] table requests need no key, so the server listens only on loopback "
            "(127.0.0.1, ::1 or localhost): add a [keys.NAME] table to listen on another address",
        )
    optional = {
        name: getattr(ss, name) for name in ("max_body_bytes", "watch") if getattr(ss, name) is not None
    }
    admin_key = secrets.get(ss.admin_key) if ss.admin_key is not None else None
    return ServerSettings(host=host, port=port, admin_key=admin_key, **optional)


def compile_state(st: StateSpec, base_dir: Path, problems: Problems) -> StateSettings:
    backend = st.backend or "memory"
    if backend != "memory" and not backend.startswith(STATE_SCHEMES):
        problems.add(("state",), "backend", 'must be "memory" or a redis:// URL')
        backend = "memory"
    spend_log = base_dir / st.spend_log if st.spend_log is not None else None
    return StateSettings(backend=backend, spend_log=spend_log)


# --- fingerprints ------------------------------------------------------------------------------


def fingerprint(value: Any, **override: Any) -> str:
    """16 hex digits of SHA-256 over a value's resolved definition (its fields but ``fingerprint``,
    with ``override`` replacing fields such as a deployment's provider by its fingerprint)."""
    data = {f.name: getattr(value, f.name) for f in fields(value) if f.name != "fingerprint"}
    data.update(override)
    data["__kind__"] = type(value).__name__
    blob = orjson.dumps(data, default=_canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.ref  # the reference: rotating a key's value keeps the provider's state
    if isinstance(value, frozenset | set):
        return sorted(value, key=lambda v: (isinstance(v, str), v))
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")
