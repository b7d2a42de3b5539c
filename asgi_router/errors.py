"""The exception tree. Rendering to a dialect's JSON body happens in ``web/render.py``.

RouterError                    an answer the gateway gives the client itself
 ├── BadRequest                400 invalid_request_error (malformed JSON, missing field)
 ├── Unauthorized              401 invalid_api_key
 ├── BudgetExceeded            402 budget_exceeded (final: x-should-retry false)
 ├── Forbidden                 403 model_not_allowed / admin
 ├── NotFound                  404 (unknown route) and ModelNotFound (404 model_not_found)
 ├── MethodNotAllowed          405
 ├── PayloadTooLarge           413
 ├── UnsupportedMediaType      415
 ├── RateLimited               429 with retry_after_s (client key over its rpm)
 ├── ServiceUnavailable        503 (draining, no config)
 ├── AllFailed                 429 / 502 / 504 after every routed attempt failed
 └── UpstreamClientError       an upstream 4xx the client caused, passed back as it is
UpstreamError                  raised by ``upstream/`` only; kind is one of UPSTREAM_KINDS
ConfigError / ConfigErrors     a bad router.toml, every problem listed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UpstreamKind = Literal["status", "timeout", "connect", "stream_error", "cancelled"]


class RouterError(Exception):
    status: int = 500
    code: str | None = None
    type: str = "api_error"
    should_retry: bool | None = None  # None: let the SDK decide from the status

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}


class BadRequest(RouterError):
    status, type = 400, "invalid_request_error"


class Unauthorized(RouterError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class BudgetExceeded(RouterError):
    status, type, code, should_retry = 402, "billing_error", "budget_exceeded", False


class Forbidden(RouterError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class NotFound(RouterError):
    status, type, code = 404, "not_found_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(RouterError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class PayloadTooLarge(RouterError):
    status, type, code, should_retry = 413, "request_too_large", "request_too_large", False


class UnsupportedMediaType(RouterError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class RateLimited(RouterError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(RouterError):
    status, type, code = 503, "overloaded_error", "unavailable"


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    member: str
    status: str  # an HTTP status as text, or timeout / connect_error / stream_error / cancelled
    detail: str = ""


class AllFailed(RouterError):
    """Every member of the route failed: 429 if all were rate limited, 504 if all timed out, else 502."""

    def __init__(
        self, route: str, attempts: list[AttemptSummary], *, status: int, retry_after_s: float | None
    ) -> None:
        listing = ", ".join(f"{a.member}: {a.status}" for a in attempts) or "no member available"
        super().__init__(f"all upstreams failed for {route!r} ({listing})")
        self.attempts = attempts
        self.status = status
        self.retry_after_s = retry_after_s
        self.type, self.code = {
            429: ("rate_limit_error", "rate_limit_exceeded"),
            504: ("timeout_error", "upstream_timeout"),
        }.get(status, ("api_error", "upstream_error"))


class UpstreamClientError(RouterError):
    """An upstream 4xx caused by the client's request: its status and body go back as they are
    (translated into the client's dialect when the dialects differ)."""

    def __init__(self, status: int, body: bytes, upstream_dialect: str, content_type: str) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.upstream_dialect = upstream_dialect
        self.content_type = content_type


class UpstreamError(Exception):
    """One failed upstream attempt. ``kind``: status (an HTTP error status), timeout, connect
    (refused, reset or closed before the response headers), stream_error (a broken stream),
    cancelled (a race loser)."""

    def __init__(
        self,
        kind: UpstreamKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: bytes = b"",
        content_type: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body
        self.content_type = content_type

    @property
    def label(self) -> str:
        """The ``status`` label used in metrics and error listings."""
        if self.kind == "status":
            return str(self.status)
        return {"connect": "connect_error"}.get(self.kind, self.kind)


@dataclass(frozen=True, slots=True)
class ConfigError:
    file: str
    table: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        place = ".".join(p for p in (self.table, self.key) if p)
        return f"{where}: [{place}] {self.message}" if place else f"{where}: {self.message}"


class ConfigErrors(Exception):
    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
