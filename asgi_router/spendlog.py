"""The spend log: one SQLite row per answered request, written in batches off the hot path.

``add`` appends a tuple to a list (no I/O); ``run`` flushes once a second in a thread. The
``asgi-router spend`` command reads the same file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import structlog

from asgi_router.graph import Deployment
from asgi_router.wire.usage import Usage

log = structlog.get_logger("asgi_router.spendlog")
FLUSH_INTERVAL_S = 1.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
  ts REAL NOT NULL, request_id TEXT, key TEXT, route TEXT, provider TEXT, model TEXT,
  input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER,
  usd REAL, wasted_usd REAL, estimated INTEGER
);
CREATE INDEX IF NOT EXISTS spend_ts ON spend (ts);
"""
GROUPS = ("key", "route", "provider", "model")


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


class SpendLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._rows: list[tuple[Any, ...]] = []

    def add(self, ex: Any, d: Deployment, usage: Usage, usd: float, wasted: float) -> None:
        if self.path is not None:
            self._rows.append(
                (
                    time.time(),
                    ex.request_id,
                    ex.key,
                    ex.route,
                    d.provider.name,
                    d.name,
                    usage.input,
                    usage.output,
                    usage.cached_input,
                    usd,
                    wasted,
                    int(ex.usage_estimated),
                )
            )

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        assert self.path is not None
        db = connect(self.path)
        try:
            with db:
                db.executemany("INSERT INTO spend VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        finally:
            db.close()

    async def flush(self) -> None:
        if not self._rows or self.path is None:
            return
        rows, self._rows = self._rows, []
        try:
            await asyncio.to_thread(self._write, rows)
        except sqlite3.Error as e:
            self._rows[:0] = rows  # keep them for the next try
            log.error("spend_log_write_failed", path=str(self.path), error=str(e))

    async def run(self) -> None:
        if self.path is None:
            return
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()


def report(path: Path, by: str, since_s: float | None) -> list[tuple[str, int, int, int, float, float]]:
    """Rows of (group, requests, input tokens, output tokens, usd, wasted usd), costliest first."""
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}")
    db = connect(path)
    try:
        since = time.time() - since_s if since_s else 0.0
        q = (
            f"SELECT {by}, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(usd), SUM(wasted_usd) "  # noqa: S608 - by is checked
            "FROM spend WHERE ts >= ? GROUP BY 1 ORDER BY 5 DESC"
        )
        return [tuple(r) for r in db.execute(q, (since,))]
    finally:
        db.close()
