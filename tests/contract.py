"""CONTRACT §4 verbatim, shared by the tests that check the gateway and the dashboards against it."""

from __future__ import annotations

# name → (type, label names)
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in [
        ("router_requests_total", "counter", "route status"),
        ("router_request_duration_seconds", "histogram", "route"),
        ("router_time_to_first_token_seconds", "histogram", "route model"),
        ("router_upstream_requests_total", "counter", "provider model status"),
        ("router_upstream_duration_seconds", "histogram", "provider model"),
        ("router_rate_limited_total", "counter", "provider model"),
        ("router_tokens_total", "counter", "provider model key kind"),
        ("router_spend_usd_total", "counter", "provider model key"),
        ("router_fallbacks_total", "counter", "route reason"),
        ("router_race_outcomes_total", "counter", "race model outcome"),
        ("router_race_wasted_usd_total", "counter", "race model"),
        ("router_cooldown_active", "gauge", "provider model"),
        ("router_inflight_requests", "gauge", "route"),
        ("router_overhead_seconds", "histogram", "route"),
        ("router_config_reloads_total", "counter", "result"),
        ("router_config_generation", "gauge", ""),
        ("router_state_errors_total", "counter", "backend op"),
    ]
}
