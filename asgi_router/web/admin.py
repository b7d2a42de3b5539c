"""/admin/reload, /admin/config, /admin/state, /healthz, /readyz, /metrics.

Admin routes need ``[server] admin_key`` (Bearer or x-api-key) when one is set, and come
only from loopback when none is. Nothing here ever shows a secret.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from asgi_router.config.describe import redacted
from asgi_router.errors import Forbidden, Unauthorized
from asgi_router.routing.execute import OVERLOADED, refresh_cooldown_gauges
from asgi_router.web.auth import presented_key
from asgi_router.web.exchange import Exchange

if TYPE_CHECKING:
    from asgi_router.web.app import App

LOOPBACK = ("127.", "::1", "localhost")


def require_admin(app: App, ex: Exchange) -> None:
    admin_key = app.holder.current.graph.server.admin_key
    if admin_key is None:
        client = ex.scope.get("client") or ("", 0)
        if not str(client[0]).startswith(LOOPBACK):
            raise Forbidden("admin routes are open only from loopback when no admin_key is set")
        return
    raw = presented_key(ex.headers)
    if raw is None or not hmac.compare_digest(raw, admin_key.reveal().encode()):
        raise Unauthorized("admin routes need the admin key")


async def reload(app: App, ex: Exchange) -> None:
    require_admin(app, ex)
    result = await app.holder.reload("admin")
    if result.ok:
        await ex.respond_json(200, {"ok": True, "generation": result.generation})
    else:
        await ex.respond_json(400, {"ok": False, "generation": result.generation, "errors": result.errors})


async def config(app: App, ex: Exchange) -> None:
    require_admin(app, ex)
    await ex.respond_json(200, redacted(app.holder.current.graph))


async def state(app: App, ex: Exchange) -> None:
    require_admin(app, ex)
    rt = app.holder.current
    now = time.monotonic()
    snap = app.store.snapshot(now)
    names = {d.fingerprint: d.name for d in rt.graph.deployments}
    by_name = {}
    for d in rt.graph.deployments:
        fp = d.fingerprint
        by_name[d.name] = {
            "provider": d.provider.name,
            "cooldown_s": round(app.store.cooldown_remaining(fp, now), 3),
            "overloaded_s": round(app.store.cooldown_remaining(fp + OVERLOADED, now), 3),
            "keys_cooling": {
                str(i): round(app.store.cooldown_remaining(f"{fp}#k{i}", now), 3)
                for i in range(len(d.provider.api_keys))
                if app.store.cooldown_remaining(f"{fp}#k{i}", now) > 0
            },
            "circuit": snap["circuits"].get(fp, {"state": "closed", "failures": 0}),
            "latency": snap["latency"].get(fp),
        }
    await ex.respond_json(
        200,
        {
            "generation": rt.graph.generation,
            "deployments": by_name,
            "spend": snap["spend"],
            "stale_members": sorted(k for k in snap["cooldowns"] if k.split("#")[0] not in names),
        },
    )


async def healthz(app: App, ex: Exchange) -> None:
    await ex.respond_json(200, {"status": "ok"})


async def readyz(app: App, ex: Exchange) -> None:
    if app.holder.ready:
        await ex.respond_json(200, {"status": "ready", "generation": app.holder.current.graph.generation})
    else:
        await ex.respond_json(503, {"status": "draining" if app.holder.draining else "loading"})


async def metrics(app: App, ex: Exchange) -> None:
    app.after.run()  # the counts of requests answered in the last few milliseconds
    rt = app.holder.current
    refresh_cooldown_gauges(app.metrics, rt.graph.deployments, app.store, time.monotonic())
    body = app.metrics.exposition()
    await ex.respond(200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")], body)
