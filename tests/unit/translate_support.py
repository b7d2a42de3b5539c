"""Fixture runner for the translator pairs (tests/fixtures/translate/<pair>/).

A ``<case>.json`` fixture holds some of:

- ``doc``: what the case shows;
- ``deployment``: ``{provider, model, max_output_tokens?, params?, quirks?}``;
- ``stream`` (default false) and ``request``: the client's body;
- ``upstream_request``: the expected upstream body, or ``raises``: ``{error, param}``;
- ``upstream_response`` → ``response``: the upstream's JSON answer and the client's;
- ``upstream_error`` → ``error``: ``{status, body}`` (body JSON or text) and the client's body;
- ``rejected_by``: a recorded provider error body for the field the quirk removes, with
  ``check`` (``absent``: a path; ``each_matches``: [path, regex]; ``no_role_pair``: [a, b]; ``equals``: [path, value]).

A ``<case>.sse`` transcript has ``### <section>`` lines splitting: ``doc``, ``deployment``,
``request`` (JSON), ``upstream_request`` (JSON, optional), ``upstream`` (SSE text in),
``client`` (SSE text expected out), ``upstream_response`` (JSON, optional: the same answer
non-streamed, whose translation must equal what the SDK accumulates from ``client``).

The runner plays the core: probe each upstream event with the upstream dialect's probe, feed
the translator, and call ``close()`` when a finish reason was seen.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema  # type: ignore[import-untyped]
import openai
import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from asgi_router import errors
from asgi_router.graph import Deployment, Provider, Quirks
from asgi_router.translate import pair_for
from asgi_router.translate.anthropic_passthrough import AnthropicPassthrough
from asgi_router.translate.anthropic_to_openai import AnthropicToOpenAI
from asgi_router.translate.openai_to_anthropic import OpenAIToAnthropic
from asgi_router.translate.passthrough import OpenAIPassthrough
from asgi_router.types import Dialect
from asgi_router.wire import anthropic as wire_anthropic
from asgi_router.wire import openai as wire_openai
from asgi_router.wire.sse import DONE, SSEDecoder

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "translate"
SCHEMAS = Path("/work/shared/reference/openai-schemas.json")
if not SCHEMAS.exists():  # a copy beside the repo, when the shared folder is not mounted
    SCHEMAS = ROOT.parent / "shared" / "reference" / "openai-schemas.json"
CREATED = 1_700_000_000

PAIRS: dict[str, tuple[Any, str, str]] = {
    "openai_passthrough": (OpenAIPassthrough, "openai", "openai"),
    "openai_to_anthropic": (OpenAIToAnthropic, "openai", "anthropic"),
    "anthropic_to_openai": (AnthropicToOpenAI, "anthropic", "openai"),
    "anthropic_passthrough": (AnthropicPassthrough, "anthropic", "anthropic"),
}
_EVENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def cases(pair: str, ext: str) -> list[Any]:
    paths = sorted((FIXTURES / pair).glob(f"*.{ext}"))
    return [pytest.param(p, id=p.stem) for p in paths]


def deployment(spec: dict[str, Any], api: str) -> Deployment:
    quirks = dict(spec.get("quirks") or {})
    if "drop_params" in quirks:
        quirks["drop_params"] = frozenset(quirks["drop_params"])
    provider = Provider(
        name=spec.get("provider", api),
        api=cast(Dialect, api),
        base_url="https://upstream.test",
        api_keys=(),
        quirks=Quirks(**quirks),
    )
    return Deployment(
        name=spec.get("name", "deployment"),
        provider=provider,
        model=spec["model"],
        max_output_tokens=spec.get("max_output_tokens"),
        params=spec.get("params") or {},
    )


def begin(pair: str, request: dict[str, Any], dep: Deployment, stream: bool) -> Any:
    cls, client, upstream = PAIRS[pair]
    registered = pair_for(cast(Dialect, client), cast(Dialect, upstream))
    assert registered is PAIRS[pair][0], "the pair is registered in translate._PAIRS"
    if cls is OpenAIToAnthropic:
        return cls(request, dep, stream=stream, clock=lambda: float(CREATED))
    return cls(request, dep, stream=stream)


# --- JSON cases ----------------------------------------------------------------------------


def check_json_case(pair: str, path: Path) -> None:
    case = json.loads(path.read_text())
    _, client, upstream = PAIRS[pair]
    dep = deployment(case["deployment"], upstream)
    stream = bool(case.get("stream", False))
    request = case.get("request")
    if request is None:
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        if client == "anthropic":
            request["max_tokens"] = 16
    untouched = copy.deepcopy(request)
    if "raises" in case:
        with pytest.raises(getattr(errors, case["raises"]["error"])) as info:
            begin(pair, request, dep, stream)
        assert info.value.param == case["raises"].get("param")
        assert request == untouched
        return
    t = begin(pair, request, dep, stream)
    assert request == untouched, "the translator mutated the client's body"
    if "upstream_request" in case:
        assert t.upstream_body == case["upstream_request"]
        assert begin(pair, request, dep, stream).upstream_body == t.upstream_body  # deterministic
    if "rejected_by" in case:
        check_rejection(t.upstream_body, case["rejected_by"])
    if "upstream_response" in case:
        upstream_json = case["upstream_response"]
        kept = copy.deepcopy(upstream_json)
        got = t.response(upstream_json)
        assert upstream_json == kept, "response() mutated the upstream's body"
        assert got == case["response"]
        validate_response(client, got)
    if "upstream_error" in case:
        err = case["upstream_error"]
        raw = err["body"] if isinstance(err["body"], str) else orjson.dumps(err["body"])
        raw = raw.encode() if isinstance(raw, str) else raw
        got = orjson.loads(t.error(err["status"], raw))
        assert got == case["error"]
        validate_error(client, got)


def check_rejection(body: dict[str, Any], spec: dict[str, Any]) -> None:
    """The provider's recorded error names a field; the translated request must not have it."""
    assert spec["status"] in (400, 422) and spec["body"], "a recorded error body is required"
    check = spec["check"]
    if "absent" in check:
        assert values_at(body, check["absent"]) == [], f"{check['absent']} still sent"
    if "each_matches" in check:
        where, pattern = check["each_matches"]
        found = values_at(body, where)
        assert found, f"nothing at {where}"
        assert all(isinstance(v, str) and re.fullmatch(pattern, v) for v in found), found
    if "equals" in check:
        where, value = check["equals"]
        assert values_at(body, where) == [value], f"{where}: {values_at(body, where)} != [{value!r}]"
    if "no_role_pair" in check:
        roles = [m.get("role") for m in body["messages"]]
        assert list(check["no_role_pair"]) not in [list(p) for p in zip(roles, roles[1:], strict=False)]


def values_at(obj: Any, path: str) -> list[Any]:
    """Values at a dotted path; ``*`` walks every list item; missing keys give nothing."""
    current = [obj]
    for key in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if key == "*" and isinstance(item, list):
                nxt.extend(item)
            elif isinstance(item, dict) and key in item:
                nxt.append(item[key])
        current = nxt
    return current


# --- SSE cases -----------------------------------------------------------------------------


@dataclass
class SSECase:
    sections: dict[str, str]

    def json(self, name: str) -> Any:
        return json.loads(self.sections[name]) if name in self.sections else None


def read_sse_case(path: Path) -> SSECase:
    sections: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("### "):
            if name is not None:
                sections[name] = "".join(lines)
            name, lines = line[4:].strip(), []
        else:
            lines.append(line)
    if name is not None:
        sections[name] = "".join(lines)
    return SSECase(sections)


def run_stream(t: Any, upstream: str, raw: bytes) -> bytes:
    """Play the core: probe with the upstream dialect, feed, close after a finish."""
    probe_event = wire_openai.probe_event if upstream == "openai" else wire_anthropic.probe_event
    st = t.stream()
    out: list[bytes] = []
    finished = False
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.flush()
    for ev in events:
        probe = probe_event(ev)
        out += st.feed(ev, probe)
        finished = finished or probe.finish is not None
    if finished:
        out += st.close()
        assert st.close() == [], "close() must be idempotent"
    return b"".join(out)


def check_sse_case(pair: str, path: Path) -> None:
    case = read_sse_case(path)
    _, client, upstream = PAIRS[pair]
    dep = deployment(case.json("deployment"), upstream)
    request = case.json("request")
    untouched = copy.deepcopy(request)
    t = begin(pair, request, dep, True)
    assert request == untouched, "the translator mutated the client's body"
    if "upstream_request" in case.sections:
        assert t.upstream_body == case.json("upstream_request")
    raw = case.sections["upstream"].encode()
    got = run_stream(t, upstream, raw)
    assert got.decode() == case.sections["client"]
    assert run_stream(t, upstream, raw) == got, "a second stream() must start from fresh state"
    expected_final = None
    if "upstream_response" in case.sections:
        expected_final = t.response(case.json("upstream_response"))
    if client == "openai":
        check_openai_stream(got, expected_final)
    else:
        check_anthropic_stream(got, expected_final)


# --- validation against the published schemas and the SDKs ----------------------------------


@functools.cache
def _openai_schema_root() -> dict[str, Any]:
    doc = json.loads(SCHEMAS.read_text())
    return {"components": _nullable_to_anyof(doc["components"])}


def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (still used in places) → JSON Schema's ``or null``;
    OpenAPI's ``discriminator`` (not JSON Schema) is left out."""
    if isinstance(node, list):
        return [_nullable_to_anyof(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_anyof(v) for k, v in node.items() if k not in ("nullable", "discriminator")}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validate_openai(obj: Any, schema: str) -> None:
    root = {**_openai_schema_root(), "$ref": f"#/components/schemas/{schema}"}
    jsonschema.Draft202012Validator(root).validate(obj)


def validate_response(client: str, body: Any) -> None:
    if client == "openai":
        validate_openai(body, "CreateChatCompletionResponse")
        for choice in body["choices"]:
            assert "refusal" in choice["message"] and "logprobs" in choice
    else:
        Message.model_validate(body)


def validate_error(client: str, body: Any) -> None:
    if client == "openai":
        validate_openai(body, "ErrorResponse")
        assert set(body["error"]) == {"message", "type", "param", "code"}
    else:
        ErrorResponse.model_validate(body)


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    return [(ev.event, ev.data) for ev in decoder.feed(raw) + decoder.flush()]


def check_openai_stream(raw: bytes, expected: dict[str, Any] | None) -> None:
    events = sse_events(raw)
    assert all(name is None for name, _ in events), "OpenAI streams carry no event: lines"
    state = ChatCompletionStreamState()
    ended_with_error = False
    for i, (_, data) in enumerate(events):
        if data == DONE:
            assert i == len(events) - 1, "[DONE] must be last"
            continue
        obj = orjson.loads(data)
        if "error" in obj:
            validate_openai(obj, "ErrorResponse")
            assert i == len(events) - 1, "the error event ends the stream"
            ended_with_error = True
            continue
        validate_openai(obj, "CreateChatCompletionStreamResponse")
        state.handle_chunk(ChatCompletionChunk.model_validate(obj))
    if ended_with_error or expected is None:
        return
    try:
        final = state.get_final_completion().model_dump(exclude_none=True)
    except openai.LengthFinishReasonError:  # the SDK refuses to "parse" a cut answer
        final = state.current_completion_snapshot.model_dump(exclude_none=True)
    got_msg, exp_msg = final["choices"][0]["message"], expected["choices"][0]["message"]
    # the role chunk carries content "" (wire reference 3.3), so a tool-only stream
    # accumulates "" where the non-streamed answer has null
    assert (got_msg.get("content") or None) == (exp_msg.get("content") or None)
    got_calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in got_msg.get("tool_calls", [])
    ]
    exp_calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in exp_msg.get("tool_calls", [])
    ]
    assert [(i, n, json.loads(a)) for i, n, a in got_calls] == [
        (i, n, json.loads(a)) for i, n, a in exp_calls
    ]
    assert final["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert final["id"] == expected["id"] and final["model"] == expected["model"]


def check_anthropic_stream(raw: bytes, expected: dict[str, Any] | None) -> None:
    """Event lines match types, message_start first, gap-free indices, one open block at a
    time, every event valid for the SDK; the SDK's accumulator gives the expected Message."""
    events = sse_events(raw)
    snapshot = None
    bufs: dict[int, bytes] = {}
    open_block: int | None = None
    next_index = 0
    for i, (name, data) in enumerate(events):
        obj = orjson.loads(data)
        assert name == obj["type"], f"event: {name} carries type {obj['type']}"
        if i == 0:
            assert name in ("message_start", "error"), "the first event must be message_start"
        if name == "error":
            ErrorResponse.model_validate(obj)
            assert i == len(events) - 1, "the error event ends the stream"
            return
        if name == "ping":  # the SDK's stream skips pings (anthropic/_streaming.py)
            continue
        if name == "content_block_start":
            assert open_block is None and obj["index"] == next_index
            open_block, next_index = obj["index"], next_index + 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert obj["index"] == open_block
            if name == "content_block_stop":
                open_block = None
        elif name in ("message_delta", "message_stop"):
            assert open_block is None, "a block is still open"
        snapshot = accumulate_event(
            event=_EVENT_ADAPTER.validate_python(obj), current_snapshot=snapshot, json_bufs=bufs
        )
    assert events and events[-1][0] == "message_stop"
    assert snapshot is not None
    final = Message.model_validate(snapshot.model_dump())
    if expected is not None:
        want = Message.model_validate(expected)
        assert [b.model_dump(exclude_none=True) for b in final.content] == [
            b.model_dump(exclude_none=True) for b in want.content
        ]
        assert (final.stop_reason, final.stop_sequence, final.id, final.model) == (
            want.stop_reason,
            want.stop_sequence,
            want.id,
            want.model,
        )
        assert final.usage.input_tokens == want.usage.input_tokens
        assert final.usage.output_tokens == want.usage.output_tokens
        assert (final.usage.cache_read_input_tokens or 0) == (want.usage.cache_read_input_tokens or 0)
