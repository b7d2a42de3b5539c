"""CONTRACT §4 by scraping /metrics: every metric with exactly its labels, label sets there
(at 0) right after compile, values that move by what the traffic did, LLM-sized buckets, and
the reload counters. One gateway for the module: a scrape before any request, a fixed set of
requests, a scrape after; the tests read those two scrapes, the reload test goes last."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_router.metrics import Metrics
from asgi_router.sim import SimServer
from tests.contract import METRICS
from tests.helpers import Gateway, model, provider, start_gateway

CONTRACT = METRICS  # CONTRACT §4 (tests/contract.py)
KEYS = {"alpha": "alpha-key-0123456789", "beta": "beta-key-0123456789"}
PRICES = {
    "a": {"input": 1.0, "output": 2.0, "cached_input": 0.5},
    "b": {"input": 3.0, "output": 6.0},
    "c": {"input": 4.0, "output": 8.0},
}
PUBLIC = ("a", "b", "c", "chat", "duel")
DEPLOYMENTS = {"a": "up", "b": "up2", "c": "up"}  # deployment → provider


def config(sim: SimServer, sim2: SimServer, extra: str = "") -> str:
    return (
        provider("up", sim.base_url)
        + provider("up2", sim2.base_url)
        + model("a", "up", "up-a", price=PRICES["a"])
        + model("b", "up2", "up2-b", price=PRICES["b"])
        + model("c", "up", "up-c", price=PRICES["c"])
        + '[fallbacks.chat]\nchain = ["a", "b"]\n'
        + '[races.duel]\nmembers = ["c", "b"]\n'
        + "".join(f'[keys.{k}]\nkey = "env:{k.upper()}_KEY"\n' for k in KEYS)
        + extra
    )


MSGS = [{"role": "user", "content": "hi"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Run:
    gw: Gateway
    before: str
    after: str
    cost_header: float

    def value(self, text: str, name: str, **labels: str) -> float | None:
        return samples(text).get((name, frozenset(labels.items())))


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def drive(gw: Gateway, sim: SimServer, sim2: SimServer) -> float:
    """The traffic every test below reads the effects of. Returns request 1's cost header."""
    alpha, beta = gw.openai(KEYS["alpha"]), gw.openai(KEYS["beta"])
    msgs = [{"role": "user", "content": "hi"}]
    # 1. a plain answer with cached input tokens
    sim.script("up-a", [{"usage": {"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": 4}}])
    raw = alpha.chat.completions.with_raw_response.create(model="a", messages=msgs)
    cost_header = float(raw.headers["x-router-cost-usd"])
    # 2. the chain's first member is rate limited (long Retry-After: it stays cooling) → b answers
    sim.script("up-a", [{"status": 429, "retry_after": 30}])
    assert alpha.chat.completions.create(model="chat", messages=msgs).model == "up2-b"
    # 3. a race: c is slow, b wins, c is cancelled
    sim.script("up-c", default={"delay_s": 2})
    assert beta.chat.completions.create(model="duel", messages=msgs).model == "up2-b"
    # 4. a stream on the chain: a is cooling (skipped, no attempt), b streams
    list(beta.chat.completions.create(model="chat", messages=msgs, stream=True))
    # 5. an unknown name
    with pytest.raises(openai.NotFoundError):
        alpha.chat.completions.create(model="nope", messages=msgs)
    sim.wait_idle()
    return cost_header


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, _sims: list[SimServer]) -> Any:
    sim, sim2 = _sims
    sim.reset()
    sim2.reset()
    env = {f"{k.upper()}_KEY": v for k, v in KEYS.items()}
    gw = start_gateway(tmp_path_factory.mktemp("metrics"), config(sim, sim2), env=env)
    try:
        before = gw.get("/metrics").text
        cost_header = drive(gw, sim, sim2)
        yield Run(gw, before, gw.get("/metrics").text, cost_header)
    finally:
        gw.stop()


def test_every_contract_metric_is_exposed_with_exactly_its_labels(run: Run) -> None:
    fams = families(run.after)
    for name, (kind, labels) in CONTRACT.items():
        fam_name = name.removesuffix("_total") if kind == "counter" else name
        assert fam_name in fams, f"{name} is not exposed"
        fam = fams[fam_name]
        assert fam.type == kind, f"{name} is a {fam.type}, not a {kind}"
        for s in fam.samples:
            assert set(s.labels) - {"le"} == labels, f"{s.name} has labels {sorted(s.labels)}"
    ours = {n for n in fams if n.startswith("router_")}
    assert ours == {n.removesuffix("_total") if k == "counter" else n for n, (k, _) in CONTRACT.items()}


def test_declared_label_names_match_even_without_samples() -> None:
    """router_state_errors_total has no sample with the memory backend: check its declaration."""
    collectors: list[Any] = list(Metrics().registry._collector_to_names)
    declared = {
        c._name + ("_total" if c._type == "counter" else ""): (c._type, frozenset(c._labelnames))
        for c in collectors
    }
    assert declared == CONTRACT


def test_label_sets_exist_at_zero_right_after_compile(run: Run) -> None:
    before = samples(run.before)

    def zero(name: str, **labels: str) -> None:
        assert before.get((name, frozenset(labels.items()))) == 0, f"{name}{labels} not pre-created at 0"

    for route in PUBLIC:
        zero("router_requests_total", route=route, status="200")
        zero("router_inflight_requests", route=route)
        zero("router_request_duration_seconds_count", route=route)
        zero("router_overhead_seconds_count", route=route)
    for (d, p), key, kind in itertools.product(
        DEPLOYMENTS.items(), KEYS, ("input", "output", "cached_input")
    ):
        zero("router_tokens_total", provider=p, model=d, key=key, kind=kind)
    for (d, p), key in itertools.product(DEPLOYMENTS.items(), KEYS):
        zero("router_spend_usd_total", provider=p, model=d, key=key)
    for d, p in DEPLOYMENTS.items():
        zero("router_upstream_requests_total", provider=p, model=d, status="200")
        zero("router_rate_limited_total", provider=p, model=d)
        zero("router_cooldown_active", provider=p, model=d)
        zero("router_upstream_duration_seconds_count", provider=p, model=d)
    for route, d in [("a", "a"), ("chat", "a"), ("chat", "b"), ("duel", "c"), ("duel", "b")]:
        zero("router_time_to_first_token_seconds_count", route=route, model=d)
    zero("router_fallbacks_total", route="chat", reason="429")
    for d, outcome in itertools.product("bc", ("won", "lost", "failed")):
        zero("router_race_outcomes_total", race="duel", model=d, outcome=outcome)
    for d in "bc":
        zero("router_race_wasted_usd_total", race="duel", model=d)
    zero("router_config_reloads_total", result="failure")
    assert before[("router_config_reloads_total", frozenset({("result", "success")}))] == 1  # the startup
    assert before[("router_config_generation", frozenset())] == 1
    # no key that does not exist, no "anonymous" when keys are configured
    assert not [k for k in before if ("key", "anonymous") in k[1]]


def test_request_and_upstream_counts(run: Run) -> None:
    v = run.value
    t = run.after
    assert v(t, "router_requests_total", route="a", status="200") == 1
    assert v(t, "router_requests_total", route="chat", status="200") == 2
    assert v(t, "router_requests_total", route="duel", status="200") == 1
    assert v(t, "router_requests_total", route="b", status="200") == 0
    assert v(t, "router_requests_total", route="unknown", status="404") == 1
    assert v(t, "router_request_duration_seconds_count", route="chat") == 2
    assert v(t, "router_overhead_seconds_count", route="chat") == 2
    assert v(t, "router_upstream_requests_total", provider="up", model="a", status="200") == 1
    assert v(t, "router_upstream_requests_total", provider="up", model="a", status="429") == 1
    assert v(t, "router_upstream_requests_total", provider="up2", model="b", status="200") == 3
    assert v(t, "router_upstream_requests_total", provider="up", model="c", status="cancelled") == 1
    assert v(t, "router_upstream_duration_seconds_count", provider="up2", model="b") == 3
    assert v(t, "router_time_to_first_token_seconds_count", route="chat", model="b") == 1
    for route in PUBLIC:
        assert v(t, "router_inflight_requests", route=route) == 0


def test_tokens_and_spend_follow_usage_and_price(run: Run) -> None:
    v, t = run.value, run.after

    def tokens(d: str, key: str, kind: str) -> float | None:
        return v(t, "router_tokens_total", provider=DEPLOYMENTS[d], model=d, key=key, kind=kind)

    # a: 20 prompt tokens of which 4 cached, 7 output
    assert (tokens("a", "alpha", "input"), tokens("a", "alpha", "cached_input")) == (16, 4)
    assert tokens("a", "alpha", "output") == 7
    spend_a = (16 * 1.0 + 4 * 0.5 + 7 * 2.0) / 1e6
    assert v(t, "router_spend_usd_total", provider="up", model="a", key="alpha") == pytest.approx(spend_a)
    assert run.cost_header == pytest.approx(spend_a)
    # b: the sim's default usage (10 prompt tokens, one output token per chunk, 5 chunks)
    assert (tokens("b", "alpha", "input"), tokens("b", "alpha", "output")) == (10, 5)
    assert (tokens("b", "beta", "input"), tokens("b", "beta", "output")) == (20, 10)  # race + stream
    assert tokens("b", "beta", "cached_input") == 0
    per_b = (10 * 3.0 + 5 * 6.0) / 1e6
    assert v(t, "router_spend_usd_total", provider="up2", model="b", key="alpha") == pytest.approx(per_b)
    assert v(t, "router_spend_usd_total", provider="up2", model="b", key="beta") == pytest.approx(2 * per_b)
    assert v(t, "router_spend_usd_total", provider="up", model="c", key="beta") == 0  # the loser


def test_rate_limit_fallback_and_cooldown(run: Run) -> None:
    v, t = run.value, run.after
    assert v(t, "router_rate_limited_total", provider="up", model="a") == 1
    assert v(t, "router_fallbacks_total", route="chat", reason="429") == 1  # the skip is no fallback
    assert v(t, "router_cooldown_active", provider="up", model="a") == 1
    assert v(t, "router_cooldown_active", provider="up2", model="b") == 0


def test_race_outcomes_and_waste(run: Run) -> None:
    v, t = run.value, run.after
    outcomes = {
        (d, o): v(t, "router_race_outcomes_total", race="duel", model=d, outcome=o)
        for d, o in itertools.product("bc", ("won", "lost", "failed"))
    }
    assert outcomes == {
        ("b", "won"): 1, ("b", "lost"): 0, ("b", "failed"): 0,
        ("c", "won"): 0, ("c", "lost"): 1, ("c", "failed"): 0,
    }  # fmt: skip
    # the cancelled loser was sent the same prompt (10 tokens) and answered nothing
    assert v(t, "router_race_wasted_usd_total", race="duel", model="c") == pytest.approx(10 * 4.0 / 1e6)
    assert v(t, "router_race_wasted_usd_total", race="duel", model="b") == 0


def test_histograms_have_llm_sized_buckets(run: Run) -> None:
    fams = families(run.after)

    def bounds(name: str) -> list[float]:
        les = {float(s.labels["le"]) for s in fams[name].samples if s.name.endswith("_bucket")}
        return sorted(le for le in les if le != float("inf"))

    assert max(bounds("router_request_duration_seconds")) >= 300  # prometheus' default stops at 10
    assert max(bounds("router_upstream_duration_seconds")) >= 120
    assert max(bounds("router_time_to_first_token_seconds")) > 10
    assert min(bounds("router_time_to_first_token_seconds")) <= 0.05
    assert min(bounds("router_overhead_seconds")) <= 0.0005  # the gateway's own time is sub-ms
    assert max(bounds("router_overhead_seconds")) <= 1


def test_a_stream_broken_after_its_first_byte_counts_as_stream_error(run: Run, sim2: SimServer) -> None:
    gw = run.gw
    sim2.script("up2-b", [{"cut_after": 2, "text": "one two three four"}])
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={"model": "b", "messages": MSGS, "stream": True},
        headers={"authorization": f"Bearer {KEYS['alpha']}"},
    ) as r:
        assert r.status_code == 200
        r.read()
    sim2.wait_idle()
    assert gw.metric("router_upstream_requests_total", provider="up2", model="b", status="stream_error") == 1
    assert gw.metric("router_requests_total", route="b", status="502") == 0  # no 502 was ever sent
    assert gw.metric("router_requests_total", route="b", status="stream_error") == 1


def test_a_client_leaving_mid_stream_counts_as_cancelled(run: Run, sim2: SimServer) -> None:
    gw = run.gw
    sim2.script("up2-b", [{"chunk_delay_s": 0.1, "chunks": 20, "text": "x" * 40}])
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={"model": "b", "messages": MSGS, "stream": True},
        headers={"authorization": f"Bearer {KEYS['beta']}"},
    ) as r:
        next(r.iter_bytes())
    assert sim2.wait_idle(5)
    deadline = time.monotonic() + 2
    while gw.metric("router_upstream_requests_total", provider="up2", model="b", status="cancelled") < 1:
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.02)
    assert gw.metric("router_requests_total", route="b", status="cancelled") == 1
    assert gw.metric("router_inflight_requests", route="b") == 0


def test_reload_counts_success_and_failure_and_moves_generation(run: Run) -> None:
    gw = run.gw

    def now(name: str, **labels: str) -> float:
        return gw.metric(name, **labels)

    ok0, bad0 = (
        now("router_config_reloads_total", result="success"),
        now("router_config_reloads_total", result="failure"),
    )
    gw.write_config(
        gw.path.read_text().replace(
            "[races.duel]", '[models.d]\nprovider = "up"\nmodel = "up-d"\n[races.duel]'
        )
    )
    r = gw.post("/admin/reload")
    assert r.status_code == 200 and r.json()["generation"] == 2
    m = gw.metrics()
    assert m[("router_config_generation", frozenset())] == 2
    assert m[("router_config_reloads_total", frozenset({("result", "success")}))] == ok0 + 1
    assert m[("router_requests_total", frozenset({("route", "d"), ("status", "200")}))] == 0  # pre-created
    gw.write_config(gw.path.read_text() + '\n[fallbacks.broken]\nchain = ["ghost"]\n')
    r = gw.post("/admin/reload")
    assert r.status_code == 400 and any("ghost" in e for e in r.json()["errors"])
    assert now("router_config_reloads_total", result="failure") == bad0 + 1
    assert now("router_config_reloads_total", result="success") == ok0 + 1
    assert now("router_config_generation") == 2
    assert (
        gw.openai(KEYS["alpha"])
        .chat.completions.create(model="d", messages=[{"role": "user", "content": "x"}])
        .model
        == "up-d"
    )  # the old graph keeps serving
