"""Secrets never leave the gateway (CONTRACT §1, §3; STYLE habit 11).

The provider key, the client key and the admin key have recognisable values; after traffic
that succeeds and fails in every way we could think of, none of them may appear in the log,
/metrics, /admin/*, an error body or ``asgi-router check``. The provider key must reach the
upstream (as Bearer / x-api-key) and the client's key must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
import structlog
from structlog.testing import capture_logs

from asgi_router import logs
from asgi_router.sim import SimServer
from tests.helpers import Gateway, model, provider, start_gateway

SIM_KEY = "sk-live-SECRETVALUE123456"
TEAM_KEY = "team-TEAMSECRET987654"  # no sk- prefix: the log scrubber's patterns cannot save it
ADMIN_KEY = "adm-ADMINSECRET555"
SECRETS = ("SECRETVALUE123456", "TEAMSECRET987654", "ADMINSECRET555")
ENV = {"SIM_KEY": SIM_KEY, "TEAM_KEY": TEAM_KEY, "ADMIN_KEY": ADMIN_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MSGS = [{"role": "user", "content": "hi"}]
ECHO_401 = {
    "status": 401,
    "error_message": f"Incorrect API key provided: {SIM_KEY}.",
    "error_code": "invalid_api_key",
}


def assert_clean(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"a secret ({s}) leaked into {where}"


def config(sim: SimServer) -> str:
    return (
        provider("up", sim.base_url, api_keys=["env:SIM_KEY"])
        + provider("claude", sim.base_url, api="anthropic", api_keys=["env:SIM_KEY"])
        + model("m", "up", "up-m", price={"input": 1.0, "output": 1.0})
        + model("c", "claude", "claude-c")
        + '[fallbacks.chat]\nchain = ["m", "c"]\n'
        + '[keys.team]\nkey = "env:TEAM_KEY"\n'
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, _sims: list[SimServer]) -> Iterator[Gateway]:
    g = start_gateway(
        tmp_path_factory.mktemp("secrets"), config(_sims[0]), env=ENV, server='admin_key = "env:ADMIN_KEY"'
    )
    yield g
    g.stop()


def test_provider_key_reaches_the_upstream_and_the_clients_does_not(gw: Gateway, sim: SimServer) -> None:
    gw.openai(TEAM_KEY).chat.completions.create(model="m", messages=MSGS)
    gw.anthropic(TEAM_KEY).messages.create(model="c", max_tokens=10, messages=MSGS)
    gw.post("/v1/chat/completions", json={"model": "m", "messages": MSGS}, headers={"x-api-key": TEAM_KEY})
    sim.wait_idle()
    openai_side = sim.log("up-m")
    assert [r["headers"]["authorization"] for r in openai_side] == [f"Bearer {SIM_KEY}"] * 2
    assert all("x-api-key" not in r["headers"] for r in openai_side)
    (claude_side,) = sim.log("claude-c")
    assert claude_side["headers"]["x-api-key"] == SIM_KEY and "authorization" not in claude_side["headers"]
    for r in sim.log():
        assert "TEAMSECRET987654" not in json.dumps(r), "the client's key was forwarded upstream"


def test_bad_client_keys_get_401_without_echo(gw: Gateway) -> None:
    for headers in ({"authorization": f"Bearer {SIM_KEY}"}, {"x-api-key": SIM_KEY + "x"}, {}):
        r = gw.post("/v1/chat/completions", json={"model": "m", "messages": MSGS}, headers=headers)
        assert r.status_code == 401
        assert_clean(r.text + str(r.headers), "a 401 body")
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai(SIM_KEY).chat.completions.create(model="m", messages=MSGS)
    assert_clean(str(e.value.body), "a 401 body")


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_401_echoing_the_key_does_not_reach_the_client(
    gw: Gateway, sim: SimServer, stream: bool
) -> None:
    sim.script("up-m", default=ECHO_401)
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": MSGS, "stream": stream},
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    )
    assert r.status_code >= 400
    assert_clean(r.text, "an error body")


def test_upstream_401_echo_translated_to_anthropic_does_not_reach_the_client(
    gw: Gateway, sim: SimServer
) -> None:
    sim.script("up-m", default=ECHO_401)
    r = gw.post(
        "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": MSGS},
        headers={"x-api-key": TEAM_KEY},
    )
    assert r.status_code >= 400
    assert_clean(r.text, "an error body")


def test_failures_in_a_chain_do_not_show_secrets(gw: Gateway, sim: SimServer) -> None:
    sim.script("up-m", default={"status": 503, "error_message": f"overloaded, key {SIM_KEY}"})
    sim.script("claude-c", default={"status": 529, "error_message": f"overloaded, key {SIM_KEY}"})
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": MSGS},
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    )
    assert r.status_code == 502
    assert_clean(r.text, "an all-failed body")
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": MSGS, "stream": True},
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    )
    assert_clean(r.text, "a failed stream")


def test_admin_and_metrics_output_hold_no_secret(gw: Gateway) -> None:
    for path in ("/admin/config", "/admin/state"):
        r = gw.get(path, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert_clean(r.text, path)
        for headers in ({}, {"authorization": f"Bearer {SIM_KEY}"}, {"x-api-key": TEAM_KEY}):
            denied = gw.get(path, headers=headers)
            assert denied.status_code == 401
            assert_clean(denied.text, path + " denied")
    cfg = gw.get("/admin/config", headers=ADMIN).json()
    assert "env:SIM_KEY" in json.dumps(cfg)  # the reference is shown, never the value
    assert_clean(gw.get("/metrics").text, "/metrics")


BAD_FILES = {
    "literal api key": 'api_keys = ["env:SIM_KEY"]',
    "literal twice": f'api_keys = ["{SIM_KEY}", "{SIM_KEY}"]',
    "not a list": f'api_keys = "{SIM_KEY}"',
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_config_errors_about_a_secret_do_not_show_it(gw: Gateway, name: str) -> None:
    good = gw.path.read_text()
    bad = good.replace('api_keys = ["env:SIM_KEY"]', BAD_FILES[name].replace("env:SIM_KEY", SIM_KEY), 1)
    bad += f'[keys.other]\nkey = "{TEAM_KEY}"\n'
    try:
        gw.write_config(bad)
        r = gw.post("/admin/reload", headers=ADMIN)
        assert r.status_code == 400 and r.json()["errors"]
        assert_clean(r.text, "/admin/reload errors")
        out = subprocess.run(
            [sys.executable, "-m", "asgi_router", "check", str(gw.path)],
            capture_output=True,
            text=True,
            env={**os.environ, **ENV},
            timeout=30,
        )
        assert out.returncode == 1
        assert_clean(out.stdout + out.stderr, "check output")
    finally:
        gw.write_config(good)


def test_check_of_a_good_file_holds_no_secret(gw: Gateway) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asgi_router", "check", str(gw.path)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "env:SIM_KEY" in out.stdout
    assert_clean(out.stdout + out.stderr, "check output")


def test_the_log_holds_no_secret(gw: Gateway, sim: SimServer) -> None:
    """Last: the log of everything above, plus a stream cut in the middle."""
    sim.script("up-m", [{"cut_after": 2, "text": "a b c d e"}])
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={"model": "m", "messages": MSGS, "stream": True},
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    ) as r:
        r.read()
    sim.wait_idle()
    text = gw.logs()
    assert '"event":"request"' in text
    assert_clean(text, "the gateway's log")


# the scrubbing processor, in-process ---------------------------------------------------------


def test_scrub_masks_secret_fields_bearer_tokens_and_sk_keys() -> None:
    with capture_logs(processors=[logs.scrub]) as cap:  # warnings: another module may filter out info
        log = structlog.get_logger()
        log.warning("upstream", authorization=f"Bearer {SIM_KEY}", api_key=SIM_KEY, x_api_key=None)
        log.warning("echo", detail=f"provider said: Incorrect API key provided: {SIM_KEY}")
        log.warning("header", line=f"Authorization: Bearer {TEAM_KEY}")
    assert_clean(repr(cap), "captured logs")
    by_event = {e["event"]: e for e in cap}
    assert (
        by_event["upstream"]["authorization"] == "[redacted]"
        and by_event["upstream"]["api_key"] == "[redacted]"
    )
    assert by_event["echo"]["detail"].startswith("provider said: Incorrect API key provided: sk-live")


def test_scrub_reaches_into_nested_values() -> None:
    event = {
        "event": "upstream_request",
        "headers": {"Authorization": f"Bearer {SIM_KEY}", "x-api-key": TEAM_KEY, "accept": "json"},
        "attempts": [{"error": f"401: Incorrect API key provided: {SIM_KEY}"}],
    }
    out = logs.scrub(None, "info", event)
    assert_clean(repr(out), "a scrubbed event")
    assert out["headers"]["accept"] == "json"


def test_configured_json_logging_scrubs_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    root = logging.getLogger()
    saved, saved_structlog = (root.handlers[:], root.level), structlog.get_config()
    try:
        logs.configure("info", "json")
        structlog.get_logger("t").info("sent", authorization=f"Bearer {SIM_KEY}", note=f"key={SIM_KEY}")
        logging.getLogger("aiohttp.client").warning("retrying with Authorization: Bearer %s", SIM_KEY)
    finally:
        structlog.configure(**saved_structlog)  # exactly as before: other modules configure too
        root.handlers[:], root.level = saved[0], saved[1]
    err = capsys.readouterr().err
    assert err.count("\n") >= 2 and '"sent"' in err and "retrying" in err
    assert_clean(err, "configured log output")


def test_secret_repr_is_masked() -> None:
    from asgi_router.types import Secret

    s = Secret("env:SIM_KEY", SIM_KEY)
    assert_clean(repr(s) + str(s) + f"{s}" + repr([s]), "a Secret's repr")
    assert s.reveal() == SIM_KEY
