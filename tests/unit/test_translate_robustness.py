"""Fuzzing the translators: whatever JSON a client or an upstream sends, a translator either
raises BadRequest (requests) or returns something, never mutates what it was given, and a
stream state machine never raises on a well-formed but unexpected event."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_router.errors import BadRequest
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.probe import MalformedEvent
from asgi_router.wire.sse import SSEEvent
from tests.unit.translate_support import PAIRS, begin, deployment

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 200_000), st.text(max_size=8))
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=6)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["data:image/png;base64,AA==", "https://x/y.png"])}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": st.fixed_dictionaries(
                {"type": st.just("base64"), "media_type": st.just("image/png"), "data": st.just("AA==")}
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": st.text(max_size=5), "name": st.text(max_size=4), "input": _json}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": st.text(max_size=5),
            "content": st.one_of(
                st.text(max_size=5),
                st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=4)}), max_size=2
                ),
            ),
        }
    ),
    _json,
)
_call = st.fixed_dictionaries(
    {
        "id": st.text(max_size=12),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.text(max_size=4), "arguments": st.one_of(st.text(max_size=8), st.just('{"a": 1}'))}
        ),
    }
)
_message = st.fixed_dictionaries(
    {"role": _roles, "content": st.one_of(st.none(), st.text(max_size=8), st.lists(_part, max_size=3))},
    optional={
        "tool_calls": st.lists(_call, max_size=2),
        "tool_call_id": st.text(max_size=12),
        "name": st.text(max_size=3),
    },
)
_body = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_message, max_size=6)},
    optional={
        "max_tokens": st.one_of(st.integers(0, 200_000), _scalar),
        "temperature": st.one_of(st.floats(0, 2), _scalar),
        "top_p": st.floats(0, 1),
        "n": st.integers(0, 3),
        "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3)),
        "tools": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "type": st.just("function"),
                        "function": st.fixed_dictionaries({"name": st.text(max_size=4)}),
                    }
                ),
                st.fixed_dictionaries(
                    {"name": st.text(max_size=4), "input_schema": st.just({"type": "object"})}
                ),
            ),
            max_size=2,
        ),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), _json),
        "system": st.one_of(st.text(max_size=5), st.lists(_part, max_size=2)),
        "extra": _json,
    },
)
_QUIRKY = {
    "provider": "q",
    "model": "up",
    "max_output_tokens": 1000,
    "params": {"temperature": 0.5},
    "quirks": {
        "developer_role": False,
        "message_name": False,
        "tool_call_ids": "alnum9",
        "fix_message_order": True,
        "stream_tool_finish": True,
        "drop_params": ["user"],
    },
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(body=_body, stream=st.booleans(), quirky=st.booleans())
def test_request_never_mutates_and_only_raises_bad_request(
    pair: str, body: dict[str, Any], stream: bool, quirky: bool
) -> None:
    _, _, upstream = PAIRS[pair]
    dep = deployment(_QUIRKY if quirky else {"provider": "p", "model": "up"}, upstream)
    before = copy.deepcopy(body)
    try:
        t = begin(pair, body, dep, stream)
    except BadRequest:
        assert body == before
        return
    assert body == before
    orjson.dumps(t.upstream_body)  # always JSON
    assert t.upstream_body["model"] == "up"
    if upstream == "anthropic":
        assert isinstance(t.upstream_body["max_tokens"], int)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(answer=_json)
def test_response_and_error_accept_any_json(pair: str, answer: Any) -> None:
    _, _, upstream = PAIRS[pair]
    t = begin(
        pair,
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        deployment(_QUIRKY, upstream),
        False,
    )
    before = copy.deepcopy(answer)
    t.response(answer)
    assert answer == before
    for status in (400, 429, 500, 529):
        t.error(status, orjson.dumps(answer))
    t.error(400, b"\xff not json")


_anthropic_event = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "ping",
                    "other",
                ]
            )
        },
        optional={"index": _json, "message": _json, "content_block": _json, "delta": _json, "usage": _json},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("content_block_delta"),
            "index": st.integers(0, 3),
            "delta": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["text_delta", "input_json_delta"]),
                    "text": st.text(max_size=3),
                    "partial_json": st.text(max_size=3),
                }
            ),
        }
    ),
)
_fragment = st.fixed_dictionaries({}, optional={"index": _json, "id": _json, "function": _json})
_delta = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "content": _json,
            "refusal": _json,
            "tool_calls": st.one_of(_json, st.lists(_fragment, max_size=2)),
        },
    ),
)
_choice = st.fixed_dictionaries(
    {"index": st.one_of(st.just(0), _json)},
    optional={
        "delta": _delta,
        "finish_reason": st.one_of(st.none(), st.sampled_from(["stop", "tool_calls", "length"]), _json),
    },
)
_openai_chunk = st.fixed_dictionaries(
    {"choices": st.one_of(_json, st.lists(_choice, max_size=2))},
    optional={"id": _json, "model": _json, "usage": _json},
)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(data=st.data())
def test_stream_machines_survive_unexpected_events(pair: str, data: Any) -> None:
    _, _, upstream = PAIRS[pair]
    t = begin(
        pair,
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        deployment(_QUIRKY, upstream),
        True,
    )
    st_ = t.stream()
    strategy = _anthropic_event if upstream == "anthropic" else _openai_chunk
    probe_event = wire_anthropic.probe_event if upstream == "anthropic" else wire_openai.probe_event
    for obj in data.draw(st.lists(strategy, max_size=8)):
        ev = SSEEvent(orjson.dumps(obj), obj.get("type") if upstream == "anthropic" else None)
        try:
            probe = probe_event(ev)
        except MalformedEvent:
            continue
        for chunk in st_.feed(ev, probe):
            assert chunk.endswith(b"\n\n")
    assert all(c.endswith(b"\n\n") for c in st_.close())
