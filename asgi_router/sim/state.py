"""The simulator's memory: scripts per model, the request log, counts.

Shared between the server's event loop thread and the test thread, so every method takes
one lock and hands out copies. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from typing import Any

from .steps import PLAIN, Script, Step

ANY_MODEL = "*"

Record = dict[str, Any]
"""One request: ``seq, model, path, method, headers, body, dialect, stream, step, outcome,
status, client_left, started, ended``. ``outcome`` is ``"pending"`` until the request ends."""

PENDING = "pending"


class SimState:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queues: dict[str, deque[Step]] = {}
        self._defaults: dict[str, Step | None] = {}
        self._records: list[Record] = []
        self._seen: set[str] = set()
        self._seq = 0
        self._in_flight = 0

    # scripts

    def set_script(self, script: Script) -> None:
        """Replace ``script.model``'s queue and default step."""
        with self._lock:
            self._queues[script.model] = deque(script.steps)
            self._defaults[script.model] = script.default

    def next_step(self, model: str | None) -> Step:
        with self._lock:
            if model is not None:
                self._seen.add(model)
            key = model if model in self._queues else ANY_MODEL
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
            return self._defaults.get(key) or PLAIN

    def reset(self) -> None:
        """Forget scripts, the log and the counts (requests in flight still finish)."""
        with self._lock:
            self._queues.clear()
            self._defaults.clear()
            self._records.clear()
            self._seen.clear()

    def models(self) -> list[str]:
        with self._lock:
            return sorted((set(self._queues) | self._seen) - {ANY_MODEL})

    # log

    def begin(self, fields: dict[str, Any]) -> Record:
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            record: Record = {
                "seq": self._seq,
                **fields,
                "outcome": PENDING,
                "status": None,
                "client_left": False,
                "started": time.monotonic(),
                "ended": None,
            }
            self._records.append(record)
            return record

    def update(self, record: Record, **fields: Any) -> None:
        with self._lock:
            record.update(fields)

    def finish(self, record: Record, outcome: str, *, client_left: bool = False) -> None:
        """Set the final outcome once; later calls are ignored."""
        with self._lock:
            if record["ended"] is not None:
                return
            record["outcome"] = outcome
            record["client_left"] = client_left
            record["ended"] = time.monotonic()
            self._in_flight -= 1
            self._lock.notify_all()

    def log(self, model: str | None = None) -> list[Record]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._records if model is None or r["model"] == model]

    def stats(self) -> dict[str, Any]:
        """``{"in_flight": n, "models": {model: {"requests": n, "outcomes": {outcome: n}}}}``."""
        with self._lock:
            models: dict[str, Any] = {}
            for r in self._records:
                entry = models.setdefault(str(r["model"]), {"requests": 0, "outcomes": {}})
                entry["requests"] += 1
                entry["outcomes"][r["outcome"]] = entry["outcomes"].get(r["outcome"], 0) + 1
            return {"in_flight": self._in_flight, "models": models}

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)
