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


def _line_by_line(chunk: bytes) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for i in range(len(chunk)):
        out += d.feed(chunk[i : i + 1])  # one byte at a time never ends in a blank line
    return out


payloads = st.binary(min_size=0, max_size=30)


@given(
    st.lists(payloads, min_size=1, max_size=8),
    st.sampled_from([None, "message_start", "content_block_delta"]),
    st.sampled_from(["", "\r", ": ping\n\n", "id: 1\n", "data: x\n", "event: e\n"]),
)
def test_whole_chunk_fast_path_agrees_with_the_line_decoder(datas, name, extra) -> None:
    """A chunk of whole events (the shape upstreams write) is split at the event boundaries
    in one go; any other shape (CR, comments, other fields, multi-line data, mixed names) must
    fall back and still give what the line-by-line decoder gives."""
    head = f"event: {name}\n".encode() if name else b""
    wire = b"".join(head + b"data: " + d + b"\n\n" for d in datas)
    at = len(wire) // 2
    wire = wire[:at] + extra.encode() + wire[at:]
    whole = SSEDecoder().feed(wire)
    assert whole == _line_by_line(wire)


def test_the_fast_path_takes_the_usual_shapes() -> None:
    from asgi_router.wire.sse import _whole_events

    assert _whole_events(b"data: {}\n\ndata: [DONE]\n\n") == [SSEEvent(b"{}"), SSEEvent(b"[DONE]")]
    assert _whole_events(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n") == [
        SSEEvent(b"1", "a"),
        SSEEvent(b"2", "b"),
    ]
    assert _whole_events(b"data: a\ndata: b\n\n") is None  # multi-line data: the general decoder
