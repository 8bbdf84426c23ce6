"""An O!Dengi-style QR invoice provider over HTTP (the envelope and its HMAC-MD5 signature are
in :mod:`cpms.kernel.provider_wire`): ``createInvoice`` issues the invoice under our invoice id
as its ``order_id`` and answers what the QR code encodes, the code's picture and the app's link;
``statusPayment`` says where it stands (``processing``, ``approved`` with the payment's
``trans_id``, ``canceled``); ``invoiceCancel`` withdraws an unpaid one and
``refundPaymentToEwallet`` returns a payment. The provider tells cpms of a payment by webhook."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from actors.payment.provider import InvoiceStatus, ProviderError, QrInvoice
from cpms.kernel.payments import from_tyiyn, to_tyiyn
from cpms.kernel.provider_wire import odengi_envelope

_STATES = {"processing": "pending", "approved": "approved", "canceled": "canceled"}


class _Unknown(ProviderError):
    """The provider knows no such invoice or payment."""


class ODengiProvider:
    name = "odengi"

    def __init__(
        self,
        url: str,
        sid: str,
        password: str,
        *,
        test: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.url, self.sid, self._password, self.test = url, sid, password, test
        self._http = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # never the password
        return f"ODengiProvider({self.url!r}, sid={self.sid!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, cmd: str, data: dict[str, Any]) -> dict[str, Any]:
        """The answer's ``data``.

        Raises:
            ProviderError: unreachable, not 200, not the envelope, or an error in it.
        """
        envelope = odengi_envelope(
            cmd, data, sid=self.sid, password=self._password, mktime=int(time.time())
        )
        try:
            reply = await self._http.post(self.url, json=envelope)
        except httpx.HTTPError as error:
            raise ProviderError(f"O!Dengi {cmd}: {type(error).__name__}") from None
        if reply.status_code != 200:
            raise ProviderError(f"O!Dengi {cmd}: HTTP {reply.status_code}")
        try:
            answer = reply.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(f"O!Dengi {cmd}: not an answer") from None
        if not isinstance(answer, dict):
            raise ProviderError(f"O!Dengi {cmd}: not an answer")
        if answer.get("error") == "not_found":
            raise _Unknown(f"O!Dengi {cmd}: not found")
        if "error" in answer:
            raise ProviderError(f"O!Dengi {cmd}: {answer['error']} {answer.get('desc', '')}")
        return answer

    async def create_qr(
        self, invoice_id: str, amount: Decimal, expires_at: datetime, description: str | None
    ) -> QrInvoice:
        data: dict[str, Any] = {
            "order_id": invoice_id,
            "desc": description or f"Top-up {invoice_id}",
            "amount": to_tyiyn(amount),
            "currency": "KGS",
            "date_life": expires_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if self.test:
            data["test"] = 1
        answer = await self._call("createInvoice", data)
        try:
            return QrInvoice(
                provider_ref=str(answer["invoice_id"]),
                qr_data=str(answer["qr"]),
                qr_url=str(answer["qr_url"]),
                app_link=str(answer["link_app"]),
            )
        except KeyError as missing:
            raise ProviderError(f"O!Dengi createInvoice: no {missing}") from None

    async def status(self, invoice_id: str) -> InvoiceStatus:
        try:
            answer = await self._call("statusPayment", {"order_id": invoice_id})
        except _Unknown:  # never issued (cpms stopped between writing it and sending it)
            return InvoiceStatus("canceled")
        state = _STATES.get(str(answer.get("status")), "pending")
        if state != "approved":
            return InvoiceStatus(state)  # type: ignore[arg-type]
        payments = answer.get("payments") or [answer]
        paid = payments[0]
        try:
            return InvoiceStatus("approved", str(paid["trans_id"]), from_tyiyn(int(paid["amount"])))
        except (KeyError, ValueError, TypeError):
            raise ProviderError("O!Dengi statusPayment: an approval without its payment") from None

    async def cancel(self, invoice_id: str) -> None:
        await self._call("invoiceCancel", {"order_id": invoice_id})

    async def refund(self, transaction_id: str, amount: Decimal, *, reference: str) -> str:
        """Return ``amount`` of a payment to the payer's e-wallet; the refund's id."""
        answer = await self._call(
            "refundPaymentToEwallet",
            {"trans_id": transaction_id, "amount": to_tyiyn(amount), "refund_ref": reference},
        )
        return str(answer.get("refund_id", transaction_id))
