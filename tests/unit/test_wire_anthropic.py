"""wire.anthropic: error bodies and types, event framing, stream probes, usage."""

from __future__ import annotations

import orjson
import pytest
from anthropic.types.shared import ErrorResponse

from asgi_router.wire import anthropic as wa
from asgi_router.wire.probe import MalformedEvent
from asgi_router.wire.sse import SSEDecoder, SSEEvent
from asgi_router.wire.usage import Usage


def ev(obj: object, name: str | None = None) -> SSEEvent:
    if name is None and isinstance(obj, dict):
        name = obj.get("type")
    return SSEEvent(orjson.dumps(obj), name)


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_type_per_contract(status: int, type_: str) -> None:
    assert wa.error_type(status) == type_
    body = orjson.loads(wa.error_body("boom", wa.error_type(status)))
    assert body == {"type": "error", "error": {"type": type_, "message": "boom"}}
    ErrorResponse.model_validate(body)  # every type we send is one the SDK knows


def test_known_error_types_are_the_sdks() -> None:
    for type_ in wa.KNOWN_ERROR_TYPES:
        ErrorResponse.model_validate({"type": "error", "error": {"type": type_, "message": "x"}})


def test_stream_error_event_is_an_sse_error_event() -> None:
    raw = wa.stream_error_event("Overloaded", "overloaded_error")
    (event,) = SSEDecoder().feed(raw)
    assert event.event == "error"
    assert orjson.loads(event.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_event_framing() -> None:
    raw = wa.event("ping", {"type": "ping"})
    assert raw == b'event: ping\ndata: {"type":"ping"}\n\n'
    (decoded,) = SSEDecoder().feed(wa.MESSAGE_STOP)
    assert decoded == SSEEvent(b'{"type":"message_stop"}', "message_stop")


def test_probe_message_start_usage_adds_cache_to_input() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
    }
    p = wa.probe_event(ev({"type": "message_start", "message": {"id": "msg_1", "usage": usage}}))
    assert p.usage == Usage(input=115, output=1, cached_input=100, cache_write=5)
    assert not p.content and p.finish is None and not p.done


@pytest.mark.parametrize(
    ("obj", "content"),
    [
        ({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, False),
        (
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            },
            True,
        ),
        (
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            False,
        ),
        ({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}, True),
        ({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}}, False),
        (
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            True,
        ),
        (
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
            False,
        ),
        ({"type": "content_block_stop", "index": 0}, False),
        ({"type": "ping"}, False),
        ({"type": "some_future_event", "x": 1}, False),
    ],
)
def test_probe_content(obj: dict[str, object], content: bool) -> None:
    p = wa.probe_event(ev(obj))
    assert p.content is content
    assert p.obj == obj and p.error is None and not p.done


def test_probe_message_delta_finish_and_usage() -> None:
    obj = {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 40},
    }
    p = wa.probe_event(ev(obj))
    assert p.finish == "tool_use"
    assert p.usage == Usage(output=40)


def test_probe_message_stop_and_error() -> None:
    assert wa.probe_event(ev({"type": "message_stop"})).done
    err = {"type": "overloaded_error", "message": "Overloaded"}
    p = wa.probe_event(ev({"type": "error", "error": err}))
    assert p.error == err and not p.done


def test_probe_uses_event_name_when_type_missing() -> None:
    assert wa.probe_event(SSEEvent(b"{}", "message_stop")).done


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"'])
def test_probe_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvent):
        wa.probe_event(SSEEvent(data, "content_block_delta"))


def test_merge_usage_is_cumulative_not_additive() -> None:
    start = Usage(input=110, output=1, cached_input=100)
    delta_without_input = Usage(output=40)
    delta_with_input = Usage(input=110, output=41, cached_input=100)
    merged = wa.merge_usage(wa.merge_usage(start, delta_without_input), delta_with_input)
    assert merged == Usage(input=110, output=41, cached_input=100)
    assert wa.merge_usage(None, start) is start
    assert wa.merge_usage(start, None) is start


def test_response_usage() -> None:
    body = {"usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 2}}
    assert wa.response_usage(body) == Usage(input=5, output=4, cache_write=2)
    assert wa.response_usage([]) is None
    assert wa.response_usage({}) is None


def test_usage_dict_excludes_cache_from_input() -> None:
    assert wa.usage_dict(Usage(input=160, output=20, cached_input=100, cache_write=10)) == {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 100,
    }
