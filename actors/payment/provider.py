"""What cpms asks of a payment provider, whichever it is: issue a QR invoice, say where an
invoice stands, charge a card (perhaps through 3-D Secure). The answers are plain values.

A QR provider and a card provider may be two companies (O!Dengi's QR invoices, OBANK's cards) or
one (the sandbox); :class:`Providers` holds the ones the settings name, and finds an invoice's
own by the name written on its row."""

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


class CardsOff(Exception):
    """No card provider is configured."""


class Provider(Protocol):
    name: str

    async def status(self, invoice_id: str) -> InvoiceStatus:
        """Where the invoice stands (unknown to the provider: canceled)."""
        ...

    async def refund(self, transaction_id: str, amount: Decimal, *, reference: str) -> str:
        """Return ``amount`` of a payment to the payer; the provider's id of the refund. The
        same ``reference`` again is the same refund (answered, not made twice)."""
        ...


class QrProvider(Provider, Protocol):
    async def create_qr(
        self, invoice_id: str, amount: Decimal, expires_at: datetime, description: str | None
    ) -> QrInvoice: ...


class CardProvider(Provider, Protocol):
    async def charge_card(self, invoice_id: str, amount: Decimal, card: Card) -> CardOutcome: ...

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, CardOutcome]:
        """The card charge a 3-D Secure return completes: its invoice id and outcome."""
        ...


class PaymentProvider(QrProvider, CardProvider, Protocol):
    """One provider for both (the sandbox)."""


@dataclass(frozen=True)
class Providers:
    qr: QrProvider
    card: CardProvider | None = None

    @classmethod
    def one(cls, provider: PaymentProvider) -> Providers:
        return cls(provider, provider)

    def cards(self) -> CardProvider:
        if self.card is None:
            raise CardsOff
        return self.card

    def named(self, name: str) -> Provider:
        """The provider an invoice was issued with (its row's ``provider``).

        Raises:
            ProviderError: none configured by that name now.
        """
        for provider in (self.qr, self.card):
            if provider is not None and provider.name == name:
                return provider
        raise ProviderError(f"the provider {name!r} is not configured")
