"""Public station endpoints: ``GET /api/v1/station/status/{id}``: the station's status, its
connectors with type, power and status, and its open sessions."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from actors.charge_point.messages import STATION, GetSnapshot
from actors.core import Core
from actors.runtime import ActorError
from cpms.kernel.errors import NotFound
from cpms.kernel.status import station_status
from cpms.ocpp.connector_state import ConnectorState
from storage import Row
from storage import sessions as sessions_store
from storage import stations as store


def stations_blueprint(core: Core) -> Blueprint:
    bp = Blueprint("stations", __name__, url_prefix="/api/v1/station")

    @bp.get("/status/<station_id>")
    async def status(station_id: str) -> Response:
        row = await store.get_station(core.db, station_id)
        if row is None:
            raise NotFound(f"station {station_id} not found", code="station_not_found")
        connectors = await store.connectors(core.db, station_id)
        online = bool(row["is_online"])
        live: dict[int, ConnectorState] = {}
        ref = core.registry.lookup(STATION, station_id)
        if ref is not None:
            try:
                snapshot = await ref.ask(GetSnapshot(), timeout=2)
            except ActorError:
                snapshot = None
            if snapshot is not None:
                online = snapshot.online
                live = snapshot.connectors
        sessions = await sessions_store.open_on_station(core.db, station_id)
        shown = [
            {
                "connector_id": c["connector_id"],
                "status": _status(c, live),
                "connector_type": c["connector_type"],
                "power_kw": c["power_kw"],
                "error_code": None if (code := _error_code(c, live)) == "NoError" else code,
            }
            for c in connectors
        ]
        return jsonify(
            {
                "success": True,
                "station_id": station_id,
                "status": station_status(online, row["admin_status"], [c["status"] for c in shown]),
                "is_online": online,
                "last_heartbeat": row["last_heartbeat_at"],
                "connectors_count": row["connectors_count"],
                "connectors": shown,
                "current_sessions": sessions,
                "firmware_version": row["firmware_version"],
            }
        )

    return bp


def _status(row: Row, live: dict[int, ConnectorState]) -> str:
    """The connector's status as its station shows it (as recorded when none does)."""
    shown = live.get(row["connector_id"])
    return str(row["status"]) if shown is None else shown.status


def _error_code(row: Row, live: dict[int, ConnectorState]) -> str | None:
    """The connector's error code as its station shows it (as recorded when none does)."""
    shown = live.get(row["connector_id"])
    return row["error_code"] if shown is None else shown.error_code
