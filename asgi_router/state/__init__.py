"""Runtime state shared by requests: cooldowns, circuits, latencies, limits, spend."""

from asgi_router.state.memory import MemoryStore
from asgi_router.state.store import CircuitState, StateStore

__all__ = ["CircuitState", "MemoryStore", "StateStore"]
