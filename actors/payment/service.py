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
    CardProvider,
    CardsOff,
    InvoiceStatus,
    ProviderError,
)
from actors.runtime import ActorRef, ActorUnavailable, ChildRetired, Supervisor
from cpms.kernel.errors import Forbidden, NotFound, PaymentRefused, Unavailable
from cpms.kernel.payments import Card, PaymentState, app_status
from storage import Row, clients
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
        self, client_id: UUID, amount: Decimal, method: str, provider: str, **extra: Any
    ) -> Row:
        """A new invoice's row, for an active client.

        Raises:
            NotFound: no such client; Forbidden: the client may not top up.
        """
        now = self.deps.clock()
        expires = now + timedelta(seconds=self.deps.lifetime_s)
        row = await payments_store.create(
            self.deps.db,
            client_id=client_id,
            provider=provider,
            method=method,
            amount=amount,
            issued_at=now,
            expires_at=expires,
            qr_expires_at=expires if method == "qr" else None,  # the QR lives as long
            **extra,
        )
        if row is None:  # why not: a second look, on the refusal only
            client = await clients.get_client(self.deps.db, client_id)
            raise Forbidden(f"client is {client['status']}", code=f"client_{client['status']}")
        return row

    async def topup_qr(
        self, client_id: UUID, amount: Decimal, description: str | None
    ) -> dict[str, Any]:
        qr_provider = self.deps.providers.qr
        row = await self._new_invoice(
            client_id, amount, "qr", qr_provider.name, description=description
        )
        invoice, expires = row["id"], row["expires_at"]
        try:
            qr = await qr_provider.create_qr(invoice, amount, expires, description)
        except ProviderError as error:
            raise await self._unreachable(row, "not_issued", error) from None
        await self._tell(invoice, Issue(qr.provider_ref, qr.qr_data), row=row)
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
        as credited. A decline is raised as :class:`PaymentRefused`.

        Raises:
            Unavailable: ``card_not_available``, no card provider is configured.
        """
        cards = self._cards()
        row = await self._new_invoice(
            client_id, amount, "card", cards.name, description=description, card_mask=card.mask
        )
        invoice = row["id"]
        try:
            outcome = await cards.charge_card(invoice, amount, card)
        except ProviderError as error:
            raise await self._unreachable(row, "not_charged", error) from None
        return invoice, outcome, await self._outcome(invoice, outcome, row)

    async def _unreachable(self, row: Row, reason: str, error: ProviderError) -> Unavailable:
        """The provider could not take a new invoice: it is canceled (nothing was paid), and the
        caller is told to try again later."""
        log.warning("provider unreachable", invoice=row["id"], reason=reason, error=str(error))
        await self.provider_said(row["id"], InvoiceStatus("canceled"), reason=reason, row=row)
        return Unavailable("the payment provider is unavailable", code="payment_unavailable")

    async def finish_3ds(self, md: str, pa_res: str) -> tuple[str, PaymentView | None]:
        try:
            invoice, outcome = await self._cards().finish_3ds(md, pa_res)
        except ProviderError as error:  # the payer may send the bank's return again
            log.warning("3-D Secure return not completed", error=str(error))
            raise Unavailable(
                "the payment provider is unavailable", code="payment_unavailable"
            ) from None
        if not invoice:
            raise NotFound(
                "no card payment waits for this 3-D Secure return", code="payment_not_found"
            )
        return invoice, await self._outcome(invoice, outcome)

    def _cards(self) -> CardProvider:
        try:
            return self.deps.providers.cards()
        except CardsOff:
            raise Unavailable(
                "card payments are not available; top up by QR", code="card_not_available"
            ) from None

    async def _outcome(
        self, invoice: str, outcome: CardOutcome, row: Row | None = None
    ) -> PaymentView | None:
        match outcome:
            case CardApproved(tx, amount):
                approved = InvoiceStatus("approved", tx, amount)
                return await self.provider_said(invoice, approved, row=row)
            case CardDeclined(code, message):
                declined = InvoiceStatus("canceled")
                await self.provider_said(invoice, declined, reason=code, row=row)
                raise PaymentRefused(message, code=code)
            case _:  # 3-D Secure: the payer is sent to the bank, the invoice waits
                await self._tell(invoice, Issue(), row=row)
                return None

    # -- news from the provider ---------------------------------------------------------------

    async def provider_said(
        self,
        invoice: str,
        status: InvoiceStatus,
        *,
        reason: str = "provider",
        row: Row | None = None,
    ) -> PaymentView:
        """Take what the provider says of ``invoice`` to its actor (one is started when none
        runs: an approval after the invoice ended is credited all the same). ``row``: the
        invoice as just written, when it is new."""
        return await self._tell(invoice, ProviderSaid(status, reason), row=row)

    async def _tell(
        self, invoice: str, message: Issue | ProviderSaid, *, row: Row | None = None
    ) -> PaymentView:
        for _ in range(3):  # the actor may end between the lookup and the ask
            ref = self._actor(invoice, row)
            with contextlib.suppress(ActorUnavailable):
                return await ref.ask(message, timeout=CARD_WAIT)
            row = None  # read afresh by the next actor
        raise Unavailable("the payment could not be handled; retry", code="payment_busy")

    def _actor(self, invoice: str, row: Row | None) -> ActorRef[PaymentMsg]:
        registry = self.deps.registry
        found: ActorRef[PaymentMsg] | None = registry.lookup(PAYMENT, invoice)
        if found is not None:
            return found
        try:
            return self.supervisor.start_child_soon(payment_spec(invoice, self.deps, row=row))
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
