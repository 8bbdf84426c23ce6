"""The sandbox provider: behaves like the real ones, with no money and no network.

QR invoices wait to be paid (:meth:`SandboxProvider.pay`), canceled (:meth:`cancel`) or left to
expire; a payment may come after expiry. Cards (the seeds' test cards, any valid expiry and CVV):
…5678 is approved, …4321 asks for 3-D Secure (approved on the return with ``pa_res`` ``"Y"``,
declined otherwise), …1111 is declined with ``insufficient_funds``, any other card with
``card_blocked``. When something is paid or canceled the provider tells cpms through ``notify``
(in-process, what a webhook carries over HTTP), unless ``silent``: then only a poll finds out.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from actors.payment.provider import (
    CardApproved,
    CardDeclined,
    CardNeeds3ds,
    CardOutcome,
    InvoiceStatus,
    ProviderError,
    QrInvoice,
)
from cpms.kernel.payments import Card, sandbox_card

Notify = Callable[[str, InvoiceStatus], Awaitable[None]]


@dataclass
class _Invoice:
    amount: Decimal
    status: InvoiceStatus
    refunded: Decimal = Decimal(0)


class SandboxProvider:
    name = "sandbox"

    def __init__(self, *, base_url: str = "http://127.0.0.1:8080") -> None:
        self.base_url = base_url.rstrip("/")
        self.invoices: dict[str, _Invoice] = {}
        self.notify: Notify | None = None
        self._tx = itertools.count(1)
        self._3ds: dict[str, tuple[str, Decimal]] = {}  # md → invoice, amount
        #: how often each invoice's status was asked for
        self.polls: dict[str, int] = {}
        self.refunds: dict[str, str] = {}  # reference → the refund's id

    # -- the provider's side ------------------------------------------------------------------

    async def create_qr(
        self, invoice_id: str, amount: Decimal, expires_at: datetime, description: str | None
    ) -> QrInvoice:
        self.invoices[invoice_id] = _Invoice(amount, InvoiceStatus("pending"))
        data = f"https://sandbox.pay/qr/{invoice_id}?amount={amount}"
        return QrInvoice(
            provider_ref=f"SBX-{invoice_id}",
            qr_data=data,
            qr_url=f"{self.base_url}/sandbox/qr/{invoice_id}",
            app_link=f"odengi://pay?invoice={invoice_id}",
        )

    async def status(self, invoice_id: str) -> InvoiceStatus:
        self.polls[invoice_id] = self.polls.get(invoice_id, 0) + 1
        known = self.invoices.get(invoice_id)
        return InvoiceStatus("canceled") if known is None else known.status

    async def charge_card(self, invoice_id: str, amount: Decimal, card: Card) -> CardOutcome:
        verdict = sandbox_card(card.mask[-4:])
        if verdict == "approve":
            return self._approve(invoice_id, amount)
        if verdict == "3ds":
            md = f"MD-{invoice_id}"
            self._3ds[md] = (invoice_id, amount)
            self.invoices[invoice_id] = _Invoice(amount, InvoiceStatus("pending"))
            pa_req = base64.b64encode(f"{invoice_id}:{amount}".encode()).decode()
            return CardNeeds3ds(f"{self.base_url}/sandbox/3ds", pa_req, md)
        if verdict == "insufficient_funds":
            return CardDeclined(verdict, "insufficient funds on the card")
        return CardDeclined("card_blocked", "the card is blocked")

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, CardOutcome]:
        found = self._3ds.pop(md, None)
        if found is None:
            return "", CardDeclined("payment_not_found", "unknown 3-D Secure session")
        invoice_id, amount = found
        if pa_res != "Y":
            self.invoices[invoice_id].status = InvoiceStatus("canceled")
            return invoice_id, CardDeclined("payment_declined", "3-D Secure failed")
        return invoice_id, self._approve(invoice_id, amount)

    def _approve(self, invoice_id: str, amount: Decimal) -> CardApproved:
        tx = f"SBX-TX-{next(self._tx):06d}"
        self.invoices[invoice_id] = _Invoice(amount, InvoiceStatus("approved", tx, amount))
        return CardApproved(tx, amount)

    async def refund(self, transaction_id: str, amount: Decimal, *, reference: str) -> str:
        if reference in self.refunds:
            return self.refunds[reference]
        paid = [i for i in self.invoices.values() if i.status.transaction_id == transaction_id]
        if paid:  # a payment taken in another process is unknown here: refunded on trust
            if amount > paid[0].amount - paid[0].refunded:
                raise ProviderError("the sandbox refuses the refund: more than is left")
            paid[0].refunded += amount
        self.refunds[reference] = f"SBX-RF-{len(self.refunds) + 1:06d}"
        return self.refunds[reference]

    # -- the payer's side (tests, the demo) --------------------------------------------------

    async def pay(self, invoice_id: str, *, silent: bool = False) -> str:
        """The payer pays the QR invoice (even past its expiry); its transaction id."""
        invoice = self.invoices[invoice_id]
        tx = f"SBX-TX-{next(self._tx):06d}"
        invoice.status = InvoiceStatus("approved", tx, invoice.amount)
        if not silent and self.notify is not None:
            await self.notify(invoice_id, invoice.status)
        return tx

    async def cancel(self, invoice_id: str, *, silent: bool = False) -> None:
        invoice = self.invoices[invoice_id]
        invoice.status = InvoiceStatus("canceled")
        if not silent and self.notify is not None:
            await self.notify(invoice_id, invoice.status)
