"""POST /v1/chat/completions through the gateway with the openai SDK: plain, streamed,
tools and response_format passed through, /v1/models, health, and bad input."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers import model, provider
from tests.schemas import validate

OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def gw(module_gateway, module_sims):
    return module_gateway(
        provider("up", module_sims[0].base_url)
        + model("small", "up", "up-small", price={"input": 1.0, "output": 2.0}, params={"temperature": 0.3})
        + model("big", "up", "up-big", price={"input": 10.0, "output": 20.0})
        + '[fallbacks.chat]\nchain = ["small", "big"]\n'
    )


def test_plain_completion_has_router_headers_and_valid_body(gw, sim):
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hello from up-small."
    assert resp.model == "up-small"  # what the upstream reported, not the public name
    h = raw.headers
    assert h["x-router-model"] == "small"
    assert h["x-router-provider"] == "up"
    assert h["x-router-attempts"] == "1"
    assert float(h["x-router-cost-usd"]) == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    assert len(h["x-request-id"]) >= 16
    validate("CreateChatCompletionResponse", json.loads(raw.http_response.content))
    sent = sim.log("up-small")[0]["body"]
    assert sent["model"] == "up-small" and sent["temperature"] == 0.3  # deployment default params merged
    assert "authorization" not in sim.log("up-small")[0]["headers"]  # the client's key is not forwarded


def test_client_params_win_over_deployment_defaults(gw, sim):
    gw.openai().chat.completions.create(
        model="small", messages=[{"role": "user", "content": "x"}], temperature=1.5
    )
    assert sim.log("up-small")[0]["body"]["temperature"] == 1.5


def test_stream_relays_chunks_and_hides_usage_chunk_not_asked_for(gw, sim):
    sim.script("up-small", default={"text": "one two three four", "chunks": 4})
    chunks = list(
        gw.openai().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four"
    assert all(c.choices for c in chunks)  # no choices:[] usage chunk for a client that did not ask
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "up-small" for c in chunks)
    # the gateway asked the upstream for usage anyway, for spend
    assert sim.log("up-small")[0]["body"]["stream_options"] == {"include_usage": True}
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))


def test_stream_usage_chunk_kept_when_client_asks(gw, sim):
    chunks = list(
        gw.openai().chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 10


def test_tools_and_response_format_pass_through(gw, sim):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    sim.script("up-small", default={"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    resp = gw.openai().chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        response_format={"type": "json_object"},
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert resp.choices[0].finish_reason == "tool_calls"
    body = sim.log("up-small")[0]["body"]
    assert body["tools"] == tools and body["response_format"] == {"type": "json_object"}


def test_streamed_tool_calls_accumulate_in_the_sdk(gw, sim):
    sim.script("up-small", default={"tool_call": {"name": "lookup", "arguments": {"q": "x"}}})
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with gw.openai().chat.completions.stream(
        model="small", messages=[{"role": "user", "content": "hi"}], tools=tools
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"q": "x"}' or json.loads(
        final.choices[0].message.tool_calls[0].function.arguments
    ) == {"q": "x"}


def test_models_lists_public_names(gw):
    models = gw.openai().models.list()
    assert sorted(m.id for m in models.data) == ["big", "chat", "small"]
    body = gw.get("/v1/models").json()
    validate("ListModelsResponse", body)


def test_health_and_readiness(gw):
    assert gw.get("/healthz").status_code == 200
    r = gw.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def _assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == OPENAI_ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    if code is not None:
        assert err["code"] == code
    assert "x-request-id" in r.headers
    return err


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"[1, 2]", {"content-type": "application/json"}, 400),
        (b'{"messages": [{"role": "user", "content": "x"}]}', {"content-type": "application/json"}, 400),
        (
            b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}',
            {"content-type": "application/json"},
            400,
        ),
        (b'{"model": "small"}', {"content-type": "application/json"}, 400),
        (b'{"model": "small", "messages": [], "stream": "yes"}', {"content-type": "application/json"}, 400),
        (
            b'{"model": "small", "messages": [{"role": "user", "content": "x"}]}',
            {"content-type": "text/plain"},
            415,
        ),
    ],
)
def test_bad_input_gets_openai_shaped_errors(gw, content, headers, status):
    _assert_openai_error(gw.post("/v1/chat/completions", content=content, headers=headers), status)


def test_missing_model_names_param(gw):
    err = _assert_openai_error(gw.post("/v1/chat/completions", json={"messages": []}), 400)
    assert err["param"] == "model"


def test_unknown_model_is_404_model_not_found(gw):
    with pytest.raises(openai.NotFoundError) as e:
        gw.openai().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    # names not in the config count under route="unknown": never an unbounded label set
    assert gw.metric("router_requests_total", route="unknown", status="404") == 1
    assert gw.metric("router_requests_total", route="nope", status="404") == 0


def test_body_over_limit_is_413_from_the_header(gw):
    big = b'{"model": "small", "messages": [{"role": "user", "content": "' + b"x" * 4_100_000 + b'"}]}'
    _assert_openai_error(
        gw.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"}), 413
    )


def test_body_over_limit_without_content_length_is_413(gw):
    def chunks():
        yield b'{"model": "small", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"x" * 100_000
        yield b'"}]}'

    r = gw.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    _assert_openai_error(r, 413)


def test_unknown_route_and_wrong_method(gw):
    _assert_openai_error(gw.get("/v1/nothing-here"), 404)
    _assert_openai_error(gw.get("/v1/chat/completions"), 405)


def test_a_numeric_code_in_an_upstream_error_becomes_a_string(gw, sim):
    sim.script(
        "up-small",
        steps=[
            {
                "status": 400,
                "error_body": {
                    "error": {"message": "bad value", "type": "BadRequestError", "param": None, "code": 400}
                },
            }
        ],
    )
    r = gw.post(
        "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "x"}]}
    )
    err = _assert_openai_error(r, 400)
    assert err["code"] == "400" and err["message"] == "bad value"
