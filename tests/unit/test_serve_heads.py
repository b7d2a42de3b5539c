"""A response's head written with its first body bytes (serve.use_coalesced_heads) on a real
hypercorn, in a thread: one write for a whole plain answer; a head whose body does not follow
at once still goes out at once; streamed chunks keep their own writes; a bodiless answer and
keep-alive work as before. Plus the guard that this hypercorn is laid out as the swap expects."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import hypercorn.protocol
import pytest
from hypercorn.asyncio import tcp_server
from hypercorn.events import RawData

from asgi_router import serve
from tests.unit.test_serve_idle import Server

GET = b"GET /%s HTTP/1.1\r\nhost: test\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/plain":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/late":  # the start, then a wait before the body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late"})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
    else:  # no body at all
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write hypercorn makes to a connection, in order."""
    seen: list[bytes] = []
    original = tcp_server.TCPServer.protocol_send

    async def spy(self: Any, event: Any) -> None:
        if isinstance(event, RawData) and event.data:
            seen.append(event.data)
        await original(self, event)

    monkeypatch.setattr(tcp_server.TCPServer, "protocol_send", spy)
    return seen


@pytest.fixture
def server(writes: list[bytes]) -> Iterator[Server]:
    srv = Server(30.0, app, serve.use_coalesced_heads)
    srv.start()
    yield srv
    srv.shutdown()


def read_until(conn: socket.socket, marker: bytes, timeout_s: float = 5.0) -> tuple[bytes, float]:
    """Bytes received until ``marker`` appears, and when (monotonic)."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while marker not in got:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = conn.recv(65536)
        assert chunk, f"closed before {marker!r}: {got!r}"
        got += chunk
    return got, time.monotonic()


def test_a_plain_answer_is_one_write(server: Server, writes: list[bytes]) -> None:
    with server.connect() as conn:
        conn.sendall(GET % b"plain")
        got, _ = read_until(conn, b"\r\n\r\nok")
        assert got.startswith(b"HTTP/1.1 200")
        conn.sendall(GET % b"plain")  # kept alive: the next answer the same way
        read_until(conn, b"\r\n\r\nok")
    answers = [w for w in writes if w.startswith(b"HTTP/1.1")]
    assert len(answers) == 2
    assert all(w.endswith(b"\r\n\r\nok") for w in answers), writes


def timed(server: Server, path: bytes, first: bytes, then: bytes) -> tuple[bytes, float, float]:
    """GET ``path``: the bytes received when ``first`` had arrived, and the seconds after the
    request when ``first`` and when ``then`` arrived."""
    with server.connect() as conn:
        started = time.monotonic()
        conn.sendall(GET % path)
        head, first_at = read_until(conn, first)
        if then not in head:
            _, then_at = read_until(conn, then)
        else:
            then_at = first_at
    return head, first_at - started, then_at - started


def test_a_head_whose_body_waits_goes_out_at_once(server: Server, writes: list[bytes]) -> None:
    head, head_s, body_s = timed(server, b"late", b"\r\n\r\n", b"late")
    assert head.startswith(b"HTTP/1.1 200") and b"late" not in head
    assert head_s < 0.3 <= body_s
    assert writes[0].endswith(b"\r\n\r\n") and writes[1] == b"late"


def test_streamed_chunks_keep_their_own_writes(server: Server, writes: list[bytes]) -> None:
    _, first_s, end_s = timed(server, b"stream", b"first", b"0\r\n\r\n")
    assert first_s < 0.2 <= end_s
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"5\r\nfirst\r\n")
    assert b"second" not in writes[0]


def test_an_answer_without_a_body_and_keep_alive(server: Server, writes: list[bytes]) -> None:
    with server.connect() as conn:
        conn.sendall(GET % b"empty")
        got, _ = read_until(conn, b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 204")
        conn.sendall(GET % b"plain")
        read_until(conn, b"\r\n\r\nok")


def test_a_differently_laid_out_hypercorn_keeps_its_own_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other:
        pass

    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", Other)
    assert not serve.use_coalesced_heads()
    assert getattr(hypercorn.protocol, "H11Protocol") is Other  # noqa: B009 (not exported)
