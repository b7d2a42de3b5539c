"""Streams per CONTRACT §2: the commit point, faults before and after the first byte,
endings without [DONE] or a finish reason, stalls, slow first tokens, and chunk-by-chunk relay."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.helpers import model, provider, until

MSG = [{"role": "user", "content": "hello"}]


def chain(sim, sim2, **prov_a) -> str:
    return (
        provider("a", sim.base_url, **prov_a)
        + provider("b", sim2.base_url)
        + model("first", "a", "m-first", price={"input": 1.0, "output": 2.0})
        + model("second", "b", "m-second", price={"input": 1.0, "output": 2.0})
        + '[fallbacks.chat]\nchain = ["first", "second"]\n'
    )


def post_stream(gw, name: str):
    """A streamed chat request with httpx, to see the raw response (lines, headers, timing)."""
    return httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        timeout=10,
        json={"model": name, "messages": MSG, "stream": True},
    )


def stream_text(gw, name="chat"):
    raw = gw.openai().chat.completions.with_raw_response.create(model=name, messages=MSG, stream=True)
    chunks = list(raw.parse())
    return raw.headers, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


@pytest.mark.parametrize(
    "fault",
    [
        {"cut_after": 0},  # role chunk sent, then the connection is cut: no content yet
        {"malformed_after": 0, "malformed_then": "close"},
        {"mid_stream_error": True},
        {"status": 503},
        {"close_before_headers": True},
    ],
)
def test_failure_before_first_content_switches_member(gateway, sim, sim2, fault):
    sim.script("m-first", steps=[fault])
    sim2.script("m-second", default={"text": "from second"})
    gw = gateway(chain(sim, sim2))
    headers, text, _ = stream_text(gw)
    assert text == "from second"
    assert headers["x-router-model"] == "second" and headers["x-router-attempts"] == "2"


def test_slow_first_token_times_out_and_moves_on(gateway, sim, sim2):
    sim.script("m-first", steps=[{"ttft_s": 2.0}])
    sim2.script("m-second", default={"text": "quick"})
    gw = gateway(chain(sim, sim2, first_token_timeout_s=0.3))
    t = time.monotonic()
    headers, text, _ = stream_text(gw)
    assert text == "quick" and headers["x-router-model"] == "second"
    assert time.monotonic() - t < 1.5
    assert gw.metric("router_fallbacks_total", route="chat", reason="timeout") == 1
    sim.wait_idle(3)
    assert sim.log("m-first")[0]["client_left"] is True  # the slow attempt's connection was closed


def _raw_stream(gw, name="chat"):
    with post_stream(gw, name) as r:
        return r.status_code, r.headers, b"".join(r.iter_raw())


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ({"cut_after": 2}, "cut"),
        ({"malformed_after": 2}, "not valid JSON"),
        ({"mid_stream_error": 2}, "error event"),
        ({"no_finish": True}, "without a finish reason"),
        ({"stall_after": 2}, "timed out"),
    ],
)
def test_failure_after_first_byte_ends_with_an_error_event(gateway, sim, sim2, fault, why):
    # chunk_delay_s: the first content reaches the client before the fault arrives (events that
    # arrive together with the fault, before any byte went out, may still switch members)
    sim.script("m-first", steps=[{"chunks": 5, "chunk_delay_s": 0.05, **fault}])
    gw = gateway(chain(sim, sim2, stream_idle_timeout_s=0.4))
    status, headers, body = _raw_stream(gw)
    assert status == 200 and headers["x-router-model"] == "first"
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert events[-1].startswith('data: {"error":')  # no silent truncation, and no [DONE] after it
    assert "data: [DONE]" not in body.decode()
    assert len(sim2.log()) == 0  # no switching after the first byte
    with pytest.raises(openai.APIError):  # the SDK raises on it
        sim.script("m-first", steps=[{"chunks": 5, "chunk_delay_s": 0.05, **fault}])
        for _ in gw.openai().chat.completions.create(model="chat", messages=MSG, stream=True):
            pass


def test_finished_stream_without_done_is_ended_properly(gateway, sim, sim2):
    sim.script("m-first", steps=[{"no_done": True, "text": "complete"}])
    gw = gateway(chain(sim, sim2))
    status, _, body = _raw_stream(gw)
    text = body.decode()
    assert status == 200 and text.rstrip().endswith("data: [DONE]")
    assert '"error"' not in text


def test_role_only_first_chunk_does_not_commit(gateway, sim, sim2):
    # the role chunk arrives, then 429-like silence: a stall before content still lets the chain move on
    sim.script("m-first", steps=[{"stall_after": 0}])
    sim2.script("m-second", default={"text": "second wins"})
    gw = gateway(chain(sim, sim2, stream_idle_timeout_s=0.3))
    headers, text, chunks = stream_text(gw)
    assert text == "second wins" and headers["x-router-model"] == "second"
    assert all(c.model == "m-second" for c in chunks)


def test_usage_from_a_final_chunk_provider_is_booked(gateway, sim, sim2):
    sim.script(
        "m-first",
        default={"usage_mode": "final_chunk", "usage": {"prompt_tokens": 100, "completion_tokens": 7}},
    )
    gw = gateway(chain(sim, sim2))
    stream_text(gw)
    assert gw.metric("router_tokens_total", provider="a", model="first", key="anonymous", kind="input") == 100
    assert gw.metric("router_tokens_total", provider="a", model="first", key="anonymous", kind="output") == 7


def test_stream_without_usage_is_estimated_never_zero(gateway, sim, sim2):
    sim.script("m-first", default={"usage_mode": "none", "chunks": 6})
    gw = gateway(chain(sim, sim2))
    stream_text(gw)
    assert gw.metric("router_tokens_total", provider="a", model="first", key="anonymous", kind="output") == 6
    assert gw.metric("router_spend_usd_total", provider="a", model="first", key="anonymous") > 0
    assert '"usage_estimated":true' in gw.logs()


def test_stream_is_relayed_chunk_by_chunk(gateway, sim, sim2):
    sim.script("m-first", default={"chunks": 5, "chunk_delay_s": 0.15, "text": "aaaaabbbbbcccccdddddeeeee"})
    gw = gateway(chain(sim, sim2))
    arrivals = []
    with post_stream(gw, "chat") as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) > 0.08  # each chunk reached the client when the upstream sent it, not at the end


def test_client_disconnect_closes_the_upstream(gateway, sim, sim2):
    sim.script("m-first", default={"chunks": 50, "chunk_delay_s": 0.1})
    gw = gateway(chain(sim, sim2))
    with post_stream(gw, "chat") as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # leave after the first content chunk
    assert sim.wait_idle(3)
    rec = sim.log("m-first")[0]
    assert rec["client_left"] is True and rec["outcome"] == "disconnected"
    time.sleep(0.2)
    assert gw.metric("router_inflight_requests", route="chat") == 0


def test_a_client_leaving_a_plain_request_cancels_the_upstream_call(gateway, sim, sim2):
    sim.script("m-first", default={"delay_s": 3.0})
    gw = gateway(chain(sim, sim2))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": MSG}, timeout=0.5)
    assert sim.wait_idle(2.5)  # long before the 3 s answer: the gateway closed the connection
    rec = sim.log("m-first")[0]
    assert rec["client_left"] is True and rec["outcome"] == "disconnected"
    time.sleep(0.2)
    assert gw.metric("router_requests_total", route="chat", status="cancelled") == 1
    assert gw.metric("router_upstream_requests_total", provider="a", model="first", status="cancelled") == 1
    assert len(sim2.log()) == 0  # the chain did not move on for a client that is gone


def test_a_stream_that_arrives_whole_is_answered_with_its_length(gateway, sim, sim2):
    """A short answer whose whole upstream stream came before the response started goes out
    as one body with a content-length (no chunked framing: one write fewer); the client reads
    the same events, [DONE] last, and the spend is booked as for any stream."""
    sim.script("m-first", default={"text": "short and whole", "chunks": 3, "burst": True})
    sim2.script("m-second", default={"text": "short and whole", "chunks": 3})
    gw = gateway(chain(sim, sim2))
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="first", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "short and whole"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert int(raw.headers["content-length"]) > 0 and "transfer-encoding" not in raw.headers
    with post_stream(gw, "first") as r:
        body = r.read()
    assert r.headers["content-length"] == str(len(body)) and body.endswith(b"data: [DONE]\n\n")
    assert gw.metric("router_tokens_total", provider="a", model="first", key="anonymous", kind="output") > 0
    # the same answer dripping from the other provider is relayed chunked, as it comes
    raw = gw.openai().chat.completions.with_raw_response.create(model="second", messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "short and whole"


def test_a_whole_stream_translated_for_an_anthropic_client(gateway, sim, sim2):
    sim.script("m-first", default={"text": "whole for claude", "chunks": 3, "burst": True})
    gw = gateway(chain(sim, sim2))
    with gw.anthropic().messages.stream(
        model="first", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "whole for claude" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("fault", "last"),
    [
        ({"no_finish": True}, 'data: {"error":'),  # [DONE] but no finish reason: an error event ends it
        ({"no_done": True}, "data: [DONE]"),  # finished without [DONE]: ended properly for the client
    ],
)
def test_a_whole_stream_with_a_bad_ending_is_ended_as_any_stream(gateway, sim, sim2, fault, last):
    """The whole-body path is only for a stream known good (end marker and finish reason); one
    that arrived whole but ends badly is relayed and ended like a dripping one."""
    sim.script("m-first", default={"burst": True, "chunks": 3, **fault})
    gw = gateway(chain(sim, sim2))
    status, headers, body = _raw_stream(gw, "first")
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert status == 200 and events[-1].startswith(last)
    assert "content-length" not in headers
    assert sum('"content":"' in e and '"content":""' not in e for e in events) == 3


def test_a_stream_is_booked_when_its_client_leaves_while_the_upstream_lingers(gateway, sim, sim2):
    """The client has the whole answer and hangs up while the gateway still reads the upstream
    body's end (here held open for 1 s): the tokens and spend are booked all the same, and the
    request counts as answered, not cancelled: the client left after its last byte."""
    sim.script("m-first", default={"text": "a b c", "chunks": 3, "linger_s": 1.0})
    gw = gateway(chain(sim, sim2))
    with post_stream(gw, "first") as r:
        body = r.read()
    assert body.endswith(b"data: [DONE]\n\n")
    labels = {"provider": "a", "model": "first", "key": "anonymous"}
    assert until(lambda: gw.metric("router_tokens_total", **labels, kind="output")) == 3  # the usage sent
    assert gw.metric("router_spend_usd_total", **labels) > 0
    assert until(lambda: gw.metric("router_requests_total", route="first", status="200")) == 1
    assert gw.metric("router_requests_total", route="first", status="cancelled") == 0
    assert gw.metric("router_upstream_requests_total", provider="a", model="first", status="200") == 1
    assert gw.metric("router_upstream_requests_total", provider="a", model="first", status="cancelled") == 0
    [line] = [json.loads(x) for x in gw.logs().splitlines() if '"event":"request"' in x]
    assert line["status"] == 200 and "outcome" not in line
