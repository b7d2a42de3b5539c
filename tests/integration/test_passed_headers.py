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


def test_an_upstreams_cookies_never_go_back_upstream(gateway, sim):
    """api.openai.com answers with Cloudflare's Set-Cookie (``__cf_bm``, ``_cfuvid``). The
    gateway keeps no cookie jar: what one client's request got never rides on the next one's.
    The provider is named by host name, as a real one is (an HTTP cookie jar ignores cookies
    from a bare IP address)."""
    cookies = "__cf_bm=AbCdEf0123456789-1733100000-1.0.1.1-XyZ; path=/; HttpOnly; SameSite=None"
    sim.script("m-cookie", default={"headers": {"set-cookie": cookies}})
    keys = {"A": "sk-team-a-0123456789", "B": "sk-team-b-0123456789"}
    gw = gateway(
        provider("oa", f"http://localhost:{sim.port}/v1")
        + model("gpt", "oa", "m-cookie")
        + '[keys.team-a]\nkey = "env:A"\n[keys.team-b]\nkey = "env:B"\n',
        env=keys,
    )
    for key, stream in (("A", False), ("B", False), ("A", True), ("B", True)):
        r = gw.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": MSG, "stream": stream},
            headers={"authorization": f"Bearer {keys[key]}"},
        )
        assert r.status_code == 200, r.text
        assert "set-cookie" not in r.headers  # nor does it reach the client
    sent = [rec["headers"] for rec in sim.log("m-cookie")]
    assert len(sent) == 4
    assert not [h for h in sent if "cookie" in {k.lower() for k in h}], sent
