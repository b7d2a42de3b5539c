"""Issue 4 end to end: both official SDKs, through the gateway, to simulated providers of both
dialects. ``o`` is an OpenAI-speaking deployment and ``a`` an Anthropic one (preset
``anthropic``), both serving the same upstream model ``m-1`` of the same simulator, so a
scripted answer is the same whichever dialect carries it and the native answer (the SDK
pointed at the simulator itself) is the reference for what the gateway must produce.

Covered here: /v1/messages streamed and not (x-api-key and Bearer keys, errors in Anthropic's
shape with CONTRACT §3's types), the four pairs with tools, images, multi-turn, stop
sequences, stop reasons and usage (cached tokens), what an ``api = "anthropic"`` upstream
receives, routing across dialects (fallback on 429/529/overloaded, cooldowns, circuits, races),
metrics and spend, and errors mid-stream. Quirks: test_quirks.py; embeddings: test_embeddings.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, cast

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent

from tests.helpers import Gateway, model, provider
from tests.schemas import validate

UP_KEY = "sk-ant-upstream-0123456789"  # the Anthropic provider's own key (x-api-key upstream)
PRICE = {"input": 1.0, "output": 2.0, "cached_input": 0.1}
MSG = [{"role": "user", "content": "hello"}]


def settled(sim: Any, model: str) -> list[dict[str, Any]]:
    """The simulator's log once every request in flight has its final outcome (a client may
    read the whole answer a moment before the simulator records how it ended)."""
    assert sim.wait_idle(5)
    return sim.log(model)


EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
IMAGE_URL = "https://example.com/cat.jpg"


def two_dialects(sim: Any, **extra_a: Any) -> str:
    """``o`` (OpenAI dialect) and ``a`` (Anthropic) on the same simulator, same upstream model."""
    return (
        provider("oa", sim.base_url)
        + provider(
            "an", sim.base_url, api="anthropic", preset="anthropic", api_keys=["env:ANT_UP"], **extra_a
        )
        + model("o", "oa", "m-1", price=PRICE)
        + model("a", "an", "m-1", price=PRICE)
    )


@pytest.fixture(scope="module")
def gw(module_gateway, module_sims) -> Gateway:
    sim, sim2 = module_sims
    return module_gateway(
        two_dialects(sim)
        + provider("oa2", sim2.base_url)
        + model("o2", "oa2", "m-2", price=PRICE)
        + '[fallbacks.cross]\nchain = ["a", "o2"]\n',
        env={"ANT_UP": UP_KEY},
    )


@pytest.fixture
def native_ant(sim):
    c = anthropic.Anthropic(base_url=sim.root_url, api_key="native", max_retries=0)
    yield c
    c.close()


@pytest.fixture
def native_oai(sim):
    c = openai.OpenAI(base_url=sim.base_url, api_key="native", max_retries=0)
    yield c
    c.close()


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of an SSE body; comments and blank events skipped."""
    out = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def raw_stream(gw: Gateway, path: str, body: dict[str, Any], **headers: str) -> tuple[httpx.Response, str]:
    with httpx.stream("POST", gw.url + path, json={**body, "stream": True}, headers=headers, timeout=10) as r:
        return r, r.read().decode()


def check_anthropic_stream(text: str) -> list[dict[str, Any]]:
    """Every event has an ``event:`` line equal to its data's type and validates against the
    SDK's event types; returns the events' data (pings included)."""
    out = []
    for name, data in sse_events(text):
        obj = json.loads(data)
        assert name == obj["type"], (name, data)
        if name not in ("ping", "error"):
            EVENT.validate_python(obj)
        out.append(obj)
    return out


def check_openai_stream(text: str) -> list[dict[str, Any]]:
    events = sse_events(text)
    assert events[-1] == (None, "[DONE]"), events[-1]
    chunks = [json.loads(d) for _, d in events[:-1]]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    return chunks


def tokens(gw: Gateway, prov: str, dep: str, key: str = "anonymous") -> dict[str, float]:
    m = gw.metrics()
    out = {
        kind: m.get(
            (
                "router_tokens_total",
                frozenset({"provider": prov, "model": dep, "key": key, "kind": kind}.items()),
            ),
            0.0,
        )
        for kind in ("input", "output", "cached_input")
    }
    out["usd"] = m.get(
        ("router_spend_usd_total", frozenset({"provider": prov, "model": dep, "key": key}.items())), 0.0
    )
    return out


def tool_calls(message: Any) -> list[dict[str, Any]]:
    """id, type, name and arguments of each tool call (the stream helper adds ``index`` and
    ``parsed_arguments``, which a plain answer does not have)."""
    return [
        {"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or []
    ]


def without_ids(msg: Any) -> dict[str, Any]:
    d = msg.model_dump(exclude_none=True)
    d.pop("id", None)
    d.pop("created", None)
    return d


# 1. /v1/messages with the anthropic SDK ---------------------------------------------------------


@pytest.mark.parametrize("route", ["a", "o"])
def test_messages_plain_with_the_anthropic_sdk(gw, sim, route):
    raw = gw.anthropic().messages.with_raw_response.create(
        model=route, max_tokens=64, system="Be brief.", messages=MSG
    )
    msg = raw.parse()
    assert [b.text for b in msg.content if b.type == "text"] == ["Hello from m-1."]
    assert msg.model == "m-1" and msg.stop_reason == "end_turn" and msg.role == "assistant"
    assert msg.usage.input_tokens == 10 and msg.usage.output_tokens == 5
    Message.model_validate(json.loads(raw.http_response.content))  # strict: the SDK's own types
    assert raw.headers["x-router-model"] == route and raw.headers["x-router-attempts"] == "1"
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    assert raw.headers["x-request-id"]
    assert sim.log("m-1")[0]["dialect"] == ("anthropic" if route == "a" else "openai")


@pytest.mark.parametrize("route", ["a", "o"])
@pytest.mark.parametrize("tool", [False, True], ids=["text", "text_and_tool"])
def test_messages_streamed_event_sequence_matches_native(gw, sim, route, tool):
    """The exact Anthropic event sequence (``event:`` lines included, tool arguments as
    ``input_json_delta`` pieces) through the gateway, from either upstream dialect, is the one
    the native Anthropic simulator sends."""
    step: dict[str, Any] = {"text": "one two three", "chunks": 3}
    if tool:
        step["tool_call"] = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "toolu_01XyZ"}
    sim.script("m-1", default=step)
    body = {"model": "m-1", "max_tokens": 32, "messages": MSG, "tools": [WEATHER_TOOL_ANTHROPIC]}
    with httpx.stream(
        "POST", sim.root_url + "/v1/messages", json={**body, "stream": True}, headers={"x-api-key": "k"}
    ) as r:
        native = check_anthropic_stream(r.read().decode())
    resp, text = raw_stream(gw, "/v1/messages", {**body, "model": route})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-router-model"] == route
    got = check_anthropic_stream(text)

    def shape(events):
        out = []
        for e in events:
            if e["type"] == "ping":
                continue
            delta = e.get("delta", {})
            block = e.get("content_block", {})
            out.append(
                (
                    e["type"],
                    e.get("index"),
                    block.get("type"),
                    block.get("id"),
                    block.get("name"),
                    delta.get("text"),
                    delta.get("partial_json"),
                    delta.get("stop_reason"),
                )
            )
        return out

    assert shape(got) == shape(native)
    pieces = [e["delta"]["partial_json"] for e in got if e.get("delta", {}).get("type") == "input_json_delta"]
    assert len(pieces) == (3 if tool else 0)  # streamed argument deltas, not one lump
    assert got[-2]["usage"]["output_tokens"] == (6 if tool else 3) and got[-2]["usage"]["input_tokens"] == 10


@pytest.mark.parametrize("route", ["a", "o"])
@pytest.mark.parametrize("case", ["text", "tool", "text_and_tool"])
def test_anthropic_sdk_stream_helper_final_message_same_as_native(gw, sim, native_ant, route, case):
    step: dict[str, Any] = {"text": "It is sunny in Paris today.", "chunks": 4}
    if case != "text":
        step["tool_call"] = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "toolu_01AbCdEf"}
        if case == "tool":
            del step["text"]
    sim.script("m-1", default=step)
    kw: dict[str, Any] = {
        "max_tokens": 100,
        "system": "You are a weather bot.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL_ANTHROPIC],
    }
    with native_ant.messages.stream(model="m-1", **kw) as s:
        want = s.get_final_message()
    with gw.anthropic().messages.stream(model=route, **kw) as s:
        got = s.get_final_message()
    assert without_ids(got) == without_ids(want)
    if case != "text":
        tool = got.content[-1]
        assert tool.type == "tool_use" and tool.input == {"city": "Paris"} and tool.id == "toolu_01AbCdEf"
        assert got.stop_reason == "tool_use"
    # the same answer, not streamed
    plain_want = native_ant.messages.create(model="m-1", **kw)
    plain_got = gw.anthropic().messages.create(model=route, **kw)
    assert without_ids(plain_got) == without_ids(plain_want)
    assert [b.model_dump(exclude_none=True) for b in plain_got.content] == [
        b.model_dump(exclude_none=True) for b in got.content
    ]


@pytest.mark.parametrize("route", ["a", "o"])
@pytest.mark.parametrize("case", ["text", "tool"])
def test_openai_sdk_stream_helper_final_completion_same_as_native(gw, sim, native_oai, route, case):
    step: dict[str, Any] = {"text": "It is sunny in Paris today.", "chunks": 4}
    if case == "tool":
        step = {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_Abc123"}}
    sim.script("m-1", default=step)
    kw: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "tools": [WEATHER_TOOL_OPENAI],
        "stream_options": {"include_usage": True},
    }
    with native_oai.chat.completions.stream(model="m-1", **kw) as s:
        want = s.get_final_completion()
    with gw.openai().chat.completions.stream(model=route, **kw) as s:
        got = s.get_final_completion()
    w, g = want.choices[0], got.choices[0]
    assert g.finish_reason == w.finish_reason == ("tool_calls" if case == "tool" else "stop")
    assert g.message.content == w.message.content and g.message.role == w.message.role
    assert g.message.refusal == w.message.refusal
    calls = tool_calls(g.message)
    assert calls == tool_calls(w.message)
    if case == "tool":
        assert calls[0]["id"] == "call_Abc123" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert got.model == want.model == "m-1"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (
        want.usage.prompt_tokens,
        want.usage.completion_tokens,
        want.usage.total_tokens,
    )
    # not streamed: the same message, valid against OpenAI's published schema
    kw.pop("stream_options")
    raw = gw.openai().chat.completions.with_raw_response.create(model=route, **kw)
    validate("CreateChatCompletionResponse", json.loads(raw.http_response.content))
    plain = raw.parse().choices[0]
    plain_want = native_oai.chat.completions.create(model="m-1", **kw).choices[0]
    assert plain.message.content == plain_want.message.content
    assert tool_calls(plain.message) == calls
    assert plain.finish_reason == plain_want.finish_reason


@pytest.mark.parametrize("route", ["a", "o"])
def test_openai_stream_through_the_gateway_is_schema_valid(gw, sim, route):
    sim.script("m-1", default={"text": "abc def", "chunks": 2, "tool_call": {"name": "get_weather"}})
    body = {"model": route, "messages": MSG, "tools": [WEATHER_TOOL_OPENAI]}
    resp, text = raw_stream(gw, "/v1/chat/completions", body)
    assert resp.status_code == 200
    chunks = check_openai_stream(text)
    assert all(c["model"] == "m-1" for c in chunks)
    assert all(c["choices"] for c in chunks)  # no usage chunk: the client did not ask
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == "abc def"
    args = "".join(tc["function"].get("arguments") or "" for d in deltas for tc in d.get("tool_calls", []))
    assert json.loads(args) == {}
    assert sum(1 for d in deltas if d.get("tool_calls")) >= 2  # arguments arrive as deltas
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# 2 and 3. what each upstream receives -------------------------------------------------------------

OPENAI_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": "Answer in French."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these images, and the weather?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        ],
    },
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    {"role": "user", "content": "And tomorrow?"},
]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_upstream_gets_a_correct_messages_request_from_an_openai_client(gw, sim, stream):
    c = gw.openai("client-key-never-forwarded")
    kw: dict[str, Any] = {
        "model": "a",
        "messages": OPENAI_HISTORY,
        "tools": [WEATHER_TOOL_OPENAI],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stop": ["END", "STOP"],
        "temperature": 0.5,
        "user": "user-42",
    }
    if stream:
        list(c.chat.completions.create(**kw, stream=True))
    else:
        c.chat.completions.create(**kw)
    rec = settled(sim, "m-1")[0]
    assert rec["path"] == "/v1/messages"
    h = rec["headers"]
    assert h["x-api-key"] == UP_KEY and h["anthropic-version"] == "2023-06-01"
    assert "authorization" not in h and "client-key-never-forwarded" not in json.dumps(h)
    expected: dict[str, Any] = {
        "model": "m-1",
        "max_tokens": 4096,  # required by Anthropic: defaulted
        "system": "You are terse.\n\nAnswer in French.",  # lifted out of the messages
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images, and the weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Lyon"}},
                ],
            },
            {
                # both results in ONE user turn, before the user's text
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "stop_sequences": ["END", "STOP"],
        "temperature": 0.5,
        "metadata": {"user_id": "user-42"},
    }
    if stream:
        expected["stream"] = True
    assert rec["body"] == expected
    assert rec["outcome"] == "ok"  # the simulator's own Anthropic validation passed


def test_anthropic_passthrough_defaults_max_tokens_and_keeps_the_rest(gw, sim):
    body = {
        "model": "a",
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "top_k": 5,
    }
    r = gw.post("/v1/messages", json=body, headers={"x-api-key": "client-key"})
    assert r.status_code == 200, r.text
    rec = sim.log("m-1")[0]
    assert rec["body"] == {**body, "model": "m-1", "max_tokens": 4096}
    assert rec["headers"]["x-api-key"] == UP_KEY and rec["headers"]["anthropic-version"] == "2023-06-01"
    Message.model_validate(r.json())


ANTHROPIC_HISTORY: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these images, and the weather?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Lyon"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01B",
                "content": [{"type": "text", "text": "no data"}],
                "is_error": True,
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    },
]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_upstream_gets_a_correct_chat_request_from_an_anthropic_client(gw, sim, stream):
    kw: dict[str, Any] = {
        "model": "o",
        "max_tokens": 200,
        "system": "You are terse.",
        "messages": ANTHROPIC_HISTORY,
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "extra_body": {"temperature": 0.2},  # not a parameter of this SDK version any more
        "metadata": {"user_id": "user-42"},
    }
    c = gw.anthropic("client-key-never-forwarded")
    if stream:
        with c.messages.stream(**kw) as s:
            s.get_final_message()
    else:
        c.messages.create(**kw)
    rec = sim.log("m-1")[0]
    assert rec["path"] == "/v1/chat/completions"
    assert "client-key-never-forwarded" not in json.dumps(rec["headers"])
    expected: dict[str, Any] = {
        "model": "m-1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images, and the weather?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_01B",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                    },
                ],
            },
            # tool results become tool messages, placed before the user's remaining text
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: no data"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "max_tokens": 200,
        "stop": ["END"],
        "temperature": 0.2,
        "user": "user-42",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER_TOOL_ANTHROPIC["input_schema"],
                },
            }
        ],
        "tool_choice": "required",
    }
    if stream:
        expected["stream"] = True
        expected["stream_options"] = {"include_usage": True}  # asked for, for spend
    assert rec["body"] == expected


@pytest.mark.parametrize("stream", [False, True])
def test_same_dialect_pairs_forward_the_history_unchanged(gw, sim, stream):
    """OpenAI→OpenAI and Anthropic→Anthropic: images, tool calls and results go as they came."""
    kw: dict[str, Any] = {"stream": True} if stream else {}
    r = gw.post(
        "/v1/chat/completions", json={"model": "o", "messages": OPENAI_HISTORY, "stop": ["END"], **kw}
    )
    assert r.status_code == 200
    body = {
        "model": "a",
        "max_tokens": 9,
        "system": "s",
        "messages": ANTHROPIC_HISTORY,
        "stop_sequences": ["END"],
    }
    r = gw.post("/v1/messages", json={**body, **kw})
    assert r.status_code == 200
    to_openai, to_anthropic = sim.log("m-1")
    assert to_openai["body"]["messages"] == OPENAI_HISTORY and to_openai["body"]["stop"] == ["END"]
    assert to_anthropic["body"] == {**body, "model": "m-1", **kw}


def test_client_body_is_the_same_for_every_attempt_of_a_cross_dialect_chain(gateway, sim, sim2):
    """The Anthropic member's translation does not leak into the next member's request."""
    sim.script("m-1", default={"status": 529})
    gw = gateway(
        two_dialects(sim) + provider("oa2", sim2.base_url) + model("o2", "oa2", "m-2")
        + '[fallbacks.chat]\nchain = ["a", "o2"]\n',
        env={"ANT_UP": UP_KEY},
    )  # fmt: skip
    gw.openai().chat.completions.create(model="chat", messages=OPENAI_HISTORY)
    sent = sim2.log("m-2")[0]["body"]
    assert sent == {"model": "m-2", "messages": OPENAI_HISTORY}


# stop reasons and usage -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("finish", "openai_finish", "anthropic_stop"),
    [
        ("stop", "stop", "end_turn"),
        ("length", "length", "max_tokens"),
        ("content_filter", "content_filter", "refusal"),
        ("stop_sequence", "stop", "stop_sequence"),  # an Anthropic-only reason (the sim says it verbatim)
    ],
)
def test_stop_and_finish_reasons_across_dialects(gw, sim, stream, finish, openai_finish, anthropic_stop):
    sim.script("m-1", default={"finish_reason": finish, "text": "partial"})
    # OpenAI client ← Anthropic upstream
    oc = gw.openai()
    if stream:
        chunks = list(oc.chat.completions.create(model="a", messages=MSG, stream=True))
        got = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert got == [openai_finish]
    else:
        assert oc.chat.completions.create(model="a", messages=MSG).choices[0].finish_reason == openai_finish
    if finish == "stop_sequence":
        return  # not an OpenAI finish reason: an OpenAI upstream never sends it
    # Anthropic client ← OpenAI upstream
    ac = gw.anthropic()
    if stream:
        with ac.messages.stream(model="o", max_tokens=10, messages=MSG) as s:
            assert s.get_final_message().stop_reason == anthropic_stop
    else:
        assert ac.messages.create(model="o", max_tokens=10, messages=MSG).stop_reason == anthropic_stop


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize(("route", "prov"), [("a", "an"), ("o", "oa")])
def test_usage_with_cached_tokens_reaches_the_client_and_the_metrics(gw, sim, stream, client, route, prov):
    """100 prompt tokens: 40 read from the cache, 20 written to it (Anthropic only: OpenAI has
    no field for writes, they are just prompt tokens). OpenAI's prompt_tokens include every
    cached token; Anthropic's input_tokens include none. Each reaches the client in its own
    dialect's terms, and the metrics and spend are the same whichever dialect carried them."""
    sim.script(
        "m-1",
        default={
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "cached_tokens": 40,
                "cache_write_tokens": 20,
            }
        },
    )
    writes = 20 if route == "a" else 0
    before = tokens(gw, prov, route)
    cost_header = None
    if client == "openai":
        c = gw.openai()
        if stream:
            chunks = list(
                c.chat.completions.create(
                    model=route, messages=MSG, stream=True, stream_options={"include_usage": True}
                )
            )
            assert chunks[-1].choices == []
            validate("CreateChatCompletionStreamResponse", chunks[-1].model_dump(exclude_unset=True))
            usage = chunks[-1].usage
        else:
            raw = c.chat.completions.with_raw_response.create(model=route, messages=MSG)
            validate("CreateChatCompletionResponse", json.loads(raw.http_response.content))
            usage = raw.parse().usage
            cost_header = raw.headers["x-router-cost-usd"]
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
        assert usage.prompt_tokens_details.cached_tokens == 40
    else:
        c = gw.anthropic()
        if stream:
            with c.messages.stream(model=route, max_tokens=10, messages=MSG) as s:
                usage = s.get_final_message().usage
        else:
            raw = c.messages.with_raw_response.create(model=route, max_tokens=10, messages=MSG)
            Message.model_validate(json.loads(raw.http_response.content))
            usage = raw.parse().usage
            cost_header = raw.headers["x-router-cost-usd"]
        assert usage.input_tokens == 60 - writes and usage.output_tokens == 7
        assert usage.cache_read_input_tokens == 40 and (usage.cache_creation_input_tokens or 0) == writes
    after = tokens(gw, prov, route)
    assert after["input"] - before["input"] == 60  # not read from the cache (writes included)
    assert after["cached_input"] - before["cached_input"] == 40
    assert after["output"] - before["output"] == 7
    usd = (60 * 1.0 + 40 * 0.1 + 7 * 2.0) / 1e6  # cache reads at cached_input, writes at input
    assert after["usd"] - before["usd"] == pytest.approx(usd)
    if cost_header is not None:
        assert float(cost_header) == pytest.approx(usd)


def test_requests_total_counts_messages_requests_by_route(gw, sim):
    before = gw.metric("router_requests_total", route="a", status="200")
    gw.anthropic().messages.create(model="a", max_tokens=5, messages=MSG)
    with gw.anthropic().messages.stream(model="a", max_tokens=5, messages=MSG) as s:
        s.get_final_message()
    assert gw.metric("router_requests_total", route="a", status="200") == before + 2


# errors in Anthropic's shape --------------------------------------------------------------------


def assert_anthropic_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    ErrorResponse.model_validate(body)  # one of Anthropic's own error types
    assert body["type"] == "error" and body["error"]["type"] == ANTHROPIC_ERROR_TYPES[status]
    assert body["error"]["message"]
    assert "x-request-id" in r.headers
    return body


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"[1]", 400),
        (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', 400),  # no model
        (b'{"model": "a", "max_tokens": 5}', 400),  # no messages
        (b'{"model": "a", "max_tokens": 5, "messages": [], "stream": "yes"}', 400),
        (b'{"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', 404),
    ],
)
def test_bad_requests_get_anthropic_shaped_errors(gw, content, status):
    r = gw.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert_anthropic_error(r, status)


def test_wrong_media_type_and_method_get_anthropic_shaped_errors(gw):
    body = b'{"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}'
    for r in (
        gw.post("/v1/messages", content=body, headers={"content-type": "text/plain"}),
        gw.get("/v1/messages"),
    ):
        assert r.status_code in (405, 415)
        ErrorResponse.model_validate(r.json())
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_raises_not_found_in_the_anthropic_sdk(gw):
    with pytest.raises(anthropic.NotFoundError) as e:
        gw.anthropic().messages.create(model="nope", max_tokens=5, messages=MSG)
    assert cast(Any, e.value.body)["error"]["type"] == "invalid_request_error"


def test_body_over_limit_is_413_in_anthropic_shape(gw):
    big = {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 4_100_000}]}
    assert_anthropic_error(gw.post("/v1/messages", json=big), 413)


@pytest.mark.parametrize("route", ["a", "o"])
def test_upstream_400_comes_back_in_anthropic_shape(gw, sim, route):
    sim.script("m-1", steps=[{"status": 400, "error_message": "temperature: out of range"}])
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic().messages.create(model=route, max_tokens=5, messages=MSG)
    ErrorResponse.model_validate(e.value.body)
    assert cast(Any, e.value.body)["error"]["type"] == "invalid_request_error"
    assert "temperature: out of range" in cast(Any, e.value.body)["error"]["message"]


def test_anthropic_upstream_400_comes_back_in_openai_shape(gw, sim):
    sim.script("m-1", steps=[{"status": 400, "error_message": "messages: roles must alternate"}])
    r = gw.post("/v1/chat/completions", json={"model": "a", "messages": MSG})
    assert r.status_code == 400
    validate("ErrorResponse", r.json())
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "roles must alternate" in err["message"]


def test_messages_without_max_tokens_reach_an_openai_upstream_without_it(gw, sim):
    r = gw.post("/v1/messages", json={"model": "o", "messages": MSG})
    assert r.status_code == 200, r.text
    assert "max_tokens" not in sim.log("m-1")[0]["body"]


# keys, allow lists, rpm, budgets with the anthropic SDK -------------------------------------------

TEAM = "sk-team-0123456789abcdef"
LIMITED = "sk-limited-0123456789abcd"
CAPPED = "sk-capped-0123456789abcde"


@pytest.fixture
def keyed_gw(gateway, sim):
    return gateway(
        two_dialects(sim)
        + model("o-pricey", "oa", "m-1", price={"input": 1000.0, "output": 1000.0})
        + f'[keys.team]\nkey_sha256 = "{hashlib.sha256(TEAM.encode()).hexdigest()}"\nallow = ["a", "o"]\n'
        + '[keys.limited]\nkey = "env:LIMITED"\nrpm = 1\n'
        + '[keys.capped]\nkey = "env:CAPPED"\nbudget_usd = 0.02\nbudget_period = "day"\n',
        env={"ANT_UP": UP_KEY, "LIMITED": LIMITED, "CAPPED": CAPPED},
    )


def test_keys_by_x_api_key_and_bearer_with_the_anthropic_sdk(keyed_gw, sim):
    by_header = keyed_gw.anthropic(TEAM)  # the SDK sends x-api-key
    assert by_header.messages.create(model="a", max_tokens=5, messages=MSG).content
    bearer = anthropic.Anthropic(base_url=keyed_gw.url, api_key=None, auth_token=TEAM, max_retries=0)
    keyed_gw.clients.append(bearer)
    with bearer.messages.stream(model="o", max_tokens=5, messages=MSG) as s:  # type: ignore[arg-type]
        assert s.get_final_message().content
    heads = [r["headers"] for r in sim.log("m-1")]
    assert heads[0]["x-api-key"] == UP_KEY  # the provider's key, not the client's
    assert all(TEAM not in json.dumps(h) for h in heads)
    assert keyed_gw.metric("router_tokens_total", provider="an", model="a", key="team", kind="input") == 10
    assert keyed_gw.metric("router_tokens_total", provider="oa", model="o", key="team", kind="output") == 5
    assert keyed_gw.metric("router_spend_usd_total", provider="an", model="a", key="team") > 0


def test_missing_and_bad_keys_are_401_authentication_error(keyed_gw):
    body = {"model": "a", "max_tokens": 5, "messages": MSG}
    assert_anthropic_error(keyed_gw.post("/v1/messages", json=body), 401)
    assert_anthropic_error(keyed_gw.post("/v1/messages", json=body, headers={"x-api-key": "sk-wrong"}), 401)
    r = keyed_gw.post("/v1/messages", json=body, headers={"authorization": "Bearer sk-wrong"})
    assert_anthropic_error(r, 401)
    with pytest.raises(anthropic.AuthenticationError):
        keyed_gw.anthropic("sk-wrong").messages.create(**body)


def test_name_outside_the_allow_list_is_403_permission_error(keyed_gw, sim):
    r = keyed_gw.post(
        "/v1/messages",
        json={"model": "o-pricey", "max_tokens": 5, "messages": MSG},
        headers={"x-api-key": TEAM},
    )
    assert_anthropic_error(r, 403)
    with pytest.raises(anthropic.PermissionDeniedError):
        keyed_gw.anthropic(TEAM).messages.create(model="o-pricey", max_tokens=5, messages=MSG)
    assert sim.log() == []


def test_key_over_rpm_is_429_rate_limit_error_with_retry_after(keyed_gw, sim):
    keyed_gw.anthropic(LIMITED).messages.create(model="a", max_tokens=5, messages=MSG)
    r = keyed_gw.post(
        "/v1/messages", json={"model": "a", "max_tokens": 5, "messages": MSG}, headers={"x-api-key": LIMITED}
    )
    assert_anthropic_error(r, 429)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    with pytest.raises(anthropic.RateLimitError):
        keyed_gw.anthropic(LIMITED).messages.create(model="a", max_tokens=5, messages=MSG, stream=True)
    assert len(sim.log("m-1")) == 1


def test_key_over_budget_is_402_billing_error_and_not_retried(keyed_gw, sim):
    # 10 input + 5 output tokens at $1000/M = $0.015 a call; budget $0.02: the third is refused
    c = keyed_gw.anthropic(CAPPED)
    c.messages.create(model="o-pricey", max_tokens=5, messages=MSG)
    with c.messages.stream(model="o-pricey", max_tokens=5, messages=MSG) as s:
        s.get_final_message()
    r = keyed_gw.post(
        "/v1/messages",
        json={"model": "o-pricey", "max_tokens": 5, "messages": MSG},
        headers={"x-api-key": CAPPED},
    )
    assert_anthropic_error(r, 402)
    with pytest.raises(anthropic.APIStatusError) as e:
        keyed_gw.anthropic(CAPPED, max_retries=2).messages.create(
            model="o-pricey", max_tokens=5, messages=MSG
        )
    assert e.value.status_code == 402
    assert len(sim.log("m-1")) == 2
    assert keyed_gw.metric("router_spend_usd_total", provider="oa", model="o-pricey", key="capped") == (
        pytest.approx(0.03)
    )


# routing across dialects ----------------------------------------------------------------------------


def cross_chain(sim, sim2, **extra_a: Any) -> str:
    """chain = [a (Anthropic, sim), b (OpenAI, sim2)]."""
    return (
        provider("an", sim.base_url, api="anthropic", preset="anthropic", api_keys=["env:ANT_UP"], **extra_a)
        + provider("ob", sim2.base_url)
        + model("a", "an", "claude-1", price=PRICE)
        + model("b", "ob", "gpt-1", price=PRICE)
        + '[fallbacks.chat]\nchain = ["a", "b"]\n'
    )


def ask(gw: Gateway, client: str, stream: bool, route: str = "chat") -> tuple[dict[str, str], str, str]:
    """(headers, text, answering model) through ``route``."""
    if client == "openai":
        c = gw.openai()
        if stream:
            raw = c.chat.completions.with_raw_response.create(model=route, messages=MSG, stream=True)
            chunks = list(raw.parse())
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            return dict(raw.headers), text, chunks[-1].model
        raw = c.chat.completions.with_raw_response.create(model=route, messages=MSG)
        resp = raw.parse()
        return dict(raw.headers), resp.choices[0].message.content, resp.model
    a = gw.anthropic()
    if stream:
        with a.messages.with_streaming_response.create(
            model=route, max_tokens=10, messages=MSG, stream=True
        ) as raw:
            headers = dict(raw.headers)
            events = list(raw.parse())
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
        return headers, text, events[0].message.model
    raw = a.messages.with_raw_response.create(model=route, max_tokens=10, messages=MSG)
    msg = raw.parse()
    return dict(raw.headers), msg.content[0].text, msg.model


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_anthropic_529_overloaded_falls_back_to_an_openai_member(gateway, sim, sim2, client, stream):
    sim.script("claude-1", default={"status": 529})  # overloaded_error, Anthropic's own shape
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    headers, text, answered = ask(gw, client, stream)
    assert text == "Hello from gpt-1." and answered == "gpt-1"
    assert headers["x-router-model"] == "b" and headers["x-router-attempts"] == "2"
    assert sim.log("claude-1")[0]["body"]["max_tokens"]  # it was a valid Messages request
    assert gw.metric("router_upstream_requests_total", provider="an", model="a", status="529") == 1
    assert gw.metric("router_fallbacks_total", route="chat", reason="5xx") == 1


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_anthropic_529_counts_toward_the_circuit(gateway, sim, sim2, client):
    sim.script("claude-1", steps=[{"status": 529}])
    gw = gateway(cross_chain(sim, sim2, circuit_failures=1, circuit_open_s=30), env={"ANT_UP": UP_KEY})
    assert ask(gw, client, False)[0]["x-router-model"] == "b"
    headers = ask(gw, client, True)[0]
    assert headers["x-router-model"] == "b" and headers["x-router-attempts"] == "1"  # skipped, no attempt
    assert len(sim.log("claude-1")) == 1
    assert gw.get("/admin/state").json()["deployments"]["a"]["circuit"]["state"] == "open"


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_anthropic_429_cools_the_member_down(gateway, sim, sim2, client):
    sim.script("claude-1", steps=[{"status": 429, "retry_after": 30}])
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    headers, _, answered = ask(gw, client, True)
    assert headers["x-router-model"] == "b" and answered == "gpt-1"
    assert settled(sim, "claude-1")[0]["status"] == 429
    headers2 = ask(gw, client, False)[0]
    assert headers2["x-router-model"] == "b" and headers2["x-router-attempts"] == "1"
    assert len(sim.log("claude-1")) == 1
    assert 25 < gw.get("/admin/state").json()["deployments"]["a"]["cooldown_s"] <= 30
    assert gw.metric("router_rate_limited_total", provider="an", model="a") == 1
    assert gw.metric("router_cooldown_active", provider="an", model="a") == 1
    assert gw.metric("router_fallbacks_total", route="chat", reason="429") == 1


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_overloaded_error_event_before_content_falls_back(gateway, sim, sim2, client):
    sim.script("claude-1", default={"mid_stream_error": 0})  # message_start, then event: error
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    headers, text, answered = ask(gw, client, True)
    assert text == "Hello from gpt-1." and answered == "gpt-1" and headers["x-router-model"] == "b"
    assert settled(sim, "claude-1")[0]["outcome"] == "mid_stream_error"
    assert gw.metric("router_fallbacks_total", route="chat", reason="stream_error") == 1


def test_all_members_failing_is_one_anthropic_error(gateway, sim, sim2):
    sim.script("claude-1", default={"status": 529})
    sim2.script("gpt-1", default={"status": 503})
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    body = assert_anthropic_error(
        gw.post("/v1/messages", json={"model": "chat", "max_tokens": 5, "messages": MSG}), 502
    )
    assert "a: 529" in body["error"]["message"] and "b: 503" in body["error"]["message"]
    with pytest.raises(anthropic.InternalServerError):
        gw.anthropic().messages.create(model="chat", max_tokens=5, messages=MSG)


def test_all_members_rate_limited_is_429_rate_limit_error(gateway, sim, sim2):
    sim.script("claude-1", default={"status": 429, "retry_after": 20})
    sim2.script("gpt-1", default={"status": 429, "retry_after": 3})
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    r = gw.post("/v1/messages", json={"model": "chat", "max_tokens": 5, "messages": MSG})
    assert_anthropic_error(r, 429)
    assert r.headers["retry-after"] == "3"


def test_all_members_timing_out_is_504_timeout_error(gateway, sim, sim2):
    sim.script("claude-1", default={"hang": True})
    sim2.script("gpt-1", default={"hang": True})
    gw = gateway(
        cross_chain(sim, sim2, timeout_s=0.3).replace(
            f'base_url = "{sim2.base_url}"', f'base_url = "{sim2.base_url}"\ntimeout_s = 0.3'
        ),
        env={"ANT_UP": UP_KEY},
    )
    assert_anthropic_error(
        gw.post("/v1/messages", json={"model": "chat", "max_tokens": 5, "messages": MSG}), 504
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_race_across_dialects(gateway, sim, sim2, client, stream):
    """A race between an Anthropic member (slow) and an OpenAI one (quick), from either client."""
    slow = {"delay_s": 2.0, "text": "slow"} if not stream else {"ttft_s": 2.0, "text": "slow"}
    sim.script("claude-1", default=slow)
    sim2.script("gpt-1", default={"delay_s": 0.2, "text": "quick", "usage": {"prompt_tokens": 1000}})
    gw = gateway(
        cross_chain(sim, sim2).replace(
            '[fallbacks.chat]\nchain = ["a", "b"]', '[races.fast]\nmembers = ["a", "b"]'
        ),
        env={"ANT_UP": UP_KEY},
    )
    t = time.monotonic()
    headers, text, answered = ask(gw, client, stream, route="fast")
    assert time.monotonic() - t < 1.5
    assert text == "quick" and answered == "gpt-1" and headers["x-router-model"] == "b"
    # the loser was cancelled: its connection closed (when it had got as far as the simulator)
    assert all(r["client_left"] for r in settled(sim, "claude-1"))
    assert gw.metric("router_race_outcomes_total", race="fast", model="b", outcome="won") == 1
    assert gw.metric("router_race_outcomes_total", race="fast", model="a", outcome="lost") == 1
    assert gw.metric("router_race_wasted_usd_total", race="fast", model="a") == pytest.approx(
        1000 * 1.0 / 1e6
    )


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_race_survives_an_overloaded_anthropic_member(gateway, sim, sim2, client):
    sim.script("claude-1", default={"status": 529})
    sim2.script("gpt-1", default={"delay_s": 0.2, "text": "quick"})
    gw = gateway(
        cross_chain(sim, sim2).replace(
            '[fallbacks.chat]\nchain = ["a", "b"]', '[races.fast]\nmembers = ["a", "b"]'
        ),
        env={"ANT_UP": UP_KEY},
    )
    headers, text, _ = ask(gw, client, True, route="fast")
    assert text == "quick" and headers["x-router-model"] == "b" and headers["x-router-attempts"] == "2"
    assert gw.metric("router_race_outcomes_total", race="fast", model="a", outcome="failed") == 1
    assert gw.metric("router_race_outcomes_total", race="fast", model="b", outcome="won") == 1


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_anthropic_prompt_too_long_moves_the_chain_on(gateway, sim, sim2, client):
    sim.script("claude-1", default={"context_window": 5})  # "prompt is too long: N tokens > 5 maximum"
    gw = gateway(cross_chain(sim, sim2), env={"ANT_UP": UP_KEY})
    long = [{"role": "user", "content": "x" * 400}]
    if client == "openai":
        raw = gw.openai().chat.completions.with_raw_response.create(model="chat", messages=long)
    else:
        raw = gw.anthropic().messages.with_raw_response.create(model="chat", max_tokens=5, messages=long)
    assert raw.headers["x-router-model"] == "b"
    assert settled(sim, "claude-1")[0]["status"] == 400
    assert gw.metric("router_fallbacks_total", route="chat", reason="context_length") == 1


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_deployment_rpm_limit_skips_an_anthropic_member(gateway, sim, sim2, client):
    gw = gateway(
        cross_chain(sim, sim2).replace('model = "claude-1"', 'model = "claude-1"\nrpm = 1'),
        env={"ANT_UP": UP_KEY},
    )
    assert ask(gw, client, False)[0]["x-router-model"] == "a"
    headers = ask(gw, client, True)[0]
    assert headers["x-router-model"] == "b" and headers["x-router-attempts"] == "1"
    assert len(sim.log("claude-1")) == 1


# 6. errors mid-stream -----------------------------------------------------------------------------


def test_anthropic_error_event_after_content_reaches_an_openai_client_as_data_error(gw, sim):
    sim.script("m-1", default={"mid_stream_error": 2, "chunks": 5, "chunk_delay_s": 0.05})
    resp, text = raw_stream(gw, "/v1/chat/completions", {"model": "a", "messages": MSG})
    assert resp.status_code == 200
    events = sse_events(text)
    assert "[DONE]" not in [d for _, d in events]
    name, data = events[-1]
    err = json.loads(data)["error"]
    assert name is None and set(err) == {"message", "type", "param", "code"}
    assert "Overloaded" in err["message"]
    for _, d in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(d))
    assert "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for _, d in events[:-1])
    with pytest.raises(openai.APIError):
        for _ in gw.openai().chat.completions.create(model="a", messages=MSG, stream=True):
            pass


@pytest.mark.parametrize("route", ["a", "o"])
def test_error_after_content_reaches_an_anthropic_client_as_event_error(gw, sim, route):
    sim.script("m-1", default={"mid_stream_error": 2, "chunks": 5, "chunk_delay_s": 0.05})
    resp, text = raw_stream(gw, "/v1/messages", {"model": route, "max_tokens": 10, "messages": MSG})
    assert resp.status_code == 200
    events = check_anthropic_stream(text)
    assert events[-1]["type"] == "error" and "message_stop" not in [e["type"] for e in events]
    ErrorResponse.model_validate(events[-1])
    assert any(e["type"] == "content_block_delta" for e in events)
    with (
        pytest.raises(anthropic.APIStatusError),
        gw.anthropic().messages.stream(model=route, max_tokens=10, messages=MSG) as s,
    ):
        s.get_final_message()
    assert len(sim.log("m-1")) == 2  # no fallback after the first byte


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "fault", [{"cut_after": 2}, {"malformed_after": 2}, {"no_finish": True}, {"stall_after": 2}], ids=str
)
def test_anthropic_upstream_broken_after_content_ends_with_an_error_event(gateway, sim, client, fault):
    sim.script("m-1", default={"chunks": 4, "chunk_delay_s": 0.05, **fault})
    gw = gateway(two_dialects(sim, stream_idle_timeout_s=0.4), env={"ANT_UP": UP_KEY})
    if client == "openai":
        resp, text = raw_stream(gw, "/v1/chat/completions", {"model": "a", "messages": MSG})
        events = sse_events(text)
        assert "[DONE]" not in [d for _, d in events] and "error" in json.loads(events[-1][1])
    else:
        resp, text = raw_stream(gw, "/v1/messages", {"model": "a", "max_tokens": 9, "messages": MSG})
        events2 = check_anthropic_stream(text)
        assert events2[-1]["type"] == "error" and "message_stop" not in [e["type"] for e in events2]
        ErrorResponse.model_validate(events2[-1])
    assert resp.status_code == 200 and resp.headers["x-router-model"] == "a"
    assert gw.metric("router_upstream_requests_total", provider="an", model="a", status="stream_error") == 1


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_anthropic_upstream_finished_without_message_stop_is_ended_properly(gw, sim, client):
    sim.script("m-1", default={"no_done": True, "text": "complete"})
    if client == "openai":
        _, text = raw_stream(gw, "/v1/chat/completions", {"model": "a", "messages": MSG})
        assert check_openai_stream(text)[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        _, text = raw_stream(gw, "/v1/messages", {"model": "a", "max_tokens": 9, "messages": MSG})
        events = check_anthropic_stream(text)
        assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    assert '"error"' not in text


def test_error_event_before_content_falls_back_in_the_module_chain(gw, sim, sim2):
    sim.script("m-1", default={"mid_stream_error": 0})
    with gw.anthropic().messages.stream(model="cross", max_tokens=10, messages=MSG) as s:
        msg = s.get_final_message()
    assert msg.model == "m-2"
    resp, text = raw_stream(gw, "/v1/chat/completions", {"model": "cross", "messages": MSG})
    assert resp.headers["x-router-model"] == "o2" and "Hello from m-2." in "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or "" for _, d in sse_events(text)[:-1]
    )
