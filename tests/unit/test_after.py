"""The work after an answer (web/after.py): queued, run later in order and in its request's
context, drained by a scrape and at shutdown; what decides anything is not deferred."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from asgi_router.web.after import Afterwards
from tests.unit.inprocess import app_for, request

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_work_runs_later_in_order_each_in_the_context_it_was_queued_from() -> None:
    ran: list[tuple[str, str]] = []

    async def main() -> list[tuple[str, str]]:
        after = Afterwards(delay_s=0.02)
        for name in ("a", "b", "c"):
            WHO.set(name)
            after(lambda n=name: ran.append((n, WHO.get())))
        WHO.set("later")
        await asyncio.sleep(0)
        assert ran == [] and len(after) == 3  # not while the queuing code is still running
        await asyncio.sleep(0.1)
        return ran

    assert asyncio.run(main()) == [("a", "a"), ("b", "b"), ("c", "c")]


def test_run_drains_at_once_and_one_failure_does_not_stop_the_rest() -> None:
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("broken")

    async def main() -> None:
        after = Afterwards(delay_s=3600)
        after(boom)
        after(ran.append, "kept")
        after(lambda: after(ran.append, "queued while running"))
        with capture_logs() as logs:
            after.run()
        assert [e["event"] for e in logs] == ["after_answer_failed"]
        assert len(after) == 0 and after._handle is None  # no timer left behind

    asyncio.run(main())
    assert ran == ["kept", "queued while running"]


def test_a_full_queue_runs_at_once_and_without_a_loop_nothing_waits() -> None:
    ran: list[int] = []

    async def main() -> None:
        after = Afterwards(delay_s=3600, limit=3)
        after(ran.append, 1)
        after(ran.append, 2)
        assert ran == []
        after(ran.append, 3)
        assert ran == [1, 2, 3]

    asyncio.run(main())
    Afterwards()(ran.append, 4)
    assert ran == [1, 2, 3, 4]


def _line(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "request"]


def test_the_answer_goes_out_first_and_a_scrape_still_counts_it(tmp_path: Path) -> None:
    app = app_for(tmp_path)

    async def main() -> None:
        await app.startup()
        app.after.delay_s = 3600  # nothing runs by itself in this test
        try:
            with capture_logs() as logs:
                sent = await request(app, CHAT)
                assert sent[0]["status"] == 200
                assert _line(logs) == [] and len(app.after) == 3  # upstream and token counts, the line
                await asyncio.sleep(0.05)
                scrape = await request(app, b"", method="GET", path="/metrics")
            text = scrape[1]["body"].decode()
            assert 'router_requests_total{route="m",status="200"} 1.0' in text
            assert 'router_upstream_requests_total{model="m",provider="p",status="200"} 1.0' in text
            assert 'router_overhead_seconds_count{route="m"} 1.0' in text
            assert 'router_tokens_total{key="anonymous",kind="input",model="m",provider="p"} 5.0' in text
            assert 'router_spend_usd_total{key="anonymous",model="m",provider="p"} 6e-06' in text
            (line,) = _line(logs)
            rid = dict(sent[0]["headers"])[b"x-request-id"].decode()
            assert line["request_id"] == rid
            assert line["duration_ms"] < 50  # the request's own time, not when the line was written
        finally:
            await app.shutdown()

    asyncio.run(main())


def test_a_budget_is_booked_before_the_answer(tmp_path: Path) -> None:
    """Spend decides whether the next request runs: it is never among the deferred work."""
    extra = '[keys.team]\nkey = "env:TEAM_KEY"\nbudget_usd = 0.000001\nbudget_period = "total"\n'
    app = app_for(tmp_path, extra, env={"TEAM_KEY": "team-secret-key"})
    auth = [(b"authorization", b"Bearer team-secret-key")]

    async def main() -> None:
        await app.startup()
        app.after.delay_s = 3600
        try:
            first = await request(app, CHAT, headers=auth)
            assert first[0]["status"] == 200
            second = await request(app, CHAT, headers=auth)
            assert second[0]["status"] == 402, second  # $0.000006 spent of $0.000001
            assert len(app.after) > 0  # while the first one's counts still wait
        finally:
            await app.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("stream", [False, True])
def test_shutdown_runs_what_is_queued(tmp_path: Path, stream: bool) -> None:
    app = app_for(tmp_path)
    body = orjson.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})

    async def main() -> list[MutableMapping[str, Any]]:
        await app.startup()
        app.after.delay_s = 3600
        with capture_logs() as logs:
            assert (await request(app, body))[0]["status"] == 200
            assert _line(logs) == []
            await app.shutdown()
        return logs

    (line,) = _line(asyncio.run(main()))
    assert line["stream"] is stream and line["tokens_out"] == (20 if stream else 1)
