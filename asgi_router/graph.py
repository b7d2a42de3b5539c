"""The compiled routing graph: frozen values built once per config, read by every request.

Nothing here does I/O or holds state. ``config.compile`` builds a :class:`Graph`; a request
reads ``holder.current`` once and keeps that object until it ends, so a reload never changes
the graph under a request in flight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from asgi_router.types import Dialect, Secret

EMPTY: Mapping[str, Any] = MappingProxyType({})

Order = Literal["listed", "cheapest", "fastest", "weighted"]
ORDERS: tuple[Order, ...] = ("listed", "cheapest", "fastest", "weighted")
RetryReason: TypeAlias = int | Literal["timeout", "connect", "context_length"]
DEFAULT_RETRY_ON: frozenset[RetryReason] = frozenset(
    {408, 409, 429, 500, 502, 503, 504, 529, "timeout", "connect", "context_length"}
)
BudgetPeriod = Literal["day", "month", "total"]
StreamUsage = Literal["include_usage", "always"]
ToolCallIds = Literal["any", "alnum9"]


@dataclass(frozen=True, slots=True)
class Quirks:
    """What a provider accepts and how it behaves, as data (filled from ``config/presets.py``).

    Translators and the passthrough read these fields; no code asks which provider it is.
    """

    drop_params: frozenset[str] = frozenset()
    """Request fields removed before sending (the preset's and the user's ``drop_params``)."""
    rename_params: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    """Request fields renamed before sending, e.g. ``seed`` → ``random_seed`` for Mistral."""
    stream_usage: StreamUsage = "include_usage"
    """include_usage: ask with ``stream_options.include_usage``; always: the provider sends usage
    on its own and rejects ``stream_options``."""
    developer_role: bool = True
    """False: ``developer`` messages are sent as ``system``."""
    message_name: bool = True
    """False: ``messages[].name`` is removed (Groq answers 400 to it)."""
    max_n: int | None = None
    """The largest ``n`` the provider takes (None: no limit)."""
    tool_call_ids: ToolCallIds = "any"
    """alnum9: tool call ids must be exactly 9 characters [a-zA-Z0-9] (Mistral)."""
    fix_message_order: bool = False
    """True: repair role order the provider rejects (Mistral: no user right after tool)."""
    stream_tool_finish: bool = False
    """True: the provider ends streamed tool calls with ``stop``; report ``tool_calls``."""
    thought_signatures: bool = False
    """True: tool calls carry a signature (``extra_content.google.thought_signature``) that
    must come back when they are replayed (Gemini 3). Anthropic clients keep it in the
    ``tool_use`` id; it is restored for this provider and removed for any other."""
    context_length_markers: tuple[str, ...] = (
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "prompt is too long",
        "too many tokens",
        "input is too long",
    )
    """Lower-case substrings of a 400 body that mean the prompt is too long for the model."""
    quota_markers: tuple[str, ...] = ("insufficient_quota", "enforced_spend_limit", "quota")
    """Lower-case substrings of a 429 body that mean quota exhausted, not a passing limit."""
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = 4096
    """Anthropic upstreams require max_tokens; used when the client gave none."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    api: Dialect
    base_url: str  # no trailing slash
    api_keys: tuple[Secret, ...]
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    first_token_timeout_s: float | None = None
    stream_idle_timeout_s: float | None = None
    retries: int = 0
    circuit_failures: int = 5
    circuit_open_s: float = 10.0
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    max_concurrency: int = 64
    quirks: Quirks = field(default_factory=Quirks)
    preset: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model at one provider: the leaf of the graph."""

    name: str
    provider: Provider
    model: str
    price: Price | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    fingerprint: str = ""

    @property
    def kind(self) -> str:
        return "model"


@dataclass(frozen=True, slots=True)
class Fallback:
    name: str
    members: tuple[Node, ...]
    order: Order = "listed"
    weights: tuple[float, ...] | None = None
    retry_on: frozenset[RetryReason] = DEFAULT_RETRY_ON
    fingerprint: str = ""

    @property
    def kind(self) -> str:
        return "fallback"


@dataclass(frozen=True, slots=True)
class Race:
    name: str
    members: tuple[Node, ...]
    hedge_s: float = 0.0
    fingerprint: str = ""

    @property
    def kind(self) -> str:
        return "race"


Node: TypeAlias = Deployment | Fallback | Race


def leaves(node: Node) -> Iterator[Deployment]:
    """Every deployment reachable from ``node`` (depth first, repeats kept)."""
    if isinstance(node, Deployment):
        yield node
    else:
        for member in node.members:
            yield from leaves(member)


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    sha256: str  # lower-case hex digest of the key
    allow: frozenset[str] | None = None  # None: every public name
    rpm: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 4000
    admin_key: Secret | None = None
    max_body_bytes: int = 4_000_000
    watch: bool = True


@dataclass(frozen=True, slots=True)
class StateSettings:
    backend: str = "memory"  # "memory" or a redis:// URL
    spend_log: Path | None = None


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: Mapping[str, Node]  # public name → node: the one namespace of models, fallbacks, races
    providers: Mapping[str, Provider]
    keys: Mapping[str, ClientKey] = field(default_factory=lambda: EMPTY)  # by table name
    keys_by_hash: Mapping[str, ClientKey] = field(default_factory=lambda: EMPTY)  # by sha256 hex
    server: ServerSettings = field(default_factory=ServerSettings)
    state: StateSettings = field(default_factory=StateSettings)
    source: Path | None = None
    generation: int = 0

    def resolve(self, name: str) -> Node | None:
        return self.nodes.get(name)

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(n for n in self.nodes.values() if isinstance(n, Deployment))

    @property
    def races(self) -> tuple[Race, ...]:
        return tuple(n for n in self.nodes.values() if isinstance(n, Race))

    @property
    def open_access(self) -> bool:
        """No [keys] table: requests need no key (and the server listens on loopback only)."""
        return not self.keys
