"""The fast fake upstream: nginx with the echo module, answering OpenAI chat completions.

nginx cannot read a JSON body cheaply, so the kind of answer is chosen by the URL path, and a
gateway under test gets one provider (one ``base_url``) per kind:

| base URL              | answers                                                       |
|-----------------------|---------------------------------------------------------------|
| ``/plain/v1``         | the fixed chat completion (with usage) at once                |
| ``/stream/v1``        | a 20-content-chunk SSE stream, a usage chunk, ``data: [DONE]`` |
| ``/slow/plain/v1``    | the same completion after ``delay_ms`` (latency measurements) |
| ``/slow/stream/v1``   | the same stream, its first event after ``delay_ms`` (TTFT)    |
| ``/drip/v1``          | the same stream with ``drip_ms`` between events (memory mode) |
| ``/burst/stream/v1``  | the same stream written in one go (--scaling)                 |

The answer does not depend on the request body, so it cannot be fooled by how a gateway
re-serialises the JSON it forwards; a gateway that sent a non-stream request to a stream
base URL (or the reverse) fails the answer check before any load. Each event is flushed
on its own, as a real provider sends tokens one by one, except on ``/burst/stream/v1``:
there nginx writes the whole stream at once, which costs it ~31 µs of CPU per stream
instead of ~124 µs. --scaling uses it, since there the gateway's workers share both cores
with nginx and wrk, and what they take is measured as the gateway not scaling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import Proc, free_port, start, wait_http

MODEL = "fake-model"
CONTENT = "Hello from the fake upstream: a fixed answer for the benchmark."
PLAIN_USAGE = {"prompt_tokens": 21, "completion_tokens": 13, "total_tokens": 34}
STREAM_PIECES = tuple(f"tok{i:02d} " for i in range(20))
STREAM_CONTENT = "".join(STREAM_PIECES)
STREAM_USAGE = {"prompt_tokens": 21, "completion_tokens": 20, "total_tokens": 41}

PLAIN = "/plain/v1"
STREAM = "/stream/v1"
SLOW_PLAIN = "/slow/plain/v1"
SLOW_STREAM = "/slow/stream/v1"
DRIP = "/drip/v1"
BURST_STREAM = "/burst/stream/v1"
ALL_BASES = (PLAIN, STREAM, SLOW_PLAIN, SLOW_STREAM, DRIP, BURST_STREAM)

ECHO_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/share/nginx/modules/ngx_http_echo_module.so"),
)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def completion_json() -> str:
    return _dumps(
        {
            "id": "chatcmpl-bench0000000000000000000",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": PLAIN_USAGE,
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench0000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def stream_events() -> list[str]:
    """The data payloads of the stream, in order: role, 20 contents, finish, usage, [DONE]."""
    events = [_dumps(_chunk({"role": "assistant", "content": ""}, None))]
    events += [_dumps(_chunk({"content": piece}, None)) for piece in STREAM_PIECES]
    events.append(_dumps(_chunk({}, "stop")))
    usage = _chunk({}, None)
    usage["choices"] = []
    usage["usage"] = STREAM_USAGE
    events.append(_dumps(usage))
    events.append("[DONE]")
    return events


def _nginx_str(text: str) -> str:
    """A single-quoted nginx string; our payloads are checked to need no escaping but \\n."""
    for bad in ("'", "\\", "$"):
        if bad in text:
            raise ValueError(f"payload holds {bad!r}, which nginx would interpret")
    return "'" + text + "'"


def _stream_directives(first_delay_s: float, between_s: float, flush: bool = True) -> str:
    lines = []
    if first_delay_s > 0:
        lines.append(f"echo_sleep {first_delay_s:.3f};")
    for i, data in enumerate(stream_events()):
        if i and between_s > 0:
            lines.append(f"echo_sleep {between_s:.3f};")
        _nginx_str(data)  # refuses what nginx would interpret
        lines.append("echo -n 'data: " + data + "\\n\\n';")
        if flush:
            lines.append("echo_flush;")
    return "\n      ".join(lines)


def nginx_conf(workdir: Path, port: int, delay_ms: float, drip_ms: float) -> str:
    module = next((p for p in ECHO_MODULE_PATHS if p.exists()), None)
    if module is None:
        raise RuntimeError("the nginx echo module is missing: apt-get install libnginx-mod-http-echo")
    delay = delay_ms / 1000
    plain = _nginx_str(completion_json())
    return f"""# generated by bench/fakeupstream.py
load_module {module};
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{
  worker_connections 16384;
  multi_accept on;
}}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {workdir}/nginx-body;
  proxy_temp_path {workdir}/nginx-proxy;
  fastcgi_temp_path {workdir}/nginx-fastcgi;
  uwsgi_temp_path {workdir}/nginx-uwsgi;
  scgi_temp_path {workdir}/nginx-scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_buffer_size 1m;
  client_max_body_size 16m;
  tcp_nodelay on;
  server {{
    listen 127.0.0.1:{port} backlog=8192;
    location = /healthz {{ default_type text/plain; return 200 'ok'; }}
    location = {PLAIN}/chat/completions {{
      default_type application/json;
      return 200 {plain};
    }}
    location = {SLOW_PLAIN}/chat/completions {{
      default_type application/json;
      echo_read_request_body;
      echo_sleep {delay:.3f};
      echo_exec {PLAIN}/chat/completions;
    }}
    location = {STREAM}/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      echo_read_request_body;
      {_stream_directives(0, 0)}
    }}
    location = {SLOW_STREAM}/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      echo_read_request_body;
      {_stream_directives(delay, 0)}
    }}
    location = {BURST_STREAM}/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      echo_read_request_body;
      {_stream_directives(0, 0, flush=False)}
    }}
    location = {DRIP}/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      echo_read_request_body;
      {_stream_directives(0, drip_ms / 1000)}
    }}
    location / {{ default_type application/json; return 404 '{{"error":{{"message":"no such path"}}}}'; }}
  }}
}}
"""


@dataclass
class FakeUpstream:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_fake_upstream(workdir: Path, cpus: str | None, delay_ms: float, drip_ms: float) -> FakeUpstream:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, port, delay_ms, drip_ms))
    proc = start("nginx", ["nginx", "-c", str(conf), "-p", str(workdir)], cpus, workdir / "nginx.log")
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout_s=15)
    return FakeUpstream(proc, port)
