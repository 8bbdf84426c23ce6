"""Every operation the facade serves, described once, next to the pydantic models that validate
its input (so request schemas can't drift from what handlers accept): the OpenAPI document
(:mod:`api.openapi`) is made from this list, and a test checks that every route the app
registers is in it and nothing else is."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from api import admin_responses as A
from api import responses as R
from api.admin import _RESOURCES, OpenSessionsQuery, WalletCredit
from api.balance import HistoryQuery as BalanceHistoryQuery
from api.charging import HistoryQuery as ChargingHistoryQuery
from api.charging import StartBody, StopBody
from api.favorites import FavoriteBody
from api.locations import LocationsQuery
from api.payments import PaymentHistoryQuery, ThreeDsReturn, TopupCard, TopupQr
from api.responses import OpenApiDocument
from api.webhook_door import Webhook


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


def operations() -> list[Op]:
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
            "/api/v1/balance/history/{client_id}",
            "The same ledger under seed 003's path, for its owner only",
            "wallet",
            "app",
            query=BalanceHistoryQuery,
            errors=(400, 403),
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
            "get",
            "/api/v1/charging/history/{client_id}",
            "The same sessions under seed 003's path, for their owner only",
            "charging",
            "app",
            query=ChargingHistoryQuery,
            errors=(400, 403),
            response=R.ChargingHistory,
        ),
        Op(
            "get",
            "/api/v1/favorites",
            "The caller's favourite locations, newest first",
            "favorites",
            "app",
            response=R.Favorites,
        ),
        Op(
            "post",
            "/api/v1/favorites",
            "Make a location a favourite (201; 200 when it was one already)",
            "favorites",
            "app",
            body=FavoriteBody,
            errors=(*app_errors, 404, 409),
            response=R.FavoriteAdded,
            status=201,
            same_body_on=(200,),
        ),
        Op(
            "delete",
            "/api/v1/favorites/{location_id}",
            "A location is no longer a favourite",
            "favorites",
            "app",
            errors=(401, 404),
            response=R.FavoriteRemoved,
        ),
        Op(
            "post",
            "/api/v1/admin/stations/{station_id}/ocpp/{action}",
            "Send an OCPP 1.6 command to a connected charger; answers its reply",
            "admin",
            "admin",
            errors=(400, 401, 404, 503, 504),
            response=A.CommandAnswered,
        ),
        Op(
            "post",
            "/api/v1/admin/clients/{client_id}/credit",
            "Credit a wallet (adjustment; `key` makes a repeat apply once)",
            "admin",
            "admin",
            body=WalletCredit,
            errors=(400, 401, 409),
            response=A.Credited,
        ),
        Op(
            "get",
            "/api/v1/admin/stations/{station_id}/messages",
            "The station's OCPP message log, newest first",
            "admin",
            "admin",
            errors=(401, 404),
            response=A.Messages,
        ),
        Op(
            "get",
            "/api/v1/admin/sessions/open",
            "Sessions not ended yet: state, age, next deadline, overdue, actor running",
            "admin",
            "admin",
            query=OpenSessionsQuery,
            errors=(400, 401),
            response=A.OpenSessions,
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
                response=A.provisioned(resource.response_key),
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
                response=A.provisioned(resource.response_key),
            )
        )
    return ops
