"""Keep-alive idle timeouts as timers (serve._IdleTimer) on a real hypercorn, in a thread: an
idle connection closes after ``keep_alive_timeout``, a request resets the clock, a connection
that sends nothing closes too, and a shutdown closes idle connections at once. Plus the guard
that this hypercorn is still laid out as the swap expects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.asyncio import tcp_server, worker_context

from asgi_router import serve
from asgi_router.serve import free_port

REQUEST = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Server:
    def __init__(self, keep_alive_s: float, asgi: Any = None, swap: Any = None) -> None:
        """``asgi``: the app served (this module's by default); ``swap``: the serve.use_*
        adaptation applied before serving (the idle timers by default)."""
        self.asgi = asgi or app
        self.swap = swap or serve.use_idle_timers
        self.port = free_port()
        cfg = serve._config([f"127.0.0.1:{self.port}"], 1)
        cfg.keep_alive_timeout = keep_alive_s
        cfg.graceful_timeout = 10
        self.cfg = cfg
        self.loop = uvloop.new_event_loop()  # as served
        self.stop = asyncio.Event()
        self.returned_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            assert self.swap()
            await hypercorn_serve(self.asgi, self.cfg, shutdown_trigger=self.stop.wait)  # type: ignore[arg-type]
            self.returned_at = time.monotonic()

        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("hypercorn did not start")

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError):  # a test may have stopped it: its loop is closed
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown()


def ask(s: socket.socket) -> None:
    s.sendall(REQUEST)
    got = b""
    while not got.endswith(b"ok"):
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got


def closed_after(s: socket.socket) -> float:
    """Seconds until the server closes the connection (recv returns b"")."""
    t0 = time.monotonic()
    assert s.recv(4096) == b""
    return time.monotonic() - t0


def test_this_hypercorn_takes_the_idle_timer() -> None:
    """A hypercorn laid out differently would silently keep its own task per request."""
    assert serve.use_idle_timers()
    assert getattr(tcp_server, "AsyncioSingleTask") is serve._IdleTimer  # noqa: B009 (not exported)
    assert serve.use_idle_timers()  # idempotent


def test_a_differently_laid_out_hypercorn_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_server, "AsyncioSingleTask", worker_context.AsyncioSingleTask)
    monkeypatch.delattr(tcp_server.TCPServer, "_initiate_server_close")
    assert not serve.use_idle_timers()
    assert getattr(tcp_server, "AsyncioSingleTask") is worker_context.AsyncioSingleTask  # noqa: B009


@pytest.mark.parametrize("server", [0.4], indirect=True)
def test_an_idle_connection_closes_after_the_keep_alive_timeout_and_a_request_resets_it(
    server: Server,
) -> None:
    with server.connect() as s:
        ask(s)
        time.sleep(0.25)
        ask(s)  # inside the timeout: the same connection serves, and its clock starts again
        answered = time.monotonic()
        # the timer, not hypercorn's task, is what watches it (a hypercorn that took its idle
        # task class from elsewhere would pass the behaviour checks and miss this)
        deadline = time.monotonic() + 0.2  # armed just after the response's last byte went out
        while 1 not in (armed := [len(i.armed) for i in list(serve._IdleConnections._by_context.values())]):
            assert time.monotonic() < deadline, armed
            time.sleep(0.005)
        closed_after(s)
        waited = time.monotonic() - answered
        assert 0.3 <= waited < 2.0, waited


@pytest.mark.parametrize("server", [0.4], indirect=True)
def test_a_connection_that_sends_nothing_closes_after_the_timeout(server: Server) -> None:
    with server.connect() as s:
        waited = closed_after(s)
        assert 0.3 <= waited < 2.0, waited


@pytest.mark.parametrize("server", [60.0], indirect=True)
def test_shutdown_closes_idle_connections_at_once(server: Server) -> None:
    with server.connect() as a, server.connect() as b:
        ask(a)
        ask(b)
        t0 = time.monotonic()
        server.loop.call_soon_threadsafe(server.stop.set)
        assert closed_after(a) < 2.0
        assert closed_after(b) < 2.0
        server.thread.join(10)
        assert server.returned_at is not None and server.returned_at - t0 < 3.0
