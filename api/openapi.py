"""``GET /api/v1/openapi.json``: an OpenAPI 3.1 document of every endpoint the facade serves.

Each operation is described once, here, next to the pydantic models that validate its input (so
request schemas can't drift from what handlers accept); a test checks that every route the app
registers is in the document and nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response, jsonify

from api import responses as R
from api.admin import _RESOURCES, OpenSessionsQuery, WalletCredit
from api.balance import HistoryQuery as BalanceHistoryQuery
from api.charging import HistoryQuery as ChargingHistoryQuery
from api.charging import StartBody, StopBody
from api.locations import LocationsQuery
from api.payments import PaymentHistoryQuery, ThreeDsReturn, TopupCard, TopupQr
from api.responses import OpenApiDocument
from api.webhook_door import Webhook
from cpms import __version__

ERROR = {
    "type": "object",
    "required": ["success", "error", "message"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string", "description": "a stable error code, e.g. station_offline"},
        "message": {"type": "string"},
    },
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # OpenAPI form: /api/v1/charging/status/{session_id}
    summary: str
    tag: str
    auth: str | None = None  # "app" (JWT) or "admin"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    params: tuple[str, ...] = field(default=())
    #: what it answers on success, with which status, and other statuses with that body
    response: type[BaseModel] = OpenApiDocument
    media: str = "application/json"  # the success body's type (text for /metrics)
    status: int = 200
    same_body_on: tuple[int, ...] = ()


def _operations() -> list[Op]:
    app_errors = (400, 401, 403)
    ops = [
        Op(
            "get",
            "/health",
            "Liveness and readiness: database, actors, GC (503 with the same body when not ready)",
            "system",
            response=R.Health,
            same_body_on=(503,),
        ),
        Op("get", "/api/v1/openapi.json", "This document", "system", response=R.OpenApiDocument),
        Op(
            "get",
            "/metrics",
            "Prometheus metrics, text format (a Bearer token when CPMS_METRICS_TOKEN is set)",
            "system",
            errors=(401,),
            media="text/plain",
        ),
        Op(
            "get",
            "/api/v1/station/status/{station_id}",
            "A station's live status and connectors",
            "stations",
            errors=(404,),
            response=R.StationStatus,
        ),
        Op(
            "get",
            "/api/v1/locations",
            "Locations with status, counts and, on request, their stations",
            "stations",
            query=LocationsQuery,
            errors=(400,),
            response=R.Locations,
        ),
        Op(
            "get",
            "/api/v1/locations/{location_id}",
            "One location with its stations",
            "stations",
            errors=(404,),
            response=R.OneLocation,
        ),
        Op(
            "get",
            "/api/v1/balance/get",
            "The caller's balance and reserved money",
            "wallet",
            "app",
            response=R.Balance,
        ),
        Op(
            "get",
            "/api/v1/balance/history",
            "The caller's ledger, newest first",
            "wallet",
            "app",
            query=BalanceHistoryQuery,
            errors=(400,),
            response=R.BalanceHistory,
        ),
        Op(
            "get",
            "/api/v1/balance/{client_id}",
            "A balance, for its owner only",
            "wallet",
            "app",
            errors=(403, 404),
            response=R.Balance,
        ),
        Op(
            "post",
            "/api/v1/balance/topup-qr",
            "Top up by QR: an invoice payable for 5 minutes, its QR code and app link",
            "wallet",
            "app",
            body=TopupQr,
            errors=(*app_errors, 404, 503),
            response=R.QrIssued,
        ),
        Op(
            "post",
            "/api/v1/balance/topup-card",
            "Top up by card: approved (new balance) or 3-D Secure needed; declines are 402",
            "wallet",
            "app",
            body=TopupCard,
            errors=(*app_errors, 402, 404, 503),
            response=R.CardCharged,
        ),
        Op(
            "post",
            "/api/v1/payment/3ds-callback",
            "The bank's 3-D Secure return (form or JSON: MD, PaRes)",
            "wallet",
            body=ThreeDsReturn,
            errors=(400, 402, 404),
            response=R.ThreeDsDone,
        ),
        Op(
            "get",
            "/api/v1/payment/status/{invoice_id}",
            "A top-up's status (0 processing, 1 approved, 2 canceled), its owner only",
            "wallet",
            "app",
            errors=(401, 403, 404),
            response=R.PaymentStatus,
        ),
        Op(
            "get",
            "/api/v1/payment/history",
            "The caller's top-ups, newest first",
            "wallet",
            "app",
            query=PaymentHistoryQuery,
            errors=(400, 401),
            response=R.PaymentHistory,
        ),
        *(
            Op(
                "post",
                path,
                f"The provider's notice{where} (allowed address, X-Webhook-Timestamp, "
                "X-Webhook-Signature)",
                "payments",
                body=Webhook,
                errors=(400, 401, 403, 404, 409),
                response=R.WebhookTaken,
            )
            for path, where in (
                ("/api/v1/payment/webhook", ""),
                ("/payment/webhook", ", at its legacy address"),
            )
        ),
        Op(
            "post",
            "/api/v1/charging/start",
            "Reserve money and ask the charger to start",
            "charging",
            "app",
            body=StartBody,
            errors=(*app_errors, 402, 404, 409, 503),
            response=R.Started,
        ),
        Op(
            "get",
            "/api/v1/charging/status/{session_id}",
            "A session's energy, cost and progress",
            "charging",
            "app",
            errors=(403, 404),
            response=R.SessionStatus,
        ),
        Op(
            "post",
            "/api/v1/charging/stop",
            "Stop a session (owner only) and settle it",
            "charging",
            "app",
            body=StopBody,
            errors=(*app_errors, 404),
            response=R.Stopped,
        ),
        Op(
            "get",
            "/api/v1/charging/history",
            "The caller's sessions, newest first",
            "charging",
            "app",
            query=ChargingHistoryQuery,
            errors=(400,),
            response=R.ChargingHistory,
        ),
        Op(
            "post",
            "/api/v1/admin/stations/{station_id}/ocpp/{action}",
            "Send an OCPP 1.6 command to a connected charger; answers its reply",
            "admin",
            "admin",
            errors=(400, 401, 404, 503, 504),
            response=R.CommandAnswered,
        ),
        Op(
            "post",
            "/api/v1/admin/clients/{client_id}/credit",
            "Credit a wallet (adjustment; `key` makes a repeat apply once)",
            "admin",
            "admin",
            body=WalletCredit,
            errors=(400, 401, 409),
            response=R.Credited,
        ),
        Op(
            "get",
            "/api/v1/admin/stations/{station_id}/messages",
            "The station's OCPP message log, newest first",
            "admin",
            "admin",
            errors=(401, 404),
            response=R.Messages,
        ),
        Op(
            "get",
            "/api/v1/admin/sessions/open",
            "Sessions not ended yet: state, age, next deadline, overdue, actor running",
            "admin",
            "admin",
            query=OpenSessionsQuery,
            errors=(400, 401),
            response=R.OpenSessions,
        ),
    ]
    for resource in _RESOURCES:
        ops.append(
            Op(
                "post",
                f"/api/v1/admin/{resource.path}",
                f"Create {resource.path}",
                "admin",
                "admin",
                body=resource.create_model,
                errors=(400, 401, 409),
                response=R.provisioned(resource.response_key),
                status=201,
            )
        )
        ops.append(
            Op(
                "patch",
                f"/api/v1/admin/{resource.path}/{{ident}}",
                f"Change {resource.path}",
                "admin",
                "admin",
                body=resource.patch_model,
                errors=(400, 401, 404),
                response=R.provisioned(resource.response_key),
            )
        )
    return ops


def _schema(model: type[BaseModel], shared: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema, the models it nests moved to the document's components (a
    ``$ref`` to ``#/$defs/…`` inside an operation resolves nowhere)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    shared.update(schema.pop("$defs", {}))
    return schema


def _body(op: Op, shared: dict[str, Any]) -> dict[str, Any]:
    if op.media != "application/json":
        return {"type": "string"}
    return _schema(op.response, shared)


def _parameters(op: Op, shared: dict[str, Any]) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in op.path.split("/") if part.startswith("{"))
    ]
    if op.query is not None:
        schema = _schema(op.query, shared)
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    return params


UNLIMITED_TAGS = frozenset({"system"})  # /health and this document
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key with the same request within 24 h replays the first answer",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
}


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {"Error": ERROR}
    for op in _operations():
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op, shared),
            "responses": {
                **{
                    str(code): {
                        "description": "OK" if code < 400 else "not ready",
                        "content": {op.media: {"schema": _body(op, shared)}},
                    }
                    for code in (op.status, *op.same_body_on)
                },
                **{
                    str(code): {
                        "description": "error",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for code in op.errors
                },
            },
        }
        if op.tag not in UNLIMITED_TAGS:  # rate limited (api.protect)
            operation["responses"].setdefault("429", _error("over the rate limit"))
        if op.method in ("post", "patch", "delete") and op.auth is not None:
            operation["parameters"].append(IDEMPOTENCY_KEY)  # api.idempotency
            for code in (409, 422):
                operation["responses"].setdefault(str(code), _error("error"))
        if op.auth is not None:
            operation["security"] = [{"appToken" if op.auth == "app" else "adminToken": []}]
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(op.body, shared)}},
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "cpms", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": shared,
            "securitySchemes": {
                "appToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_blueprint() -> Blueprint:
    bp = Blueprint("openapi", __name__)
    spec = document()

    @bp.get("/api/v1/openapi.json")
    async def openapi() -> Response:
        return jsonify(spec)

    return bp
