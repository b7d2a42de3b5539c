"""translate.common: the reason maps against the wire reference's table, ids, images,
arguments, usage, param rules and the defensive error-body reader; plus stream edge cases of
both translating state machines that no transcript shows."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_router.translate import common
from asgi_router.translate.anthropic_to_openai import AnthropicToOpenAI
from asgi_router.translate.openai_to_anthropic import OpenAIToAnthropic
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.sse import SSEDecoder, SSEEvent
from asgi_router.wire.usage import Usage
from tests.unit.translate_support import check_anthropic_stream, deployment

# wire-formats.md §3.7, both directions, row by row
STOP_TO_FINISH = [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("max_tokens", "length"),
    ("tool_use", "tool_calls"),
    ("pause_turn", "stop"),
    ("refusal", "content_filter"),
    ("model_context_window_exceeded", "length"),
    (None, "stop"),
    ("some_new_reason", "stop"),
]
FINISH_TO_STOP = [
    ("stop", "end_turn"),
    ("length", "max_tokens"),
    ("tool_calls", "tool_use"),
    ("function_call", "tool_use"),
    ("content_filter", "refusal"),
    ("model_length", "max_tokens"),
    (None, "end_turn"),
    ("error", "end_turn"),
]


@pytest.mark.parametrize(("stop", "finish"), STOP_TO_FINISH)
def test_stop_reason_to_finish_reason(stop: str | None, finish: str) -> None:
    assert common.finish_reason(stop) == finish


@pytest.mark.parametrize(("finish", "stop"), FINISH_TO_STOP)
def test_finish_reason_to_stop_reason(finish: str | None, stop: str) -> None:
    assert common.stop_reason(finish) == stop


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("toolu_01A09q90qw90lq917835lq9", "toolu_01A09q90qw90lq917835lq9"),
        ("call_abc-DEF_123", "call_abc-DEF_123"),
        ("functions.get_weather:0", "functions_get_weather_0"),
        ("call 1/ü", "call_1__"),
    ],
)
def test_anthropic_id_sanitised(raw: str, expected: str) -> None:
    assert common.anthropic_id(raw, "toolu_", "seed") == expected


def test_anthropic_id_minted_when_missing() -> None:
    minted = common.anthropic_id(None, "toolu_", "seed")
    assert minted.startswith("toolu_") and len(minted) == 16
    assert minted == common.anthropic_id("", "toolu_", "seed") != common.anthropic_id(None, "toolu_", "other")


def test_message_ids() -> None:
    assert common.chatcmpl_id("msg_01XF") == "chatcmpl-01XF"
    assert common.chatcmpl_id(None) == "chatcmpl-anthropic"
    assert common.msg_id("chatcmpl-B9M", "s") == "msg_B9M"
    assert common.msg_id("gen-1.2:3", "s") == "msg_gen-1_2_3"
    assert common.msg_id(None, "s").startswith("msg_")


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("data:image/png;base64,AAAA", {"type": "base64", "media_type": "image/png", "data": "AAAA"}),
        (
            "data:image/jpeg;name=a.jpg;base64,/9j/",
            {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"},
        ),
        ("https://example.com/a.png", {"type": "url", "url": "https://example.com/a.png"}),
        ("data:image/png,notbase64", {"type": "url", "url": "data:image/png,notbase64"}),
    ],
)
def test_image_source(url: str, source: dict[str, Any]) -> None:
    assert common.image_source(url) == source


def test_image_url_round_trip() -> None:
    for url in ("data:image/webp;base64,UklGR", "https://example.com/cat.jpg"):
        assert common.image_url(common.image_source(url)) == url
    assert common.image_url({"type": "file", "file_id": "f"}) is None
    assert common.image_url("nope") is None


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        ("  ", {}),
        (None, {}),
        ("{oops", {"raw_arguments": "{oops"}),
        ("[1, 2]", {"raw_arguments": "[1, 2]"}),
        ("3", {"raw_arguments": "3"}),
        ({"already": "object"}, {"already": "object"}),
    ],
)
def test_parse_arguments(raw: Any, value: dict[str, Any]) -> None:
    assert common.parse_arguments(raw) == value


def test_dump_arguments_is_compact_json() -> None:
    assert common.dump_arguments({"city": "Paris", "n": [1, 2]}) == '{"city":"Paris","n":[1,2]}'
    assert common.dump_arguments(None) == "{}"


def test_openai_usage_counts_cache_in_prompt() -> None:
    assert common.openai_usage(Usage(input=160, output=20, cached_input=100, cache_write=10)) == {
        "prompt_tokens": 160,
        "completion_tokens": 20,
        "total_tokens": 180,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10},
    }


def test_text_of() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "refusal", "text": "b"}, "x"]
    assert common.text_of(parts, "|") == "a|b"
    assert common.text_of("plain") == "plain"
    assert common.text_of(None) == ""


@pytest.mark.parametrize(
    ("body", "message", "type_"),
    [
        (b'{"error": {"message": "m", "type": "t"}}', "m", "t"),
        (
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "Overloaded",
            "overloaded_error",
        ),
        (
            b'[{"error": {"code": 400, "message": "g", "status": "INVALID_ARGUMENT"}}]',
            "g",
            "INVALID_ARGUMENT",
        ),
        (
            b'{"object": "error", "message": "flat", "type": "invalid_request_error"}',
            "flat",
            "invalid_request_error",
        ),
        (b'{"message": {"detail": [{"msg": "x"}]}}', '{"detail":[{"msg":"x"}]}', None),
        (b'{"detail": "Not Found"}', "Not Found", None),
        (b'{"error": "plain string"}', "plain string", None),
        (b"<html>502</html>", "<html>502</html>", None),
        (b"", "upstream error", None),
        (b"42", "42", None),
    ],
)
def test_error_message_shapes(body: bytes, message: str, type_: str | None) -> None:
    assert common.error_message(body) == (message, type_)


def test_anthropic_sampling_rules() -> None:
    out: dict[str, Any] = {"temperature": 2, "top_p": 0.3}
    common.anthropic_sampling(out, "p")
    assert out == {"temperature": 1.0}
    out = {"temperature": 0.2}
    common.anthropic_sampling(out, "p")
    assert out == {"temperature": 0.2}


def test_apply_param_quirks_rename_keeps_an_explicit_target() -> None:
    quirks = deployment(
        {"model": "m", "quirks": {"rename_params": {"seed": "random_seed"}}}, "openai"
    ).provider.quirks
    out: dict[str, Any] = {"seed": 1, "random_seed": 2}
    common.apply_param_quirks(out, quirks, "p")
    assert out == {"random_seed": 2}


# --- stream edge cases ---------------------------------------------------------------------------

OPENAI_DEP = deployment({"provider": "openai", "model": "gpt-4o-mini"}, "openai")
ANTHROPIC_DEP = deployment({"provider": "anthropic", "model": "claude-sonnet-4-5"}, "anthropic")
REQ = {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _openai_chunk(obj: dict[str, Any]) -> tuple[SSEEvent, Any]:
    ev = SSEEvent(orjson.dumps(obj))
    return ev, wire_openai.probe_event(ev)


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in SSEDecoder().feed(raw)]


def test_anthropic_stream_close_before_any_chunk_is_still_valid() -> None:
    raw = b"".join(AnthropicToOpenAI(REQ, OPENAI_DEP, stream=True).stream().close())
    check_anthropic_stream(raw, None)
    assert [e["type"] for e in _events(raw)] == ["message_start", "message_delta", "message_stop"]


def test_anthropic_stream_tool_ids_sanitised_or_minted_and_only_choice_zero() -> None:
    st = AnthropicToOpenAI(REQ, OPENAI_DEP, stream=True).stream()
    out: list[bytes] = []
    calls = [
        {"index": 0, "id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1, "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    chunks = [
        {
            "id": "c1",
            "choices": [
                {"index": 0, "delta": {"tool_calls": calls}},
                {"index": 1, "delta": {"content": "other choice"}},
            ],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    for chunk in chunks:
        out += st.feed(*_openai_chunk(chunk))
    out += st.close()
    raw = b"".join(out)
    check_anthropic_stream(raw, None)
    starts = [e["content_block"] for e in _events(raw) if e["type"] == "content_block_start"]
    assert [b["id"] for b in starts] == ["functions_f_0", common.anthropic_id(None, "toolu_", "msg_c1:1")]
    assert b"other choice" not in raw


def test_anthropic_stream_ignores_content_after_finish_and_events_after_end() -> None:
    st = AnthropicToOpenAI(REQ, OPENAI_DEP, stream=True).stream()
    out: list[bytes] = []
    out += st.feed(
        *_openai_chunk(
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}
        )
    )
    out += st.feed(*_openai_chunk({"id": "c", "choices": [{"index": 0, "delta": {"content": "late"}}]}))
    out += st.feed(
        *_openai_chunk({"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    )
    assert (
        st.feed(*_openai_chunk({"id": "c", "choices": [{"index": 0, "delta": {"content": "after end"}}]}))
        == []
    )
    assert st.close() == []
    raw = b"".join(out)
    check_anthropic_stream(raw, None)
    assert b"late" not in raw


def test_anthropic_stream_error_that_is_not_an_object() -> None:
    st = AnthropicToOpenAI(REQ, OPENAI_DEP, stream=True).stream()
    ev = SSEEvent(b'{"error": "boom"}')
    (raw,) = st.feed(ev, wire_openai.probe_event(ev))
    assert _events(raw) == [{"type": "error", "error": {"type": "api_error", "message": "boom"}}]
    assert st.close() == []


def _anthropic(obj: dict[str, Any]) -> tuple[SSEEvent, Any]:
    ev = SSEEvent(orjson.dumps(obj), obj["type"])
    return ev, wire_anthropic.probe_event(ev)


def test_openai_stream_block_start_with_content() -> None:
    """Some Anthropic-compatible servers put text or the whole tool input in the start event."""
    t = OpenAIToAnthropic(REQ, ANTHROPIC_DEP, stream=True, clock=lambda: 1.0)
    st = t.stream()
    out: list[bytes] = []
    out += st.feed(
        *_anthropic(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}
        )
    )
    out += st.feed(
        *_anthropic(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
            }
        )
    )
    deltas = [orjson.loads(c[len(b"data: ") :])["choices"][0]["delta"] for c in out]
    assert deltas == [
        {"content": "Hi"},
        {
            "tool_calls": [
                {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ]
        },
    ]


def test_openai_stream_without_usage_sends_no_usage_chunk() -> None:
    body = {**REQ, "stream_options": {"include_usage": True}}
    st = OpenAIToAnthropic(body, ANTHROPIC_DEP, stream=True).stream()
    assert st.close() == [wire_openai.STREAM_DONE]
    assert st.close() == []


def test_openai_stream_error_event() -> None:
    st = OpenAIToAnthropic(REQ, ANTHROPIC_DEP, stream=True).stream()
    (raw,) = st.feed(
        *_anthropic({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    )
    assert orjson.loads(raw[len(b"data: ") :]) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }


@given(st.from_regex(r"[a-zA-Z0-9_-]{1,40}", fullmatch=True), st.text(min_size=1, max_size=300))
def test_a_thought_signature_rides_in_a_tool_use_id_and_comes_back_whole(tool_id: str, sig: str) -> None:
    signed = common.signed_id(tool_id, sig)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", signed)  # still an id Anthropic accepts
    if common.THOUGHT_SEP not in tool_id:
        assert common.split_signed_id(signed) == (tool_id, sig)


def test_ids_without_a_signature_are_left_alone() -> None:
    assert common.signed_id("call_1", None) == "call_1"
    assert common.split_signed_id("call_1") == ("call_1", None)
    assert common.split_signed_id(None) == (None, None)
    bad = "call_1" + common.THOUGHT_SEP + "%%%"  # not base64url: not ours
    assert common.split_signed_id(bad) == (bad, None)
    assert common.thought_signature({"extra_content": {"google": {"thought_signature": ""}}}) is None
    assert common.thought_signature({"extra_content": {"google": {"thought_signature": "s"}}}) == "s"
