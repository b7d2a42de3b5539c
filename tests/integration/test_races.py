"""Race groups: first good answer wins, losers are cancelled at once (connection closed) and
their waste estimated; hedging; failing members; nested graphs."""

from __future__ import annotations

import time

from tests.helpers import model, provider

MSG = [{"role": "user", "content": "hello"}]


def race_config(sim, sim2, hedge_ms: int = 0) -> str:
    return (
        provider("a", sim.base_url)
        + provider("b", sim2.base_url)
        + model("slow", "a", "m-slow", price={"input": 4.0, "output": 8.0})
        + model("quick", "b", "m-quick", price={"input": 1.0, "output": 2.0})
        + f'[races.fast]\nmembers = ["slow", "quick"]\nhedge_ms = {hedge_ms}\n'
    )


def test_first_answer_wins_and_loser_is_cancelled(gateway, sim, sim2):
    sim.script("m-slow", default={"delay_s": 2.0})
    sim2.script(
        "m-quick", default={"delay_s": 0.05, "usage": {"prompt_tokens": 1000, "completion_tokens": 5}}
    )
    gw = gateway(race_config(sim, sim2))
    t = time.monotonic()
    r = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.headers["x-router-model"] == "quick" and r.headers["x-router-attempts"] == "2", gw.logs()
    assert time.monotonic() - t < 1.0, gw.logs()
    assert sim.wait_idle(3)
    loser = sim.log("m-slow")[0]
    assert loser["client_left"] is True  # its HTTP connection was closed at once
    assert gw.metric("router_race_outcomes_total", race="fast", model="quick", outcome="won") == 1
    assert gw.metric("router_race_outcomes_total", race="fast", model="slow", outcome="lost") == 1
    # waste: the loser's input tokens (the winner's prompt count) at the loser's input price
    assert abs(gw.metric("router_race_wasted_usd_total", race="fast", model="slow") - 1000 * 4.0 / 1e6) < 1e-9
    assert gw.metric("router_upstream_requests_total", provider="a", model="slow", status="cancelled") == 1


def test_stream_race_winner_is_first_to_content(gateway, sim, sim2):
    sim.script("m-slow", default={"ttft_s": 1.5, "text": "slow"})
    sim2.script("m-quick", default={"ttft_s": 0.1, "text": "quick"})
    gw = gateway(race_config(sim, sim2))
    raw = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "quick" and raw.headers["x-router-model"] == "quick"
    assert sim.wait_idle(3) and sim.log("m-slow")[0]["client_left"] is True


def test_failing_member_does_not_end_the_race(gateway, sim, sim2):
    sim.script("m-slow", default={"delay_s": 0.2})
    sim2.script("m-quick", default={"status": 500})
    gw = gateway(race_config(sim, sim2))
    r = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.headers["x-router-model"] == "slow"
    assert gw.metric("router_race_outcomes_total", race="fast", model="quick", outcome="failed") == 1


def test_hedge_starts_the_next_member_only_when_no_winner_yet(gateway, sim, sim2):
    sim.script("m-slow", default={"delay_s": 0.02})
    gw = gateway(race_config(sim, sim2, hedge_ms=300))
    r = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.headers["x-router-model"] == "slow" and r.headers["x-router-attempts"] == "1"
    assert sim2.log() == []
    sim.script("m-slow", default={"delay_s": 2.0})
    t = time.monotonic()
    r = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.headers["x-router-model"] == "quick"
    assert 0.25 < time.monotonic() - t < 1.5  # started after the hedge delay


def test_a_member_failure_starts_the_next_without_waiting_for_the_hedge(gateway, sim, sim2):
    sim.script("m-slow", default={"status": 503})
    gw = gateway(race_config(sim, sim2, hedge_ms=5000))
    t = time.monotonic()
    r = gw.openai().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.headers["x-router-model"] == "quick" and time.monotonic() - t < 1.0


def test_race_fails_only_when_every_member_failed_then_chain_moves_on(gateway, sim, sim2):
    sim.script("m-slow", default={"status": 500})
    sim2.script("m-quick", default={"status": 502})
    sim2.script("m-backup", default={"text": "backup"})
    gw = gateway(
        race_config(sim, sim2)
        + model("backup", "b", "m-backup")
        + '[fallbacks.chat]\nchain = ["fast", "backup"]\n'
    )
    r = gw.openai().chat.completions.with_raw_response.create(model="chat", messages=MSG)
    assert r.headers["x-router-model"] == "backup" and r.headers["x-router-attempts"] == "3"


def test_nested_chain_race_chain(gateway, sim, sim2):
    # chat = [primary-429, race(inner-chain(x-500, y), z-slow)]
    sim.script("m-primary", default={"status": 429, "retry_after": 30})
    sim.script("m-x", default={"status": 500})
    sim2.script("m-y", default={"text": "from y", "delay_s": 0.05})
    sim2.script("m-z", default={"text": "from z", "delay_s": 1.5})
    gw = gateway(
        provider("a", sim.base_url)
        + provider("b", sim2.base_url)
        + model("primary", "a", "m-primary")
        + model("x", "a", "m-x")
        + model("y", "b", "m-y")
        + model("z", "b", "m-z")
        + '[fallbacks.inner]\nchain = ["x", "y"]\n'
        + '[races.either]\nmembers = ["inner", "z"]\n'
        + '[fallbacks.chat]\nchain = ["primary", "either"]\n'
    )
    for stream in (False, True):
        raw = gw.openai().chat.completions.with_raw_response.create(model="chat", messages=MSG, stream=stream)
        parsed = raw.parse()
        text = (
            parsed.choices[0].message.content
            if not stream
            else "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        )
        assert text == "from y" and raw.headers["x-router-model"] == "y"
