"""The simulator driven by the official openai and anthropic SDKs: what a real provider answers."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from asgi_router.sim import SimServer
from asgi_router.sim.openai_api import embedding_vector

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer() as sim:
        yield sim


@pytest.fixture
def sim(server: SimServer) -> SimServer:
    server.wait_idle(2.0)
    server.reset()
    return server


@pytest.fixture
def oai(sim: SimServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=5.0) as client:
        yield client


@pytest.fixture
def ant(sim: SimServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sim.root_url, api_key="ak-test", max_retries=0, timeout=5.0) as client:
        yield client


# OpenAI


def test_chat_completion(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("gpt-x", [{"text": "Hi there!", "usage": {"prompt_tokens": 12, "completion_tokens": 3}}])
    out = oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert out.model == "gpt-x"
    assert out.choices[0].message.content == "Hi there!"
    assert out.choices[0].message.refusal is None
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (12, 3)
    assert sim.wait_idle()  # the record's outcome is set just after the body went out
    [record] = sim.log("gpt-x")
    assert record["outcome"] == "ok" and record["status"] == 200 and record["path"] == "/v1/chat/completions"
    assert record["headers"]["authorization"] == "Bearer sk-test"
    assert record["body"]["messages"] == MESSAGES


def test_chat_stream_with_usage(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("gpt-x", [{"text": "abcdef", "chunks": 3}])
    stream = oai.chat.completions.create(
        model="gpt-x",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["ab", "cd", "ef"]
    assert chunks[4].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-1].usage.prompt_tokens == 10


def test_stream_without_include_usage_sends_no_usage(sim: SimServer) -> None:
    with httpx.Client() as http:
        body = {"model": "gpt-x", "messages": MESSAGES, "stream": True}
        text = http.post(sim.base_url + "/chat/completions", json=body).text
    assert '"usage"' not in text
    assert text.endswith("data: [DONE]\n\n")


def test_tool_call_accumulated_by_the_stream_helper(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("gpt-x", [{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    with oai.chat.completions.stream(model="gpt-x", messages=MESSAGES, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris"}'
    assert call.id.startswith("call_")


def test_tool_call_true_answers_with_the_requests_tool(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("gpt-x", default={"tool_call": True})
    out = oai.chat.completions.create(model="gpt-x", messages=MESSAGES, tools=TOOLS)
    assert out.choices[0].message.tool_calls is not None
    [call] = out.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert out.choices[0].message.content is None
    plain = oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64_agree(sim: SimServer, oai: openai.OpenAI) -> None:
    default = oai.embeddings.create(model="emb", input=["one", "two"])  # SDK asks for base64 by default
    floats = oai.embeddings.create(model="emb", input=["one", "two"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert floats.data[0].embedding == embedding_vector("one", 8)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 2
    [b64, flt] = sim.log("emb")
    assert b64["body"]["encoding_format"] == "base64" and flt["body"]["encoding_format"] == "float"
    dims = oai.embeddings.create(model="emb", input="x", dimensions=3, encoding_format="float")
    assert len(dims.data[0].embedding) == 3


def test_base64_embedding_is_packed_float32(sim: SimServer) -> None:
    with httpx.Client() as http:
        body = {"model": "emb", "input": "hello", "encoding_format": "base64"}
        data = http.post(sim.base_url + "/embeddings", json=body).json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_vector("hello", 8)


def test_models_list(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("a-model", [])
    sim.script("b-model", [])
    ids = [m.id for m in oai.models.list()]
    assert ids == ["a-model", "b-model"]


def test_rate_limit_with_retry_after(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("gpt-x", [{"status": 429, "retry_after": 7, "retry_after_ms": 6500}])
    with pytest.raises(openai.RateLimitError) as err:
        oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.response.headers["retry-after-ms"] == "6500"
    assert err.value.code == "rate_limit_exceeded"
    assert "Please try again in 7s." in err.value.message
    # the script is used up: the next request succeeds
    assert oai.chat.completions.create(model="gpt-x", messages=MESSAGES).choices
    assert sim.wait_idle()
    assert [r["outcome"] for r in sim.log("gpt-x")] == ["error_status", "ok"]


def test_error_overrides(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script(
        "gpt-x",
        [
            {"status": 429, "error_type": "insufficient_quota", "error_code": "insufficient_quota"},
            {"status": 503, "error_body": "<html>upstream down</html>"},
        ],
    )
    with pytest.raises(openai.RateLimitError) as quota:
        oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert quota.value.code == "insufficient_quota" and quota.value.type == "insufficient_quota"
    with pytest.raises(openai.InternalServerError) as down:
        oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert down.value.response.text == "<html>upstream down</html>"


def test_context_window_openai(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("small", default={"context_window": 5})
    long: Any = [{"role": "user", "content": "x" * 24}]  # 6 tokens
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="small", messages=long)
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 5 tokens" in err.value.message
    ok = oai.chat.completions.create(model="small", messages=[{"role": "user", "content": "x" * 20}])
    assert ok.choices[0].finish_reason == "stop"


def test_strict_params_mistral_422(sim: SimServer) -> None:
    sim.script("mistral-small", default={"strict_params": ["logprobs"], "usage_mode": "final_chunk"})
    with httpx.Client() as http:
        body = {
            "model": "mistral-small",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        r = http.post(sim.base_url + "/chat/completions", json={**body, "logprobs": True})
        assert r.status_code == 422
        assert r.json() == {
            "object": "error",
            "message": {
                "detail": [
                    {
                        "type": "extra_forbidden",
                        "loc": ["body", "logprobs"],
                        "msg": "Extra inputs are not permitted",
                    },
                    {
                        "type": "extra_forbidden",
                        "loc": ["body", "stream_options"],
                        "msg": "Extra inputs are not permitted",
                    },
                ]
            },
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        del body["stream_options"]
        text = http.post(sim.base_url + "/chat/completions", json=body).text
    events = [line for line in text.split("\n\n") if line]
    finish = events[-2]
    assert '"finish_reason":"stop"' in finish and '"completion_tokens":5' in finish
    assert all('"usage"' not in e for e in events[:-2])


def test_strict_params_true_uses_mistral_schema(sim: SimServer, oai: openai.OpenAI) -> None:
    sim.script("mistral-small", default={"strict_params": True})
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model="mistral-small", messages=MESSAGES, seed=1)
    out = oai.chat.completions.create(model="mistral-small", messages=MESSAGES, temperature=0.2)
    assert out.choices


def test_check_auth(sim: SimServer, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    sim.script("*", default={"check_auth": "sk-test"})
    assert oai.chat.completions.create(model="gpt-x", messages=MESSAGES).choices
    sim.script("*", default={"check_auth": "other"})
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    with pytest.raises(anthropic.AuthenticationError) as err:
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    assert err.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    with httpx.Client() as http:
        body = {"model": "claude-x", "max_tokens": 5, "messages": MESSAGES}
        assert (
            http.post(sim.root_url + "/v1/messages", json=body, headers={"x-api-key": "other"}).status_code
            == 200
        )


# Anthropic


def test_message(sim: SimServer, ant: anthropic.Anthropic) -> None:
    sim.script("claude-x", [{"text": "Bonjour", "usage": {"prompt_tokens": 30, "cached_tokens": 10}}])
    msg = ant.messages.create(model="claude-x", max_tokens=50, messages=MESSAGES)
    assert msg.model == "claude-x" and msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text == "Bonjour"
    assert (
        msg.usage.input_tokens == 20
        and msg.usage.cache_read_input_tokens == 10
        and msg.usage.output_tokens == 5
    )
    assert sim.log("claude-x")[0]["dialect"] == "anthropic"


def test_message_stream_final_message(sim: SimServer, ant: anthropic.Anthropic) -> None:
    sim.script("claude-x", [{"text": "Hello, world", "chunks": 4, "usage": {"prompt_tokens": 15}}])
    with ant.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["Hel", "lo,", " wo", "rld"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello, world"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 15 and final.usage.output_tokens == 4


def test_message_stream_event_sequence(sim: SimServer) -> None:
    with httpx.Client() as http:
        body = {"model": "claude-x", "max_tokens": 5, "messages": MESSAGES, "stream": True}
        r = http.post(sim.root_url + "/v1/messages", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    names = [e.split("\n")[0] for e in events]
    assert names == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
        *["event: content_block_delta"] * 5,
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ]
    for e in events:
        name, data = e.split("\n")
        assert data.startswith("data: {") and f'"type":"{name[7:]}"' in data


def test_tool_use_stream(sim: SimServer, ant: anthropic.Anthropic) -> None:
    sim.script(
        "claude-x",
        [{"text": "Let me check.", "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    )
    tools: Any = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with ant.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES, tools=tools) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"city": "Oslo"}
    assert tool.id.startswith("toolu_")


def test_anthropic_requires_max_tokens(sim: SimServer) -> None:
    with httpx.Client() as http:
        r = http.post(sim.root_url + "/v1/messages", json={"model": "claude-x", "messages": MESSAGES})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_context_window_anthropic(sim: SimServer, ant: anthropic.Anthropic) -> None:
    sim.script("claude-x", [{"context_window": 2}])
    with pytest.raises(anthropic.BadRequestError) as err:
        ant.messages.create(model="claude-x", max_tokens=5, system="abcdef", messages=MESSAGES)
    body: Any = err.value.body
    assert body["error"]["message"] == "prompt is too long: 4 tokens > 2 maximum"


def test_anthropic_errors(sim: SimServer, ant: anthropic.Anthropic) -> None:
    sim.script("claude-x", [{"status": 529}, {"status": 429, "retry_after": 3}])
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        ant.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "3"


def test_mid_stream_errors_raise_in_both_sdks(
    sim: SimServer, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    sim.script("*", default={"mid_stream_error": 2})
    got: list[str] = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        for chunk in oai.chat.completions.create(model="gpt-x", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 2
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        ant.messages.stream(model="claude-x", max_tokens=5, messages=MESSAGES) as stream,
    ):
        stream.get_final_message()
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    sim.wait_idle()
    assert [r["outcome"] for r in sim.log()] == ["mid_stream_error", "mid_stream_error"]


def test_response_model_and_finish_reason_overrides(
    sim: SimServer, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    sim.script("*", default={"response_model": "gpt-x-2024-08-06", "finish_reason": "length"})
    out = oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert out.model == "gpt-x-2024-08-06" and out.choices[0].finish_reason == "length"
    msg = ant.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    assert msg.stop_reason == "max_tokens"


# schemas: OpenAI's published spec, the anthropic SDK's types

SCHEMA_PATHS = [
    Path(__file__).parents[1] / "fixtures" / "openai-schemas.json",
    Path("/work/shared/reference/openai-schemas.json"),
]


def openai_validator(name: str) -> Any:
    """A jsonschema validator for one of OpenAI's component schemas (``nullable`` → "or null")."""
    jsonschema = pytest.importorskip("jsonschema")
    path = next((p for p in SCHEMA_PATHS if p.exists()), None)
    if path is None:
        pytest.skip("openai-schemas.json not available")

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: fix(v) for k, v in node.items() if k != "discriminator"}
            if node.pop("nullable", False):
                return {"anyOf": [node, {"type": "null"}]}
            return node
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    spec = fix(json.loads(path.read_text()))
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def sse_data(text: str) -> list[Any]:
    out = []
    for event in text.split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


STEPS_TO_VALIDATE = [
    {},
    {"tool_call": {"name": "get_weather", "arguments": {"city": "Rome"}}, "text": "Sure."},
    {"usage_mode": "final_chunk"},
    {"finish_reason": "length", "usage": {"prompt_tokens": 9, "cached_tokens": 4}},
]


@pytest.mark.parametrize("step", STEPS_TO_VALIDATE)
def test_openai_wire_output_validates(sim: SimServer, step: dict[str, Any]) -> None:
    sim.script("gpt-x", default=step)
    body = {"model": "gpt-x", "messages": MESSAGES, "tools": TOOLS}
    with httpx.Client(base_url=sim.base_url) as http:
        plain = http.post("/chat/completions", json=body).json()
        streamed = http.post(
            "/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
        ).text
    openai_validator("CreateChatCompletionResponse").validate(plain)
    chunks = sse_data(streamed)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    chunk_schema = openai_validator("CreateChatCompletionStreamResponse")
    for chunk in chunks:
        chunk_schema.validate(chunk)
        assert chunk["id"] == chunks[0]["id"] and chunk["created"] == chunks[0]["created"]


def test_openai_other_shapes_validate(sim: SimServer) -> None:
    sim.script("gpt-x", [{"status": 429}, {"status": 500}])
    with httpx.Client(base_url=sim.base_url) as http:
        for _ in range(2):
            openai_validator("ErrorResponse").validate(
                http.post("/chat/completions", json={"model": "gpt-x", "messages": MESSAGES}).json()
            )
        openai_validator("ErrorResponse").validate(http.post("/chat/completions", content=b"[").json())
        openai_validator("ListModelsResponse").validate(http.get("/models").json())
        emb = http.post("/embeddings", json={"model": "e", "input": ["a", "b"]}).json()
    openai_validator("CreateEmbeddingResponse").validate(emb)


@pytest.mark.parametrize("step", STEPS_TO_VALIDATE)
def test_anthropic_wire_output_validates_against_sdk_types(sim: SimServer, step: dict[str, Any]) -> None:
    from anthropic.types import Message, RawMessageStreamEvent
    from pydantic import TypeAdapter

    sim.script("claude-x", default=step)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = {"model": "claude-x", "max_tokens": 20, "messages": MESSAGES, "tools": tools}
    with httpx.Client(base_url=sim.root_url) as http:
        plain = http.post("/v1/messages", json=body).json()
        streamed = http.post("/v1/messages", json={**body, "stream": True}).text
    Message.model_validate(plain)
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    events = sse_data(streamed)
    for event in events:
        if event["type"] != "ping":
            adapter.validate_python(event)
    indices = [e["index"] for e in events if e["type"] == "content_block_start"]
    assert indices == list(range(len(indices)))
