"""``GET /metrics``: the Prometheus text format of :mod:`cpms.metrics`, the open sessions by
state read from the database at each scrape. Open unless ``CPMS_METRICS_TOKEN`` is set, then
the scraper sends it as a Bearer token (``bearer_token`` in Prometheus's scrape config)."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app, request

from actors.core import Core
from api.config import ApiConfig
from cpms.kernel.errors import Unauthorized
from cpms.metrics import REGISTRY, SESSIONS
from storage.sessions import open_session_counts


def metrics_blueprint(core: Core, config: ApiConfig) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def metrics() -> Response:
        if config.metrics_token is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent, f"Bearer {config.metrics_token}"):
                raise Unauthorized("GET /metrics needs the metrics token", code="unauthorized")
        for state, count in (await open_session_counts(core.db)).items():
            SESSIONS.labels(state).set(count)
        return current_app.response_class(
            generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST
        )

    return bp
