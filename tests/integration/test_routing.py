"""Routing per CONTRACT §2 against simulated providers: fallbacks, cooldowns, circuits,
retries, client errors, the all-failed answers, and orders."""

from __future__ import annotations

import time

import openai
import pytest

from tests.helpers import model, provider

MSG = [{"role": "user", "content": "hello"}]


def two_member_chain(sim, sim2, chain_extra: str = "", prov_extra: dict | None = None) -> str:
    return (
        provider("a", sim.base_url, **(prov_extra or {}))
        + provider("b", sim2.base_url)
        + model("first", "a", "m-first", price={"input": 1.0, "output": 1.0})
        + model("second", "b", "m-second", price={"input": 1.0, "output": 1.0})
        + '[fallbacks.chat]\nchain = ["first", "second"]\n'
        + chain_extra
    )


def ask(gw, name="chat", **kw):
    return gw.openai().chat.completions.with_raw_response.create(model=name, messages=MSG, **kw)


def test_429_falls_back_and_cools_the_member(gateway, sim, sim2):
    sim.script("m-first", default={"status": 429, "retry_after": 30})
    gw = gateway(two_member_chain(sim, sim2))
    r = ask(gw)
    assert r.headers["x-router-model"] == "second" and r.headers["x-router-attempts"] == "2"
    assert r.parse().model == "m-second"
    # the cooling member is skipped without an attempt
    r2 = ask(gw)
    assert r2.headers["x-router-model"] == "second" and r2.headers["x-router-attempts"] == "1"
    assert len(sim.log("m-first")) == 1
    state = gw.get("/admin/state").json()["deployments"]["first"]
    assert 25 < state["cooldown_s"] <= 30
    assert gw.metric("router_rate_limited_total", provider="a", model="first") == 1
    assert gw.metric("router_cooldown_active", provider="a", model="first") == 1
    assert gw.metric("router_fallbacks_total", route="chat", reason="429") == 1
    assert gw.metric("router_upstream_requests_total", provider="a", model="first", status="429") == 1


def test_retry_after_ms_is_preferred_and_cooldown_expires(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 429, "retry_after_ms": 300, "retry_after": 60}])
    gw = gateway(two_member_chain(sim, sim2))
    assert ask(gw).headers["x-router-model"] == "second"
    time.sleep(0.4)
    assert ask(gw).headers["x-router-model"] == "first"


def test_per_key_cooldown_rotates_keys(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 429, "retry_after": 30}])
    gw = gateway(
        two_member_chain(sim, sim2, prov_extra={"api_keys": ["env:K1", "env:K2"]}),
        env={"K1": "key-one", "K2": "key-two"},
    )
    assert ask(gw).headers["x-router-model"] == "second"  # key one got the 429
    r = ask(gw)
    assert r.headers["x-router-model"] == "first"  # key two still serves
    auths = [rec["headers"]["authorization"] for rec in sim.log("m-first")]
    assert auths == ["Bearer key-one", "Bearer key-two"]


def test_quota_429_cools_for_long(gateway, sim, sim2):
    sim.script(
        "m-first",
        steps=[
            {
                "status": 429,
                "error_type": "insufficient_quota",
                "error_code": "insufficient_quota",
                "retry_after": 1,
            }
        ],
    )
    gw = gateway(two_member_chain(sim, sim2))
    ask(gw)
    assert gw.get("/admin/state").json()["deployments"]["first"]["cooldown_s"] > 300


def test_all_rate_limited_gives_429_with_shortest_retry_after(gateway, sim, sim2):
    sim.script("m-first", default={"status": 429, "retry_after": 20})
    sim2.script("m-second", default={"status": 429, "retry_after_ms": 2500})
    gw = gateway(two_member_chain(sim, sim2))
    r = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"  # 2.5 s rounded up to whole seconds
    assert 2400 <= int(r.headers["retry-after-ms"]) <= 2500
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    # while both cool, no attempt is spent and the answer is still 429 with the remaining time
    r2 = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r2.status_code == 429 and int(r2.headers["retry-after"]) >= 1
    assert len(sim.log("m-first")) == 1 and len(sim2.log("m-second")) == 1


def test_5xx_falls_back_and_all_5xx_is_502_listing_attempts(gateway, sim, sim2):
    sim.script("m-first", default={"status": 503})
    sim2.script("m-second", steps=[{"status": 500}])
    gw = gateway(two_member_chain(sim, sim2))
    r = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 502
    msg = r.json()["error"]["message"]
    assert "first: 503" in msg and "second: 500" in msg
    assert ask(gw).headers["x-router-model"] == "second"


def test_all_timeouts_is_504(gateway, sim, sim2):
    sim.script("m-first", default={"hang": True})
    sim2.script("m-second", default={"hang": True})
    gw = gateway(
        provider("a", sim.base_url, timeout_s=0.3)
        + provider("b", sim2.base_url, timeout_s=0.3)
        + model("first", "a", "m-first")
        + model("second", "b", "m-second")
        + '[fallbacks.chat]\nchain = ["first", "second"]\n'
    )
    r = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 504, r.text
    assert gw.metric("router_upstream_requests_total", provider="a", model="first", status="timeout") == 1


def test_connect_failure_falls_back(gateway, sim, sim2):
    sim.script("m-first", steps=[{"close_before_headers": True}])
    gw = gateway(two_member_chain(sim, sim2))
    r = ask(gw)
    assert r.headers["x-router-model"] == "second"
    assert gw.metric("router_fallbacks_total", route="chat", reason="connect_error") == 1


def test_retries_on_the_same_deployment_after_5xx(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 502}])
    gw = gateway(two_member_chain(sim, sim2, prov_extra={"retries": 1}))
    r = ask(gw)
    assert r.headers["x-router-model"] == "first" and r.headers["x-router-attempts"] == "2"
    assert len(sim2.log()) == 0


def test_no_retry_on_the_same_deployment_after_429(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 429, "retry_after": 5}])
    gw = gateway(two_member_chain(sim, sim2, prov_extra={"retries": 3}))
    assert ask(gw).headers["x-router-model"] == "second"
    assert len(sim.log("m-first")) == 1


def test_client_400_goes_back_unchanged_and_is_not_retried(gateway, sim, sim2):
    sim.script(
        "m-first",
        steps=[
            {"status": 400, "error_message": "temperature is out of range", "error_code": "invalid_value"}
        ],
    )
    gw = gateway(two_member_chain(sim, sim2))
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw)
    assert e.value.code == "invalid_value" and "temperature is out of range" in e.value.message
    assert len(sim2.log()) == 0 and len(sim.log()) == 1


def test_context_length_400_moves_on(gateway, sim, sim2):
    sim.script("m-first", default={"context_window": 5})
    gw = gateway(two_member_chain(sim, sim2))
    r = gw.openai().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert r.headers["x-router-model"] == "second"
    assert gw.metric("router_fallbacks_total", route="chat", reason="context_length") == 1


def test_retry_on_narrowed_stops_the_chain(gateway, sim, sim2):
    sim.script("m-first", default={"status": 500})
    gw = gateway(two_member_chain(sim, sim2, chain_extra="retry_on = [429]\n"))
    r = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 502 and len(sim2.log()) == 0


def test_circuit_opens_then_probes(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 500}, {"status": 500}])
    gw = gateway(two_member_chain(sim, sim2, prov_extra={"circuit_failures": 2, "circuit_open_s": 0.5}))
    ask(gw)
    ask(gw)  # second failure opens the circuit
    assert ask(gw).headers["x-router-attempts"] == "1"  # skipped: open circuit, no attempt
    assert len(sim.log("m-first")) == 2
    assert gw.get("/admin/state").json()["deployments"]["first"]["circuit"]["state"] == "open"
    time.sleep(0.6)
    r = ask(gw)  # the probe passes and succeeds, closing the circuit
    assert r.headers["x-router-model"] == "first"
    assert gw.get("/admin/state").json()["deployments"]["first"]["circuit"]["state"] == "closed"


def test_cheapest_order_uses_the_cheaper_member(gateway, sim, sim2):
    gw = gateway(
        provider("a", sim.base_url)
        + provider("b", sim2.base_url)
        + model("pricey", "a", "m-pricey", price={"input": 10.0, "output": 30.0})
        + model("cheap", "b", "m-cheap", price={"input": 0.1, "output": 0.2})
        + '[fallbacks.chat]\nchain = ["pricey", "cheap"]\norder = "cheapest"\n'
    )
    assert ask(gw).headers["x-router-model"] == "cheap"


def test_weighted_order_spreads_by_weight(gateway, sim, sim2):
    gw = gateway(two_member_chain(sim, sim2, chain_extra='order = "weighted"\nweights = [1, 3]\n'))
    picks = [ask(gw).headers["x-router-model"] for _ in range(40)]
    assert 20 <= picks.count("second") <= 39 and picks.count("first") >= 1


def test_fastest_order_prefers_the_measured_faster_member(gateway, sim, sim2):
    # 0.6 s: with 0.15 s this failed once in a full run (its output was not kept). The likely
    # cause: on a loaded 2-core box the other member's first answer (a fresh connection to a
    # fresh server) took longer than 0.15 s, and so measured the slower of the two
    sim.script("m-first", default={"delay_s": 0.6})
    gw = gateway(two_member_chain(sim, sim2, chain_extra='order = "fastest"\n'))
    seen = {ask(gw).headers["x-router-model"] for _ in range(3)}  # unmeasured members get measured first
    assert seen == {"first", "second"}
    assert [ask(gw).headers["x-router-model"] for _ in range(3)] == ["second"] * 3


def test_529_overloaded_falls_back_and_the_member_sits_out(gateway, sim, sim2):
    sim.script("m-first", steps=[{"status": 529, "error_type": "overloaded_error", "retry_after": 30}])
    gw = gateway(two_member_chain(sim, sim2))
    assert ask(gw).headers["x-router-model"] == "second"
    r = ask(gw)
    assert r.headers["x-router-model"] == "second" and r.headers["x-router-attempts"] == "1"
    assert len(sim.log("m-first")) == 1  # sitting out: no request spent on it
    state = gw.get("/admin/state").json()["deployments"]["first"]
    assert 25 < state["overloaded_s"] <= 30 and state["cooldown_s"] == 0
    assert gw.metric("router_cooldown_active", provider="a", model="first") == 1
    assert gw.metric("router_rate_limited_total", provider="a", model="first") == 0


def test_anthropic_overloaded_error_event_before_content_falls_back_and_cools(gateway, sim, sim2):
    sim.script("m-claude", steps=[{"mid_stream_error": True, "error_type": "overloaded_error"}])
    gw = gateway(
        provider("an", sim.root_url + "/v1", api="anthropic")
        + provider("b", sim2.base_url)
        + model("claude", "an", "m-claude")
        + model("second", "b", "m-second")
        + '[fallbacks.chat]\nchain = ["claude", "second"]\n'
    )
    chunks = list(gw.openai().chat.completions.create(model="chat", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from m-second."
    assert gw.get("/admin/state").json()["deployments"]["claude"]["overloaded_s"] > 0
