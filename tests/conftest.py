from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_router.sim import SimServer
from tests.helpers import Gateway, start_gateway


@pytest.fixture(scope="session")
def _sims() -> Iterator[list[SimServer]]:
    servers = [SimServer().start() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def sim(_sims: list[SimServer]) -> SimServer:
    _sims[0].reset()
    return _sims[0]


@pytest.fixture
def sim2(_sims: list[SimServer]) -> SimServer:
    _sims[1].reset()
    return _sims[1]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: str, **kw: Any) -> Gateway:
        gw = start_gateway(tmp_path, config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """Like ``gateway`` but one process for a whole test module (for tests whose gateway
    state does not interfere: no cooldowns, limits or reloads)."""
    started: list[Gateway] = []

    def start(config: str, **kw: Any) -> Gateway:
        gw = start_gateway(tmp_path_factory.mktemp("gw"), config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="module")
def module_sims(_sims: list[SimServer]) -> list[SimServer]:
    return _sims
