"""Operator endpoints (``/api/v1/admin``), guarded by ``CPMS_ADMIN_TOKEN``.

``POST /api/v1/admin/stations/{id}/ocpp/{Action}`` sends any central-system OCPP command to a
connected charger and returns its answer; ``GET /api/v1/admin/stations/{id}/messages`` reads the
station's OCPP message log, newest first.
"""

from __future__ import annotations

import hmac
from typing import Any

from quart import Blueprint, Response, jsonify, request

from actors.charge_point import STATION, Command, Reload
from cpms import provisioning as prov
from cpms.errors import Forbidden, InvalidRequest, NotFound
from cpms.ocpp import schemas
from cpms.ocpp.frames import OcppError
from cpms.runtime import Core
from storage import stations as store


def admin_blueprint(core: Core) -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")
    token = core.settings.admin_token

    @bp.before_request
    async def _guard() -> None:
        if token is None:
            raise Forbidden(
                "the admin API is disabled: set CPMS_ADMIN_TOKEN", code="admin_disabled"
            )
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Forbidden("admin token required", code="access_denied")

    @bp.post("/stations/<station_id>/ocpp/<action>")
    async def ocpp_command(station_id: str, action: str) -> Response:
        if action not in schemas.TO_CHARGER:
            raise NotFound(
                f"{action} is not an OCPP 1.6 central-system command", code="unknown_action"
            )
        payload = await request.get_json(force=True, silent=True)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidRequest(
                "the body must be a JSON object (the OCPP payload)", code="validation_error"
            )
        try:
            schemas.validate(action, payload, "admin")
        except OcppError as error:
            raise InvalidRequest(
                f"{action}: {error.description}", code="validation_error", ocpp_error=error.code
            ) from None
        timeout = float(request.args.get("timeout", 30))
        ref = core.registry.lookup(STATION, station_id)
        if ref is None:
            raise NotFound(f"station {station_id} not found", code="station_not_found")
        answer: dict[str, Any] = await ref.ask(
            Command(action, payload, timeout=timeout), timeout=timeout + 5
        )
        return jsonify(
            {"success": True, "station_id": station_id, "action": action, "response": answer}
        )

    async def body() -> Any:
        data = await request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object", code="validation_error")
        return data

    def created(kind: str, ident: str) -> Response:
        response = jsonify({"success": True, kind: ident})
        response.status_code = 201
        return response

    @bp.post("/tariffs")
    async def add_tariff() -> Response:
        tariff = prov.parse(prov.TariffIn, await body())
        await prov.add_tariff(core.db, tariff)
        return created("tariff_id", tariff.id)

    @bp.post("/locations")
    async def add_location() -> Response:
        location = prov.parse(prov.LocationIn, await body())
        await prov.add_location(core.db, location)
        return created("location_id", location.id)

    @bp.post("/stations")
    async def add_station() -> Response:
        station = prov.parse(prov.StationIn, await body())
        await prov.add_station(core.db, station)
        return created("station_id", station.id)

    @bp.patch("/stations/<station_id>")
    async def update_station(station_id: str) -> Response:
        patch = prov.parse(prov.StationPatch, await body())
        await prov.update_station(core.db, station_id, patch)
        ref = core.registry.lookup(STATION, station_id)
        if ref is not None:
            await ref.ask(Reload())
        return jsonify({"success": True, "station_id": station_id})

    @bp.patch("/locations/<location_id>")
    async def update_location(location_id: str) -> Response:
        await prov.update_location(
            core.db, location_id, prov.parse(prov.LocationPatch, await body())
        )
        return jsonify({"success": True, "location_id": location_id})

    @bp.patch("/tariffs/<tariff_id>")
    async def update_tariff(tariff_id: str) -> Response:
        await prov.update_tariff(core.db, tariff_id, prov.parse(prov.TariffPatch, await body()))
        return jsonify({"success": True, "tariff_id": tariff_id})

    @bp.patch("/id-tags/<id_tag>")
    async def update_id_tag(id_tag: str) -> Response:
        await prov.update_id_tag(core.db, id_tag, prov.parse(prov.IdTagPatch, await body()))
        return jsonify({"success": True, "id_tag": id_tag})

    @bp.post("/id-tags")
    async def add_id_tag() -> Response:
        tag = prov.parse(prov.IdTagIn, await body())
        await prov.add_id_tag(core.db, tag)
        return created("id_tag", tag.id_tag)

    @bp.get("/stations/<station_id>/messages")
    async def messages(station_id: str) -> Response:
        if await store.get_station(core.db, station_id) is None:
            raise NotFound(f"station {station_id} not found", code="station_not_found")
        try:
            limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
            before = int(request.args["before_id"]) if "before_id" in request.args else None
        except ValueError:
            raise InvalidRequest(
                "limit and before_id must be integers", code="validation_error"
            ) from None
        rows = await core.db.fetch(
            """SELECT id, direction, message_type, unique_id, action, payload, created_at
               FROM ocpp_messages
               WHERE station_id = $1 AND ($2::bigint IS NULL OR id < $2)
               ORDER BY id DESC LIMIT $3""",
            station_id,
            before,
            limit,
        )
        return jsonify({"success": True, "station_id": station_id, "messages": rows})

    return bp
