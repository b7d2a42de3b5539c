"""POST /v1/embeddings through the graph (issue 4, point 5): the openai SDK's default base64
encoding passed through and decoded to the same floats as the float format, spend from input
tokens, fallbacks on 429/5xx, and deployments that speak Anthropic (no embeddings endpoint)
refused with a clear message before any upstream request."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import openai
import pytest

from tests.helpers import Gateway, model, provider
from tests.schemas import validate

PRICE = {"input": 0.02, "output": 0.0}


def embedding_config(sim, sim2) -> str:
    return (
        provider("e1", sim.base_url)
        + provider("e2", sim2.base_url)
        + provider("an", sim.base_url, api="anthropic", preset="anthropic", api_keys=["env:ANT_UP"])
        + provider("mis", sim2.base_url, preset="mistral", api_keys=["env:MIS_UP"])
        + model("emb-a", "e1", "text-emb-a", price=PRICE)
        + model("emb-b", "e2", "text-emb-b", price=PRICE)
        + model("claude", "an", "claude-x")
        + model("mistral-embed", "mis", "mistral-embed", price=PRICE)
        + '[fallbacks.emb]\nchain = ["emb-a", "emb-b"]\n'
        + '[fallbacks.claude-first]\nchain = ["claude", "emb-a"]\n'
        + '[fallbacks.claude-last]\nchain = ["emb-a", "claude"]\n'
    )


ENV = {"ANT_UP": "sk-ant-up-000000000000", "MIS_UP": "mis-up-000000000000"}


@pytest.fixture(scope="module")
def gw(module_gateway, module_sims) -> Gateway:
    return module_gateway(embedding_config(*module_sims), env=ENV)


def test_sdk_default_base64_decodes_to_the_same_floats_as_float_format(gw, sim):
    c = gw.openai()
    default = c.embeddings.create(model="emb-a", input=["hello", "world"])  # SDK sends base64
    floats = c.embeddings.create(model="emb-a", input=["hello", "world"], encoding_format="float")
    sent = [r["body"] for r in sim.log("text-emb-a")]
    assert sent[0]["encoding_format"] == "base64" and sent[1]["encoding_format"] == "float"
    assert sent[0]["model"] == "text-emb-a" and sent[0]["input"] == ["hello", "world"]
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8
    assert default.data[0].embedding != default.data[1].embedding
    assert default.model == "text-emb-a"


def test_base64_answer_is_passed_through_unchanged(gw, sim):
    r = gw.post("/v1/embeddings", json={"model": "emb-a", "input": "hello", "encoding_format": "base64"})
    assert r.status_code == 200
    packed = r.json()["data"][0]["embedding"]
    assert isinstance(packed, str)
    vector = struct.unpack("<8f", base64.b64decode(packed))
    plain = gw.post("/v1/embeddings", json={"model": "emb-a", "input": "hello"}).json()
    validate("CreateEmbeddingResponse", plain)
    assert list(vector) == plain["data"][0]["embedding"]


def test_spend_and_tokens_come_from_input_tokens(gw, sim):
    sim.script("text-emb-a", default={"usage": {"prompt_tokens": 1000}})
    before_in = gw.metric("router_tokens_total", provider="e1", model="emb-a", key="anonymous", kind="input")
    before_usd = gw.metric("router_spend_usd_total", provider="e1", model="emb-a", key="anonymous")
    raw = gw.openai().embeddings.with_raw_response.create(model="emb-a", input="some text")
    assert raw.parse().usage.prompt_tokens == 1000
    assert raw.headers["x-router-model"] == "emb-a" and raw.headers["x-router-provider"] == "e1"
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(1000 * 0.02 / 1e6)
    kw = {"provider": "e1", "model": "emb-a", "key": "anonymous"}
    assert gw.metric("router_tokens_total", **kw, kind="input") - before_in == 1000
    assert gw.metric("router_spend_usd_total", **kw) - before_usd == pytest.approx(1000 * 0.02 / 1e6)


def test_anthropic_deployment_is_refused_clearly_without_an_upstream_request(gw, sim):
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().embeddings.create(model="claude", input="hello")
    assert "anthropic" in e.value.message and "embeddings" in e.value.message
    body = e.value.response.json()
    validate("ErrorResponse", body)
    assert sim.log() == []


def test_a_member_that_cannot_embed_is_skipped_without_a_request(gw, sim):
    """A member that cannot take the request at all (its dialect has no embeddings) is passed
    over like a cooling one: no upstream request, and the chain's next member answers."""
    r = gw.post("/v1/embeddings", json={"model": "claude-first", "input": "hello"})
    assert r.status_code == 200 and r.headers["x-router-model"] == "emb-a"
    assert r.headers["x-router-attempts"] == "1"
    assert [rec["model"] for rec in sim.log()] == ["text-emb-a"]


def test_embeddings_to_a_mistral_preset_drop_and_rename_with_a_debug_line(gw, sim2):
    sim2.script("mistral-embed", default={"strict_params": True})  # Mistral's embeddings schema
    mark = len(gw.logs())
    out = gw.openai().embeddings.create(model="mistral-embed", input="hello", user="u-1", dimensions=4)
    assert len(out.data[0].embedding) == 4
    sent = sim2.log("mistral-embed")[0]["body"]
    assert "user" not in sent and "dimensions" not in sent and sent["output_dimension"] == 4
    lines = [json.loads(x) for x in gw.logs()[mark:].splitlines() if x.startswith("{")]
    events = {(x["event"], x.get("param")) for x in lines if x.get("provider") == "mis"}
    assert ("param_dropped", "user") in events and ("param_renamed", "dimensions") in events


def test_embeddings_to_mistral_without_the_preset_get_the_422(gateway, sim, sim2):
    """The recorded failure the preset prevents: Mistral's strict schema refuses OpenAI's names."""
    sim2.script("mistral-embed", default={"strict_params": True})
    gw = gateway(provider("raw", sim2.base_url) + model("m", "raw", "mistral-embed"))
    with pytest.raises(openai.UnprocessableEntityError) as e:
        gw.openai().embeddings.create(model="m", input="hello", user="u-1", dimensions=4)
    assert "Extra inputs are not permitted" in e.value.response.text


@pytest.mark.parametrize("status", [429, 500, 503])
def test_embeddings_fall_back_on_429_and_5xx(gateway, sim, sim2, status):
    sim.script("text-emb-a", default={"status": status, "retry_after": 30})
    gw = gateway(embedding_config(sim, sim2), env=ENV)
    raw = gw.openai().embeddings.with_raw_response.create(model="emb", input="hello")
    assert raw.headers["x-router-model"] == "emb-b" and raw.headers["x-router-attempts"] == "2"
    assert raw.parse().model == "text-emb-b"
    reason = "429" if status == 429 else "5xx"
    assert gw.metric("router_fallbacks_total", route="emb", reason=reason) == 1
    assert gw.metric("router_upstream_requests_total", provider="e1", model="emb-a", status=str(status)) == 1
    if status == 429:  # cooling: the next request skips it without an attempt
        again = gw.openai().embeddings.with_raw_response.create(model="emb", input="hello")
        assert again.headers["x-router-model"] == "emb-b" and again.headers["x-router-attempts"] == "1"
        assert len(sim.log("text-emb-a")) == 1


def test_embeddings_all_failed_is_one_openai_error(gateway, sim, sim2):
    sim.script("text-emb-a", default={"status": 500})
    sim2.script("text-emb-b", default={"status": 502})
    gw = gateway(embedding_config(sim, sim2), env=ENV)
    r = gw.post("/v1/embeddings", json={"model": "emb", "input": "hello"})
    assert r.status_code == 502
    validate("ErrorResponse", r.json())
    assert "emb-a: 500" in r.json()["error"]["message"] and "emb-b: 502" in r.json()["error"]["message"]


def test_embeddings_bad_input_is_400(gw):
    r = gw.post("/v1/embeddings", json={"model": "emb-a"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = gw.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(
        gw.url + "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_rate_limited_chain_ending_in_an_anthropic_member_is_still_429(gateway, sim, sim2):
    sim.script("text-emb-a", default={"status": 429, "retry_after": 7})
    gw = gateway(embedding_config(sim, sim2), env=ENV)
    r = gw.post("/v1/embeddings", json={"model": "claude-last", "input": "hello"})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"
