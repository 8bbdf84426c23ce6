"""Top-up invoices as their PaymentActors keep them, and the payment audit log (who, how much,
which invoice and provider, what became of it: never card data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from cpms.kernel.payments import OPEN_PAYMENT, PaymentState, app_status
from storage.database import Database, Row

_OPEN = [s.value for s in OPEN_PAYMENT]


async def create(
    db: Database,
    *,
    client_id: UUID,
    provider: str,
    method: str,
    amount: Decimal,
    description: str | None,
    issued_at: datetime,
    expires_at: datetime,
    qr_expires_at: datetime | None = None,
    card_mask: str | None = None,
) -> Row | None:
    """A new invoice for an active client, numbered ``INV-YYYYMMDD-NNNNNN`` by the day it is
    issued; None (nothing written) when the client is missing or not active."""
    return await db.fetchrow(
        """INSERT INTO invoices (id, client_id, provider, method, amount, description, expires_at,
                                 qr_expires_at, card_mask)
           SELECT 'INV-' || to_char($2::timestamptz AT TIME ZONE 'UTC', 'YYYYMMDD') || '-'
                      || lpad((nextval('invoice_number_seq') % 1000000)::text, 6, '0'),
                  c.id, $3, $4, $5, $6, $7, $8, $9
           FROM clients c WHERE c.id = $1 AND c.status = 'active'
           RETURNING *""",
        client_id,
        issued_at,
        provider,
        method,
        amount,
        description,
        expires_at,
        qr_expires_at,
        card_mask,
    )


async def get(db: Database, invoice_id: str) -> Row | None:
    return await db.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice_id)


async def save(
    db: Database,
    invoice_id: str,
    *,
    state: PaymentState,
    checks: int,
    next_check_at: datetime | None,
    provider_tx: str | None,
    paid_amount: Decimal | None,
    paid_at: datetime | None,
    credited: bool,
    credit_error: str | None,
    provider_ref: str | None = None,
    qr_data: str | None = None,
    audit: dict[str, Any] | None = None,
) -> None:
    """The invoice as its actor holds it now (the app's status follows the state), and with
    ``audit`` a line of the audit log (its event is the state), in one statement."""
    await db.execute(
        """WITH saved AS (
               UPDATE invoices
               SET state = $2, status = $3, checks = $4, next_check_at = $5,
                   provider_tx = coalesce($6, provider_tx),
                   paid_amount = coalesce($7, paid_amount), paid_at = coalesce(paid_at, $8),
                   credited = $9, credit_error = $10,
                   credited_at = CASE WHEN $9 AND credited_at IS NULL THEN now()
                                      ELSE credited_at END,
                   provider_ref = coalesce($11, provider_ref), qr_data = coalesce($12, qr_data),
                   updated_at = now()
               WHERE id = $1
               RETURNING id, client_id)
           INSERT INTO payment_audit (invoice_id, client_id, event, data)
           SELECT id, client_id, $2, $13 FROM saved WHERE $13::jsonb IS NOT NULL""",
        invoice_id,
        state.value,
        app_status(state),
        checks,
        next_check_at,
        provider_tx,
        paid_amount,
        paid_at,
        credited,
        credit_error,
        provider_ref,
        qr_data,
        audit,
    )


async def open_invoices(db: Database) -> list[Row]:
    """Invoices still waiting for the payer (to resume their actors after a restart)."""
    return await db.fetch(
        "SELECT * FROM invoices WHERE state = ANY($1::text[]) ORDER BY created_at", _OPEN
    )


async def uncredited_approvals(db: Database) -> list[Row]:
    """Approved invoices whose credit did not happen (a crash between approval and credit)."""
    return await db.fetch(
        "SELECT * FROM invoices WHERE state = 'approved' AND NOT credited AND credit_error IS NULL"
    )


async def history(
    db: Database, client_id: UUID, *, limit: int, offset: int
) -> tuple[list[Row], int]:
    rows = await db.fetch(
        """SELECT id, provider, method, amount, state, status, paid_amount, card_mask,
                  created_at, paid_at, count(*) OVER () AS total
           FROM invoices WHERE client_id = $1
           ORDER BY created_at DESC LIMIT $2 OFFSET $3""",
        client_id,
        limit,
        offset,
    )
    return rows, (rows[0]["total"] if rows else 0)


async def listing(db: Database, *, state: str | None, limit: int) -> list[Row]:
    """The newest invoices, of one state or all (for operators)."""
    return await db.fetch(
        """SELECT * FROM invoices WHERE ($1::text IS NULL OR state = $1)
           ORDER BY created_at DESC LIMIT $2""",
        state,
        limit,
    )


async def audit(
    db: Database, event: str, *, invoice_id: str | None, client_id: UUID | None, **data: Any
) -> None:
    """One line of the payment audit log. ``data`` must never hold card data."""
    await db.execute(
        "INSERT INTO payment_audit (invoice_id, client_id, event, data) VALUES ($1, $2, $3, $4)",
        invoice_id,
        client_id,
        event,
        data,
    )


async def audit_of(db: Database, invoice_id: str) -> list[Row]:
    return await db.fetch(
        "SELECT event, data, created_at FROM payment_audit WHERE invoice_id = $1 ORDER BY id",
        invoice_id,
    )


async def record_refund(
    db: Database, invoice_id: str, *, number: int, amount: Decimal, audit: dict[str, Any]
) -> bool:
    """Refund ``number`` of the invoice is done: its amount counted, and a line of the audit
    log, in one statement. False: that refund was recorded already."""
    done = await db.fetchval(
        """WITH counted AS (
               UPDATE invoices
               SET refunded_amount = refunded_amount + $3, refunds = $2, updated_at = now()
               WHERE id = $1 AND refunds = $2 - 1
               RETURNING id, client_id)
           INSERT INTO payment_audit (invoice_id, client_id, event, data)
           SELECT id, client_id, 'refunded', $4 FROM counted
           RETURNING 1""",
        invoice_id,
        number,
        amount,
        audit,
    )
    return done is not None


@dataclass(frozen=True, slots=True)
class InvoiceApproval:
    """The row of an approved invoice, written by the ledger in the transaction that credits it
    (so a credit and the invoice that says credited are never apart): the provider's
    transaction, the amount paid, and the audit log's line."""

    invoice_id: str
    provider_tx: str
    amount: Decimal
    audit: dict[str, Any]


_APPROVAL_TYPES = ("text", "text", "numeric", "jsonb")


def approve_in_batch_sql(first: int) -> str:
    """An UPDATE of approved invoices from :func:`approval_arrays` given as parameters
    ``$first`` onwards, with their audit lines; returns nothing."""
    ids, txs, amounts, audits = (
        f"${first + n}::{kind}[]" for n, kind in enumerate(_APPROVAL_TYPES)
    )
    return f"""
    UPDATE invoices i
    SET state = 'approved', status = 1, next_check_at = NULL, provider_tx = a.tx,
        paid_amount = a.amount, paid_at = coalesce(i.paid_at, now()), credited = true,
        credit_error = NULL, credited_at = coalesce(i.credited_at, now()), updated_at = now()
    FROM unnest({ids}, {txs}, {amounts}) AS a(id, tx, amount)
    WHERE i.id = a.id
    RETURNING i.id, i.client_id
), approval_audit AS (
    INSERT INTO payment_audit (invoice_id, client_id, event, data)
    SELECT ap.id, ap.client_id, 'approved', d.data
    FROM approved ap JOIN unnest({ids}, {audits}) AS d(id, data) ON d.id = ap.id"""


def approval_arrays(approvals: list[InvoiceApproval]) -> list[list[Any]]:
    """The parameters of :func:`approve_in_batch_sql`."""
    return [
        [a.invoice_id for a in approvals],
        [a.provider_tx for a in approvals],
        [a.amount for a in approvals],
        [a.audit for a in approvals],
    ]
