"""Pure parts of the simulator: step parsing, text splitting, scripts, answer shapes."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_router.sim import STEP_FIELDS, SimState, StepError, parse_script, parse_step
from asgi_router.sim.answer import anthropic_message, estimate_prompt_tokens, openai_usage, plan
from asgi_router.sim.steps import split_text


def test_every_documented_field_parses() -> None:
    step = parse_step(
        {
            "status": 429,
            "retry_after": 2,
            "retry_after_ms": 1500,
            "headers": {"x-a": "b", "x-n": 3},
            "delay_s": 0.1,
            "ttft_s": 0.2,
            "chunk_delay_s": 0.01,
            "keepalive_s": 0.05,
            "chunks": 3,
            "text": "abc",
            "tool_call": {"name": "f", "arguments": {"a": 1}},
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "cached_tokens": 3},
            "usage_mode": "final_chunk",
            "cut_after": 1,
            "malformed_after": True,
            "stall_after": 2,
            "mid_stream_error": True,
            "context_window": 100,
            "strict_params": ["stream_options"],
            "check_auth": "k",
        }
    )
    assert step.is_error
    assert step.response_headers() == {"x-a": "b", "x-n": "3", "retry-after": "2", "retry-after-ms": "1500"}
    assert step.tool_call is not None and step.tool_call.arguments == '{"a":1}'
    assert step.malformed_after == 0 and step.mid_stream_error == 0
    assert step.strict_params == frozenset({"stream_options"})
    assert step.raw["status"] == 429


def test_fields_are_documented_in_the_module_docstring() -> None:
    import asgi_router.sim.steps as steps

    assert steps.__doc__ is not None
    for name in STEP_FIELDS:
        assert f"``{name}``" in steps.__doc__, name


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"stauts": 429}, "unknown step fields ['stauts']"),
        ({"status": "429"}, "status: expected an integer"),
        ({"delay_s": -1}, "delay_s: expected a number"),
        ({"usage_mode": "sometimes"}, "usage_mode: expected one of"),
        ({"tool_call": {"name": "f", "args": {}}}, "tool_call: unknown fields"),
        ({"strict_params": "stream_options"}, "strict_params"),
        ([1], "a step must be a JSON object"),
    ],
)
def test_bad_steps_are_refused_with_the_field_named(step: Any, message: str) -> None:
    with pytest.raises(StepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_step(step)


def test_script_errors_name_the_step() -> None:
    with pytest.raises(StepError, match=r"steps\[1\]: chunks"):
        parse_script({"model": "m", "steps": [{}, {"chunks": -1}]})
    with pytest.raises(StepError, match="model: expected a string"):
        parse_script({"steps": []})


def test_retry_after_formats() -> None:
    assert parse_step({"retry_after": 0.5}).response_headers() == {"retry-after": "0.5"}
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_step({"retry_after": date}).response_headers() == {"retry-after": date}


@pytest.mark.parametrize(
    ("text", "n"), [("Hello from m.", 5), ("ab", 5), ("", 3), ("abcdef", 1), ("abcdefg", 3)]
)
def test_split_text(text: str, n: int) -> None:
    pieces = split_text(text, n)
    assert "".join(pieces) == text
    assert len(pieces) == min(n, len(text))
    assert all(pieces)
    if pieces:
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_prompt_estimate_counts_message_text_only() -> None:
    body = {
        "system": [{"type": "text", "text": "abcd"}],
        "messages": [
            {"role": "user", "content": "x" * 9},
            {
                "role": "user",
                "content": [{"type": "text", "text": "yy"}, {"type": "image_url", "image_url": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "zzz"}]},
        ],
    }
    assert estimate_prompt_tokens(body) == 5  # 18 chars / 4, rounded up


def test_state_queue_default_and_wildcard() -> None:
    state = SimState()
    state.set_script(parse_script({"model": "m", "steps": [{"status": 500}], "default": {"text": "d"}}))
    state.set_script(parse_script({"model": "*", "default": {"text": "any"}}))
    assert state.next_step("m").status == 500
    assert state.next_step("m").text == "d"
    assert state.next_step("m").text == "d"
    assert state.next_step("other").text == "any"
    state.reset()
    assert state.next_step("m").text is None
    assert state.models() == ["m"]


def test_answer_usage_defaults_and_dialect_mapping() -> None:
    step = parse_step({"chunks": 3, "usage": {"prompt_tokens": 20, "cached_tokens": 5}})
    a = plan(step, {"model": "m"}, "m", 1, 0, anthropic=True)
    assert a.completion_tokens == 3 and a.prompt_tokens == 20
    msg = anthropic_message(a, with_usage=True, finish=True)
    assert msg["usage"] == {
        "input_tokens": 15,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": 3,
    }
    assert msg["stop_reason"] == "end_turn"
    assert openai_usage(a)["prompt_tokens_details"]["cached_tokens"] == 5


def test_tool_call_true_uses_the_requested_tool() -> None:
    body = {
        "tools": [
            {"type": "function", "function": {"name": "first"}},
            {"type": "function", "function": {"name": "b"}},
        ]
    }
    a = plan(parse_step({"tool_call": True}), body, "m", 1, 0, anthropic=False)
    assert a.tool is not None and a.tool.name == "first" and a.finish_reason == "tool_calls"
    forced = {**body, "tool_choice": {"type": "function", "function": {"name": "b"}}}
    assert plan(parse_step({"tool_call": True}), forced, "m", 1, 0, anthropic=False).tool.name == "b"  # type: ignore[union-attr]
    assert plan(parse_step({"tool_call": True}), {}, "m", 1, 0, anthropic=False).tool is None


def test_finish_reason_mapping() -> None:
    a = plan(parse_step({"finish_reason": "length"}), {}, "m", 1, 0, anthropic=True)
    assert a.stop_reason == "max_tokens"
    assert plan(parse_step({"finish_reason": "model_length"}), {}, "m", 1, 0, anthropic=True).stop_reason == (
        "model_length"
    )
