"""PaymentActor: one supervised actor per open top-up invoice (``payment:<invoice id>``).

It feeds what the provider says (its webhook, a 3-D Secure return, the answer to a poll) and its
own wake-ups to the pure machine (:mod:`actors.payment.machine`) and performs what comes back:
the row, the audit log, a poll, the credit. The credit goes through the StorageActor with the
provider's transaction id in its idempotency key, so an approval told twice, or told again after
a crash between the credit and the row, is credited once. A pending invoice is polled every
15 s for its 5 minutes; its actor ends a minute after the invoice is settled (the same news
often comes twice), and news that comes later (an approval after expiry or a cancel) starts a
new one, which credits it. An approval of another amount than the invoice's is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import structlog
import trio

from actors.ledger import Ledger
from actors.payment import machine as pm
from actors.payment.provider import InvoiceStatus, ProviderError, Providers
from actors.runtime import Address, ChildSpec, Envelope, Mailbox, Registry, Restart
from cpms.kernel.errors import CpmsError, InvalidRequest, NotFound
from cpms.kernel.events import EventBus, PaymentConfirmed
from cpms.kernel.messages import Request
from cpms.kernel.payments import INVOICE_LIFETIME_S, OPEN_PAYMENT, POLL_EVERY_S, PaymentState
from storage import Database, Row
from storage import payments as payments_store
from storage.payments import InvoiceApproval

PAYMENT = "payment"
#: how long an ended invoice's actor waits for more news (a duplicate) before it goes
LINGER_S = 60.0
log = structlog.stdlib.get_logger("actors.payment")


@dataclass(frozen=True, slots=True)
class PaymentView:
    invoice_id: str
    state: PaymentState
    amount: Decimal
    credited: bool
    #: the wallet's balance after this payment's credit (None: not credited here)
    balance: Decimal | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class Issue(Request[PaymentView]):
    """The provider took the invoice (its reference, and what its QR code encodes): wait for
    the payer, polling."""

    provider_ref: str | None = None
    qr_data: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderSaid(Request[PaymentView]):
    """What the provider says of the invoice; answered once it is acted on (credited, for an
    approval)."""

    status: InvoiceStatus
    reason: str = "provider"


PaymentMsg = Issue | ProviderSaid


@dataclass(frozen=True)
class PaymentDeps:
    db: Database
    ledger: Ledger
    registry: Registry
    providers: Providers
    clock: Callable[[], datetime]
    #: how long a new invoice (and its QR code) is payable, and how often it is polled
    lifetime_s: float = INVOICE_LIFETIME_S
    poll_every_s: float = POLL_EVERY_S
    #: where a credited top-up is announced (the driver's push notification)
    bus: EventBus | None = None


def _event(status: InvoiceStatus, amount: Decimal, reason: str) -> pm.Event:
    if status.state == "approved":
        return pm.Approved(status.transaction_id or "", status.amount or amount)
    if status.state == "canceled":
        return pm.Canceled(reason)
    return pm.StillPending()


class _PaymentActor:
    def __init__(self, deps: PaymentDeps, row: Row) -> None:
        self.deps = deps
        self.invoice_id: str = row["id"]
        self.client_id: UUID = row["client_id"]
        self.provider: str = row["provider"]
        self.balance: Decimal | None = None
        self.credit_error: str | None = row["credit_error"]
        self.issued: Issue | None = None
        self.inv = pm.Invoice(
            state=PaymentState(row["state"]),
            amount=row["amount"],
            expires_at=row["expires_at"],
            checks=row["checks"],
            next_check_at=row["next_check_at"],
            credited=row["credited"] or row["credit_error"] is not None,
            provider_tx=row["provider_tx"],
            paid_amount=row["paid_amount"],
            poll_every=deps.poll_every_s,
        )

    def view(self) -> PaymentView:
        inv = self.inv
        return PaymentView(
            self.invoice_id, inv.state, inv.amount, inv.credited, self.balance, inv.provider_tx
        )

    async def apply(self, event: pm.Event) -> None:
        step = pm.decide(self.inv, event, self.deps.clock())
        before, self.inv = self.inv, step.invoice
        written = False  # the credit wrote the row (approved, credited) in its transaction
        for effect in step.effects:
            if effect is pm.Effect.PERSIST:
                if not written:
                    await self.persist(before.state, event)
            elif effect is pm.Effect.POLL:
                await self.poll()
            else:
                written = await self.credit(self.audit(before.state, event))

    def audit(self, was: PaymentState, event: pm.Event) -> dict[str, Any]:
        """A line of the audit log: who, how much, what became of it, and why."""
        inv = self.inv
        late = was in (PaymentState.CANCELED, PaymentState.EXPIRED)
        if late and inv.state is PaymentState.APPROVED:
            log.warning("approval after the invoice ended", invoice=self.invoice_id, was=was)
        return {
            "provider": self.provider,
            "amount": str(inv.paid_amount or inv.amount),
            "was": was.value,
            "late": late,
            "reason": getattr(event, "reason", None),
            "credit_refused": self.credit_error,
        }

    async def persist(self, was: PaymentState, event: pm.Event) -> None:
        """The row, with a line of the audit log."""
        inv = self.inv
        audit = self.audit(was, event)
        issued = self.issued
        await payments_store.save(
            self.deps.db,
            self.invoice_id,
            state=inv.state,
            checks=inv.checks,
            next_check_at=inv.next_check_at,
            provider_tx=inv.provider_tx,
            paid_amount=inv.paid_amount,
            paid_at=self.deps.clock() if inv.state is PaymentState.APPROVED else None,
            credited=inv.credited and self.credit_error is None,
            credit_error=self.credit_error,
            provider_ref=None if issued is None else issued.provider_ref,
            qr_data=None if issued is None else issued.qr_data,
            audit=audit,
        )

    async def poll(self) -> None:
        try:
            status = await self.deps.providers.named(self.provider).status(self.invoice_id)
        except ProviderError as error:  # asked again at the next check, if there is one
            log.warning("payment poll failed", invoice=self.invoice_id, error=str(error))
            await self.apply(pm.PollFailed())
            return
        await self.apply(_event(status, self.inv.amount, "poll"))

    async def credit(self, audit: dict[str, Any]) -> bool:
        """Credit the approval, the invoice's row written approved and credited in the same
        transaction (True); False when the row is still to be written (the credit was refused,
        or was made before and is only answered again)."""
        inv = self.inv
        assert inv.provider_tx is not None
        amount = inv.paid_amount or inv.amount
        try:
            result = await self.deps.ledger.credit(
                self.client_id,
                amount,
                key=f"topup:{self.provider}:{inv.provider_tx}",
                entry_type="topup",
                invoice_id=self.invoice_id,
                description=f"top-up {self.invoice_id}",
                approval=InvoiceApproval(self.invoice_id, inv.provider_tx, amount, audit),
            )
        except CpmsError as refusal:  # the ledger refuses (a blocked client): for an operator
            log.warning("top-up not credited", invoice=self.invoice_id, why=refusal.code)
            self.credit_error = refusal.code
            self.inv = replace(self.inv, credited=True)  # nothing more to try: the row says why
            return False
        self.balance = result.balance
        await self.apply(pm.Credited())
        if not result.replayed and self.deps.bus is not None:
            self.deps.bus.publish(
                PaymentConfirmed(str(self.client_id), self.invoice_id, amount, result.balance)
            )
        return not result.replayed

    def next_timer(self) -> float:
        wake = pm.next_wake(self.inv)
        if wake is None:
            return float("inf")
        wait = (wake - self.deps.clock()).total_seconds()
        return trio.current_time() + max(0.0, wait)

    @property
    def done(self) -> bool:
        """Nothing left to do until the provider says something new."""
        return self.inv.state not in OPEN_PAYMENT and (
            self.inv.credited or self.inv.state is not PaymentState.APPROVED
        )


async def run_payment(
    mailbox: Mailbox[PaymentMsg],
    *,
    invoice_id: str,
    deps: PaymentDeps,
    preloaded: list[Row] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if preloaded:  # a new invoice's first start; a restart reads the row afresh
        row: Row | None = preloaded.pop()
    else:
        row = await payments_store.get(deps.db, invoice_id)
    task_status.started()
    if row is None:  # no such invoice: whoever asked is told so
        missing = NotFound(f"payment {invoice_id} not found", code="payment_not_found")
        while True:
            try:
                mailbox.receive_nowait().fail(missing)
            except (trio.WouldBlock, trio.EndOfChannel):
                return
    actor = _PaymentActor(deps, row)
    if actor.inv.state is PaymentState.APPROVED and not actor.inv.credited:
        # approved before a crash, not yet credited: the ledger key makes this apply once
        inv = actor.inv
        await actor.apply(pm.Approved(inv.provider_tx or "", inv.paid_amount or inv.amount))
    while True:
        envelope: Envelope[PaymentMsg] | None = None
        deadline = actor.next_timer()
        if actor.done:  # the same news often comes twice: wait a while before going
            deadline = min(deadline, trio.current_time() + LINGER_S)
        with trio.move_on_at(deadline):
            try:
                envelope = await mailbox.receive()
            except trio.EndOfChannel:
                return
        if envelope is None and actor.done:
            return
        with trio.CancelScope(shield=True):
            if envelope is None:
                await actor.apply(pm.Tick())
                continue
            message = envelope.message
            if isinstance(message, Issue):
                actor.issued = message
                await actor.apply(pm.Issued())
            else:
                told = message.status.amount
                if message.status.state == "approved" and told not in (None, actor.inv.amount):
                    envelope.fail(
                        InvalidRequest(
                            f"the amount {told} is not the invoice's", code="amount_mismatch"
                        )
                    )
                    continue
                await actor.apply(_event(message.status, actor.inv.amount, message.reason))
            envelope.respond(actor.view())


def payment_spec(
    invoice_id: str, deps: PaymentDeps, *, row: Row | None = None
) -> ChildSpec[PaymentMsg]:
    """``row``: the invoice as just written (a new one), used for the first start only."""
    return ChildSpec(
        Address(PAYMENT, invoice_id),
        partial(
            run_payment,
            invoice_id=invoice_id,
            deps=deps,
            preloaded=None if row is None else [row],
        ),
        Restart.TRANSIENT,
        inbox=64,
    )
