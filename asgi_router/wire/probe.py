"""What routing needs to know about one upstream stream event, whatever the dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgi_router.wire.usage import Usage


class MalformedEvent(ValueError):
    """An upstream stream event that is not valid JSON (or not the dialect's shape)."""


@dataclass(slots=True)
class Probe:
    obj: Any = None  # the parsed JSON (None for a terminal marker like [DONE])
    content: bool = False  # carries content or a tool call: the stream's commit point
    finish: str | None = None  # the finish/stop reason, when this event carries it
    usage: Usage | None = None  # usage carried by this event (cumulative where the dialect is)
    done: bool = False  # the dialect's end marker: [DONE] / message_stop
    error: Any = None  # an error object sent inside the stream
    usage_only: bool = False  # an OpenAI usage chunk with choices == []
