"""serve's hypercorn Config: the date and server headers are built once a second, and are the
ones hypercorn would build."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest
from hypercorn.config import Config

from asgi_router import serve


def test_response_headers_match_hypercorns_and_follow_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_780_000_000.2]
    monkeypatch.setattr("asgi_router.serve.time.time", lambda: clock[0])
    monkeypatch.setattr("hypercorn.config.time", lambda: clock[0])
    cfg = serve._config(["127.0.0.1:8080"], 1)
    first = cfg.response_headers("h11")
    assert first == Config().response_headers("h11")  # same headers, same order
    assert dict(first)[b"server"] == b"hypercorn-h11"
    assert parsedate_to_datetime(dict(first)[b"date"].decode()).timestamp() == 1_780_000_000
    clock[0] += 0.7  # the same second: the same list, not rebuilt
    assert cfg.response_headers("h11") is first
    clock[0] += 0.2  # the next second
    later = cfg.response_headers("h11")
    assert parsedate_to_datetime(dict(later)[b"date"].decode()).timestamp() == 1_780_000_001
    assert cfg.response_headers("h2") == [(b"date", dict(later)[b"date"]), (b"server", b"hypercorn-h2")]
