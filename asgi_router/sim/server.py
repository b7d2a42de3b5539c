"""``SimServer``: one simulated provider on loopback, on its own event loop in a daemon thread.

Usable from synchronous and asynchronous tests alike, since it never touches the caller's
loop::

    with SimServer() as sim:
        sim.script("gpt-x", [{"status": 429, "retry_after": 1}, {"ttft_s": 0.2}])
        client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
        ...
        sim.wait_idle()
        assert [r["outcome"] for r in sim.log("gpt-x")] == ["error_status", "ok"]
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import SimRuntime, start_site, stop_site
from .state import Record, SimState
from .steps import Step, parse_script

START_TIMEOUT_S = 10.0


def url_host(host: str) -> str:
    """The host to put in a URL for a listening address (wildcards → loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class SimServer:
    """A simulated OpenAI + Anthropic provider. ``start()`` returns once it accepts connections.

    ``script``, ``reset``, ``log``, ``stats`` and ``wait_idle`` act on the in-process state
    directly and are thread-safe; the same operations exist over HTTP under ``/_sim/``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.state = SimState()
        self._rt = SimRuntime(self.state)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # lifecycle

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``: the Anthropic SDK's ``base_url``."""
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: the OpenAI SDK's ``base_url``."""
        return self.root_url + "/v1"

    def start(self) -> SimServer:
        if self._thread is not None:
            raise RuntimeError("SimServer already started")
        self._ready.clear()
        self._error = None
        self._rt.stopping = False
        self._thread = threading.Thread(target=self._run, name="asgi-router-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("SimServer did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"SimServer failed to start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving: requests in flight are dropped (outcome ``server_stopped``). Idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start(); a thread must not die noisily
            self._error = exc
        finally:
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                self._loop = None
                loop.close()
                self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runner: web.AppRunner | None = None
        try:
            runner, self.port = await start_site(self._rt, self.host, self.port)
            self._ready.set()
            await self._stop.wait()
        finally:
            if runner is not None:
                await stop_site(self._rt, runner)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # state

    def script(
        self,
        model: str,
        steps: list[dict[str, Any] | Step] | None = None,
        default: dict[str, Any] | Step | None = None,
    ) -> None:
        """Replace ``model``'s script: each request consumes the next step, then ``default``."""
        self.state.set_script(parse_script({"model": model, "steps": list(steps or []), "default": default}))

    def reset(self) -> None:
        self.state.reset()

    def log(self, model: str | None = None) -> list[Record]:
        return self.state.log(model)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight (so every outcome is final); False on timeout."""
        return self.state.wait_idle(timeout)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
