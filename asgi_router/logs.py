"""structlog set-up: one JSON line per event, request id from contextvars, secrets scrubbed.

The production chain is structlog's fast one (merge_contextvars, add_log_level, TimeStamper,
JSONRenderer with orjson) into a :class:`LineSink` that writes the lines of one event-loop
iteration together. Stdlib loggers (hypercorn, aiohttp) are bridged into the same JSON.
Configured once, by the CLI.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

SECRET_KEYS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api_key",
        "api-key",
        "api_keys",
        "admin_key",
        "password",
        "secret",
        "token",
    }
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_SK = re.compile(r"\b(sk-[A-Za-z0-9_-]{4})[A-Za-z0-9_-]{8,}")


def scrub_value(value: str) -> str:
    return _SK.sub(r"\1…", _BEARER.sub(r"\1…", value))


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask secret-named fields, the config's own secret values and bearer tokens / sk- keys in
    string values, also inside nested mappings and lists (a headers dict, a list of attempts).
    Runs for every log line, so the common case (short or clean strings, numbers) is one
    regex search per string at most."""
    for k, v in event.items():
        if type(v) is str:
            if len(v) >= 8 and _suspect[0].search(v):
                event[k] = _scrub_str(v)
            if k.lower() in SECRET_KEYS:
                event[k] = "[redacted]"
        elif v is not None and type(v) not in (int, float, bool):
            event[k] = _scrubbed(k, v)
    return event


_known: list[re.Pattern[str] | None] = [None]  # the serving config's secret values, as one regex
_SUSPECT_BASE = r"(?i:bearer\s)|sk-"
_suspect: list[re.Pattern[str]] = [re.compile(_SUSPECT_BASE)]  # anything worth a closer look


def remember_secrets(values: Iterable[str]) -> None:
    """The secret values of the serving config (api keys, admin key): masked wherever they
    appear in a log line, whatever their shape (gsk_…, AIza…, not only sk-…)."""
    vals = sorted({v for v in values if len(v) >= 8}, key=len, reverse=True)
    alternatives = "|".join(map(re.escape, vals))
    _known[0] = re.compile(alternatives) if vals else None
    _suspect[0] = re.compile(f"{_SUSPECT_BASE}|{alternatives}" if vals else _SUSPECT_BASE)


def _scrub_str(value: str) -> str:
    known = _known[0]
    if known is not None:
        value = known.sub("[redacted]", value)
    return scrub_value(value) if "earer" in value or "sk-" in value else value


def _scrubbed(key: Any, value: Any, depth: int = 0) -> Any:
    if isinstance(key, str) and key.lower() in SECRET_KEYS and value is not None:
        return "[redacted]"
    if isinstance(value, str):
        return _scrub_str(value)
    if depth < 4 and isinstance(value, Mapping):
        return {k: _scrubbed(k, v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return type(value)(_scrubbed(None, v, depth + 1) for v in value)
    return value


def _dumps(obj: Any, default: Any = None) -> bytes:
    return orjson.dumps(obj, default=default or str)


class LineSink:
    """A structlog logger that writes the lines logged in one event-loop iteration with one
    write: under load several requests finish per iteration (strace, 32 connections: 643
    writes for 2,260 request lines, where each line was a write and a flush). Nothing waits on
    a timer: the lines go out as soon as the iteration that logged them ends, warnings and
    errors at once, and anything left at exit. Outside a running loop (a thread, the CLI) each
    line is written straight away."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
            if self._scheduled:
                return
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop in this thread: nothing to coalesce with
                pass
            else:
                self._scheduled = True
                return
        self.flush()

    def urgent(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
        self.flush()

    debug = info = msg
    warning = error = critical = fatal = exception = urgent

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._lines:
                return
            data = b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            try:
                self._file.write(data)
                self._file.flush()
            except (OSError, ValueError):  # a closed or broken stderr: nothing better to do
                pass


_sink: list[LineSink | None] = [None]


def flush() -> None:
    """Write what is buffered now (a worker process ends with os._exit: no atexit)."""
    sink = _sink[0]
    if sink is not None:
        sink.flush()


def configure(level: str = "info", fmt: str = "json") -> None:
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub,
    ]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=False)
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        sink = _sink[0] = LineSink(sys.stderr.buffer)
        factory = lambda *_: sink  # noqa: E731 (structlog calls it with the logger's name)
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer if fmt == "console" else structlog.processors.JSONRenderer(),  # str for logging
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING) if lvl < logging.WARNING else lvl)
