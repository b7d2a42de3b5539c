"""serve --workers N: metric values buffered in memory and written to the worker's multiprocess
file once per interval (asgi_router.metrics.buffer_multiprocess_values).

The scrape must read what prometheus_client's own multiprocess value would have written: the
same operations through both give the same exposition text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from asgi_router import metrics
from asgi_router.metrics import Metrics


@pytest.fixture
def mp_dir(tmp_path, monkeypatch):
    """A multiprocess directory, and the library's process-wide value class put back after."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    d = tmp_path / "prom"
    d.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(d))
    yield d
    files, metrics._files[0] = metrics._files[0], None
    if files is not None:
        files.close()
    values.close_all_multiprocess_files()


def on_disk(directory: Path) -> bytes:
    """What any worker's scrape reads: every file in the directory, nothing flushed first."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def served(directory: Path) -> float | None:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry.get_sample_value("router_requests_total", {"route": "chat", "status": "200"})


def traffic(m: Metrics) -> None:
    """A few requests' worth of every kind of change the gateway makes."""
    for seconds in (0.004, 0.3, 7.0):
        m.requests.labels("chat", "200").inc()
        m.request_duration.labels("chat").observe(seconds)
        m.overhead.labels("chat").observe(seconds / 1000)
        m.inflight.labels("chat").inc()
        m.inflight.labels("chat").dec()
        m.tokens.labels("p", "d", "anonymous", "output").inc(12)
        m.spend.labels("p", "d", "anonymous").inc(0.000125)
    m.requests.labels("chat", "429").inc()
    m.cooldown_active.labels("p", "d").set(1)
    m.generation.set(3)
    m.inflight.labels("chat").inc()  # one still in flight


def test_buffered_values_scrape_exactly_like_prometheus_clients_own(mp_dir, tmp_path, monkeypatch):
    stock_dir = tmp_path / "stock"
    stock_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(stock_dir))
    values.ValueClass = values.MultiProcessValue()
    traffic(Metrics())
    stock = on_disk(stock_dir)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mp_dir))
    metrics.buffer_multiprocess_values(interval_s=60)

    async def serve() -> bytes:
        m = Metrics()
        traffic(m)
        return m.exposition()

    scraped = asyncio.run(serve())
    assert b'router_requests_total{route="chat",status="200"} 3.0' in scraped
    assert scraped == stock
    assert on_disk(mp_dir) == stock  # the scrape wrote this worker's values for the others too


def test_a_change_reaches_the_file_within_the_interval_not_at_once(mp_dir):
    metrics.buffer_multiprocess_values(interval_s=0.05)

    async def main() -> list[float | None]:
        chat = Metrics().requests.labels("chat", "200")  # as bind() makes it for a route
        seen = [served(mp_dir)]  # a made label set is on file at 0 before any request
        chat.inc()
        chat.inc()
        seen.append(served(mp_dir))  # not yet written
        await asyncio.sleep(0.2)
        seen.append(served(mp_dir))
        chat.inc()
        metrics.flush_values()  # a worker that stops writes what is pending
        seen.append(served(mp_dir))
        return seen

    assert asyncio.run(main()) == [0.0, 0.0, 2.0, 3.0]


def test_outside_an_event_loop_a_change_is_written_at_once(mp_dir):
    metrics.buffer_multiprocess_values(interval_s=60)
    m = Metrics()
    m.requests.labels("chat", "200").inc(2)
    assert served(mp_dir) == 2.0
