"""GraphHolder's last good copy (a supervised worker): every graph that compiles leaves its text,
and only a start that meets a broken file falls back to it, compiled as if it were the file."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

from asgi_router.graph import Provider
from asgi_router.metrics import Metrics
from asgi_router.reload import GraphHolder, ReloadResult
from asgi_router.state.memory import MemoryStore
from asgi_router.upstream.base import UpstreamReply, UpstreamRequest
from asgi_router.upstream.pool import UpstreamPool
from tests.helpers import model, provider

GOOD = provider("a", "http://127.0.0.1:9") + model("small", "a", "m-small")
NEWER = GOOD + model("newer", "a", "m-newer")
BROKEN = GOOD + "[models.broken\n"


class NoTransport:
    """Nothing is sent here: only compiling and swapping graphs is under test."""

    async def send(self, req: UpstreamRequest) -> UpstreamReply:
        raise AssertionError("no request expected")

    def stream(self, req: UpstreamRequest) -> Any:
        raise AssertionError("no request expected")

    async def aclose(self) -> None:
        pass


def no_transport(p: Provider) -> NoTransport:
    return NoTransport()


def holder(path: Path, last_good: Path | None) -> GraphHolder:
    pool = UpstreamPool(no_transport)
    return GraphHolder(path, MemoryStore(), Metrics(), pool, env={}, last_good=last_good)


def reload(h: GraphHolder, reason: str = "startup") -> ReloadResult:
    return asyncio.run(h.reload(reason))


def test_each_compiled_graph_leaves_its_text_readable_by_the_owner_only(tmp_path: Path) -> None:
    conf, kept = tmp_path / "router.toml", tmp_path / "run" / "last-good.toml"
    kept.parent.mkdir()
    conf.write_text(GOOD)
    h = holder(conf, kept)
    assert reload(h).ok
    assert kept.read_text() == GOOD
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    conf.write_text(NEWER)
    assert reload(h, "SIGHUP").ok
    assert kept.read_text() == NEWER
    conf.write_text(BROKEN)
    assert not reload(h, "SIGHUP").ok
    assert kept.read_text() == NEWER  # a rejected file is never kept
    assert [p.name for p in kept.parent.iterdir()] == ["last-good.toml"]  # no temporary left


def test_a_start_on_a_broken_file_serves_the_last_good_text_as_that_file(tmp_path: Path) -> None:
    conf, kept = tmp_path / "router.toml", tmp_path / "last-good.toml"
    conf.write_text(NEWER)
    assert reload(holder(conf, kept)).ok
    conf.write_text(BROKEN)
    h = holder(conf, kept)
    result = reload(h)
    assert result.ok
    graph = h.current.graph
    assert sorted(graph.nodes) == ["newer", "small"]
    assert graph.source == conf.absolute()  # relative paths and errors still name the real file
    # the broken file is remembered as seen: the watcher waits for it to change, not retry it
    assert h._stamp == h._file_stamp()


def test_a_running_holder_keeps_its_graph_rather_than_the_copy(tmp_path: Path) -> None:
    conf, kept = tmp_path / "router.toml", tmp_path / "last-good.toml"
    conf.write_text(GOOD)
    h = holder(conf, kept)
    assert reload(h).ok
    kept.write_text(NEWER)  # a sibling compiled something newer
    conf.write_text(BROKEN)
    result = reload(h, "SIGHUP")
    assert not result.ok and "invalid TOML" in "\n".join(result.errors)
    assert sorted(h.current.graph.nodes) == ["small"]


def test_without_a_copy_or_with_a_broken_one_a_start_fails(tmp_path: Path) -> None:
    conf, kept = tmp_path / "router.toml", tmp_path / "last-good.toml"
    conf.write_text(BROKEN)
    assert not reload(holder(conf, kept)).ok  # no worker compiled anything yet
    kept.write_text(BROKEN)
    h = holder(conf, kept)
    assert not reload(h).ok and not h.loaded
    assert not reload(holder(conf, None)).ok  # an unsupervised holder never has a copy
