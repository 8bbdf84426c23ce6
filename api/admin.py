"""Operator endpoints (``/api/v1/admin``), guarded by ``CPMS_ADMIN_TOKEN``.

``POST /api/v1/admin/stations/{id}/ocpp/{Action}`` sends any central-system OCPP command to a
connected charger and returns its answer; ``GET /api/v1/admin/stations/{id}/messages`` reads the
station's OCPP message log, newest first.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, jsonify, request

from actors import provisioning as prov
from actors.charge_point.messages import STATION, Command, Reload
from actors.core import Core
from actors.session.messages import SESSION
from actors.session.service import open_sessions_report
from api.config import ApiConfig
from api.door import body, optional_json_object, query
from cpms.kernel.bounded import RowId
from cpms.kernel.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from cpms.ocpp import schemas
from cpms.ocpp.frames import OcppError
from storage import Database
from storage import stations as store
from storage.clients import ensure_client
from storage.ledger_ops import parse_uuid
from storage.telemetry import station_messages


class WalletCredit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2, allow_inf_nan=False)
    reason: str = Field(min_length=1, max_length=500)
    key: str = Field(min_length=1, max_length=200, description="idempotency key")


class CommandQuery(BaseModel):
    timeout: float = Field(30.0, ge=0.1, le=300, allow_inf_nan=False)


class MessagesQuery(BaseModel):
    limit: int = Field(100, ge=1, le=1000)
    before_id: RowId | None = None


class OpenSessionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(500, ge=1, le=1000)


@dataclass(frozen=True)
class _Resource:
    """A provisioned kind: created with POST /<path>, changed with PATCH /<path>/<id>."""

    path: str
    id_field: str
    response_key: str
    create_model: type[BaseModel]
    create: Callable[[Database, Any], Awaitable[None]]
    patch_model: type[BaseModel]
    update: Callable[[Database, str, Any], Awaitable[None]]


_RESOURCES = [
    _Resource(
        "tariffs",
        "id",
        "tariff_id",
        prov.TariffIn,
        prov.add_tariff,
        prov.TariffPatch,
        prov.update_tariff,
    ),
    _Resource(
        "locations",
        "id",
        "location_id",
        prov.LocationIn,
        prov.add_location,
        prov.LocationPatch,
        prov.update_location,
    ),
    _Resource(
        "stations",
        "id",
        "station_id",
        prov.StationIn,
        prov.add_station,
        prov.StationPatch,
        prov.update_station,
    ),
    _Resource(
        "owners",
        "id",
        "owner_id",
        prov.OwnerIn,
        prov.add_owner,
        prov.OwnerPatch,
        prov.update_owner,
    ),
    _Resource(
        "id-tags",
        "id_tag",
        "id_tag",
        prov.IdTagIn,
        prov.add_id_tag,
        prov.IdTagPatch,
        prov.update_id_tag,
    ),
]


def _register(
    bp: Blueprint,
    core: Core,
    resource: _Resource,
    after_update: Callable[[str], Awaitable[None]] | None,
) -> None:
    async def create() -> Response:
        item = await body(resource.create_model)
        await resource.create(core.db, item)
        response = jsonify(
            {"success": True, resource.response_key: getattr(item, resource.id_field)}
        )
        response.status_code = 201
        return response

    async def update(ident: str) -> Response:
        await resource.update(core.db, ident, await body(resource.patch_model))
        if after_update is not None:
            await after_update(ident)
        return jsonify({"success": True, resource.response_key: ident})

    name = resource.path.replace("-", "_")
    bp.add_url_rule(f"/{resource.path}", f"create_{name}", create, methods=["POST"])
    bp.add_url_rule(f"/{resource.path}/<ident>", f"update_{name}", update, methods=["PATCH"])


def admin_blueprint(core: Core, config: ApiConfig) -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")
    token = config.admin_token

    @bp.before_request
    async def _guard() -> None:
        if token is None:
            raise Forbidden(
                "the admin API is disabled: set CPMS_ADMIN_TOKEN", code="admin_disabled"
            )
        given = request.headers.get("Authorization", "")
        if not given.lower().startswith("bearer "):
            raise Unauthorized("Authorization: Bearer <admin token> is required")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Forbidden("admin token required", code="access_denied")

    @bp.post("/stations/<station_id>/ocpp/<action>")
    async def ocpp_command(station_id: str, action: str) -> Response:
        if action not in schemas.TO_CHARGER:
            raise NotFound(
                f"{action} is not an OCPP 1.6 central-system command", code="unknown_action"
            )
        payload = await optional_json_object()
        try:
            schemas.validate(action, payload, "admin")
        except OcppError as error:
            raise InvalidRequest(
                f"{action}: {error.description}", code="validation_error", ocpp_error=error.code
            ) from None
        timeout = query(CommandQuery).timeout
        ref = core.registry.lookup(STATION, station_id)
        if ref is None:
            raise NotFound(f"station {station_id} not found", code="station_not_found")
        answer: dict[str, Any] = await ref.ask(
            Command(action, payload, timeout=timeout), timeout=timeout + 5
        )
        return jsonify(
            {"success": True, "station_id": station_id, "action": action, "response": answer}
        )

    async def reload_station(station_id: str) -> None:
        ref = core.registry.lookup(STATION, station_id)
        if ref is not None:
            await ref.ask(Reload())

    for resource in _RESOURCES:
        _register(bp, core, resource, reload_station if resource.path == "stations" else None)

    @bp.post("/clients/<client_id>/credit")
    async def credit(client_id: str) -> Response:
        """Credit a wallet (ledger type ``adjustment``; the client is created if new). The
        ``key`` makes a repeated request apply once."""
        credit = await body(WalletCredit)
        client = parse_uuid(client_id, field="client_id", code="invalid_client_id")
        await ensure_client(core.db, client)
        result = await core.ledger.credit(
            client,
            credit.amount,
            key=credit.key,
            entry_type="adjustment",
            description=credit.reason,
        )
        return jsonify(
            {
                "success": True,
                "client_id": str(client),
                "balance": result.balance,
                "replayed": result.replayed,
            }
        )

    @bp.get("/sessions/open")
    async def open_sessions() -> Response:
        """Sessions not ended yet, oldest first: state, age, next deadline, ``overdue`` when
        that has passed, and whether an actor is driving it."""
        limit = query(OpenSessionsQuery).limit
        report = await open_sessions_report(core.db, config.timings, limit)
        for session in report:
            session["actor"] = core.registry.lookup(SESSION, session["id"]) is not None
        return jsonify({"success": True, "sessions": report})

    @bp.get("/stations/<station_id>/messages")
    async def messages(station_id: str) -> Response:
        if await store.get_station(core.db, station_id) is None:
            raise NotFound(f"station {station_id} not found", code="station_not_found")
        params = query(MessagesQuery)
        limit, before = params.limit, params.before_id
        rows = await station_messages(core.db, station_id, before_id=before, limit=limit)
        return jsonify({"success": True, "station_id": station_id, "messages": rows})

    return bp
