"""Charging for the app: start, status, stop, history.

Handlers check the request and the caller and pass it to the session's actor; the actor does
the reserving, the charger and the settling.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from quart import Blueprint, Response, jsonify

from actors.session.messages import StartRequest
from actors.session.service import Sessions
from actors.session.view import session_view
from api.door import body, query
from api.identity import Identity
from cpms.kernel.bounded import Offset, Stamp
from cpms.kernel.charging import Limit
from cpms.kernel.errors import Forbidden, InvalidRequest
from storage import sessions as sessions_store


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: uuid.UUID | None = None
    station_id: str = Field(min_length=1, max_length=64)
    connector_id: StrictInt = Field(ge=1, le=10)
    energy_kwh: Decimal | None = Field(None, allow_inf_nan=False)
    amount_som: Decimal | None = Field(None, allow_inf_nan=False)


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: uuid.UUID
    client_id: uuid.UUID | None = None


class HistoryQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    offset: Offset = 0
    date_from: Stamp | None = None
    date_to: Stamp | None = None
    station_id: str | None = Field(None, max_length=64)


def _same_client(claimed: uuid.UUID | None, caller: uuid.UUID) -> None:
    if claimed is not None and claimed != caller:
        raise Forbidden("client_id does not match the token", code="client_mismatch")


def charging_blueprint(sessions: Sessions, identity: Identity) -> Blueprint:
    bp = Blueprint("charging", __name__, url_prefix="/api/v1/charging")

    @bp.post("/start")
    async def start() -> Response:
        caller = await identity.client_id()
        start_body = await body(StartBody)
        _same_client(start_body.client_id, caller)
        limit = Limit.from_request(start_body.energy_kwh, start_body.amount_som)
        started = await sessions.start(
            StartRequest(caller, start_body.station_id, start_body.connector_id, limit)
        )
        return jsonify({"success": True, **started})

    @bp.get("/status/<session_id>")
    async def status(session_id: str) -> Response:
        caller = await identity.client_id()
        view = await sessions.status(_session_id(session_id), caller)
        return jsonify({"success": True, "session": view, **flat_status(view)})

    @bp.post("/stop")
    async def stop() -> Response:
        caller = await identity.client_id()
        stop_body = await body(StopBody)
        _same_client(stop_body.client_id, caller)
        return jsonify({"success": True, **(await sessions.stop(stop_body.session_id, caller))})

    @bp.get("/history")
    async def history() -> Response:
        return await history_of(await identity.client_id())

    @bp.get("/history/<client_id>")
    async def history_by_id(client_id: str) -> Response:
        """Seed 003's path: the same history, for its owner only."""
        return await history_of(await identity.owner_of(client_id))

    async def history_of(caller: uuid.UUID) -> Response:
        params = query(HistoryQuery)
        rows, total = await sessions_store.history(
            sessions.deps.db,
            caller,
            limit=params.limit,
            offset=params.offset,
            date_from=params.date_from,
            date_to=params.date_to,
            station_id=params.station_id,
        )
        return jsonify(
            {
                "success": True,
                "sessions": [session_view(row) for row in rows],
                "total": total,
                "limit": params.limit,
                "offset": params.offset,
            }
        )

    return bp


OPEN = frozenset({"reserved", "starting", "charging", "stopping"})


def flat_status(view: dict[str, Any]) -> dict[str, Any]:
    """Seed 001's flat answer of ``/charging/status``: ``started`` until the session has ended,
    then ``stopped`` with its final cost and refund."""
    flat = {
        "session_id": view["id"],
        "status": "started" if view["status"] in OPEN else "stopped",
        "reserved_amount": view["reserved_amount"],
        "current_cost": view["current_cost"],
        "energy_consumed": view["energy_consumed"],
        "rate_per_kwh": view["rate_per_kwh"],
        "limit_type": view["limit_type"],
        "limit_value": view["limit_value"],
        "limit_percentage": view["progress_percent"],
        "duration_minutes": view["charging_duration_minutes"],
    }
    if flat["status"] == "stopped":
        flat["final_cost"] = view["final_cost"]
        flat["refunded_amount"] = view["refunded_amount"]
    return flat


def _session_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a session id", code="validation_error") from None
