"""The door to top-ups for the REST facade: issue a QR invoice, charge a card (perhaps through
3-D Secure), take what the provider says of an invoice to its PaymentActor (starting one when
none runs: late news too), answer an invoice's status to its owner, and bring back every open
invoice's actor when the server starts."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import structlog

from actors.payment.actor import (
    PAYMENT,
    Issue,
    PaymentDeps,
    PaymentMsg,
    PaymentView,
    ProviderSaid,
    payment_spec,
)
from actors.payment.provider import (
    CardApproved,
    CardDeclined,
    CardOutcome,
    InvoiceStatus,
    ProviderError,
)
from actors.runtime import ActorRef, ActorUnavailable, ChildRetired, Supervisor
from cpms.kernel.errors import Forbidden, NotFound, PaymentRefused, Unavailable
from cpms.kernel.payments import (
    INVOICE_LIFETIME_S,
    Card,
    PaymentState,
    app_status,
    invoice_id,
)
from storage import clients
from storage import payments as payments_store

log = structlog.stdlib.get_logger("actors.payment")

#: how long a card top-up waits for its credit before answering with where it stands
CARD_WAIT = 30.0


@dataclass(frozen=True)
class Payments:
    supervisor: Supervisor
    deps: PaymentDeps

    # -- issuing ------------------------------------------------------------------------------

    async def _new_invoice(
        self, client_id: UUID, amount: Decimal, method: str, **extra: Any
    ) -> tuple[str, Any]:
        """A new invoice row for an active client: its id and expiry.

        Raises:
            NotFound: no such client; Forbidden: the client may not top up.
        """
        client = await clients.get_client(self.deps.db, client_id)
        if client["status"] != "active":
            raise Forbidden(f"client is {client['status']}", code=f"client_{client['status']}")
        now = self.deps.clock()
        number = await payments_store.next_number(self.deps.db)
        invoice = invoice_id(now.date(), number)
        expires = now + timedelta(seconds=INVOICE_LIFETIME_S)
        await payments_store.create(
            self.deps.db,
            invoice,
            client_id=client_id,
            provider=self.deps.provider.name,
            method=method,
            amount=amount,
            expires_at=expires,
            **extra,
        )
        return invoice, expires

    async def topup_qr(
        self, client_id: UUID, amount: Decimal, description: str | None
    ) -> dict[str, Any]:
        invoice, expires = await self._new_invoice(
            client_id, amount, "qr", description=description, qr_expires_at=None
        )
        try:
            qr = await self.deps.provider.create_qr(invoice, amount, expires, description)
        except ProviderError as error:
            log.warning("invoice not issued", invoice=invoice, error=str(error))
            await self.provider_said(invoice, InvoiceStatus("canceled"), reason="not_issued")
            raise Unavailable(
                "the payment provider is unavailable", code="payment_unavailable"
            ) from None
        await payments_store.issued(self.deps.db, invoice, qr.provider_ref, qr.qr_data, expires)
        await self._tell(invoice, Issue())
        await payments_store.audit(
            self.deps.db,
            "issued",
            invoice_id=invoice,
            client_id=client_id,
            provider=self.deps.provider.name,
            method="qr",
            amount=str(amount),
        )
        return {
            "invoice_id": invoice,
            "qr_data": qr.qr_data,
            "qr_code_url": qr.qr_url,
            "app_link": qr.app_link,
            "amount": amount,
            "qr_expires_at": expires,
            "invoice_expires_at": expires,
        }

    async def topup_card(
        self, client_id: UUID, amount: Decimal, card: Card, description: str | None
    ) -> tuple[str, CardOutcome, PaymentView | None]:
        """Charge ``card``; the invoice id, the provider's outcome, and (approved) the payment
        as credited. A decline is raised as :class:`PaymentRefused`."""
        invoice, _ = await self._new_invoice(
            client_id, amount, "card", description=description, card_mask=card.mask
        )
        await payments_store.audit(
            self.deps.db,
            "card_charge",
            invoice_id=invoice,
            client_id=client_id,
            provider=self.deps.provider.name,
            card=card.mask,
            amount=str(amount),
        )
        try:
            outcome = await self.deps.provider.charge_card(invoice, amount, card)
        except ProviderError as error:
            log.warning("card not charged", invoice=invoice, error=str(error))
            await self.provider_said(invoice, InvoiceStatus("canceled"), reason="not_charged")
            raise Unavailable(
                "the payment provider is unavailable", code="payment_unavailable"
            ) from None
        return invoice, outcome, await self._outcome(invoice, outcome)

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, PaymentView | None]:
        invoice, outcome = await self.deps.provider.finish_3ds(md, pa_res)
        if not invoice:
            raise NotFound(
                "no card payment waits for this 3-D Secure return", code="payment_not_found"
            )
        return invoice, await self._outcome(invoice, outcome)

    async def _outcome(self, invoice: str, outcome: CardOutcome) -> PaymentView | None:
        match outcome:
            case CardApproved(tx, amount):
                return await self.provider_said(invoice, InvoiceStatus("approved", tx, amount))
            case CardDeclined(code, message):
                await self.provider_said(invoice, InvoiceStatus("canceled"), reason=code)
                raise PaymentRefused(message, code=code)
            case _:  # 3-D Secure: the payer is sent to the bank, the invoice waits
                await self._tell(invoice, Issue())
                return None

    # -- news from the provider ---------------------------------------------------------------

    async def provider_said(
        self, invoice: str, status: InvoiceStatus, *, reason: str = "provider"
    ) -> PaymentView:
        """Take what the provider says of ``invoice`` to its actor (one is started when none
        runs: an approval after the invoice ended is credited all the same)."""
        return await self._tell(invoice, ProviderSaid(status, reason))

    async def _tell(self, invoice: str, message: Issue | ProviderSaid) -> PaymentView:
        for _ in range(3):  # the actor may end between the lookup and the ask
            ref = self._actor(invoice)
            with contextlib.suppress(ActorUnavailable):
                return await ref.ask(message, timeout=CARD_WAIT)
        raise Unavailable("the payment could not be handled; retry", code="payment_busy")

    def _actor(self, invoice: str) -> ActorRef[PaymentMsg]:
        registry = self.deps.registry
        found: ActorRef[PaymentMsg] | None = registry.lookup(PAYMENT, invoice)
        if found is not None:
            return found
        try:
            return self.supervisor.start_child_soon(payment_spec(invoice, self.deps))
        except ValueError:  # started by a concurrent message a moment ago
            again: ActorRef[PaymentMsg] = registry.get(PAYMENT, invoice)
            return again

    # -- reads ----------------------------------------------------------------------------------

    async def status(self, invoice: str, client_id: UUID) -> dict[str, Any]:
        row = await payments_store.get(self.deps.db, invoice)
        if row is None:
            raise NotFound(f"payment {invoice} not found", code="payment_not_found")
        if row["client_id"] != client_id:
            raise Forbidden("this payment belongs to another client")
        state = PaymentState(row["state"])
        return {
            "invoice_id": invoice,
            "status": app_status(state),
            "status_text": state.value,
            "amount": row["amount"],
            "paid_amount": row["paid_amount"],
            "can_start_charging": state is PaymentState.APPROVED and row["credited"],
        }

    async def recover(self) -> int:
        """Start an actor for every open invoice, and for every approval not yet credited."""
        rows = [
            *await payments_store.open_invoices(self.deps.db),
            *await payments_store.uncredited_approvals(self.deps.db),
        ]
        for row in rows:
            with contextlib.suppress(ChildRetired, ValueError):
                self.supervisor.start_child_soon(payment_spec(row["id"], self.deps))
        return len(rows)
