"""Cancel a request's work when its client goes away.

Hypercorn (ASGI spec 2.1) does not cancel the application when a client disconnects; it puts
``http.disconnect`` on the request's receive channel. Once the body has been read, a small
task waits on that channel and cancels the request task, so the upstream call (or every member
of a race) stops at once and its connection closes instead of running on for nobody. A stream
whose last byte went out (``Exchange.answered``) is not cancelled: what is left, reading the
upstream body's end so the connection can be pooled, is the gateway's own work.

The watcher starts only once a request has run for ``WATCH_AFTER_S``: a request answered
sooner costs one timer instead of a task (the common case under load), and LLM calls, which
take seconds, are still cancelled within that delay of the client leaving.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from asgi_router.web.exchange import Exchange

WATCH_AFTER_S = 0.05


class CancelOnDisconnect:
    __slots__ = ("_ex", "_loop", "_task", "_timer", "_watcher", "gone")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._watcher: asyncio.Task[None] | None = None
        self.gone = False

    async def __aenter__(self) -> CancelOnDisconnect:
        loop = self._loop = asyncio.get_running_loop()  # once: each lookup costs a getpid()
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._timer = loop.call_later(WATCH_AFTER_S, self._start)
        return self

    def _start(self) -> None:
        self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        receive = self._ex.receive
        while (await receive())["type"] != "http.disconnect":
            pass
        if self._ex.answered:  # it has its whole answer: closing the upstream is ours to finish
            return
        self.gone = True
        self._task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if kind is asyncio.CancelledError and self.gone:
            self._task.uncancel()
            ex = self._ex
            ex.status = ex.status or 499  # 499: the client closed the request before any answer
            ex.outcome = "cancelled"
            return True  # the client left: nothing more to do or say
        return False
