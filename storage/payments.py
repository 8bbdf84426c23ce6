"""Top-up invoices as their PaymentActors keep them, and the payment audit log (who, how much,
which invoice and provider, what became of it: never card data)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from cpms.kernel.payments import OPEN_PAYMENT, PaymentState, app_status
from storage.database import Database, Row

_OPEN = [s.value for s in OPEN_PAYMENT]


async def next_number(db: Database) -> int:
    return int(await db.fetchval("SELECT nextval('invoice_number_seq')"))


async def create(
    db: Database,
    invoice_id: str,
    *,
    client_id: UUID,
    provider: str,
    method: str,
    amount: Decimal,
    description: str | None,
    expires_at: datetime,
    qr_expires_at: datetime | None = None,
    card_mask: str | None = None,
) -> None:
    await db.execute(
        """INSERT INTO invoices (id, client_id, provider, method, amount, description, expires_at,
                                 qr_expires_at, card_mask)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        invoice_id,
        client_id,
        provider,
        method,
        amount,
        description,
        expires_at,
        qr_expires_at,
        card_mask,
    )


async def issued(
    db: Database, invoice_id: str, provider_ref: str, qr_data: str, qr_expires_at: datetime
) -> None:
    """The provider took the QR invoice: its reference, and what the QR code encodes."""
    await db.execute(
        """UPDATE invoices SET provider_ref = $2, qr_data = $3, qr_expires_at = $4,
                  updated_at = now()
           WHERE id = $1""",
        invoice_id,
        provider_ref,
        qr_data,
        qr_expires_at,
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
    provider_ref: str | None,
    provider_tx: str | None,
    paid_amount: Decimal | None,
    paid_at: datetime | None,
    qr_data: str | None,
) -> None:
    """The invoice as its actor holds it now (the app's status follows the state)."""
    await db.execute(
        """UPDATE invoices
           SET state = $2, status = $3, checks = $4, next_check_at = $5,
               provider_ref = coalesce($6, provider_ref), provider_tx = coalesce($7, provider_tx),
               paid_amount = coalesce($8, paid_amount), paid_at = coalesce($9, paid_at),
               qr_data = coalesce($10, qr_data), updated_at = now()
           WHERE id = $1""",
        invoice_id,
        state.value,
        app_status(state),
        checks,
        next_check_at,
        provider_ref,
        provider_tx,
        paid_amount,
        paid_at,
        qr_data,
    )


async def mark_credited(db: Database, invoice_id: str, error: str | None = None) -> None:
    """The approval credited (or, with ``error``, refused by the ledger: for an operator)."""
    await db.execute(
        """UPDATE invoices SET credited = ($2::text IS NULL),
                  credited_at = CASE WHEN $2::text IS NULL THEN now() END,
                  credit_error = $2, updated_at = now()
           WHERE id = $1""",
        invoice_id,
        error,
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
