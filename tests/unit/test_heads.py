"""heads.serialise_head against h11's own Response: for any headers, the same head but for the
order of its lines (or the same error), and the connection left in the same state: the same
framing for the body that follows, the same keep-alive."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_router.heads import serialise_head

REQUESTS = {
    "get 1.1": b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
    "post 1.1": b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    "head 1.1": b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n",
    "close 1.1": b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    "get 1.0": b"GET / HTTP/1.0\r\n\r\n",
}

NAMES = [
    b"content-type",
    b"x-router-model",
    b"x-request-id",
    b"X-Mixed-Case",
    b"content-length",
    b"Content-Length",
    b"transfer-encoding",
    b"connection",
    b"date",
    b"bad name",
    b"",
    b"x:colon",
]
VALUES = [
    b"text/event-stream; charset=utf-8",
    b"no-cache",
    b"2",
    b"12",
    b"close",
    b"keep-alive",
    b"chunked",
    b"",
    b" padded",
    b"tab\tinside",
    b"line\r\nbreak",
    b"nul\x00",
    b"ctl\x01ok",
    "caf\u00e9".encode(),
]

header = st.tuples(st.sampled_from(NAMES), st.one_of(st.sampled_from(VALUES), st.binary(max_size=12)))


def connection(request: bytes) -> h11.Connection:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    while not isinstance(event, h11.EndOfMessage):
        event = conn.next_event()
    return conn


def outcome(conn: h11.Connection, serialise: object) -> tuple[object, ...]:
    """What a head and a 2-byte body do on ``conn``: the head's status line and its lines as a
    sorted list, the body's bytes, the states after; or the error raised."""
    try:
        head = serialise()  # type: ignore[operator]
    except h11.LocalProtocolError as e:
        return ("error", str(e), conn.our_state)
    assert head.endswith(b"\r\n\r\n")
    first, *lines = head[:-4].split(b"\r\n")
    lines.sort()
    try:
        body = (conn.send(h11.Data(data=b"ok")) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as e:
        body = f"error {e}".encode()
    return (first, lines, body, conn.our_state, conn.their_state)


def both(
    request: bytes, status: int, headers: list[tuple[bytes, bytes]]
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    ours, theirs = connection(request), connection(request)
    return (
        outcome(ours, lambda: serialise_head(ours, status, headers)),
        outcome(theirs, lambda: theirs.send(h11.Response(status_code=status, headers=headers))),
    )


@settings(max_examples=400, deadline=None)
@given(
    request=st.sampled_from(sorted(REQUESTS)),
    status=st.sampled_from([200, 204, 304, 404, 503]),
    headers=st.lists(header, max_size=6),
)
def test_the_same_head_and_state_as_h11s(
    request: str, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    ours, theirs = both(REQUESTS[request], status, headers)
    assert ours == theirs


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_a_stream_and_a_plain_answer_as_the_gateway_sends_them(request_name: str) -> None:
    common = [
        (b"x-router-model", b"gpt-4o-mini"),
        (b"x-request-id", b"0a959a7b5462e796f774228f"),
        (b"date", b"Wed, 02 Dec 2026 06:29:58 GMT"),
        (b"server", b"hypercorn-h11"),
    ]
    stream = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        *common,
    ]
    plain = [(b"content-type", b"application/json"), (b"content-length", b"2"), *common]
    for headers in (stream, plain):
        ours, theirs = both(REQUESTS[request_name], 200, headers)
        assert ours == theirs
        assert ours[0] == b"HTTP/1.1 200 "


def test_an_invalid_header_raises_as_h11_does() -> None:
    ours, theirs = both(REQUESTS["get 1.1"], 200, [(b"x-ok", b"fine"), (b"x-bad", b"a\r\nset-cookie: evil")])
    assert ours == theirs
    assert ours[0] == "error"
