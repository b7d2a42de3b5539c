"""What of the client's headers goes upstream: only anthropic-beta, only to Anthropic upstreams,
and never the client's key."""

from __future__ import annotations

from tests.helpers import model, provider

MSG = [{"role": "user", "content": "hi"}]


def test_anthropic_beta_reaches_anthropic_upstreams_only(gateway, sim, sim2):
    gw = gateway(
        provider("an", sim.root_url + "/v1", api="anthropic")
        + provider("oa", sim2.base_url)
        + model("claude", "an", "m-claude")
        + model("gpt", "oa", "m-gpt")
    )
    beta = "prompt-caching-2024-07-31,output-128k-2025-02-19"
    for name in ("claude", "gpt"):
        r = gw.post(
            "/v1/messages",
            json={"model": name, "max_tokens": 16, "messages": MSG},
            headers={"anthropic-beta": beta, "x-api-key": "client-key-never-forwarded"},
        )
        assert r.status_code == 200, r.text
    sent_an = sim.log("m-claude")[0]["headers"]
    sent_oa = sim2.log("m-gpt")[0]["headers"]
    assert sent_an["anthropic-beta"] == beta
    assert "anthropic-beta" not in sent_oa
    assert "client-key-never-forwarded" not in str(sent_an) + str(sent_oa)
    # an OpenAI client's stray anthropic-beta header is not passed on either
    r = gw.post(
        "/v1/chat/completions", json={"model": "claude", "messages": MSG}, headers={"anthropic-beta": beta}
    )
    assert r.status_code == 200
    assert "anthropic-beta" not in sim.log("m-claude")[1]["headers"]
