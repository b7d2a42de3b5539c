"""The canonical log line (STYLE habit 15): exactly one JSON line with ``"event": "request"`` per
request, carrying the request id of the ``x-request-id`` response header and what routing did."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgi_router.sim import SimServer
from tests.helpers import Gateway, model, provider, start_gateway

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, _sims: list[SimServer]) -> Iterator[Gateway]:
    sim = _sims[0]
    g = start_gateway(
        tmp_path_factory.mktemp("logs"),
        provider("up", sim.base_url)
        + model("first", "up", "up-first", price={"input": 1.0, "output": 2.0})
        + model("second", "up", "up-second", price={"input": 2.0, "output": 4.0})
        + '[fallbacks.chat]\nchain = ["first", "second"]\n',
    )
    yield g
    g.stop()


def lines(gw: Gateway) -> list[dict[str, Any]]:
    out = []
    for line in gw.logs().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line the gateway writes is JSON
    return out


def request_lines(gw: Gateway, request_id: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The canonical lines of one request (written just after the response: wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [x for x in lines(gw) if x.get("event") == "request" and x.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def post(gw: Gateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    return gw.post("/v1/chat/completions", json=body, headers=headers)


def test_one_line_for_a_fallback_with_everything_routing_did(gw: Gateway, sim: SimServer) -> None:
    sim.script("up-first", [{"status": 500}])
    r = post(gw, {"model": "chat", "messages": MSGS})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    (line,) = request_lines(gw, rid)
    assert line["level"] == "info" and line["path"] == "/v1/chat/completions" and line["method"] == "POST"
    assert (line["route"], line["status"], line["stream"]) == ("chat", 200, False)
    assert (line["model"], line["provider"], line["attempts"]) == ("second", "up", 2)
    assert (line["tokens_in"], line["tokens_out"]) == (10, 5)
    assert line["cost_usd"] == pytest.approx(float(r.headers["x-router-cost-usd"]))
    assert line["cost_usd"] == pytest.approx((10 * 2.0 + 5 * 4.0) / 1e6)
    assert 0 < line["overhead_ms"] <= line["duration_ms"]
    assert line["key"] == "anonymous"
    assert "timestamp" in line


def test_one_line_for_a_stream_with_time_to_first_token(gw: Gateway, sim: SimServer) -> None:
    sim.script("up-first", default={"ttft_s": 0.05, "text": "a b c"})
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={"model": "first", "messages": MSGS, "stream": True},
        timeout=10,
    ) as r:
        r.read()
    (line,) = request_lines(gw, r.headers["x-request-id"])
    assert (line["route"], line["status"], line["stream"], line["model"], line["attempts"]) == (
        "first",
        200,
        True,
        "first",
        1,
    )
    assert (line["tokens_in"], line["tokens_out"]) == (10, 5)
    assert line["ttft_ms"] >= 50 and line["duration_ms"] >= line["ttft_ms"]
    assert line["overhead_ms"] < line["duration_ms"]


def test_one_line_for_a_client_error(gw: Gateway) -> None:
    r = post(gw, {"model": "nope", "messages": MSGS})
    assert r.status_code == 404
    (line,) = request_lines(gw, r.headers["x-request-id"])
    assert (line["route"], line["status"]) == ("unknown", 404)
    r = gw.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    (line,) = request_lines(gw, r.headers["x-request-id"])
    assert line["status"] == 400


def test_a_failed_request_logs_its_attempts(gw: Gateway, sim: SimServer) -> None:
    sim.script("up-first", [{"status": 500}])
    sim.script("up-second", [{"status": 503}])
    r = post(gw, {"model": "chat", "messages": MSGS})
    assert r.status_code == 502
    (line,) = request_lines(gw, r.headers["x-request-id"])
    assert (line["route"], line["status"]) == ("chat", 502)
    assert line["attempts"] == 2


def test_a_sane_client_request_id_is_reused(gw: Gateway) -> None:
    for rid in ("trace-0af7651916cd43dd8448eb211c80319c", "a", "span:1.2_x-y"):
        r = post(gw, {"model": "first", "messages": MSGS}, **{"x-request-id": rid})
        assert r.headers["x-request-id"] == rid
        (line,) = request_lines(gw, rid)
        assert line["status"] == 200
    r = post(gw, {"model": "nope", "messages": MSGS}, **{"x-request-id": "err-trace-1"})
    assert r.headers["x-request-id"] == "err-trace-1"
    assert len(request_lines(gw, "err-trace-1")) == 1


@pytest.mark.parametrize(
    "rid",
    ["x" * 65, "has space", 'quote"inside', "semi;colon", "</script>", "", "ünïcode"],
    ids=["too-long", "space", "quote", "semicolon", "markup", "empty", "non-ascii"],
)
def test_an_insane_client_request_id_is_replaced(gw: Gateway, rid: str) -> None:
    r = gw.post(
        "/v1/chat/completions",
        json={"model": "first", "messages": MSGS},
        headers=[("x-request-id", rid.encode())],
    )
    assert r.status_code == 200
    new = r.headers["x-request-id"]
    assert new != rid and 16 <= len(new) <= 64 and new.isalnum()
    (line,) = request_lines(gw, new)
    assert line["request_id"] == new


def test_exactly_one_request_line_per_request(gw: Gateway, sim: SimServer) -> None:
    """Over everything this module sent: no request logged twice, every answer logged."""
    ids = [post(gw, {"model": m, "messages": MSGS}).headers["x-request-id"] for m in ("first", "chat", "x")]
    for rid in ids:
        assert len(request_lines(gw, rid)) == 1
    seen: dict[str, int] = {}
    for x in lines(gw):
        if x["event"] == "request":
            seen[x["request_id"]] = seen.get(x["request_id"], 0) + 1
    assert set(seen.values()) == {1}, {k: n for k, n in seen.items() if n > 1}
