"""Client keys: hashes compared in constant time, allow lists, per-key rpm and budgets."""

from __future__ import annotations

import hashlib

import openai
import pytest

from tests.helpers import model, provider

MSG = [{"role": "user", "content": "hello"}]
TEAM_A = "sk-team-a-0123456789abcdef"
TEAM_B = "sk-team-b-0123456789abcdef"


def keyed(sim, extra_keys: str = "") -> str:
    return (
        provider("up", sim.base_url)
        + model("small", "up", "m-small", price={"input": 1000.0, "output": 1000.0})
        + model("other", "up", "m-other")
        + '[fallbacks.chat]\nchain = ["small"]\n'
        + '[keys.team-a]\nkey = "env:TEAM_A_KEY"\nallow = ["chat", "small"]\n'
        + f'[keys.team-b]\nkey_sha256 = "{hashlib.sha256(TEAM_B.encode()).hexdigest()}"\n'
        + extra_keys
    )


@pytest.fixture
def gw(gateway, sim):
    return gateway(keyed(sim), env={"TEAM_A_KEY": TEAM_A})


def test_valid_keys_by_bearer_and_x_api_key(gw):
    assert gw.openai(TEAM_A).chat.completions.create(model="chat", messages=MSG).choices
    r = gw.post(
        "/v1/chat/completions", json={"model": "other", "messages": MSG}, headers={"x-api-key": TEAM_B}
    )
    assert r.status_code == 200


@pytest.mark.parametrize("key", ["", "sk-wrong", TEAM_A + "x"])
def test_bad_or_missing_key_is_401(gw, key):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG}, headers=headers)
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_models_and_names_outside_the_allow_list(gw):
    with pytest.raises(openai.PermissionDeniedError):
        gw.openai(TEAM_A).chat.completions.create(model="other", messages=MSG)
    assert sorted(m.id for m in gw.openai(TEAM_A).models.list().data) == ["chat", "small"]
    assert len(gw.openai(TEAM_B).models.list().data) == 3


def test_key_rpm_gives_429_with_retry_after(gateway, sim):
    gw = gateway(
        keyed(sim, '[keys.limited]\nkey = "env:LIM"\nrpm = 2\n'),
        env={"TEAM_A_KEY": TEAM_A, "LIM": "sk-lim-000000000000"},
    )
    c = gw.openai("sk-lim-000000000000")
    c.chat.completions.create(model="other", messages=MSG)
    c.chat.completions.create(model="other", messages=MSG)
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "other", "messages": MSG},
        headers={"authorization": "Bearer sk-lim-000000000000"},
    )
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert len(sim.log("m-other")) == 2  # the limited request never went upstream


def test_budget_exceeded_is_402_and_final(gateway, sim):
    # 10 input + 5 output tokens at $1000/M = $0.015 per call; budget $0.02 → the third call is refused
    gw = gateway(
        keyed(sim, '[keys.capped]\nkey = "env:CAP"\nbudget_usd = 0.02\nbudget_period = "day"\n'),
        env={"TEAM_A_KEY": TEAM_A, "CAP": "sk-cap-000000000000"},
    )
    c = gw.openai("sk-cap-000000000000")
    c.chat.completions.create(model="small", messages=MSG)
    c.chat.completions.create(model="small", messages=MSG)
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": MSG},
        headers={"authorization": "Bearer sk-cap-000000000000"},
    )
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "budget_exceeded"
    assert r.headers["x-should-retry"] == "false"
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai("sk-cap-000000000000", max_retries=2).chat.completions.create(model="small", messages=MSG)
    assert e.value.status_code == 402
    assert len(sim.log("m-small")) == 2  # the SDK did not retry it, and nothing went upstream
    spend = gw.get("/admin/state").json()["spend"]
    assert any(s["key"].startswith("capped:") and s["usd"] == pytest.approx(0.03) for s in spend)


def test_no_keys_table_means_open_access(gateway, sim):
    gw = gateway(provider("up", sim.base_url) + model("small", "up"))
    assert gw.post("/v1/chat/completions", json={"model": "small", "messages": MSG}).status_code == 200


def test_no_keys_table_refuses_a_public_listen_address(tmp_path, sim):
    from asgi_router import config
    from asgi_router.errors import ConfigErrors

    text = '[server]\nlisten = "0.0.0.0:4000"\n' + provider("up", sim.base_url) + model("small", "up")
    with pytest.raises(ConfigErrors) as e:
        config.loads(text, path=tmp_path / "router.toml", env={})
    assert "loopback" in str(e.value)


def test_a_rejected_request_costs_no_rpm(gateway, sim):
    gw = gateway(
        keyed(sim, '[keys.one]\nkey = "env:ONE"\nrpm = 1\n'),
        env={"TEAM_A_KEY": TEAM_A, "ONE": "sk-one-000000000000"},
    )
    auth = {"authorization": "Bearer sk-one-000000000000"}
    bad = gw.post("/v1/chat/completions", json={"model": "other", "messages": []}, headers=auth)
    assert bad.status_code == 400
    ok = gw.post("/v1/chat/completions", json={"model": "other", "messages": MSG}, headers=auth)
    assert ok.status_code == 200  # the invalid request did not use the key's one request a minute
    again = gw.post("/v1/chat/completions", json={"model": "other", "messages": MSG}, headers=auth)
    assert again.status_code == 429


def test_requests_refused_before_a_name_is_resolved_are_counted(gw):
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": MSG},
        headers={"authorization": "Bearer nope"},
    )
    assert r.status_code == 401
    assert gw.metric("router_requests_total", route="unknown", status="401") == 1
