"""A top-up invoice's life, pure: ``decide(invoice, event, now) -> Step(invoice, effects)``.

    created ─issued─▶ pending ─approved─▶ approved
       │                 │ canceled / declined / expired (polled every 15 s for its 5 min)
       ▼                 ▼
    expired          canceled / expired ─approved (late)─▶ approved

The facts come from the provider (its webhook, an answer to a poll, a card's 3-D Secure
return) and from the clock. An approval is credited whatever state it finds, once: after a
cancel or past expiry too (the money has been taken from the payer), never twice (the ledger's
idempotency key carries the provider's transaction id, and ``credited`` is kept). The table
lists every (state, event) pair; a pair it ignores is a duplicate or news that no longer matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from cpms.kernel.payments import POLL_EVERY_S, PaymentState

S = PaymentState


class Effect(StrEnum):
    POLL = "poll"  # ask the provider where the invoice stands
    CREDIT = "credit"  # the approved amount into the wallet (once)
    PERSIST = "persist"  # the row, and a line of the audit log


@dataclass(frozen=True, slots=True)
class Invoice:
    state: PaymentState
    amount: Decimal
    expires_at: datetime
    checks: int = 0
    next_check_at: datetime | None = None
    credited: bool = False
    provider_tx: str | None = None
    paid_amount: Decimal | None = None
    #: seconds between polls (the seeds' 15; shorter in tests)
    poll_every: float = POLL_EVERY_S


@dataclass(frozen=True, slots=True)
class Issued:
    """The provider took the invoice (a QR code to pay, a card charge under way)."""


@dataclass(frozen=True, slots=True)
class Approved:
    transaction_id: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Canceled:
    """The payer or the provider canceled, or the card was declined."""

    reason: str


@dataclass(frozen=True, slots=True)
class StillPending:
    """A poll found the invoice unpaid."""


@dataclass(frozen=True, slots=True)
class PollFailed:
    """The provider could not be asked (unreachable, or an answer that made no sense)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """The actor woke: a poll may be due, or the invoice's time up."""


@dataclass(frozen=True, slots=True)
class Credited:
    """The ledger holds the approval's credit."""


Event = Issued | Approved | Canceled | StillPending | PollFailed | Tick | Credited
EVENTS: tuple[type[Event], ...] = (
    Issued,
    Approved,
    Canceled,
    StillPending,
    PollFailed,
    Tick,
    Credited,
)


@dataclass(frozen=True, slots=True)
class Step:
    invoice: Invoice
    effects: tuple[Effect, ...] = ()


Rule = Callable[[Invoice, Event, datetime], Step]
_KEEP = (Effect.PERSIST,)


def _ignore(inv: Invoice, event: Event, now: datetime) -> Step:
    return Step(inv)


def _issued(inv: Invoice, event: Event, now: datetime) -> Step:
    first = now + timedelta(seconds=inv.poll_every)
    return Step(replace(inv, state=S.PENDING, next_check_at=first), _KEEP)


def _approved(inv: Invoice, event: Event, now: datetime) -> Step:
    assert isinstance(event, Approved)
    approved = replace(
        inv,
        state=S.APPROVED,
        provider_tx=event.transaction_id,
        paid_amount=event.amount,
        next_check_at=None,
    )
    return Step(approved, (Effect.CREDIT, Effect.PERSIST))  # the row says credited


def _approved_again(inv: Invoice, event: Event, now: datetime) -> Step:
    """A duplicate approval: nothing new, but a credit that has not happened is tried again."""
    return Step(inv, () if inv.credited else (Effect.CREDIT, Effect.PERSIST))


def _canceled(inv: Invoice, event: Event, now: datetime) -> Step:
    return Step(replace(inv, state=S.CANCELED, next_check_at=None), _KEEP)


def _expire(inv: Invoice) -> Step:
    return Step(replace(inv, state=S.EXPIRED, next_check_at=None), _KEEP)


def _still_pending(inv: Invoice, event: Event, now: datetime) -> Step:
    """Unpaid, or the provider could not say: past its time the invoice expires (a payment the
    provider reports later is credited all the same); before, the next poll will tell."""
    return _expire(inv) if now >= inv.expires_at else Step(inv)


def _tick(inv: Invoice, event: Event, now: datetime) -> Step:
    """Created: expire when its time is up. Pending: poll when a check is due, and once more
    when its time is up (the answer expires it, or credits it). Polls are not written down:
    after a restart the schedule starts again, and the expiry is the row's."""
    if inv.state is S.CREATED:
        return _expire(inv) if now >= inv.expires_at else Step(inv)
    due = inv.next_check_at is None or now >= inv.next_check_at or now >= inv.expires_at
    if not due:
        return Step(inv)
    polled = replace(
        inv, checks=inv.checks + 1, next_check_at=now + timedelta(seconds=inv.poll_every)
    )
    return Step(polled, (Effect.POLL,))


def _credited(inv: Invoice, event: Event, now: datetime) -> Step:
    return Step(replace(inv, credited=True))


TABLE: dict[tuple[PaymentState, type[Event]], Rule] = {
    (S.CREATED, Issued): _issued,
    (S.CREATED, Approved): _approved,
    (S.CREATED, Canceled): _canceled,
    (S.CREATED, PollFailed): _ignore,
    (S.CREATED, StillPending): _ignore,
    (S.CREATED, Tick): _tick,
    (S.CREATED, Credited): _ignore,
    (S.PENDING, Issued): _ignore,
    (S.PENDING, Approved): _approved,
    (S.PENDING, Canceled): _canceled,
    (S.PENDING, PollFailed): _still_pending,
    (S.PENDING, StillPending): _still_pending,
    (S.PENDING, Tick): _tick,
    (S.PENDING, Credited): _ignore,
    (S.APPROVED, Issued): _ignore,
    (S.APPROVED, Approved): _approved_again,
    (S.APPROVED, Canceled): _ignore,  # the approval stands: the money was taken
    (S.APPROVED, PollFailed): _ignore,
    (S.APPROVED, StillPending): _ignore,
    (S.APPROVED, Tick): _ignore,
    (S.APPROVED, Credited): _credited,
    (S.CANCELED, Issued): _ignore,
    (S.CANCELED, Approved): _approved,  # late: credited all the same
    (S.CANCELED, Canceled): _ignore,
    (S.CANCELED, PollFailed): _ignore,
    (S.CANCELED, StillPending): _ignore,
    (S.CANCELED, Tick): _ignore,
    (S.CANCELED, Credited): _ignore,
    (S.EXPIRED, Issued): _ignore,
    (S.EXPIRED, Approved): _approved,  # late: credited all the same
    (S.EXPIRED, Canceled): _ignore,
    (S.EXPIRED, PollFailed): _ignore,
    (S.EXPIRED, StillPending): _ignore,
    (S.EXPIRED, Tick): _ignore,
    (S.EXPIRED, Credited): _ignore,
}


def decide(invoice: Invoice, event: Event, now: datetime) -> Step:
    return TABLE[(invoice.state, type(event))](invoice, event, now)


def next_wake(invoice: Invoice) -> datetime | None:
    """When the actor must wake without a message (None: only news from the provider)."""
    if invoice.state is S.CREATED:
        return invoice.expires_at
    if invoice.state is not S.PENDING:
        return None
    if invoice.next_check_at is None:
        return invoice.expires_at
    return min(invoice.next_check_at, invoice.expires_at)
