"""Top-ups: an invoice's states and what the app is told of them, the amounts a top-up may have,
the form of invoice ids, and a payment card as the door reads it (checked, and never shown but
masked)."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from cpms.kernel.errors import InvalidRequest

TOPUP_MIN = Decimal("10")
TOPUP_MAX = Decimal("100000")
#: a QR code and its invoice are payable this long
INVOICE_LIFETIME_S = 300
#: a pending invoice is asked about this often, this many times
POLL_EVERY_S = 15
POLL_TIMES = 20


class PaymentState(StrEnum):
    CREATED = "created"  # ours; the provider has not confirmed it yet
    PENDING = "pending"  # the provider waits for the payer
    APPROVED = "approved"
    CANCELED = "canceled"
    EXPIRED = "expired"


OPEN_PAYMENT = frozenset({PaymentState.CREATED, PaymentState.PENDING})


def app_status(state: PaymentState) -> int:
    """What ``GET /payment/status`` says: 0 processing, 1 approved, 2 canceled (or expired)."""
    if state is PaymentState.APPROVED:
        return 1
    return 0 if state in OPEN_PAYMENT else 2


#: an invoice's id: the day it was issued and its number (the last six digits)
INVOICE_ID = re.compile(r"INV-\d{8}-\d{6}")

_PAN = re.compile(r"\d{13,19}")
_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/(\d{2})")
_CVV = re.compile(r"\d{3}")
_HOLDER = re.compile(r"[A-Za-z][A-Za-z .'-]{0,49}")


class Card:
    """A payment card as given at the door: checked once, held only in memory for the one call
    to the provider, shown only as :attr:`mask` (its repr too, so it can't leak into a log or
    an exception)."""

    __slots__ = ("_cvv", "_holder", "_pan", "expiry")

    def __init__(self, pan: str, holder: str, expiry: str, cvv: str, *, today: date) -> None:
        """Raises:
        InvalidRequest: ``card_invalid`` (number, holder, expiry, or expired) or ``invalid_cvv``.
        """
        digits = pan.replace(" ", "")
        if not _PAN.fullmatch(digits):  # no Luhn check: the seeds' own test cards fail it
            raise InvalidRequest("the card number is not valid", code="card_invalid")
        if not _HOLDER.fullmatch(holder.strip()):
            raise InvalidRequest("the card holder must be in Latin letters", code="card_invalid")
        found = _EXPIRY.fullmatch(expiry.strip())
        if found is None:
            raise InvalidRequest("the card expiry must be MM/YY", code="card_invalid")
        month, year = int(found.group(1)), 2000 + int(found.group(2))
        if (year, month) < (today.year, today.month):
            raise InvalidRequest("the card has expired", code="card_invalid")
        if not _CVV.fullmatch(cvv.strip()):
            raise InvalidRequest("the CVV must be three digits", code="invalid_cvv")
        self._pan, self._holder, self._cvv = digits, holder.strip().upper(), cvv.strip()
        self.expiry = f"{month:02d}/{year % 100:02d}"

    @property
    def mask(self) -> str:
        return f"{self._pan[:6]}{'*' * (len(self._pan) - 10)}{self._pan[-4:]}"

    def reveal(self) -> tuple[str, str, str]:
        """Number, holder and CVV, for the one request that sends them to the provider."""
        return self._pan, self._holder, self._cvv

    def __repr__(self) -> str:
        return f"Card({self.mask})"


def expired(expires_at: datetime, now: datetime) -> bool:
    return now >= expires_at


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What a provider sends in ``X-Webhook-Signature`` with ``body`` at ``timestamp``: the hex
    HMAC-SHA256 of ``"<timestamp>.<body>"`` with the shared secret."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


_TYIYN = Decimal("0.01")


def to_tyiyn(amount: Decimal) -> int:
    """Som as the providers count them: whole tyiyn (hundredths)."""
    return int((amount / _TYIYN).to_integral_exact())


def from_tyiyn(tyiyn: int) -> Decimal:
    return (Decimal(tyiyn) * _TYIYN).quantize(_TYIYN)


#: the sandbox's test cards by their last four digits (the seeds' cards): approved, asks for
#: 3-D Secure, declined for want of funds; any other card is declined as blocked
SANDBOX_CARDS = {"5678": "approve", "4321": "3ds", "1111": "insufficient_funds"}


def sandbox_card(last4: str) -> str:
    """What the sandbox does with a card: approve, 3ds, insufficient_funds or card_blocked."""
    return SANDBOX_CARDS.get(last4, "card_blocked")
