"""OpenAI client → OpenAI-speaking upstream: the body is forwarded with a minimal edit.

The edit: the deployment's model id, its default params under the client's, the provider's
dropped and renamed params, and ``stream_options.include_usage`` so usage is always known
(the usage-only chunk is then hidden from a client that did not ask for it). Then the
provider's message quirks (``graph.Quirks``), decided once per attempt from flags:

- ``developer_role=False``: ``developer`` messages are sent as ``system``;
- ``message_name=False``: ``messages[].name`` is removed;
- ``max_n``: a larger ``n`` is a 400 here (``BadRequest``, param ``n``), not at the provider;
- ``tool_call_ids="alnum9"``: every tool call id in the history becomes a deterministic
  9-character alphanumeric hash; ids that already fit are kept; the map back is kept for
  this attempt, and ids the upstream mints itself pass through unchanged;
- ``fix_message_order``: an ``{"role": "assistant", "content": "Done."}`` turn goes between
  a ``tool`` message and a following ``user`` one (Mistral: "Unexpected role 'user' after role
  'tool'"; empty content is rejected by some providers, and "Done." is what opencode sends);
- ``stream_tool_finish``: a ``stop`` finish after tool calls is reported as ``tool_calls``.

With none of these set, no message is looked at and stream events are relayed as they came;
a chunk is rebuilt only to apply ``stream_tool_finish`` or to map an id back.
"""

from __future__ import annotations

from typing import Any

import orjson

from asgi_router.errors import BadRequest
from asgi_router.graph import Deployment, Quirks
from asgi_router.translate.common import (
    apply_param_quirks,
    as_dict,
    debug,
    dropped,
    index_of,
    merge_params,
    openai_usage,
    short_hash,
)
from asgi_router.wire.openai import STREAM_DONE
from asgi_router.wire.probe import Probe
from asgi_router.wire.sse import SSEEvent, encode

FILLER_ASSISTANT = "Done."


def build_openai_request(
    body: dict[str, Any], deployment: Deployment, *, stream: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The upstream body for an OpenAI-speaking provider, and the tool-id map back
    (upstream id → client id; empty unless ``tool_call_ids`` rewrote something)."""
    quirks = deployment.provider.quirks
    provider = deployment.provider.name
    out = dict(body)
    merge_params(out, deployment)
    out["model"] = deployment.model
    if stream:
        opts = body.get("stream_options")
        if quirks.stream_usage == "include_usage":
            out["stream_options"] = (
                {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
            )
        elif out.pop("stream_options", None) is not None:
            dropped(provider, "stream_options", "stream_usage_always")
    apply_param_quirks(out, quirks, provider)
    n = out.get("n")
    if quirks.max_n is not None and isinstance(n, int) and n > quirks.max_n:
        raise BadRequest(f"n={n} is more than this model's provider allows ({quirks.max_n})", param="n")
    id_back: dict[str, str] = {}
    if _rewrites_messages(quirks) and isinstance(out.get("messages"), list):
        out["messages"] = _rewrite_messages(out["messages"], quirks, provider, id_back)
    return out, id_back


def _rewrites_messages(q: Quirks) -> bool:
    return not q.developer_role or not q.message_name or q.tool_call_ids == "alnum9" or q.fix_message_order


def alnum9(tool_id: str) -> str:
    """A tool call id Mistral accepts: exactly 9 of [a-zA-Z0-9], a hash unless it fits."""
    if len(tool_id) == 9 and tool_id.isascii() and tool_id.isalnum():
        return tool_id
    return short_hash(tool_id, 9)


def _rewrite_messages(
    messages: list[Any], quirks: Quirks, provider: str, id_back: dict[str, str]
) -> list[Any]:
    """One pass over the history; changed messages are copies, the client's stay untouched."""
    dev, strip_name = not quirks.developer_role, not quirks.message_name
    alnum, order = quirks.tool_call_ids == "alnum9", quirks.fix_message_order
    counts = {"developer": 0, "name": 0, "ids": 0, "filler": 0}
    out: list[Any] = []
    prev_role: Any = None
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        role = m.get("role")
        if order and role == "user" and prev_role == "tool":
            out.append({"role": "assistant", "content": FILLER_ASSISTANT})
            counts["filler"] += 1
        if dev and role == "developer":
            m = {**m, "role": "system"}
            counts["developer"] += 1
        if strip_name and "name" in m:
            m = {k: v for k, v in m.items() if k != "name"}
            counts["name"] += 1
        if alnum:
            m, changed = _rewrite_ids(m, id_back)
            counts["ids"] += changed
        out.append(m)
        prev_role = role
    if order and prev_role == "assistant" and isinstance(out[-1], dict) and "prefix" not in out[-1]:
        # Mistral: "Expected last role User or Tool (or Assistant with prefix True)": a final
        # assistant turn is a prefill, which Mistral takes only when marked as one
        out[-1] = {**out[-1], "prefix": True}
        debug("param_added", provider=provider, param="messages[-1].prefix", value=True)
    if counts["developer"]:
        debug("param_renamed", provider=provider, param="messages[].role=developer", to="system")
    if counts["name"]:
        dropped(provider, "messages[].name", "message_name")
    if counts["ids"]:
        debug("tool_call_ids_rewritten", provider=provider, count=counts["ids"])
    if counts["filler"]:
        debug("message_inserted", provider=provider, role="assistant", count=counts["filler"])
    return out


def _rewrite_ids(m: dict[str, Any], id_back: dict[str, str]) -> tuple[dict[str, Any], int]:
    role = m.get("role")
    if role == "tool" and isinstance(m.get("tool_call_id"), str):
        new = alnum9(m["tool_call_id"])
        if new == m["tool_call_id"]:
            return m, 0
        id_back[new] = m["tool_call_id"]
        return {**m, "tool_call_id": new}, 1
    calls = m.get("tool_calls")
    if role != "assistant" or not isinstance(calls, list):
        return m, 0
    changed = 0
    new_calls: list[Any] = []
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("id"), str) and alnum9(call["id"]) != call["id"]:
            new = alnum9(call["id"])
            id_back[new] = call["id"]
            call = {**call, "id": new}
            changed += 1
        new_calls.append(call)
    return ({**m, "tool_calls": new_calls}, changed) if changed else (m, 0)


class ChunkFixer:
    """Per-attempt repair of upstream answers: tool ids mapped back, ``stop`` after tool calls
    reported as ``tool_calls``. ``fix`` keeps per-stream state: make one per stream."""

    __slots__ = ("_id_back", "_tool_choices", "_tool_finish")

    def __init__(self, id_back: dict[str, str], tool_finish: bool) -> None:
        self._id_back = id_back
        self._tool_finish = tool_finish
        self._tool_choices: set[int] = set()

    def response(self, body: Any) -> Any:
        """A non-streamed answer with the repairs applied (a new object when anything changed)."""
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list):
            return body
        new_choices = [self._fix_choice(c, "message") for c in choices]
        if all(a is b for a, b in zip(new_choices, choices, strict=True)):
            return body
        return {**body, "choices": new_choices}

    def fix(self, obj: Any) -> Any:
        """One parsed chunk → the chunk to send: the same object, or a repaired copy."""
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not choices or not isinstance(choices, list):
            return obj
        new_choices = [self._fix_choice(c, "delta") for c in choices]
        if all(a is b for a, b in zip(new_choices, choices, strict=True)):
            return obj
        return {**obj, "choices": new_choices}

    def _fix_choice(self, choice: Any, key: str) -> Any:
        if not isinstance(choice, dict):
            return choice
        inner = as_dict(choice.get(key))
        calls = inner.get("tool_calls")
        out = choice
        if isinstance(calls, list) and calls:
            self._tool_choices.add(index_of(choice))
            if self._id_back:
                mapped = [self._map_call(c) for c in calls]
                if any(a is not b for a, b in zip(mapped, calls, strict=True)):
                    out = {**choice, key: {**inner, "tool_calls": mapped}}
        if (
            self._tool_finish
            and choice.get("finish_reason") == "stop"
            and index_of(choice) in self._tool_choices
        ):
            out = {**out, "finish_reason": "tool_calls"}
        return out

    def _map_call(self, call: Any) -> Any:
        if isinstance(call, dict) and call.get("id") in self._id_back:
            return {**call, "id": self._id_back[call["id"]]}
        return call


def complete_response(body: Any) -> Any:
    """OpenAI's spec requires ``message.refusal`` and ``choices[].logprobs`` (null allowed)
    and ``tool_calls``, when present, to be a list; several compatible providers (Mistral,
    Gemini) leave the first two out or send ``"tool_calls": null``: repaired here."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        return body
    out: list[Any] = []
    for c in choices:
        message = c.get("message") if isinstance(c, dict) else None
        if isinstance(message, dict) and (
            "logprobs" not in c or "refusal" not in message or message.get("tool_calls", ()) is None
        ):
            fixed = {"refusal": None, **message}
            if fixed.get("tool_calls", ()) is None:
                del fixed["tool_calls"]
            c = {**c, "logprobs": c.get("logprobs"), "message": fixed}
        out.append(c)
    if all(a is b for a, b in zip(out, choices, strict=True)):
        return body
    return {**body, "choices": out}


class PassthroughStream:
    """Relays chunks as they came. A client that asked for ``include_usage`` gets OpenAI's
    ``choices: []`` usage chunk before ``[DONE]`` even from a provider that puts usage on a
    chunk with choices instead (Mistral and Gemini on the finish chunk, Groq's ``x_groq``):
    clients look for that chunk (OpenAI's spec promises it), so it is made from the last usage
    seen when the upstream sent none of its own."""

    __slots__ = ("_closed", "_fixer", "_hide_usage_chunk", "_usage_owed")

    def __init__(self, hide_usage_chunk: bool, fixer: ChunkFixer | None = None) -> None:
        self._hide_usage_chunk = hide_usage_chunk
        self._fixer = fixer
        self._closed = False
        self._usage_owed: Probe | None = None

    def feed(self, ev: SSEEvent, probe: Probe) -> list[bytes]:
        if probe.done or (probe.usage_only and self._hide_usage_chunk):
            return []
        if probe.usage is not None and not self._hide_usage_chunk:
            self._usage_owed = None if probe.usage_only else probe
        if self._fixer is not None and probe.obj is not None:
            fixed = self._fixer.fix(probe.obj)
            if fixed is not probe.obj:
                return [b"data: " + orjson.dumps(fixed) + b"\n\n"]
        return [encode(ev.data)]

    def close(self) -> list[bytes]:
        if self._closed:
            return []
        self._closed = True
        owed = self._usage_owed
        if owed is None:
            return [STREAM_DONE]
        return [usage_chunk(owed), STREAM_DONE]


def usage_chunk(probe: Probe) -> bytes:
    """OpenAI's ``choices: []`` usage chunk, from a chunk that carried usage with its choices."""
    obj = as_dict(probe.obj)
    usage = obj.get("usage")
    assert probe.usage is not None
    chunk = {
        "id": obj.get("id", ""),
        "object": "chat.completion.chunk",
        "created": obj.get("created", 0),
        "model": obj.get("model", ""),
        "choices": [],
        "usage": usage if isinstance(usage, dict) else openai_usage(probe.usage),
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class OpenAIPassthrough:
    __slots__ = ("_client_wants_usage", "_id_back", "_tool_finish", "upstream_body")

    def __init__(self, body: dict[str, Any], deployment: Deployment, *, stream: bool) -> None:
        opts = body.get("stream_options")
        self._client_wants_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        self.upstream_body, self._id_back = build_openai_request(body, deployment, stream=stream)
        self._tool_finish = deployment.provider.quirks.stream_tool_finish

    def _fixer(self) -> ChunkFixer | None:
        if self._id_back or self._tool_finish:
            return ChunkFixer(self._id_back, self._tool_finish)
        return None

    def response(self, body: Any) -> Any:
        fixer = self._fixer()
        return complete_response(body if fixer is None else fixer.response(body))

    def stream(self) -> PassthroughStream:
        return PassthroughStream(hide_usage_chunk=not self._client_wants_usage, fixer=self._fixer())

    def error(self, status: int, body: bytes) -> bytes:
        return body
