"""An OBANK-style host-to-host card provider: XML over mutual TLS (the wire format is in
:mod:`cpms.kernel.provider_wire`). A ``payment`` carries the card for the one request (never
logged: only its mask is ever kept) and is answered ``approved`` with the bank's transaction,
``declined`` with a reason, or ``3ds`` with where to send the payer; ``complete`` finishes a
3-D Secure return; ``status`` says where a payment stands (``processing``, ``completed``,
``failed``, ``cancelled``); ``refund`` returns one. HTTPS only, with the merchant's client
certificate: there is no plain-HTTP fallback (changelog 1.2.0)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from decimal import Decimal
from xml.etree import ElementTree as ET

import httpx

from actors.payment.provider import (
    CardApproved,
    CardDeclined,
    CardNeeds3ds,
    CardOutcome,
    InvoiceStatus,
    ProviderError,
)
from cpms.kernel.payments import Card, from_tyiyn, to_tyiyn
from cpms.kernel.provider_wire import obank_request, obank_result

_STATES = {
    "processing": "pending",
    "completed": "approved",
    "failed": "canceled",
    "cancelled": "canceled",
}
_DECLINES = {"insufficient_funds", "card_blocked", "invalid_cvv", "card_invalid"}
KGS = "417"


class ObankProvider:
    name = "obank"

    def __init__(
        self,
        url: str,
        point_id: str,
        service_id: str,
        tls: ssl.SSLContext,
        *,
        term_url: str,
        timeout: float = 15.0,
    ) -> None:
        if not url.startswith("https://"):
            raise ValueError("the OBANK address must be https://")
        self.url, self.point, self.service, self.term_url = url, point_id, service_id, term_url
        self._http = httpx.AsyncClient(verify=tls, timeout=timeout)

    @staticmethod
    def tls(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
        """The client certificate cpms signs with, and the CA that vouches for the bank."""
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        return context

    def __repr__(self) -> str:
        return f"ObankProvider({self.url!r}, point={self.point!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, body: bytes, what: str) -> tuple[ET.Element | None, dict[str, str]]:
        try:
            reply = await self._http.post(
                self.url, content=body, headers={"Content-Type": "application/xml"}
            )
        except (httpx.HTTPError, ssl.SSLError) as error:
            raise ProviderError(f"OBANK {what}: {type(error).__name__}") from None
        if reply.status_code != 200:
            raise ProviderError(f"OBANK {what}: HTTP {reply.status_code}")
        try:
            code, payment, fields = obank_result(reply.content)
        except ValueError as error:
            raise ProviderError(f"OBANK {what}: {error}") from None
        if code != 0:
            raise ProviderError(f"OBANK {what}: result code {code}")
        return payment, fields

    @staticmethod
    def _outcome(payment: ET.Element | None, fields: dict[str, str]) -> CardOutcome:
        if payment is None:
            raise ProviderError("OBANK: an answer without its payment")
        state = payment.get("state")
        if state == "approved":
            try:
                return CardApproved(
                    payment.get("trans", ""), from_tyiyn(int(payment.get("sum", "")))
                )
            except ValueError:
                raise ProviderError("OBANK: an approval without its sum") from None
        if state == "3ds":
            return CardNeeds3ds(fields.get("acs_url", ""), fields.get("pa_req", ""), fields["md"])
        reason = payment.get("reason", "")
        code = reason if reason in _DECLINES else "payment_declined"
        return CardDeclined(code, fields.get("message") or "the bank declined the card")

    async def charge_card(self, invoice_id: str, amount: Decimal, card: Card) -> CardOutcome:
        pan, holder, cvv = card.reveal()
        month, year = card.expiry.split("/")
        body = obank_request(
            self.point,
            "payment",
            {
                "amount_currency": KGS,
                "card_pan": pan,
                "card_name": holder,
                "card_cvv": cvv,
                "card_month": month,
                "card_year": year,
                "term_url": self.term_url,
            },
            id=invoice_id,
            sum=str(to_tyiyn(amount)),
            service=self.service,
            check="0",
            account="",
            date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
        )
        return self._outcome(*await self._call(body, "payment"))

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, CardOutcome]:
        body = obank_request(self.point, "complete", {}, md=md, pares=pa_res)
        payment, fields = await self._call(body, "complete")
        if payment is None or payment.get("state") == "unknown":
            return "", CardDeclined("payment_not_found", "unknown 3-D Secure session")
        return payment.get("id", ""), self._outcome(payment, fields)

    async def status(self, invoice_id: str) -> InvoiceStatus:
        payment, _ = await self._call(
            obank_request(self.point, "status", {}, id=invoice_id), "status"
        )
        if payment is None:
            return InvoiceStatus("canceled")
        state = _STATES.get(payment.get("state", ""), "pending")
        if state != "approved":
            return InvoiceStatus(state)  # type: ignore[arg-type]
        try:
            return InvoiceStatus(
                "approved", payment.get("trans"), from_tyiyn(int(payment.get("sum", "")))
            )
        except ValueError:
            raise ProviderError("OBANK status: an approval without its sum") from None

    async def refund(self, transaction_id: str, amount: Decimal, *, reference: str) -> str:
        body = obank_request(
            self.point, "refund", {}, trans=transaction_id, sum=str(to_tyiyn(amount)), ref=reference
        )
        payment, _ = await self._call(body, "refund")
        return transaction_id if payment is None else payment.get("refund", transaction_id)
