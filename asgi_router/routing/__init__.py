"""Routing: member order, chains, races, cooldowns and the stream commit point."""

from asgi_router.routing.execute import Executor
from asgi_router.routing.outcome import Attempt, Call, Failed, Result
from asgi_router.routing.stream import CommittedStream

__all__ = ["Attempt", "Call", "CommittedStream", "Executor", "Failed", "Result"]
