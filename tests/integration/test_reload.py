"""Reload per CONTRACT §2 against a real gateway process: by file change (watch), SIGHUP and
POST /admin/reload; a bad file changes nothing; state carries over for unchanged members; and
requests in flight during many reloads, good and broken, all succeed on the graph they began on."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.helpers import Gateway, free_port, model, provider, toml_value, until, wait_ready

MSG = [{"role": "user", "content": "hello"}]
UNSET = "ASGI_ROUTER_TEST_SURELY_UNSET"


@dataclass
class Live:
    """A gateway whose whole router.toml (its own [server] table included) the test rewrites."""

    gw: Gateway
    head: str

    def write(self, body: str) -> None:
        self.gw.write_config(self.head + body)

    def generation(self) -> int:
        return int(self.gw.get("/readyz").json()["generation"])

    def names(self) -> set[str]:
        return {m["id"] for m in self.gw.get("/v1/models").json()["data"]}

    def reloads(self, result: str) -> float:
        return self.gw.metric("router_config_reloads_total", result=result)

    def answered_by(self, name: str = "chat") -> str:
        r = self.gw.post("/v1/chat/completions", json={"model": name, "messages": MSG})
        assert r.status_code == 200, r.text
        return r.headers["x-router-model"]

    def log_events(self, event: str) -> list[dict]:
        out = []
        for line in self.gw.logs().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                rec = json.loads(line)
                if rec.get("event") == event:
                    out.append(rec)
        return out


def launch(gateway: Callable[..., Gateway], body: str, *, watch: bool = False, **kw) -> Live:
    port = free_port()
    head = f'[server]\nlisten = "127.0.0.1:{port}"\nwatch = {toml_value(watch)}\n\n'
    gw = gateway(head + body, wait=False, **kw)
    gw.port = port  # the [server] table is ours, so the helper's own port pick is unused
    wait_ready(gw)
    return Live(gw, head)


def body(sim, sim2, chain=("first", "second"), extra: str = "", first: dict | None = None, **prov_a) -> str:
    return (
        provider("a", sim.base_url, **prov_a)
        + provider("b", sim2.base_url)
        + model("first", "a", "m-first", **(first or {"price": {"input": 1.0, "output": 1.0}}))
        + model("second", "b", "m-second", price={"input": 1.0, "output": 1.0})
        + f"[fallbacks.chat]\nchain = {toml_value(list(chain))}\n\n"
        + extra
    )


# --- 1. the three triggers ---------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["file", "sighup", "admin"])
def test_each_trigger_swaps_in_the_new_graph(gateway, sim, sim2, trigger):
    live = launch(gateway, body(sim, sim2), watch=trigger == "file")
    assert live.names() == {"first", "second", "chat"} and live.answered_by() == "first"
    assert live.generation() == 1 and live.reloads("success") == 1

    live.write(body(sim, sim2, chain=("second", "first"), extra=model("third", "b", "m-third")))
    if trigger == "sighup":
        live.gw.proc.send_signal(signal.SIGHUP)
    elif trigger == "admin":
        r = live.gw.post("/admin/reload")
        assert r.status_code == 200 and r.json() == {"ok": True, "generation": 2}
    until(lambda: live.generation() == 2, timeout=3.0)  # the watcher polls once a second

    assert live.names() == {"first", "second", "third", "chat"}
    assert live.answered_by() == "second"  # the chain's order changed
    assert live.answered_by("third") == "third"
    assert live.gw.get("/admin/config").json()["nodes"]["chat"]["members"] == ["second", "first"]
    assert live.gw.metric("router_config_generation") == 2
    assert live.reloads("success") == 2 and live.reloads("failure") == 0
    reasons = [e["reason"] for e in live.log_events("config_loaded")]
    assert reasons == ["startup", {"file": "file changed", "sighup": "SIGHUP", "admin": "admin"}[trigger]]


# --- 2. a bad file changes nothing --------------------------------------------------------------

BROKEN = {
    # every error listed, each with file, table, key and (where known) line
    "syntax": (lambda s, s2: body(s, s2) + "[fallbacks.oops\n", ["router.toml:", "invalid TOML"]),
    "reference and env": (
        lambda s, s2: body(s, s2, chain=("first", "nope")).replace(
            "api_keys = []", f'api_keys = ["env:{UNSET}"]', 1
        ),
        ["[fallbacks.chat.chain]", "'nope'", "[providers.a.api_keys]", UNSET],
    ),
    # a value the compiler itself chokes on must be a failed reload too, not a dead watcher
    "compiler crash": (lambda s, s2: body(s, s2, first={"rpm": 2**70}), ["router.toml"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_bad_file_changes_nothing_and_lists_every_error(gateway, sim, sim2, case):
    make, expected = BROKEN[case]
    live = launch(gateway, body(sim, sim2))
    live.write(make(sim, sim2) + model("third", "b", "m-third"))
    r = live.gw.post("/admin/reload")
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["ok"] is False and answer["generation"] == 1
    text = "\n".join(answer["errors"])
    assert all(part in text for part in expected), answer["errors"]
    assert len(answer["errors"]) == (2 if case == "reference and env" else 1)
    # the old graph keeps serving, unchanged
    assert live.names() == {"first", "second", "chat"} and live.answered_by() == "first"
    assert live.generation() == 1 and live.gw.metric("router_config_generation") == 1
    assert live.reloads("failure") == 1 and live.reloads("success") == 1
    [logged] = live.log_events("config_rejected")
    assert logged["errors"] == answer["errors"] and logged["reason"] == "admin"
    # the same through SIGHUP: refused, counted, logged, still serving
    live.gw.proc.send_signal(signal.SIGHUP)
    until(lambda: live.reloads("failure") == 2)
    assert live.answered_by() == "first" and live.gw.proc.poll() is None
    # and a good file is taken again
    live.write(body(sim, sim2) + model("third", "b", "m-third"))
    r = live.gw.post("/admin/reload")
    assert r.status_code == 200 and r.json()["generation"] == 2
    assert "third" in live.names() and live.reloads("success") == 2


def test_watcher_takes_a_broken_file_once_then_the_fixed_one(gateway, sim, sim2):
    live = launch(gateway, body(sim, sim2), watch=True)
    live.write(body(sim, sim2, chain=("first", "nope")))
    until(lambda: live.reloads("failure") == 1, timeout=3.0)
    time.sleep(1.3)  # at least one more poll of the unchanged broken file: no retry loop
    assert live.reloads("failure") == 1 and len(live.log_events("config_rejected")) == 1
    assert live.generation() == 1 and live.answered_by() == "first"
    live.write(body(sim, sim2, chain=("second",)))
    until(lambda: live.generation() == 2, timeout=3.0)
    assert live.answered_by() == "second" and live.reloads("success") == 2
    assert live.reloads("failure") == 1


def test_missing_env_var_is_a_failed_reload(gateway, sim, sim2):
    live = launch(gateway, body(sim, sim2, api_keys=["env:ROUTER_TEST_KEY"]), env={"ROUTER_TEST_KEY": "k1"})
    live.write(body(sim, sim2, api_keys=["env:ROUTER_TEST_KEY", f"env:{UNSET}"]))
    r = live.gw.post("/admin/reload")
    assert r.status_code == 400
    [err] = r.json()["errors"]
    assert UNSET in err and "[providers.a.api_keys]" in err and "k1" not in err
    assert live.answered_by() == "first"
    assert sim.log("m-first")[-1]["headers"]["authorization"] == "Bearer k1"


# --- 3. state carries over for unchanged members -------------------------------------------------


@pytest.mark.parametrize("change", ["deployment", "its provider"])
def test_cooldown_survives_a_reload_of_other_parts_but_not_a_redefinition(gateway, sim, sim2, change):
    sim.script("m-first", steps=[{"status": 429, "retry_after": 30}])
    live = launch(gateway, body(sim, sim2))
    assert live.answered_by() == "second"  # first got the 429 and cools down for 30 s

    def state() -> dict:
        return live.gw.get("/admin/state").json()

    before = state()
    assert 25 < before["deployments"]["first"]["cooldown_s"] <= 30
    assert before["deployments"]["second"]["latency"]["samples"] == 1

    # other parts change: a new model, the chain's retry_on, a new race; first and second do not
    live.write(
        body(
            sim, sim2, extra=model("third", "b", "m-third") + '[races.fast]\nmembers = ["second", "third"]\n'
        ).replace('chain = ["first", "second"]', 'chain = ["first", "second"]\nretry_on = [429, 500]')
    )
    assert live.gw.post("/admin/reload").status_code == 200
    after = state()
    assert after["generation"] == 2
    assert 25 < after["deployments"]["first"]["cooldown_s"] <= before["deployments"]["first"]["cooldown_s"]
    assert after["deployments"]["second"]["latency"] == before["deployments"]["second"]["latency"]
    assert after["stale_members"] == []
    r = live.gw.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.headers["x-router-model"] == "second" and r.headers["x-router-attempts"] == "1"
    assert len(sim.log("m-first")) == 1  # still skipped without an attempt

    # now first's own definition changes: it starts fresh
    if change == "deployment":
        live.write(body(sim, sim2, first={"price": {"input": 2.0, "output": 2.0}}))
    else:
        live.write(body(sim, sim2, timeout_s=30))
    assert live.gw.post("/admin/reload").status_code == 200
    fresh = state()
    assert fresh["deployments"]["first"]["cooldown_s"] == 0
    assert fresh["deployments"]["first"]["latency"] is None
    assert fresh["deployments"]["second"]["latency"]["samples"] == 2  # kept, and still counting
    assert len(fresh["stale_members"]) == 1  # the old definition's cooldown, no longer routed to
    assert live.answered_by() == "first"
    assert len(sim.log("m-first")) == 2


# --- 4. requests in flight through many reloads, good and broken ----------------------------------

TEXT = "one two three four five six"
SLOW_TEXT = "slow streams finish on the graph they started with"


def storm_version(sim, sim2, i: int) -> str:
    """Good versions swap the chain's order and each adds its own public name; odd ones are broken."""
    chain = ["fast-a", "fast-b"] if i % 4 == 0 else ["fast-b", "fast-a"]
    good = (
        provider("a", sim.base_url)
        + provider("b", sim2.base_url)
        + model("fast-a", "a", "m-storm-a")
        + model("fast-b", "b", "m-storm-b")
        + f"[fallbacks.chat]\nchain = {toml_value(chain)}\n\n"
        + model(f"gen-{i}", "a", "m-storm-a")
    )
    if i % 2 == 0:
        return good
    kind = (i // 2) % 3
    if kind == 0:
        return good + "[fallbacks.broken\n"
    if kind == 1:
        return good.replace(toml_value(chain), toml_value([*chain, "nope"]))
    return good.replace("api_keys = []", f'api_keys = ["env:{UNSET}"]', 1)


def test_no_request_fails_while_the_file_is_rewritten_many_times(gateway, sim, sim2):
    sim.script("m-storm-a", default={"text": TEXT, "chunks": 6, "chunk_delay_s": 0.01})
    sim2.script("m-storm-b", default={"text": TEXT, "chunks": 6, "chunk_delay_s": 0.01})
    sim.script("m-doomed", default={"text": SLOW_TEXT, "chunks": 8, "chunk_delay_s": 0.3})
    # version 0 has a slow model on its own provider; every later version drops both
    first = (
        storm_version(sim, sim2, 0)
        + provider("c", sim.base_url)
        + model("doomed", "c", "m-doomed", price={"input": 1.0, "output": 1.0})
    )
    live = launch(gateway, first, watch=True)
    gw = live.gw
    failures: list[str] = []
    done = {"stream": 0, "plain": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def doomed(stream: bool) -> None:
        try:
            client = gw.openai(timeout=10)
            if stream:
                raw = client.chat.completions.with_raw_response.create(
                    model="doomed", messages=MSG, stream=True
                )
                chunks = list(raw.parse())
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                finish = [
                    c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
                ]
            else:
                raw = client.chat.completions.with_raw_response.create(model="doomed", messages=MSG)
                resp = raw.parse()
                text, finish = resp.choices[0].message.content, [resp.choices[0].finish_reason]
            if raw.headers["x-router-model"] != "doomed" or text != SLOW_TEXT or finish != ["stop"]:
                failures.append(f"doomed stream={stream}: {text!r} {finish}")
        except Exception as e:
            failures.append(f"doomed stream={stream}: {e!r}")

    def client_loop(stream: bool) -> None:
        client = gw.openai(timeout=10)
        while not stop.is_set():
            try:
                if stream:
                    chunks = list(client.chat.completions.create(model="chat", messages=MSG, stream=True))
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    finish = [
                        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
                    ]
                else:
                    resp = client.chat.completions.create(model="chat", messages=MSG)
                    text, finish = resp.choices[0].message.content, [resp.choices[0].finish_reason]
                if text != TEXT or finish != ["stop"]:
                    failures.append(f"stream={stream}: {text!r} {finish}")
                with lock:
                    done["stream" if stream else "plain"] += 1
            except Exception as e:  # openai.APIError and transport errors alike
                failures.append(f"stream={stream}: {e!r}")

    slow = [threading.Thread(target=doomed, args=(s,)) for s in (True, True, False)]
    for t in slow:
        t.start()
    until(lambda: len(sim.log("m-doomed")) == 3)  # all three are in flight on version 0
    loops = [threading.Thread(target=client_loop, args=(i % 2 == 0,)) for i in range(6)]
    for t in loops:
        t.start()

    admin_answers: list[tuple[int, int]] = []
    try:
        for i in range(1, 25):  # 24 rewrites, alternating good and broken, triggers mixed
            live.write(storm_version(sim, sim2, i))
            how = ("admin", "sighup", "file")[i % 3]
            if how == "sighup":
                gw.proc.send_signal(signal.SIGHUP)
            elif how == "admin":
                r = gw.post("/admin/reload")
                admin_answers.append((i, r.status_code))
                assert r.status_code == (200 if i % 2 == 0 else 400), r.text
            time.sleep(0.2)
    finally:
        stop.set()
        for t in loops + slow:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in loops + slow)

    assert failures == []
    assert done["stream"] >= 10 and done["plain"] >= 10, done
    # the last version (24, good) serves; the slow model and its provider are gone
    assert gw.post("/admin/reload").status_code == 200
    assert live.names() == {"fast-a", "fast-b", "chat", "gen-24"}
    assert gw.post("/v1/chat/completions", json={"model": "doomed", "messages": MSG}).status_code == 404
    good_admin = sum(1 for _, s in admin_answers if s == 200)
    bad_admin = len(admin_answers) - good_admin
    assert good_admin == 4 and bad_admin == 4
    assert live.reloads("success") >= 1 + good_admin + 1
    assert live.reloads("failure") >= bad_admin
    assert gw.metric("router_config_generation") == live.generation() >= 2 + good_admin
    assert gw.proc.poll() is None
