"""Translator behaviour a fixture table cannot show: the pair table, the passthrough's fast
path, debug logging of dropped params, the official SDKs reading translated streams, and
property tests of the two stream state machines."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_router.errors import BadRequest

try:  # the SDKs moved to httpx2 (openai 3, anthropic 2); older ones take httpx objects
    import httpx2 as http_lib
except ImportError:  # pragma: no cover - depends on the installed SDKs
    import httpx as http_lib  # type: ignore[no-redef]
from asgi_router.translate import pair_for
from asgi_router.translate.anthropic_passthrough import AnthropicPassthrough
from asgi_router.translate.anthropic_to_openai import AnthropicToOpenAI
from asgi_router.translate.openai_to_anthropic import OpenAIToAnthropic
from asgi_router.translate.passthrough import ChunkFixer, OpenAIPassthrough, alnum9
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.sse import SSEEvent
from tests.unit.translate_support import (
    FIXTURES,
    PAIRS,
    begin,
    check_anthropic_stream,
    check_openai_stream,
    deployment,
    read_sse_case,
    run_stream,
)

OPENAI_DEP = deployment({"provider": "openai", "model": "gpt-4o-mini"}, "openai")
ANTHROPIC_DEP = deployment(
    {"provider": "anthropic", "model": "claude-sonnet-4-5", "max_output_tokens": 64000}, "anthropic"
)


def test_pair_table() -> None:
    assert pair_for("openai", "openai") is OpenAIPassthrough
    assert pair_for("openai", "anthropic") is OpenAIToAnthropic
    assert pair_for("anthropic", "openai") is AnthropicToOpenAI
    assert pair_for("anthropic", "anthropic") is AnthropicPassthrough


def test_passthrough_fast_path_touches_no_message() -> None:
    body = {"model": "x", "messages": [{"role": "developer", "content": "a", "name": "n"}], "n": 5}
    t = OpenAIPassthrough(body, OPENAI_DEP, stream=False)
    assert t.upstream_body["messages"] is body["messages"]
    assert t.stream()._fixer is None  # chunks relayed byte for byte
    upstream = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x", "refusal": None}, "logprobs": None}
        ]
    }
    assert t.response(upstream) is upstream


def test_alnum9_is_deterministic_and_keeps_fitting_ids() -> None:
    assert alnum9("D681PevKs") == "D681PevKs"
    for raw in ("call_abc", "toolu_01A09q90qw90lq917835lq9", "x", "functions.f:0", "ABCDEFGH-"):
        out = alnum9(raw)
        assert len(out) == 9 and out.isascii() and out.isalnum() and out == alnum9(raw)
    assert alnum9("call_a") != alnum9("call_b")


def test_chunk_fixer_tracks_tool_calls_per_choice() -> None:
    fixer = ChunkFixer({}, tool_finish=True)
    calls = {
        "tool_calls": [
            {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    }
    first = {
        "choices": [
            {"index": 0, "delta": calls, "finish_reason": None},
            {"index": 1, "delta": {"content": "x"}, "finish_reason": None},
        ]
    }
    assert fixer.fix(first) is first
    last = {
        "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"},
            {"index": 1, "delta": {}, "finish_reason": "stop"},
        ]
    }
    fixed = fixer.fix(last)
    assert [c["finish_reason"] for c in fixed["choices"]] == ["tool_calls", "stop"]
    assert last["choices"][0]["finish_reason"] == "stop", "the upstream's object is not mutated"


# --- debug logging ----------------------------------------------------------------------------


@pytest.fixture
def debug_logs() -> Iterator[list[Any]]:
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=old["wrapper_class"])


def _events(logs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["event"], e.get("param", "")) for e in logs}


def test_dropped_params_are_logged_once_per_attempt(debug_logs: list[dict[str, Any]]) -> None:
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 1,
        "logprobs": True,
        "temperature": 1.5,
        "top_p": 0.5,
    }
    OpenAIToAnthropic(body, ANTHROPIC_DEP, stream=False)
    assert _events(debug_logs) == {
        ("param_dropped", "seed"),
        ("param_dropped", "logprobs"),
        ("param_clamped", "temperature"),
        ("param_dropped", "top_p"),
    }
    assert all(e["provider"] == "anthropic" and e["log_level"] == "debug" for e in debug_logs)


def test_quirk_rewrites_are_logged(debug_logs: list[dict[str, Any]]) -> None:
    quirks = {
        "developer_role": False,
        "message_name": False,
        "tool_call_ids": "alnum9",
        "fix_message_order": True,
        "drop_params": ["user"],
        "rename_params": {"seed": "random_seed"},
        "stream_usage": "always",
    }
    dep = deployment({"provider": "mistral", "model": "m", "quirks": quirks}, "openai")
    messages = [
        {"role": "developer", "content": "d"},
        {"role": "user", "content": "q", "name": "a"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
        {"role": "user", "content": "q2"},
    ]
    body = {
        "model": "x",
        "messages": messages,
        "user": "u",
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    OpenAIPassthrough(body, dep, stream=True)
    assert _events(debug_logs) == {
        ("param_dropped", "stream_options"),
        ("param_dropped", "user"),
        ("param_renamed", "seed"),
        ("param_renamed", "messages[].role=developer"),
        ("param_dropped", "messages[].name"),
        ("tool_call_ids_rewritten", ""),
        ("message_inserted", ""),
    }


def test_fast_path_logs_nothing(debug_logs: list[dict[str, Any]]) -> None:
    OpenAIPassthrough(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}]}, OPENAI_DEP, stream=True
    )
    assert debug_logs == []


def test_max_n_error_names_the_param() -> None:
    dep = deployment({"provider": "groq", "model": "m", "quirks": {"max_n": 1}}, "openai")
    with pytest.raises(BadRequest) as info:
        OpenAIPassthrough({"model": "x", "messages": [], "n": 2}, dep, stream=False)
    assert info.value.param == "n" and info.value.status == 400


# --- the official SDKs reading translated streams ------------------------------------------------


def _sse_cases(client: str) -> list[Any]:
    out = []
    for pair, (_, c, _) in PAIRS.items():
        if c == client:
            out += [
                pytest.param(pair, p, id=f"{pair}/{p.stem}") for p in sorted((FIXTURES / pair).glob("*.sse"))
            ]
    return out


def _translated(pair: str, path: Path) -> tuple[bytes, Any]:
    case = read_sse_case(path)
    _, _, upstream = PAIRS[pair]
    t = begin(pair, case.json("request"), deployment(case.json("deployment"), upstream), True)
    raw = run_stream(t, upstream, case.sections["upstream"].encode())
    expected = t.response(case.json("upstream_response")) if "upstream_response" in case.sections else None
    return raw, expected


def _transport(raw: bytes) -> http_lib.Client:
    def handler(request: http_lib.Request) -> http_lib.Response:
        return http_lib.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    return http_lib.Client(transport=http_lib.MockTransport(handler))


@pytest.mark.parametrize(("pair", "path"), _sse_cases("anthropic"))
def test_anthropic_sdk_reads_translated_stream(pair: str, path: Path) -> None:
    raw, expected = _translated(pair, path)
    with (
        _transport(raw) as http,
        anthropic.Anthropic(api_key="k", base_url="http://gw.test", http_client=http) as client,
    ):
        stream = client.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        if b"event: error" in raw:
            with pytest.raises(anthropic.APIStatusError), stream as s:
                s.get_final_message()
            return
        with stream as s:
            final = s.get_final_message()
    assert final.stop_reason is not None
    if expected is not None:
        want = anthropic.types.Message.model_validate(expected)
        assert [b.model_dump(exclude_none=True) for b in final.content] == [
            b.model_dump(exclude_none=True) for b in want.content
        ]
        assert (final.stop_reason, final.usage.output_tokens, final.usage.input_tokens) == (
            want.stop_reason,
            want.usage.output_tokens,
            want.usage.input_tokens,
        )


@pytest.mark.parametrize(("pair", "path"), _sse_cases("openai"))
def test_openai_sdk_reads_translated_stream(pair: str, path: Path) -> None:
    raw, expected = _translated(pair, path)
    with (
        _transport(raw) as http,
        openai.OpenAI(api_key="k", base_url="http://gw.test/v1", http_client=http) as client,
    ):
        stream = client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}])
        if b'data: {"error"' in raw:
            with pytest.raises(openai.APIError), stream as s:
                s.get_final_completion()
            return
        with stream as s:
            for _ in s:
                pass
            final = s.current_completion_snapshot
    if expected is not None:
        got, want = final.choices[0], expected["choices"][0]
        assert got.finish_reason == want["finish_reason"]
        assert (got.message.content or None) == (want["message"]["content"] or None)
        calls = [
            (c.id, c.function.name, json.loads(c.function.arguments)) for c in got.message.tool_calls or []
        ]
        assert calls == [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in want["message"].get("tool_calls", [])
        ]


# --- property tests of the stream state machines ------------------------------------------------

_args = st.dictionaries(
    st.sampled_from(["city", "n", "flag", "q"]),
    st.one_of(st.integers(-5, 99), st.text(max_size=6), st.booleans()),
    max_size=3,
)


def _pieces(draw: Any, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if text[a:b]]


@st.composite
def _openai_tool_stream(draw: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str, dict[str, Any]]]]:
    """Chunks of several tool calls whose fragments interleave in any order (per-call order kept)."""
    calls = draw(st.lists(_args, min_size=1, max_size=4))
    queues = []
    for k, args in enumerate(calls):
        pieces = _pieces(draw, json.dumps(args))
        first = {
            "index": k,
            "id": f"call_{k}",
            "type": "function",
            "function": {"name": f"f{k}", "arguments": pieces[0]},
        }
        queues.append([first] + [{"index": k, "function": {"arguments": p}} for p in pieces[1:]])
    order: list[dict[str, Any]] = []
    while any(queues):
        k = draw(st.sampled_from([i for i, q in enumerate(queues) if q]))
        order.append(queues[k].pop(0))
    started = []  # the order calls first appear in is the order of their blocks
    for frag in order:
        if "id" in frag:
            started.append(frag["index"])
    expected = [(f"call_{k}", f"f{k}", calls[k]) for k in started]
    return order, expected


def _chunk(delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
    obj = {
        "id": "chatcmpl-p",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return SSEEvent(orjson.dumps(obj))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_openai_tool_stream(), st.text(max_size=8), st.booleans())
def test_anthropic_stream_from_any_tool_interleaving(
    stream: tuple[list[dict[str, Any]], list[tuple[str, str, dict[str, Any]]]],
    lead_text: str,
    usage_chunk: bool,
) -> None:
    order, expected = stream
    t = AnthropicToOpenAI(
        {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        OPENAI_DEP,
        stream=True,
    )
    st_ = t.stream()
    out: list[bytes] = []
    events = [_chunk({"role": "assistant", "content": ""})]
    if lead_text:
        events.append(_chunk({"content": lead_text}))
    events += [_chunk({"tool_calls": [frag]}) for frag in order]
    events.append(_chunk({}, "tool_calls"))
    if usage_chunk:
        usage = {
            "id": "chatcmpl-p",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        events.append(SSEEvent(orjson.dumps(usage)))
    for ev in events:
        out += st_.feed(ev, wire_openai.probe_event(ev))
    out += st_.close()
    raw = b"".join(out)
    check_anthropic_stream(raw, None)
    snapshot = None
    bufs: dict[int, bytes] = {}
    from anthropic.lib.streaming._messages import accumulate_event

    for ev in _decode(raw):
        obj = orjson.loads(ev.data)
        if obj["type"] != "ping":
            snapshot = accumulate_event(event=obj, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot is not None
    tools = [(b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"]
    assert tools == expected
    texts = [b.text for b in snapshot.content if b.type == "text"]
    assert texts == ([lead_text] if lead_text else [])
    assert snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == (4 if usage_chunk else 0)


def _decode(raw: bytes) -> list[SSEEvent]:
    from asgi_router.wire.sse import SSEDecoder

    return SSEDecoder().feed(raw)


_block = st.one_of(
    st.tuples(st.just("text"), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("tool_use"), _args),
    st.tuples(st.just("thinking"), st.text(min_size=1, max_size=10)),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_block, min_size=1, max_size=5), st.data())
def test_openai_stream_from_any_anthropic_blocks(blocks: list[tuple[str, Any]], data: Any) -> None:
    """Any sequence of Anthropic blocks: the OpenAI chunks validate, tool indices count tool
    blocks, and the accumulated completion equals the non-streamed translation."""

    def aev(obj: dict[str, Any]) -> SSEEvent:
        return SSEEvent(orjson.dumps(obj), obj["type"])

    content: list[dict[str, Any]] = []
    events = [
        aev(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_p",
                    "type": "message",
                    "role": "assistant",
                    "model": "c",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 7, "output_tokens": 1},
                },
            }
        )
    ]
    for i, (kind, value) in enumerate(blocks):
        if kind == "tool_use":
            start: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{i}", "name": f"f{i}", "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in _pieces(data.draw, json.dumps(value))
            ]
            content.append({**start, "input": value})
        elif kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(data.draw, value)]
            content.append({"type": "text", "text": value})
        else:
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": value},
                {"type": "signature_delta", "signature": "s"},
            ]
            content.append({"type": "thinking", "thinking": value, "signature": "s"})
        events.append(aev({"type": "content_block_start", "index": i, "content_block": start}))
        events += [aev({"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        events.append(aev({"type": "content_block_stop", "index": i}))
    has_tools = any(k == "tool_use" for k, _ in blocks)
    stop = "tool_use" if has_tools else "end_turn"
    events += [
        aev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 9},
            }
        ),
        aev({"type": "message_stop"}),
    ]
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True},
    }
    t = OpenAIToAnthropic(body, ANTHROPIC_DEP, stream=True, clock=lambda: 5.0)
    st_ = t.stream()
    out: list[bytes] = []
    for ev in events:
        out += st_.feed(ev, wire_anthropic.probe_event(ev))
    out += st_.close()
    message = {
        "id": "msg_p",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 9},
    }
    expected = t.response(copy.deepcopy(message))
    check_openai_stream(b"".join(out), expected)
    usage = orjson.loads(out[-2][len(b"data: ") :])["usage"]
    assert usage == expected["usage"]


# --- per-attempt state and the quirk layer under the Anthropic pair ------------------------------

MISTRAL_DEP = deployment(
    {
        "provider": "mistral",
        "model": "mistral-small-latest",
        "quirks": {"tool_call_ids": "alnum9", "stream_usage": "always"},
    },
    "openai",
)
HISTORY = {
    "model": "x",
    "max_tokens": 64,
    "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"}]},
    ],
}


def test_anthropic_client_gets_its_own_tool_ids_back_through_mistral() -> None:
    """The id Mistral saw (a hash) is mapped back to the client's in responses and streams."""
    t = AnthropicToOpenAI(copy.deepcopy(HISTORY), MISTRAL_DEP, stream=True)
    hashed = alnum9("toolu_01A")
    assert t.upstream_body["messages"][1]["tool_calls"][0]["id"] == hashed
    assert t.upstream_body["messages"][2]["tool_call_id"] == hashed
    echoed = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"index": 0, "id": hashed, "function": {"name": "f", "arguments": "{}"}}]
                },
            }
        ],
    }
    st_ = t.stream()
    out: list[bytes] = []
    for obj in (
        echoed,
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        },
    ):
        ev = SSEEvent(orjson.dumps(obj))
        out += st_.feed(ev, wire_openai.probe_event(ev))
    starts = [orjson.loads(e.data) for e in _decode(b"".join(out)) if e.event == "content_block_start"]
    assert starts[0]["content_block"]["id"] == "toolu_01A"
    answer = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": hashed, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    assert t.response(answer)["content"][0]["id"] == "toolu_01A"


def test_each_attempt_has_its_own_state() -> None:
    first = AnthropicToOpenAI(copy.deepcopy(HISTORY), MISTRAL_DEP, stream=True)
    other = {**HISTORY, "messages": [{"role": "user", "content": "no tools"}]}
    second = AnthropicToOpenAI(other, MISTRAL_DEP, stream=True)
    assert first._id_back and not second._id_back
    a, b = first.stream(), first.stream()
    assert a is not b and a._tools is not b._tools


def test_response_does_not_touch_the_upstream_body() -> None:
    t = OpenAIToAnthropic(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}]}, ANTHROPIC_DEP, stream=False
    )
    sent = copy.deepcopy(t.upstream_body)
    t.response(
        {
            "id": "msg_1",
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    assert t.upstream_body == sent


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (413, "invalid_request_error"),
        (529, "overloaded_error"),
        (504, "timeout_error"),
        (402, "billing_error"),
    ],
)
def test_anthropic_client_errors_typed_by_status(status: int, type_: str) -> None:
    t = AnthropicToOpenAI(copy.deepcopy(HISTORY), OPENAI_DEP, stream=False)
    body = orjson.loads(t.error(status, b'{"error": {"message": "m", "type": "whatever"}}'))
    assert body == {"type": "error", "error": {"type": type_, "message": "m"}}


def test_anthropic_only_fields_dropped_and_logged(debug_logs: list[Any]) -> None:
    body = {
        **copy.deepcopy(HISTORY),
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tool_choice": {"type": "auto"},
    }
    t = AnthropicToOpenAI(body, OPENAI_DEP, stream=False)
    assert not {"top_k", "thinking", "tool_choice"} & t.upstream_body.keys()
    assert {
        ("param_dropped", "top_k"),
        ("param_dropped", "thinking"),
        ("param_dropped", "tool_choice"),
    } <= _events(debug_logs)
