"""Fault modes of the simulator, seen from raw HTTP clients (httpx, aiohttp) and the SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import pytest

from asgi_router.sim import SimServer

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
CHAT = {"model": "m", "messages": MESSAGES, "stream": True}
ANTHROPIC = {"model": "c", "max_tokens": 10, "messages": MESSAGES, "stream": True}


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer() as sim:
        yield sim


@pytest.fixture
def sim(server: SimServer) -> SimServer:
    server.wait_idle(2.0)
    server.reset()
    return server


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


def content_of(event: str) -> str | None:
    if not event.startswith("data: {") or event == "data: {not json":
        return None
    choices = json.loads(event[6:]).get("choices") or [{}]
    return choices[0].get("delta", {}).get("content") or None


def only(sim: SimServer, timeout: float = 2.0) -> dict[str, object]:
    assert sim.wait_idle(timeout)
    [record] = sim.log()
    return record


# connection-level faults


def test_cut_after_closes_mid_stream(sim: SimServer) -> None:
    sim.script("m", [{"cut_after": 2}])
    seen: list[str] = []
    with (
        openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIConnectionError),
    ):
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert seen == ["Hel", "lo "]
    assert only(sim)["outcome"] == "cut"


def test_cut_after_in_anthropic_stream(sim: SimServer) -> None:
    sim.script("c", [{"cut_after": 1}])
    with (
        anthropic.Anthropic(base_url=sim.root_url, api_key="k", max_retries=0) as client,
        pytest.raises(Exception, match="incomplete chunked read"),
        client.messages.stream(model="c", max_tokens=5, messages=MESSAGES) as stream,
    ):
        stream.get_final_message()


def test_cut_with_reset_and_non_streamed(sim: SimServer) -> None:
    sim.script("m", [{"cut_after": 0, "reset": True}, {"cut_after": 0}])
    with httpx.Client() as http:
        with pytest.raises(httpx.ReadError):
            http.post(sim.base_url + "/chat/completions", json=CHAT)
        with pytest.raises(httpx.RemoteProtocolError):  # half a JSON body, then FIN
            http.post(sim.base_url + "/chat/completions", json={**CHAT, "stream": False})
    assert sim.wait_idle()
    assert [r["outcome"] for r in sim.log()] == ["cut", "cut"]


def test_close_before_headers_is_a_connection_error(sim: SimServer) -> None:
    sim.script("m", [{"close_before_headers": True}, {"close_before_headers": True, "reset": True}])
    with openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
        for expected in (httpx.RemoteProtocolError, httpx.ReadError):
            with pytest.raises(openai.APIConnectionError) as err:
                client.chat.completions.create(model="m", messages=MESSAGES)
            assert type(err.value.__cause__).__name__ == expected.__name__
    assert sim.wait_idle()
    assert [r["outcome"] for r in sim.log()] == ["closed_before_headers"] * 2
    assert all(r["status"] is None for r in sim.log())


def test_hang_until_the_client_leaves(sim: SimServer) -> None:
    sim.script("m", [{"hang": True}])
    with httpx.Client(timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.post(sim.base_url + "/chat/completions", json=CHAT)
    record = only(sim)
    assert record["outcome"] == "hung" and record["client_left"] is True and record["status"] is None


def test_delay_before_headers(sim: SimServer) -> None:
    sim.script("m", [{"delay_s": 0.2}])
    with httpx.Client() as http:
        start = time.monotonic()
        with http.stream("POST", sim.base_url + "/chat/completions", json=CHAT) as r:
            assert time.monotonic() - start >= 0.2
            r.read()


# stream content faults


def test_malformed_then_continue(sim: SimServer) -> None:
    sim.script("m", [{"malformed_after": 1}])
    with httpx.Client() as http:
        evs = events(http.post(sim.base_url + "/chat/completions", json=CHAT).text)
    assert evs[2] == "data: {not json"
    assert [content_of(e) for e in evs[1:2] + evs[3:7]] == ["Hel", "lo ", "fro", "m ", "m."]
    assert evs[-1] == "data: [DONE]"
    assert only(sim)["outcome"] == "malformed"


def test_malformed_then_close_anthropic(sim: SimServer) -> None:
    sim.script("c", [{"malformed_after": 0, "malformed_then": "close"}])
    with httpx.Client() as http, http.stream("POST", sim.root_url + "/v1/messages", json=ANTHROPIC) as r:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for part in r.iter_bytes():
                got += part
    assert got.decode().endswith(
        'event: ping\ndata: {"type":"ping"}\n\nevent: content_block_delta\ndata: {not json\n\n'
    )


def test_malformed_non_streamed(sim: SimServer) -> None:
    sim.script("m", [{"malformed_after": 0}])
    with (
        openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client,
        pytest.raises(ValueError, match="Expecting property name"),  # the SDK's json.loads
    ):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_no_done(sim: SimServer) -> None:
    sim.script("m", [{"no_done": True}])
    sim.script("c", [{"no_done": True}])
    with httpx.Client() as http:
        oai = events(http.post(sim.base_url + "/chat/completions", json=CHAT).text)
        ant = events(http.post(sim.root_url + "/v1/messages", json=ANTHROPIC).text)
    assert '"finish_reason":"stop"' in oai[-1] and "[DONE]" not in "".join(oai)
    assert ant[-1].startswith("event: message_delta") and '"stop_reason":"end_turn"' in ant[-1]
    assert sim.wait_idle()
    assert [r["outcome"] for r in sim.log()] == ["no_done", "no_done"]


def test_no_finish(sim: SimServer) -> None:
    sim.script("m", [{"no_finish": True}])
    sim.script("c", [{"no_finish": True}])
    with httpx.Client() as http:
        oai = events(http.post(sim.base_url + "/chat/completions", json=CHAT).text)
        ant = events(http.post(sim.root_url + "/v1/messages", json=ANTHROPIC).text)
    assert oai[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["choices"][0]["finish_reason"] is None for e in oai[:-1])
    assert ant[-1].startswith("event: message_stop")
    assert '"stop_reason":null' in ant[-2]
    assert "end_turn" not in "".join(ant)


def test_usage_mode_none(sim: SimServer) -> None:
    sim.script("m", default={"usage_mode": "none"})
    with httpx.Client() as http:
        streamed = http.post(
            sim.base_url + "/chat/completions", json={**CHAT, "stream_options": {"include_usage": True}}
        ).text
        plain = http.post(sim.base_url + "/chat/completions", json={**CHAT, "stream": False}).json()
    assert "usage" not in streamed and "usage" not in plain


# timing, stalls and clients that leave


def test_ttft_and_chunk_delay(sim: SimServer) -> None:
    sim.script("m", [{"ttft_s": 0.25, "chunk_delay_s": 0.05, "chunks": 3, "text": "abc"}])
    stamps: list[tuple[float, str]] = []
    with httpx.Client() as http, http.stream("POST", sim.base_url + "/chat/completions", json=CHAT) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                stamps.append((time.monotonic(), line))
    role_at = stamps[0][0]
    content_at = [t for t, line in stamps if content_of(line)]
    assert content_at[0] - role_at >= 0.2
    assert content_at[1] - content_at[0] >= 0.04 and content_at[2] - content_at[1] >= 0.04


def test_burst_writes_the_whole_stream_at_once(sim: SimServer) -> None:
    sim.script("m", [{"burst": True, "chunk_delay_s": 0.1, "chunks": 3, "text": "abc"}])
    stamps: list[float] = []
    with httpx.Client() as http, http.stream("POST", sim.base_url + "/chat/completions", json=CHAT) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                stamps.append(time.monotonic())
    assert len(stamps) == 6  # role, 3 contents, finish, [DONE]
    assert stamps[-1] - stamps[0] < 0.05  # held back, then one write (0.2 s apart otherwise)
    assert only(sim)["outcome"] == "ok"


def test_stall_detected_by_a_client_timeout(sim: SimServer) -> None:
    sim.script("m", [{"stall_after": 2}])
    seen: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.5)) as http,
        pytest.raises(httpx.ReadTimeout),
        http.stream("POST", sim.base_url + "/chat/completions", json=CHAT) as r,
    ):
        for line in r.iter_lines():
            if content_of(line):
                seen.append(line)
    assert len(seen) == 2
    record = only(sim)
    assert record["outcome"] == "stalled" and record["client_left"] is True


def test_keepalive_comments_while_stalled(sim: SimServer) -> None:
    sim.script("c", [{"stall_after": 0, "keepalive_s": 0.05}])
    with httpx.Client() as http, http.stream("POST", sim.root_url + "/v1/messages", json=ANTHROPIC) as r:
        comments = 0
        for line in r.iter_lines():
            if line == ": keep-alive":
                comments += 1
                if comments == 3:
                    break
    assert only(sim)["outcome"] == "stalled"


def test_client_leaving_a_slow_stream_is_recorded_promptly(sim: SimServer) -> None:
    sim.script("m", [{"chunk_delay_s": 5.0}])
    with httpx.Client() as http, http.stream("POST", sim.base_url + "/chat/completions", json=CHAT) as r:
        for line in r.iter_lines():
            if content_of(line):
                break  # leave after the first content chunk
    left_at = time.monotonic()
    record = only(sim, timeout=1.0)
    assert record["outcome"] == "disconnected" and record["client_left"] is True
    assert isinstance(record["ended"], float) and record["ended"] - left_at < 2.0  # the next chunk: 5 s


def test_race_loser_cancelled_is_disconnected(sim: SimServer) -> None:
    sim.script("slow", [{"ttft_s": 5.0}])
    sim.script("fast", [{"ttft_s": 0.05}])
    asyncio.run(race(sim))
    assert sim.wait_idle(1.0)
    outcomes = {r["model"]: r["outcome"] for r in sim.log()}
    assert outcomes["slow"] == "disconnected"
    assert outcomes["fast"] in ("ok", "disconnected")


async def race(sim: SimServer) -> None:
    """Two streams; the first to produce content wins and the other is cancelled."""

    async def first_content(session: aiohttp.ClientSession, model: str) -> str:
        async with session.post(sim.base_url + "/chat/completions", json={**CHAT, "model": model}) as resp:
            async for raw in resp.content:
                if content_of(raw.decode().strip()):
                    return model
        raise AssertionError("no content")

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(first_content(session, m)) for m in ("slow", "fast")]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert [t.result() for t in done] == ["fast"]


def test_stop_drops_requests_in_flight() -> None:
    sim = SimServer().start()
    sim.script("m", [{"hang": True}])

    def call() -> None:
        with httpx.Client() as http, pytest.raises(httpx.TransportError):
            http.post(sim.base_url + "/chat/completions", json=CHAT)

    import threading

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while not sim.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    sim.stop()
    caller.join(2)
    assert time.monotonic() - start < 2.5
    assert [r["outcome"] for r in sim.log()] == ["server_stopped"]
    sim.stop()  # idempotent


# control API and command line


def test_control_api_over_http(sim: SimServer) -> None:
    with httpx.Client(base_url=sim.root_url) as http:
        bad = http.post("/_sim/script", json={"model": "m", "steps": [{"statuss": 500}]})
        assert bad.status_code == 400 and "statuss" in bad.json()["error"]
        ok = http.post(
            "/_sim/script", json=[{"model": "m", "steps": [{"status": 503}], "default": {"text": "yo"}}]
        )
        assert ok.json() == {"ok": True, "models": ["m"]}
        assert http.post("/v1/chat/completions", json={**CHAT, "stream": False}).status_code == 503
        answer = http.post("/v1/chat/completions", json={**CHAT, "stream": False}).json()
        assert answer["choices"][0]["message"]["content"] == "yo"
        http.post("/v1/messages", json=ANTHROPIC).raise_for_status()
        log = http.get("/_sim/log", params={"model": "m"}).json()
        assert [(r["seq"] > 0, r["outcome"], r["step"]) for r in log] == [
            (True, "error_status", {"status": 503}),
            (True, "ok", {"text": "yo"}),
        ]
        assert log[0]["started"] <= log[0]["ended"] <= log[1]["started"]
        stats = http.get("/_sim/stats").json()
        assert stats["in_flight"] == 0
        assert stats["models"]["m"] == {"requests": 2, "outcomes": {"error_status": 1, "ok": 1}}
        assert stats["models"]["c"]["requests"] == 1
        http.post("/_sim/reset").raise_for_status()
        assert http.get("/_sim/log").json() == []


def test_bad_requests_are_answered_in_dialect(sim: SimServer) -> None:
    with httpx.Client(base_url=sim.root_url) as http:
        r = http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = http.post("/v1/messages", json={"model": "c", "max_tokens": 1})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = http.post("/v1/embeddings", json={"model": "e", "input": [1.5]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert sim.wait_idle()
    assert [r["outcome"] for r in sim.log()] == ["error_status"] * 3


def test_command_line(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"model": "m", "steps": [{"status": 429, "retry_after": 1}]}]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgi_router.sim", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"asgi-router-sim listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        with httpx.Client(base_url=match.group(1)) as http:
            r = http.post("/v1/chat/completions", json={**CHAT, "stream": False})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""


def test_extra_headers_request_id_and_max_tokens_rules(sim: SimServer) -> None:
    sim.script("m", [{"headers": {"x-ratelimit-remaining-requests": "0"}, "retry_after": "soon"}])
    sim.script("m2", default={"require_max_tokens": True})
    sim.script("c", default={"require_max_tokens": False})
    with httpx.Client(base_url=sim.root_url) as http:
        r = http.post("/v1/chat/completions", json=CHAT)
        assert r.headers["x-ratelimit-remaining-requests"] == "0" and r.headers["retry-after"] == "soon"
        assert r.headers["x-request-id"] == r.headers["request-id"] and r.headers["x-request-id"].startswith(
            "req_"
        )
        no_max = {"model": "m2", "messages": MESSAGES}
        assert http.post("/v1/chat/completions", json=no_max).json()["error"]["param"] == "max_tokens"
        assert (
            http.post("/v1/chat/completions", json={**no_max, "max_completion_tokens": 5}).status_code == 200
        )
        assert http.post("/v1/messages", json={"model": "c", "messages": MESSAGES}).status_code == 200


def test_embedding_token_inputs_and_faults(sim: SimServer) -> None:
    sim.script("e", [{"status": 500}, {"usage": {"prompt_tokens": 42}}])
    with httpx.Client(base_url=sim.base_url) as http:
        assert http.post("/embeddings", json={"model": "e", "input": "x"}).status_code == 500
        out = http.post("/embeddings", json={"model": "e", "input": [[1, 2, 3], [4]]}).json()
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 42, "total_tokens": 42}
