"""Top-ups: ``POST /api/v1/balance/topup-qr`` and ``/balance/topup-card``, the 3-D Secure return
``POST /api/v1/payment/3ds-callback``, ``GET /api/v1/payment/status/{invoice_id}`` (its owner
only) and ``GET /api/v1/payment/history`` (the provider's webhook is answered before the app:
:mod:`api.webhook_door`). Card numbers and CVVs are read into a :class:`Card` at the
door and never logged, stored or echoed: only the mask."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import segno
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint, Response, jsonify, request

from actors.payment.actor import PaymentView
from actors.payment.provider import CardNeeds3ds
from actors.payment.service import Payments
from api.door import body, query
from api.identity import Identity
from cpms.kernel import jsontext
from cpms.kernel.bounded import Offset
from cpms.kernel.errors import Forbidden, InvalidRequest, NotFound
from cpms.kernel.payments import INVOICE_ID, TOPUP_MAX, TOPUP_MIN, Card
from cpms.kernel.validation import validate
from storage import payments as payments_store

Amount = Annotated[Decimal, Field(ge=TOPUP_MIN, le=TOPUP_MAX, max_digits=9, decimal_places=2)]
Text = Annotated[str, StringConstraints(max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TopupQr(_Body):
    client_id: uuid.UUID | None = None
    amount: Amount
    description: Text | None = None


class TopupCard(_Body):
    client_id: uuid.UUID | None = None
    amount: Amount
    card_pan: Annotated[str, StringConstraints(max_length=23)]
    card_holder: Annotated[str, StringConstraints(max_length=60)]
    card_expiry: Annotated[str, StringConstraints(max_length=5)]
    card_cvv: Annotated[str, StringConstraints(max_length=4)]
    description: Text | None = None

    def __repr__(self) -> str:  # never the card's data, even in a debugger or a traceback
        return f"TopupCard(amount={self.amount})"

    __str__ = __repr__


class ThreeDsReturn(_Body):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    md: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(alias="MD")
    pa_res: Annotated[str, StringConstraints(max_length=10_000)] = Field(alias="PaRes")


class PaymentHistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=100)
    offset: Offset = 0


def qr_png(data: str) -> str:
    """The QR code of ``data`` as a base64 PNG. One fixed mask pattern: every mask reads the
    same, and trying all eight for the best-looking one took two thirds of the request."""
    out = io.BytesIO()
    segno.make(data, error="m", mask=0).save(out, kind="png", scale=6, border=2)
    return base64.b64encode(out.getvalue()).decode()


def _same_client(claimed: uuid.UUID | None, caller: uuid.UUID) -> None:
    if claimed is not None and claimed != caller:
        raise Forbidden("client_id does not match the token", code="client_mismatch")


def _card_answer(view: PaymentView, card: Card) -> dict[str, Any]:
    return {
        "success": True,
        "invoice_id": view.invoice_id,
        "transaction_id": view.transaction_id,
        "amount": view.amount,
        "status": view.state.value,
        "new_balance": view.balance,
        "card_mask": card.mask,
        "timestamp": datetime.now(UTC),
    }


def payments_blueprint(payments: Payments, identity: Identity) -> Blueprint:
    bp = Blueprint("payments", __name__)

    @bp.post("/api/v1/balance/topup-qr")
    async def topup_qr() -> Response:
        caller = await identity.client_id()
        asked = await body(TopupQr)
        _same_client(asked.client_id, caller)
        issued = await payments.topup_qr(caller, asked.amount, asked.description)
        issued["qr_code"] = qr_png(issued.pop("qr_data"))
        return jsonify({"success": True, **issued})

    @bp.post("/api/v1/balance/topup-card")
    async def topup_card() -> Response:
        caller = await identity.client_id()
        asked = await body(TopupCard)
        _same_client(asked.client_id, caller)
        card = Card(
            asked.card_pan,
            asked.card_holder,
            asked.card_expiry,
            asked.card_cvv,
            today=datetime.now(UTC).date(),
        )
        invoice, outcome, view = await payments.topup_card(
            caller, asked.amount, card, asked.description
        )
        if isinstance(outcome, CardNeeds3ds):
            return jsonify(
                {
                    "success": True,
                    "invoice_id": invoice,
                    "requires_3ds": True,
                    "acs_url": outcome.acs_url,
                    "pa_req": outcome.pa_req,
                    "md": outcome.md,
                    "term_url": f"{request.host_url.rstrip('/')}/api/v1/payment/3ds-callback",
                }
            )
        assert view is not None
        return jsonify(_card_answer(view, card))

    @bp.post("/api/v1/payment/3ds-callback")
    async def three_ds() -> Response:
        form = (await request.form).to_dict()
        if not jsontext.representable(form):  # %00 decodes to a NUL
            raise InvalidRequest(jsontext.UNSTORABLE, code="validation_error")
        returned = validate(ThreeDsReturn, form) if form else await body(ThreeDsReturn)
        invoice, view = await payments.finish_3ds(returned.md, returned.pa_res)
        assert view is not None
        return jsonify(
            {
                "success": True,
                "invoice_id": invoice,
                "status": view.state.value,
                "amount": view.amount,
                "new_balance": view.balance,
            }
        )

    @bp.get("/api/v1/payment/status/<invoice_id>")
    async def status(invoice_id: str) -> Response:
        caller = await identity.client_id()
        if not INVOICE_ID.fullmatch(invoice_id):
            raise NotFound(f"payment {invoice_id} not found", code="payment_not_found")
        return jsonify({"success": True, **await payments.status(invoice_id, caller)})

    @bp.get("/api/v1/payment/history")
    async def history() -> Response:
        caller = await identity.client_id()
        params = query(PaymentHistoryQuery)
        rows, total = await payments_store.history(
            payments.deps.db, caller, limit=params.limit, offset=params.offset
        )
        return jsonify(
            {
                "success": True,
                "payments": [
                    {
                        "invoice_id": r["id"],
                        "method": r["method"],
                        "provider": r["provider"],
                        "amount": r["amount"],
                        "status": r["status"],
                        "status_text": r["state"],
                        "paid_amount": r["paid_amount"],
                        "card_mask": r["card_mask"],
                        "created_at": r["created_at"],
                        "paid_at": r["paid_at"],
                    }
                    for r in rows
                ],
                "total": total,
                "limit": params.limit,
                "offset": params.offset,
            }
        )

    return bp
