"""Provider quirks as data (issue 4, point 4), end to end with both SDKs.

The simulators play strict providers: ``strict_params: true`` is Mistral's request schema
(422 ``extra_forbidden`` for any other field, ``stream_options`` included with
``usage_mode: "final_chunk"``) plus its conversation rules (400 for tool call ids that are not
9 alphanumerics, and for a ``user`` message right after a ``tool`` one); a list names the
fields a provider refuses (``messages[].name`` for Groq's). Each quirk is shown twice: a
provider table without the preset gets the provider's recorded error back, the preset's
provider never does, and the gateway's debug log names every param it dropped or renamed.
"""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest

from asgi_router.translate.passthrough import alnum9
from tests.helpers import Gateway, model, provider
from tests.schemas import validate

MSG = [{"role": "user", "content": "hello"}]


def settled(sim: Any, model: str) -> list[dict[str, Any]]:
    """The simulator's log once every request in flight has its final outcome (a client may
    read the whole answer a moment before the simulator records how it ended)."""
    assert sim.wait_idle(5)
    return sim.log(model)


MISTRAL = "mistral-small-latest"
STRICT_MISTRAL = {"strict_params": True, "usage_mode": "final_chunk"}
GROQ_REFUSES = ["logprobs", "top_logprobs", "logit_bias", "messages[].name"]
CEREBRAS_REFUSES = [
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "parallel_tool_calls",
    "service_tier",
    "logprobs",
    "max_completion_tokens",
]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def gw(module_gateway, module_sims) -> Gateway:
    sim, sim2 = module_sims
    return module_gateway(
        provider("mis", sim.base_url, preset="mistral", api_keys=["env:MIS"])
        + provider("raw", sim.base_url, api_keys=["env:MIS"])  # the same upstream, no preset
        + provider("groq", sim2.base_url, preset="groq", api_keys=["env:GROQ"])
        + provider("raw2", sim2.base_url)
        + provider("cerebras", sim2.base_url, preset="cerebras", api_keys=["env:CEREBRAS"])
        + provider("deepinfra", sim2.base_url, preset="deepinfra", api_keys=["env:DEEPINFRA"])
        + provider("gemini", sim2.base_url, preset="gemini", api_keys=["env:GEMINI"])
        + provider("an", sim2.base_url, preset="anthropic", api="anthropic", api_keys=["env:ANT"])
        + provider("oa", sim2.base_url)
        + model("mistral", "mis", MISTRAL, price={"input": 1.0, "output": 2.0})
        + model("mistral-raw", "raw", MISTRAL)
        + model("groq", "groq", "llama-3.3-70b")
        + model("groq-raw", "raw2", "llama-3.3-70b")
        + model("cerebras", "cerebras", "llama3.1-8b")
        + model("cerebras-raw", "raw2", "llama3.1-8b")
        + model("deepinfra", "deepinfra", "meta-llama/Llama-3.3-70B-Instruct")
        + model("gemini", "gemini", "gemini-2.0-flash")
        + model("claude", "an", "claude-x")
        + model("gpt", "oa", "gpt-x")
        + '[fallbacks.gemini-first]\nchain = ["gemini", "gpt"]\n',
        env={
            "MIS": "mis-key-0000000000",
            "GROQ": "gsk-0000000000",
            "CEREBRAS": "csk-0000000000",
            "DEEPINFRA": "di-0000000000",
            "GEMINI": "gem-0000000000",
            "ANT": "sk-ant-0000000000",
        },
    )


class DebugLog:
    """The gateway's JSON log lines written from now on (debug level: ``--log-level debug``)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.mark = len(gw.logs())

    def lines(self, provider: str) -> list[dict[str, Any]]:
        out = []
        for line in self.gw.logs()[self.mark :].splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("provider") == provider and obj.get("level") == "debug":
                    out.append(obj)
        return out

    def decisions(self, provider: str) -> set[tuple[str, ...]]:
        """(event, param[, to]) of each param decision logged for ``provider``."""
        out = set()
        for x in self.lines(provider):
            if "param" in x:
                out.add((x["event"], x["param"], *([x["to"]] if "to" in x else [])))
            else:
                out.add((x["event"],))
        return out


# Mistral ----------------------------------------------------------------------------------------

FOREIGN_IDS = [
    {"role": "user", "content": "look it up"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9fQ2xZ7LmN4pR8sT",
                "type": "function",
                "function": {"name": "lookup", "arguments": "{}"},
            },
            {"id": "toolu_01XyZ", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_9fQ2xZ7LmN4pR8sT", "content": "found"},
    {"role": "tool", "tool_call_id": "toolu_01XyZ", "content": "also found"},
]
USER_AFTER_TOOL = [
    {"role": "user", "content": "look it up"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "aB3dE5gH7", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "aB3dE5gH7", "content": "found"},
    {"role": "user", "content": "thanks, and now?"},
]

# (case, request kwargs, status the raw provider gets, what the debug log must show)
MISTRAL_CASES = [
    (
        "stream_options",
        {"stream": True, "stream_options": {"include_usage": True}},
        422,
        {("param_dropped", "stream_options")},
    ),
    ("seed", {"seed": 7}, 422, {("param_renamed", "seed", "random_seed")}),
    (
        "max_completion_tokens",
        {"max_completion_tokens": 50},
        422,
        {("param_renamed", "max_completion_tokens", "max_tokens")},
    ),
    (
        "logprobs",
        {"logprobs": True, "top_logprobs": 2},
        422,
        {("param_dropped", "logprobs"), ("param_dropped", "top_logprobs")},
    ),
    ("user", {"user": "user-1"}, 422, {("param_dropped", "user")}),
    ("foreign_tool_ids", {"messages": FOREIGN_IDS, "tools": [TOOL]}, 400, {("tool_call_ids_rewritten",)}),
    ("user_after_tool", {"messages": USER_AFTER_TOOL, "tools": [TOOL]}, 400, {("message_inserted",)}),
]


def _create(c: openai.OpenAI, **kw: Any) -> Any:
    kw.setdefault("messages", MSG)
    if kw.pop("stream", False):
        kw["stream"] = True
        return list(c.chat.completions.create(**kw))
    return c.chat.completions.create(**kw)


@pytest.mark.parametrize(("case", "kw", "status", "logged"), MISTRAL_CASES, ids=[c[0] for c in MISTRAL_CASES])
def test_mistral_without_the_preset_gets_the_recorded_error(gw, sim, case, kw, status, logged):
    sim.script(MISTRAL, default=STRICT_MISTRAL)
    with pytest.raises(openai.APIStatusError) as e:
        _create(gw.openai(), model="mistral-raw", **kw)
    assert e.value.status_code == status
    body = e.value.response.json()
    if status == 422:
        detail = body["error"]["message"] if "error" in body else body["message"]
        assert "Extra inputs are not permitted" in json.dumps(detail)
    else:
        text = json.dumps(body)
        assert "length of 9" in text or "Unexpected role 'user' after role 'tool'" in text


@pytest.mark.parametrize(
    ("case", "kw", "logged", "stream"),
    [
        pytest.param(case, kw, logged, stream, id=f"{case}-{'stream' if stream else 'plain'}")
        for case, kw, _, logged in MISTRAL_CASES
        for stream in (False, True)
        if stream or case != "stream_options"  # stream_options goes with a stream only
    ],
)
def test_mistral_preset_never_gets_the_error_and_logs_each_decision(gw, sim, case, kw, logged, stream):
    sim.script(MISTRAL, default=STRICT_MISTRAL)
    log = DebugLog(gw)
    kw = {**kw, "stream": stream}
    out = _create(gw.openai(), model="mistral", **kw)
    rec = settled(sim, MISTRAL)[0]
    assert rec["outcome"] == "ok" and rec["status"] == 200, rec
    sent = rec["body"]
    assert logged <= log.decisions("mis"), log.lines("mis")
    if stream:
        assert "stream_options" not in sent  # Mistral sends usage anyway
        text = "".join(c.choices[0].delta.content or "" for c in out if c.choices)
    else:
        text = out.choices[0].message.content
    assert text == f"Hello from {MISTRAL}."
    if case == "seed":
        assert sent["random_seed"] == 7 and "seed" not in sent
    if case == "max_completion_tokens":
        assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent
    if case == "foreign_tool_ids":
        ids = [c["id"] for c in sent["messages"][1]["tool_calls"]]
        assert all(len(i) == 9 and i.isalnum() for i in ids) and len(set(ids)) == 2
        assert [m.get("tool_call_id") for m in sent["messages"][2:]] == ids  # rewritten consistently
        assert ids == [alnum9("call_9fQ2xZ7LmN4pR8sT"), alnum9("toolu_01XyZ")]
    if case == "user_after_tool":
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "assistant", "user"]


def test_mistral_preset_debug_log_names_every_param_of_one_request(gw, sim):
    sim.script(MISTRAL, default=STRICT_MISTRAL)
    log = DebugLog(gw)
    list(
        gw.openai().chat.completions.create(
            model="mistral",
            messages=[{"role": "developer", "content": "be brief"}, *USER_AFTER_TOOL[1:3], *FOREIGN_IDS],
            stream=True,
            stream_options={"include_usage": True},
            seed=1,
            max_completion_tokens=9,
            logprobs=True,
            top_logprobs=1,
            user="u",
            tools=[TOOL],
        )
    )
    assert settled(sim, MISTRAL)[0]["outcome"] == "ok"
    assert {
        ("param_dropped", "stream_options"),
        ("param_dropped", "logprobs"),
        ("param_dropped", "top_logprobs"),
        ("param_dropped", "user"),
        ("param_renamed", "seed", "random_seed"),
        ("param_renamed", "max_completion_tokens", "max_tokens"),
        ("param_renamed", "messages[].role=developer", "system"),
        ("tool_call_ids_rewritten",),
        ("message_inserted",),
    } <= log.decisions("mis")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_mistral_rewritten_tool_id_is_mapped_back_in_the_answer(gw, sim, stream):
    """An id the gateway rewrote, echoed by the provider, reaches the client as the client's own;
    an id the provider minted itself passes unchanged."""
    echoed = alnum9("call_9fQ2xZ7LmN4pR8sT")
    sim.script(
        MISTRAL,
        steps=[
            {**STRICT_MISTRAL, "tool_call": {"name": "lookup", "arguments": {}, "id": echoed}},
            {**STRICT_MISTRAL, "tool_call": {"name": "lookup", "arguments": {}, "id": "Zz9Yy8Xx7"}},
        ],
    )
    c = gw.openai()
    for want in ("call_9fQ2xZ7LmN4pR8sT", "Zz9Yy8Xx7"):
        if stream:
            with c.chat.completions.stream(model="mistral", messages=FOREIGN_IDS, tools=[TOOL]) as s:
                final = s.get_final_completion()
        else:
            final = c.chat.completions.create(model="mistral", messages=FOREIGN_IDS, tools=[TOOL])
        assert final.choices[0].message.tool_calls[0].id == want
        assert final.choices[0].finish_reason == "tool_calls"
    assert [r["outcome"] for r in settled(sim, MISTRAL)] == ["ok", "ok"]


ANTHROPIC_TOOL_HISTORY = [
    {"role": "user", "content": "look it up"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_01AbCdEfGh", "name": "lookup", "input": {}}],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01AbCdEfGh", "content": "found"},
            {"type": "text", "text": "thanks, and now?"},  # a user turn right after the tool result
        ],
    },
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_client_to_mistral(gw, sim, stream):
    """toolu_ ids rewritten and mapped back, user-after-tool repaired, usage from the final chunk."""
    echoed = alnum9("toolu_01AbCdEfGh")
    sim.script(
        MISTRAL,
        default={**STRICT_MISTRAL, "tool_call": {"name": "lookup", "arguments": {"q": 2}, "id": echoed}},
    )
    log = DebugLog(gw)
    kw: dict[str, Any] = {
        "model": "mistral",
        "max_tokens": 64,
        "messages": ANTHROPIC_TOOL_HISTORY,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    }
    c = gw.anthropic()
    if stream:
        with c.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = c.messages.create(**kw)
    rec = settled(sim, MISTRAL)[0]
    assert rec["outcome"] == "ok", rec
    roles = [m["role"] for m in rec["body"]["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert rec["body"]["messages"][1]["tool_calls"][0]["id"] == echoed
    tool = msg.content[-1]
    assert tool.type == "tool_use" and tool.id == "toolu_01AbCdEfGh" and tool.input == {"q": 2}
    assert msg.stop_reason == "tool_use"
    assert msg.usage.input_tokens == 10 and msg.usage.output_tokens == 3  # from Mistral's final chunk
    assert {("tool_call_ids_rewritten",), ("message_inserted",)} <= log.decisions("mis")


def test_mistral_stream_usage_from_the_final_chunk_is_booked_and_shown(gw, sim):
    sim.script(MISTRAL, default={**STRICT_MISTRAL, "usage": {"prompt_tokens": 30, "completion_tokens": 4}})
    kw = {"provider": "mis", "model": "mistral", "key": "anonymous"}
    before = gw.metric("router_tokens_total", **kw, kind="input")
    chunks = list(
        gw.openai().chat.completions.create(
            model="mistral", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    # OpenAI's choices:[] usage chunk, though Mistral put its usage on the finish chunk
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 30
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].model == MISTRAL
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))
    assert gw.metric("router_tokens_total", **kw, kind="input") - before == 30
    # a client that did not ask gets no usage chunk (the finish chunk is relayed as it came)
    plain = list(gw.openai().chat.completions.create(model="mistral", messages=MSG, stream=True))
    assert all(c.choices for c in plain)
    with gw.openai().chat.completions.stream(
        model="mistral", messages=MSG, stream_options={"include_usage": True}
    ) as s:
        assert s.get_final_completion().usage.prompt_tokens == 30


def test_n_above_the_provider_maximum_is_a_400_from_the_gateway(gw, sim, sim2):
    for name in ("mistral", "groq"):
        with pytest.raises(openai.BadRequestError) as e:
            gw.openai().chat.completions.create(model=name, messages=MSG, n=2)
        assert e.value.param == "n"
    assert sim.log() == [] and sim2.log() == []


# Groq, Cerebras, DeepInfra, Gemini ------------------------------------------------------------------

GROQ_KW: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi", "name": "alice"}],
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"50256": -100},
}


def test_groq_without_the_preset_gets_the_error(gw, sim2):
    sim2.script("llama-3.3-70b", default={"strict_params": GROQ_REFUSES})
    with pytest.raises(openai.UnprocessableEntityError) as e:
        gw.openai().chat.completions.create(model="groq-raw", **GROQ_KW)
    message = e.value.response.json()["error"]["message"]  # Mistral-style 422, in OpenAI's shape
    assert '"loc":["body","logprobs"]' in message and '"loc":["body","messages",0,"name"]' in message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_groq_preset_never_sends_logprobs_or_names(gw, sim2, stream):
    sim2.script("llama-3.3-70b", default={"strict_params": GROQ_REFUSES})
    log = DebugLog(gw)
    out = _create(gw.openai(), model="groq", stream=stream, **GROQ_KW)
    rec = settled(sim2, "llama-3.3-70b")[0]
    assert rec["outcome"] == "ok"
    assert rec["body"]["messages"] == [{"role": "user", "content": "hi"}]
    if stream:
        assert rec["body"]["stream_options"] == {"include_usage": True}  # Groq takes it
        assert "".join(c.choices[0].delta.content or "" for c in out if c.choices)
    assert {
        ("param_dropped", "logprobs"),
        ("param_dropped", "top_logprobs"),
        ("param_dropped", "logit_bias"),
        ("param_dropped", "messages[].name"),
    } <= log.decisions("groq")


CEREBRAS_KW: dict[str, Any] = {
    "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "frequency_penalty": 0.5,
    "presence_penalty": 0.5,
    "logit_bias": {"1": 1},
    "parallel_tool_calls": False,
    "service_tier": "auto",
    "logprobs": True,
    "max_completion_tokens": 20,
    "tools": [TOOL],
}


def test_cerebras_with_and_without_the_preset(gw, sim2):
    sim2.script("llama3.1-8b", default={"strict_params": CEREBRAS_REFUSES})
    with pytest.raises(openai.UnprocessableEntityError):
        gw.openai().chat.completions.create(model="cerebras-raw", **CEREBRAS_KW)
    log = DebugLog(gw)
    gw.openai().chat.completions.create(model="cerebras", **CEREBRAS_KW)
    rec = settled(sim2, "llama3.1-8b")[-1]
    assert rec["outcome"] == "ok"
    assert rec["body"]["max_tokens"] == 20
    assert rec["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    decisions = log.decisions("cerebras")
    for name in CEREBRAS_REFUSES[:-1]:
        assert ("param_dropped", name) in decisions
    assert ("param_renamed", "max_completion_tokens", "max_tokens") in decisions
    assert ("param_renamed", "messages[].role=developer", "system") in decisions


def test_deepinfra_renames_max_completion_tokens_and_its_fastapi_errors_are_translated(gw, sim2):
    model_id = "meta-llama/Llama-3.3-70B-Instruct"
    sim2.script(model_id, steps=[{"strict_params": ["max_completion_tokens"]}])
    gw.openai().chat.completions.create(model="deepinfra", messages=MSG, max_completion_tokens=5)
    assert sim2.log(model_id)[0]["body"]["max_tokens"] == 5
    detail = {
        "detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "value_error.missing"}]
    }
    sim2.script(model_id, default={"status": 422, "error_body": detail})
    r = gw.post("/v1/chat/completions", json={"model": "deepinfra", "messages": MSG})
    assert r.status_code == 422
    validate("ErrorResponse", r.json())
    assert "field required" in r.json()["error"]["message"]
    with pytest.raises(anthropic.UnprocessableEntityError) as e:
        gw.anthropic().messages.create(model="deepinfra", max_tokens=5, messages=MSG)
    assert (
        cast(Any, e.value.body)["type"] == "error"
        and "field required" in cast(Any, e.value.body)["error"]["message"]
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_tool_calls_ending_with_stop_are_reported_as_tool_calls(gw, sim2, stream):
    sim2.script(
        "gemini-2.0-flash",
        default={"tool_call": {"name": "lookup", "arguments": {"q": 1}}, "finish_reason": "stop"},
    )
    c = gw.openai()
    if stream:
        chunks = list(c.chat.completions.create(model="gemini", messages=MSG, tools=[TOOL], stream=True))
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["tool_calls"]
        assert "stream_options" not in sim2.log("gemini-2.0-flash")[0]["body"]  # usage comes anyway
    else:
        out = c.chat.completions.create(model="gemini", messages=MSG, tools=[TOOL])
        assert out.choices[0].finish_reason == "tool_calls"
    with gw.anthropic().messages.stream(
        model="gemini",
        max_tokens=10,
        messages=MSG,
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    ) as s:
        assert s.get_final_message().stop_reason == "tool_use"


GEMINI_LIST_ERROR = [
    {"error": {"code": 400, "message": "Invalid value at 'temperature'", "status": "INVALID_ARGUMENT"}}
]


def test_gemini_list_shaped_errors_reach_both_clients_in_their_dialect(gw, sim2):
    sim2.script("gemini-2.0-flash", default={"status": 400, "error_body": GEMINI_LIST_ERROR})
    r = gw.post("/v1/chat/completions", json={"model": "gemini", "messages": MSG})
    assert r.status_code == 400
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["message"] == "Invalid value at 'temperature'"
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic().messages.create(model="gemini", max_tokens=5, messages=MSG)
    assert e.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Invalid value at 'temperature'"},
    }


def test_gemini_context_length_wording_moves_a_chain_on(gw, sim2):
    too_long = [
        {
            "error": {
                "code": 400,
                "message": "The input token count (40000) exceeds the maximum number of tokens allowed (32768).",
                "status": "INVALID_ARGUMENT",
            }
        }
    ]
    sim2.script("gemini-2.0-flash", default={"status": 400, "error_body": too_long})
    raw = gw.openai().chat.completions.with_raw_response.create(model="gemini-first", messages=MSG)
    assert raw.headers["x-router-model"] == "gpt" and raw.parse().model == "gpt-x"


# OpenAI client → Anthropic upstream: OpenAI-only params dropped, each logged ----------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_only_params_never_reach_a_strict_anthropic_upstream(gw, sim2, stream):
    sim2.script("claude-x", default={"strict_params": True})  # Anthropic's request schema
    log = DebugLog(gw)
    out = _create(
        gw.openai(),
        model="claude",
        stream=stream,
        seed=3,
        logprobs=True,
        frequency_penalty=0.1,
        response_format={"type": "json_object"},
        temperature=1.7,
        top_p=0.9,
    )
    rec = settled(sim2, "claude-x")[0]
    assert rec["outcome"] == "ok", rec
    assert rec["body"]["temperature"] == 1.0 and "top_p" not in rec["body"]
    if not stream:
        assert out.choices[0].message.content == "Hello from claude-x."
    decisions = log.decisions("an")
    for name in ("seed", "logprobs", "frequency_penalty", "response_format", "top_p"):
        assert ("param_dropped", name) in decisions, decisions
    assert any(x["event"] == "param_clamped" and x["param"] == "temperature" for x in log.lines("an"))


def test_param_decisions_in_the_debug_log_name_their_request(gw, sim):
    sim.script(MISTRAL, default=STRICT_MISTRAL)
    log = DebugLog(gw)
    gw.openai().chat.completions.create(
        model="mistral", messages=MSG, seed=5, extra_headers={"x-request-id": "quirk-request-0001"}
    )
    [line] = [x for x in log.lines("mis") if x["event"] == "param_renamed"]
    assert line.get("request_id") == "quirk-request-0001"


# --- Gemini 3 thought signatures across dialects ---------------------------------------------------

SIGNATURE = "CiQBcsjafD3x+/sig==\u00e9"  # base64's own characters, and one that is not
SIGNED_CALL = {
    "name": "get_weather",
    "arguments": {"city": "Paris"},
    "id": "call_g1",
    "thought_signature": SIGNATURE,
}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_client_keeps_geminis_thought_signature_through_a_tool_loop(gateway, sim, sim2, stream):
    """Gemini 3 answers a tool call with a signature and refuses its replay without it (400).
    An Anthropic client has no field for it: it rides in the tool_use id, and goes back on the
    replayed call to the Gemini preset's provider; another provider gets the plain id."""
    gw = gateway(
        provider("gem", sim.base_url, preset="gemini")
        + provider("plain", sim2.base_url)
        + model("gemini", "gem", "gemini-3-pro")
        + model("other", "plain", "m-other")
    )
    strict = {"require_thought_signatures": True}
    sim.script(
        "gemini-3-pro",
        steps=[{**strict, "tool_call": SIGNED_CALL}, {**strict, "text": "Sunny."}],
        default=strict,
    )
    c = gw.anthropic()
    first_turn: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    kw: dict[str, Any] = {"model": "gemini", "max_tokens": 100, "tools": [WEATHER], "messages": first_turn}
    if stream:
        with c.messages.stream(**kw) as s:
            answer = s.get_final_message()
    else:
        answer = c.messages.create(**kw)
    [use] = [b for b in answer.content if b.type == "tool_use"]
    assert use.id.startswith("call_g1__thought__") and use.input == {"city": "Paris"}
    replay = [
        *first_turn,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}],
        },
    ]
    second = c.messages.create(**{**kw, "messages": replay})
    assert [b.text for b in second.content if b.type == "text"] == ["Sunny."]
    sent = settled(sim, "gemini-3-pro")[1]["body"]["messages"]
    [call] = sent[1]["tool_calls"]
    assert call["id"] == "call_g1" and call["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_g1", "content": "sunny, 21 C"}

    # the simulator plays Gemini 3 here: the same replay without the signature is refused
    unsigned = [
        *sent[:1],
        {**sent[1], "tool_calls": [{k: v for k, v in call.items() if k != "extra_content"}]},
    ]
    r = httpx.post(
        sim.base_url + "/chat/completions",
        json={"model": "gemini-3-pro", "messages": [*unsigned, *sent[2:]]},
        timeout=5,
    )
    assert r.status_code == 400 and "missing a thought_signature" in r.text

    # the same history to a provider without the quirk: the upstream's own id, nothing extra
    c.messages.create(**{**kw, "model": "other", "messages": replay})
    sent = settled(sim2, "m-other")[0]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_g1" and "extra_content" not in sent[1]["tool_calls"][0]
    assert sent[2]["tool_call_id"] == "call_g1"


def test_openai_client_gets_geminis_thought_signature_and_replays_it(gateway, sim):
    """Same dialect: the signature reaches the OpenAI SDK on the tool call as Gemini sent it,
    and the replayed history carries it back unchanged."""
    gw = gateway(provider("gem", sim.base_url, preset="gemini") + model("gemini", "gem", "gemini-3-pro"))
    strict = {"require_thought_signatures": True}
    sim.script(
        "gemini-3-pro", steps=[{**strict, "tool_call": SIGNED_CALL}], default={**strict, "text": "Sunny."}
    )
    c = gw.openai()
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}
    first: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    answer = c.chat.completions.create(model="gemini", messages=first, tools=[tool])
    [call] = answer.choices[0].message.tool_calls or []
    assert call.id == "call_g1" and (call.model_extra or {})["extra_content"] == {
        "google": {"thought_signature": SIGNATURE}
    }
    replay = [
        *first,
        answer.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = c.chat.completions.create(model="gemini", messages=replay, tools=[tool])
    assert second.choices[0].message.content == "Sunny."
