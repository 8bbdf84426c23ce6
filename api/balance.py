"""The wallet, read side: ``/api/v1/balance/get``, ``/balance/{client_id}``, ``/balance/history``.

``balance`` is what the client can spend now; ``reserved`` is on hold for running sessions
(the app shows both; their sum is ``total``). History is the ledger, newest first, each entry
with its balance before and after.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field
from quart import Blueprint, Response, jsonify

from actors.core import Core
from api.door import query
from api.identity import Identity
from cpms.kernel.bounded import Offset, Stamp
from cpms.kernel.errors import Forbidden
from storage import wallets
from storage.clients import get_client

#: ``type`` filter: a ledger type, or one of the app's coarse kinds (money in, charging)
TYPE_GROUPS = {
    "topup": ("topup",),
    "topup_refund": ("topup_refund",),
    "charge": ("charge_reserve", "charge_payment", "charge_debt"),
    "refund": ("charge_refund",),
    "adjustment": ("adjustment",),
    "charge_reserve": ("charge_reserve",),
    "charge_refund": ("charge_refund",),
    "charge_payment": ("charge_payment",),
    "charge_debt": ("charge_debt",),
}


class HistoryQuery(BaseModel):
    limit: int = Field(50, ge=1, le=200)
    offset: Offset = 0
    type: Literal[tuple(TYPE_GROUPS)] | None = None  # type: ignore[valid-type]
    date_from: Stamp | None = None
    date_to: Stamp | None = None


def balance_blueprint(core: Core, identity: Identity) -> Blueprint:
    bp = Blueprint("balance", __name__, url_prefix="/api/v1/balance")

    async def wallet(client_id: UUID) -> Response:
        client = await get_client(core.db, client_id)
        reserved = await core.ledger.held(client_id)
        return jsonify(
            {
                "success": True,
                "client_id": str(client_id),
                "balance": client["balance"],
                "reserved": reserved,
                "total": client["balance"] + reserved,
                "currency": "KGS",
                "status": client["status"],
            }
        )

    @bp.get("/get")
    async def own() -> Response:
        return await wallet(await identity.client_id())

    @bp.get("/history")
    async def history() -> Response:
        return await history_of(await identity.client_id())

    @bp.get("/history/<client_id>")
    async def history_by_id(client_id: str) -> Response:
        """Seed 003's path: the same ledger, for its owner only."""
        return await history_of(await identity.owner_of(client_id))

    async def history_of(client_id: UUID) -> Response:
        params = query(HistoryQuery)
        types = list(TYPE_GROUPS[params.type]) if params.type else None
        rows, total = await wallets.history(
            core.db,
            client_id,
            types=types,
            date_from=params.date_from,
            date_to=params.date_to,
            limit=params.limit,
            offset=params.offset,
        )
        return jsonify(
            {
                "success": True,
                "transactions": [
                    {
                        "id": r["id"],
                        "type": r["type"],
                        "amount": r["amount"],
                        "balance_before": r["balance_before"],
                        "balance_after": r["balance_after"],
                        "session_id": None if r["session_id"] is None else str(r["session_id"]),
                        "invoice_id": r["invoice_id"],
                        "description": r["description"],
                        "created_at": r["created_at"],
                    }
                    for r in rows
                ],
                "total": total,
                "limit": params.limit,
                "offset": params.offset,
            }
        )

    @bp.get("/<client_id>")
    async def by_id(client_id: str) -> Response:
        caller = await identity.client_id()
        if client_id != str(caller):
            raise Forbidden("a client can read only its own balance")
        return await wallet(caller)

    return bp
