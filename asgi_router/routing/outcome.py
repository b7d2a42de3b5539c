"""Records of what routing did: attempts, the per-request call context, and failure summaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgi_router.errors import AllFailed, AttemptSummary, RouterError
from asgi_router.graph import ClientKey, Deployment, RetryReason
from asgi_router.translate.base import Translation
from asgi_router.types import Dialect
from asgi_router.upstream.base import UpstreamReply
from asgi_router.wire.usage import Usage

SKIPPED = ("cooldown", "overloaded", "circuit_open", "rpm_limited", "refused")  # no upstream request was made


@dataclass(slots=True)
class Attempt:
    deployment: str
    provider: str
    status: str  # "200", "429", "timeout", "connect_error", "stream_error", "cancelled", or a SKIPPED reason
    reason: RetryReason | None = None  # what retry_on is matched against (None for success/skip)
    retry_after_s: float | None = None  # 429s and cooldown skips: when this member is usable again
    elapsed_s: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.status in SKIPPED


@dataclass(slots=True)
class Loser:
    race: str
    deployment: Deployment
    output_tokens: int = 0


@dataclass(slots=True)
class Call:
    """One client request as routing sees it. ``build`` turns the client's body into an upstream
    request for a deployment (a fresh translation each time: nothing is shared across attempts)."""

    route: str
    build: Callable[[Deployment], Translation]
    paths: Mapping[Dialect, str]
    stream: bool
    key: ClientKey | None = None
    est_input_tokens: int = 0
    est_output_tokens: int = 256
    passed_headers: Mapping[Dialect, Mapping[str, str]] = field(default_factory=dict)
    """Client headers forwarded to upstreams of one dialect (anthropic-beta to Anthropic)."""
    attempts: list[Attempt] = field(default_factory=list)
    losers: list[Loser] = field(default_factory=list)
    upstream_wait_s: float = 0.0

    @property
    def upstream_attempts(self) -> int:
        return sum(1 for a in self.attempts if not a.skipped)


@dataclass(slots=True)
class Result:
    deployment: Deployment
    translation: Translation
    reply: UpstreamReply
    body: Any  # the parsed upstream JSON
    usage: Usage | None


class Failed(Exception):
    """A member (deployment, chain or race) failed; the attempts are on the Call.

    ``client_error``: decided, goes back to the client as it is. ``candidate``: an upstream
    4xx (or a request the upstream cannot take) that goes back to the client unless a chain's
    ``retry_on`` moves past it. ``reason``: what ``retry_on`` is matched against.
    ``skipped``: no attempt was spent (cooling, limited, circuit open).
    """

    def __init__(
        self,
        *,
        client_error: RouterError | None = None,
        candidate: RouterError | None = None,
        reason: Any = None,
        skipped: bool = False,
        refusal: RouterError | None = None,
    ) -> None:
        super().__init__("member failed")
        self.client_error = client_error
        self.candidate = candidate
        self.reason = reason
        self.skipped = skipped
        self.refusal = refusal  # a member that cannot take this request at all (e.g. its dialect)


def reason_label(reason: RetryReason | None, status: str) -> str:
    """The ``reason`` label of router_fallbacks_total."""
    if isinstance(reason, int):
        return "429" if reason == 429 else ("5xx" if reason >= 500 else str(reason))
    if reason == "connect":
        return "connect_error"
    if reason is None and status:
        return status
    return reason or status


def all_failed(route: str, attempts: list[Attempt]) -> AllFailed:
    """429 when every attempt was rate limited (or skipped while cooling), with the shortest
    remaining cooldown; 504 when every attempt timed out; else 502."""
    summaries = [AttemptSummary(a.deployment, a.status) for a in attempts]
    attempts = [a for a in attempts if a.status != "refused"]
    if attempts and all(a.status in ("429", "cooldown", "rpm_limited") for a in attempts):
        waits = [a.retry_after_s for a in attempts if a.retry_after_s is not None]
        wait = min(waits) if waits else 1.0
        return AllFailed(route, summaries, status=429, retry_after_s=wait)
    real = [a for a in attempts if not a.skipped]
    if real and all(a.status == "timeout" for a in real):
        return AllFailed(route, summaries, status=504, retry_after_s=None)
    return AllFailed(route, summaries, status=502, retry_after_s=None)
