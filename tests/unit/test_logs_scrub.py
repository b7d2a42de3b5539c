"""The log scrubber masks the serving config's secret values whatever their shape."""

from __future__ import annotations

from asgi_router import logs


def test_known_secret_values_are_masked_anywhere() -> None:
    logs.remember_secrets(["gsk_live_0123456789abcdef", "AIzaSyA-0123456789", "short"])
    try:
        event = {
            "event": "upstream said: key gsk_live_0123456789abcdef is invalid",
            "nested": {"note": ["AIzaSyA-0123456789 rejected"]},
            "other": "short stays (too short to be a key)",
        }
        out = logs.scrub(None, "info", event)
        assert "gsk_live_0123456789abcdef" not in str(out) and "AIzaSyA-0123456789" not in str(out)
        assert out["event"] == "upstream said: key [redacted] is invalid"
        assert out["other"] == "short stays (too short to be a key)"
    finally:
        logs.remember_secrets([])


def test_nothing_known_changes_nothing() -> None:
    logs.remember_secrets([])
    assert logs.scrub(None, "info", {"event": "plain text"}) == {"event": "plain text"}
