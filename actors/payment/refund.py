"""Returning a top-up to the payer (an operator's decision: ``cpms payments refund``).

The wallet is debited first, through the StorageActor (a ``topup_refund`` entry naming the
invoice; a wallet that has spent the money can't be refunded from), then the provider returns
the money, then the invoice counts it. The refund's number is in both the ledger's idempotency
key and the provider's refund reference, so the same command run again after a crash or a
timeout finishes that refund instead of making a second one. A provider that refuses uses the
number up (written first) and puts the money back in the wallet (keyed too); a crash between
those two leaves the debit for an operator to see in the audit log (``failed``), never a
refund paid twice."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog

from actors.ledger import Ledger
from actors.payment.provider import ProviderError, Providers
from cpms.kernel.errors import Conflict, InvalidRequest, NotFound, Unavailable
from cpms.kernel.money import parse_amount
from cpms.kernel.payments import PaymentState
from storage import Database
from storage import payments as payments_store

log = structlog.stdlib.get_logger("actors.payment.refund")


@dataclass(frozen=True)
class Refunded:
    invoice_id: str
    amount: Decimal
    balance: Decimal
    refund_ref: str
    refunded_total: Decimal


async def refund_topup(
    db: Database,
    ledger: Ledger,
    providers: Providers,
    invoice_id: str,
    *,
    amount: Decimal | str | None,
    reason: str,
) -> Refunded:
    """Refund ``amount`` (None: all that is left) of a credited top-up.

    Raises:
        NotFound: no such invoice. Conflict: not a credited approval, or nothing left.
        InvalidRequest: an amount not positive, or more than is left.
        InsufficientBalance: the wallet no longer holds it.
        Unavailable: the provider refused or could not be reached (the wallet is restored).
    """
    row = await payments_store.get(db, invoice_id)
    if row is None:
        raise NotFound(f"payment {invoice_id} not found", code="payment_not_found")
    if row["state"] != PaymentState.APPROVED or not row["credited"] or not row["provider_tx"]:
        raise Conflict("only a credited top-up can be refunded", code="payment_not_refundable")
    left = (row["paid_amount"] or row["amount"]) - row["refunded_amount"]
    wanted = left if amount is None else parse_amount(amount)
    if left <= 0:
        raise Conflict("this top-up has been refunded in full", code="payment_refunded")
    if wanted > left:
        raise InvalidRequest(f"at most {left} is left to refund", code="refund_too_large")
    number = row["refunds"] + 1
    key = f"refund:{invoice_id}:{number}"
    debit = await ledger.adjust(
        row["client_id"],
        -wanted,
        key=key,
        reason=reason,
        entry_type="topup_refund",
        invoice_id=invoice_id,
    )
    try:
        provider = providers.named(row["provider"])
        ref = await provider.refund(row["provider_tx"], wanted, reference=key)
    except ProviderError as error:
        # the attempt's number is used up first: a run after this one is a new refund
        failed = {"amount": "0", "reason": reason, "failed": str(error), "key": key}
        await payments_store.record_refund(
            db, invoice_id, number=number, amount=Decimal(0), audit=failed
        )
        restored = await ledger.adjust(
            row["client_id"], wanted, key=f"{key}:undone", reason=f"refund failed: {error}"
        )
        log.warning("refund refused by the provider", invoice=invoice_id, error=str(error))
        raise Unavailable(
            f"the provider did not refund ({error}); the wallet holds {restored.balance} again",
            code="refund_failed",
        ) from None
    audit = {"amount": str(wanted), "reason": reason, "refund": ref, "provider": row["provider"]}
    await payments_store.record_refund(db, invoice_id, number=number, amount=wanted, audit=audit)
    log.info("top-up refunded", invoice=invoice_id, amount=str(wanted), refund=ref)
    return Refunded(invoice_id, wanted, debit.balance, ref, row["refunded_amount"] + wanted)
