"""``GET /health``: is the database answering and is the actor system up."""

from __future__ import annotations

import time

import trio
from quart import Blueprint, Response, jsonify

from actors.core import Core
from actors.ledger import STORAGE_ADDRESS
from api.config import ApiConfig
from cpms import __version__
from cpms.kernel.gc_tuning import STATS as GC


def health_blueprint(core: Core, config: ApiConfig) -> Blueprint:
    bp = Blueprint("health", __name__)
    started = time.monotonic()

    @bp.get("/health")
    async def health() -> Response:
        began = trio.current_time()
        db_ok = await core.db.ping()
        latency_ms = round((trio.current_time() - began) * 1000, 2)
        storage_ok = core.registry.lookup(STORAGE_ADDRESS.kind, STORAGE_ADDRESS.id) is not None
        ok = db_ok and storage_ok
        response = jsonify(
            {
                "success": ok,
                "status": "ok" if ok else "degraded",
                "version": __version__,
                "node": config.node_id,
                "uptime_s": round(time.monotonic() - started, 1),
                "database": {
                    "ok": db_ok,
                    "latency_ms": latency_ms,
                    "embedded": config.embedded_database,
                    "pool_size": core.db.pool_size,
                },
                "gc": {
                    "collections": GC.collections,
                    "full_collections": GC.full_collections,
                    "long_pauses": GC.long_pauses,
                    "longest_ms": round(GC.longest_ms, 1),
                    "growth_before_full": GC.growth,
                },
                "actors": {
                    "ok": storage_ok,
                    "storage_actor": "running" if storage_ok else "down",
                    "registered": core.registry.kinds(),
                    "children": len(core.supervisor.children),
                    "restarts": core.supervisor.total_restarts,
                },
            }
        )
        response.status_code = 200 if ok else 503
        return response

    return bp
