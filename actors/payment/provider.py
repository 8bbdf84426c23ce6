"""What cpms asks of a payment provider, whichever it is: issue a QR invoice, say where an
invoice stands, charge a card (perhaps through 3-D Secure). The answers are plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from cpms.kernel.payments import Card


@dataclass(frozen=True, slots=True)
class QrInvoice:
    provider_ref: str
    qr_data: str  # what the QR code encodes
    qr_url: str
    app_link: str


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    state: Literal["pending", "approved", "canceled"]
    transaction_id: str | None = None
    amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CardApproved:
    transaction_id: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CardNeeds3ds:
    acs_url: str
    pa_req: str
    md: str


@dataclass(frozen=True, slots=True)
class CardDeclined:
    code: str  # insufficient_funds, card_blocked, payment_declined, invalid_cvv
    message: str


CardOutcome = CardApproved | CardNeeds3ds | CardDeclined


class ProviderError(Exception):
    """The provider could not be reached or answered nonsense; the caller may try again."""


class PaymentProvider(Protocol):
    name: str

    async def create_qr(
        self, invoice_id: str, amount: Decimal, expires_at: datetime, description: str | None
    ) -> QrInvoice: ...

    async def status(self, invoice_id: str) -> InvoiceStatus: ...

    async def charge_card(self, invoice_id: str, amount: Decimal, card: Card) -> CardOutcome: ...

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, CardOutcome]:
        """The card charge a 3-D Secure return completes: its invoice id and outcome."""
        ...
