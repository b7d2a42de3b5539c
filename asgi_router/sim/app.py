"""The aiohttp application: provider endpoints, the checks every step may ask for, control API.

Provider routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``
(OpenAI shapes; Anthropic's list shape when the request has ``anthropic-version``) and
``POST /v1/messages`` (Anthropic). Control routes: ``POST /_sim/script``, ``POST /_sim/reset``,
``GET /_sim/log[?model=m]``, ``GET /_sim/stats``; they are not logged.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiohttp import web

from . import anthropic_api, openai_api
from .answer import (
    anthropic_error,
    anthropic_status_error,
    estimate_prompt_tokens,
    mistral_error,
    mistral_extra_forbidden,
    openai_error,
    openai_status_error,
)
from .exchange import ClientGone, Exchange, Handler, Stopping
from .state import SimState
from .steps import PLAIN, Step, StepError, parse_script

Kind = Literal["chat", "messages", "embeddings"]

MAX_BODY_BYTES = 64 * 1024 * 1024

MISTRAL_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "prediction",
        "parallel_tool_calls",
        "reasoning_effort",
        "prompt_mode",
        "guardrails",
        "prompt_cache_key",
        "safe_prompt",
    }
)
MISTRAL_EMBEDDING_FIELDS = frozenset(
    {
        "model",
        "input",
        "output_dimension",
        "output_dtype",
        "encoding_format",
        "metadata",
    }
)
ANTHROPIC_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "thinking",
        "service_tier",
        "output_config",
        "cache_control",
        "container",
        "inference_geo",
        "mcp_servers",
        "context_management",
    }
)
KNOWN_FIELDS: dict[Kind, frozenset[str]] = {
    "chat": MISTRAL_CHAT_FIELDS,
    "embeddings": MISTRAL_EMBEDDING_FIELDS,
    "messages": ANTHROPIC_FIELDS,
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "chat": ("model", "messages"),
    "messages": ("model", "messages"),
    "embeddings": ("model", "input"),
}


class SimRuntime:
    """State plus the stopping flag, shared by every request of one server."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.stopping = False


RUNTIME = web.AppKey("sim_runtime", SimRuntime)

Rejection = tuple[int, Any]


def _reject(
    kind: Kind,
    status: int,
    message: str,
    *,
    anthropic_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> Rejection:
    if kind == "messages":
        return status, anthropic_error(anthropic_type, message)
    return status, openai_error(message, "invalid_request_error", param, code)


def _auth_ok(request: web.Request, expected: str) -> bool:
    bearer = request.headers.get("authorization", "")
    return bearer == f"Bearer {expected}" or request.headers.get("x-api-key") == expected


def check(request: web.Request, kind: Kind, step: Step, body: Any) -> Rejection | None:
    """The request-level checks, in order; the first failure is the answer."""
    if not isinstance(body, dict):
        return _reject(kind, 400, "The request body is not a valid JSON object.")
    if step.check_auth is not None and not _auth_ok(request, step.check_auth):
        return _reject(
            kind,
            401,
            "Incorrect API key provided." if kind != "messages" else "invalid x-api-key",
            anthropic_type="authentication_error",
            code="invalid_api_key",
        )
    for name in REQUIRED[kind]:
        if name not in body:
            return _reject(kind, 400, f"{name}: Field required", param=name)
    if kind != "embeddings" and not isinstance(body.get("messages"), list):
        return _reject(kind, 400, "messages: Input should be a valid list", param="messages")
    require = step.require_max_tokens if step.require_max_tokens is not None else kind == "messages"
    if require and kind != "embeddings" and "max_tokens" not in body and "max_completion_tokens" not in body:
        return _reject(kind, 400, "max_tokens: Field required", param="max_tokens")
    forbidden = _forbidden(kind, step, body)
    if forbidden:
        if kind == "messages":
            return 400, anthropic_error(
                "invalid_request_error", f"{forbidden[0]}: Extra inputs are not permitted"
            )
        return 422, mistral_extra_forbidden(forbidden)
    if kind == "chat" and step.require_thought_signatures:
        missing = _unsigned_call(body["messages"])
        if missing is not None:
            return _reject(kind, 400, f"Function call is missing a thought_signature in {missing}.")
    if kind == "chat" and step.strict_params is True:
        broken = mistral_message_rules(body["messages"])
        if broken is not None:
            return broken
    if step.context_window is not None and kind != "embeddings":
        tokens = estimate_prompt_tokens(body)
        if tokens > step.context_window:
            n = step.context_window
            if kind == "messages":
                return _reject(kind, 400, f"prompt is too long: {tokens} tokens > {n} maximum")
            message = (
                f"This model's maximum context length is {n} tokens. However, your messages resulted in "
                f"{tokens} tokens. Please reduce the length of the messages."
            )
            return _reject(kind, 400, message, param="messages", code="context_length_exceeded")
    return None


def _forbidden(kind: Kind, step: Step, body: dict[str, Any]) -> list[str]:
    strict = step.strict_params
    if strict is False:
        return []
    if strict is True:
        out = [name for name in body if name not in KNOWN_FIELDS[kind]]
    else:
        out = [name for name in body if name in strict]
        messages = body.get("messages")
        for field in sorted(f.removeprefix(MESSAGE_FIELD) for f in strict if f.startswith(MESSAGE_FIELD)):
            for i, m in enumerate(messages if isinstance(messages, list) else []):
                if isinstance(m, dict) and field in m:
                    out.append(f"messages.{i}.{field}")
    if step.usage_mode == "final_chunk" and "stream_options" in body and "stream_options" not in out:
        out.append("stream_options")
    return out


MESSAGE_FIELD = "messages[]."
"""``strict_params`` entries ``messages[].NAME`` refuse ``NAME`` on any message (Groq: ``name``)."""
MISTRAL_TOOL_ID = re.compile(r"[a-zA-Z0-9]{9}")


def _unsigned_call(messages: list[Any]) -> str | None:
    """Where an assistant message replays a tool call without Gemini's thought signature."""
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") if isinstance(m, dict) and m.get("role") == "assistant" else None
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            extra = call.get("extra_content") if isinstance(call, dict) else None
            google = extra.get("google") if isinstance(extra, dict) else None
            if not (isinstance(google, dict) and isinstance(google.get("thought_signature"), str)):
                return f"messages.{i}.tool_calls.{j}"
    return None


def mistral_message_rules(messages: list[Any]) -> Rejection | None:
    """Mistral's checks on the conversation itself (wire reference §4.1, bodies as reported):
    tool call ids of exactly 9 alphanumerics, and no ``user`` message right after a ``tool`` one."""
    prev_role = None
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        ids = [m.get("tool_call_id")] if role == "tool" else []
        if role == "assistant" and isinstance(m.get("tool_calls"), list):
            ids += [c.get("id") for c in m["tool_calls"] if isinstance(c, dict)]
        for tool_id in ids:
            if not isinstance(tool_id, str) or not MISTRAL_TOOL_ID.fullmatch(tool_id):
                message = f"Tool call id was {tool_id} but must be a-z, A-Z, 0-9, with a length of 9."
                return 400, mistral_error(message, "invalid_request_error")
        if role == "user" and prev_role == "tool":
            return 400, mistral_error(
                "Unexpected role 'user' after role 'tool'", "invalid_request_message_order", "3230"
            )
        prev_role = role
    return None


def error_response(kind: Kind, step: Step, status: int) -> Any:
    if step.error_body is not None:
        return step.error_body
    return anthropic_status_error(step, status) if kind == "messages" else openai_status_error(step, status)


async def _serve(ex: Exchange, kind: Kind, handler: Handler) -> str:
    step = ex.step
    await ex.sleep(step.delay_s)
    if step.hang:
        ex.leave_outcome = "hung"
        await ex.sleep(math.inf)
    if step.close_before_headers:
        ex.close_connection()
        return "closed_before_headers"
    rejection = check(ex.request, kind, step, ex.body)
    if rejection is not None:
        await ex.send_json(*rejection)
        return "error_status"
    if step.is_error:
        assert step.status is not None
        await ex.send_json(step.status, error_response(kind, step, step.status))
        return "error_status"
    return await handler(ex)


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None if not raw else raw.decode("utf-8", "replace")


def endpoint(kind: Kind, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler: consume the model's next step, log, serve, record the outcome."""

    async def handle(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        body = _parse(await request.read())
        model = body.get("model") if isinstance(body, dict) else None
        model = model if isinstance(model, str) else None
        step = rt.state.next_step(model) if model is not None else PLAIN
        record = rt.state.begin(
            {
                "model": model,
                "path": request.path,
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
                "dialect": "anthropic" if kind == "messages" else "openai",
                "stream": isinstance(body, dict) and body.get("stream") is True,
                "step": step.raw,
            }
        )
        ex = Exchange(request, rt, record, step, body)
        try:
            outcome = await _serve(ex, kind, handler)
        except (ClientGone, ConnectionError):
            rt.state.finish(record, ex.leave_outcome, client_left=True)
        except Stopping:
            ex.close_connection()
            rt.state.finish(record, "server_stopped")
        except asyncio.CancelledError:
            if rt.stopping:
                rt.state.finish(record, "server_stopped")
            else:
                rt.state.finish(record, ex.leave_outcome, client_left=True)
            raise
        except BaseException:
            rt.state.finish(record, "sim_error")
            raise
        else:
            rt.state.finish(record, outcome)
        return ex.response or web.Response()

    return handle


async def models(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    names = rt.state.models() or ["sim-model"]
    anthropic = "anthropic-version" in request.headers
    return web.json_response(openai_api.models_list(names, anthropic=anthropic), dumps=_dumps)


# control API


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def set_script(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        value = orjson.loads(await request.read())
        scripts = [parse_script(s) for s in (value if isinstance(value, list) else [value])]
    except (orjson.JSONDecodeError, StepError) as exc:
        return web.json_response({"error": str(exc)}, status=400, dumps=_dumps)
    for script in scripts:
        rt.state.set_script(script)
    return web.json_response({"ok": True, "models": [s.model for s in scripts]}, dumps=_dumps)


async def reset(request: web.Request) -> web.Response:
    request.app[RUNTIME].state.reset()
    return web.json_response({"ok": True}, dumps=_dumps)


async def log(request: web.Request) -> web.Response:
    model = request.query.get("model")
    return web.json_response(request.app[RUNTIME].state.log(model), dumps=_dumps)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].state.stats(), dumps=_dumps)


def build_app(rt: SimRuntime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = rt
    app.router.add_post("/v1/chat/completions", endpoint("chat", openai_api.chat_completions))
    app.router.add_post("/v1/embeddings", endpoint("embeddings", openai_api.embeddings))
    app.router.add_post("/v1/messages", endpoint("messages", anthropic_api.messages))
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_sim/script", set_script)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/log", log)
    app.router.add_get("/_sim/stats", stats)
    return app


async def start_site(rt: SimRuntime, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Run the app on ``host:port`` (0: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(build_app(rt), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


async def stop_site(rt: SimRuntime, runner: web.AppRunner) -> None:
    """Drop requests in flight (their waits see ``stopping``), then shut the server down."""
    rt.stopping = True
    await runner.cleanup()
