"""The SSE decoder against the WHATWG rules, and its invariance to how bytes are split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_router.wire.sse import SSEDecoder, SSEEvent, encode


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out += d.feed(c)
    return out + d.flush()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: {}\n\n", [SSEEvent(b"{}")]),
        (b"data:{}\n\n", [SSEEvent(b"{}")]),  # the space after the colon is optional
        (b"data:  x\n\n", [SSEEvent(b" x")]),  # only one space is removed
        (b"data: a\ndata: b\n\n", [SSEEvent(b"a\nb")]),  # multi-line data joined with LF
        (b"event: ping\ndata: {}\n\n", [SSEEvent(b"{}", "ping")]),
        (b": keep-alive\n\ndata: x\n\n", [SSEEvent(b"x")]),  # comments are skipped
        (b"data: x\r\n\r\n", [SSEEvent(b"x")]),  # CRLF
        (b"data: x\r\rdata: y\r\r", [SSEEvent(b"x"), SSEEvent(b"y")]),  # CR
        (b"id: 3\nretry: 10\ndata: x\n\n", [SSEEvent(b"x")]),
        (b"event: a\n\n", []),  # no data: no event
        (b"data: [DONE]\n\n", [SSEEvent(b"[DONE]")]),
        (b"data: last", [SSEEvent(b"last")]),  # flushed at the end of the body
        (
            b"event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\n",
            [SSEEvent(b"{}", "message_start"), SSEEvent(b"{}", "ping")],
        ),
    ],
)
def test_decoding(raw: bytes, expected: list[SSEEvent]) -> None:
    assert decode_all([raw]) == expected


def test_event_name_in_an_earlier_chunk_applies_once() -> None:
    d = SSEDecoder()
    assert d.feed(b"event: error\n") == []
    assert d.feed(b"data: {}\n\n") == [SSEEvent(b"{}", "error")]
    assert d.feed(b"data: {}\n\n") == [SSEEvent(b"{}", None)]


events = st.lists(
    st.tuples(
        st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        st.sampled_from([None, "message_start", "content_block_delta", "error"]),
    ),
    min_size=1,
    max_size=8,
)


@given(
    events,
    st.lists(st.integers(min_value=1, max_value=50), max_size=20),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_split_gives_the_same_events(evs, cuts, newline) -> None:
    wire = b"".join(encode(data, name) for data, name in evs).replace(b"\n", newline)
    chunks, pos = [], 0
    for c in cuts:
        chunks.append(wire[pos : pos + c])
        pos += c
    chunks.append(wire[pos:])
    assert decode_all(chunks) == [SSEEvent(data, name) for data, name in evs]


def test_encode_round_trips_multiline_data() -> None:
    assert decode_all([encode(b"a\nb\r\nc", "x")]) == [SSEEvent(b"a\nb\nc", "x")]
