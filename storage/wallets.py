"""Reads of wallets and their ledgers (writes go only through the StorageActor and
:mod:`storage.ledger_sql`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from cpms.kernel.errors import NotFound
from storage.database import Database, Row

#: The ledger entry types of charging.
CHARGE_TYPES = ("charge_reserve", "charge_refund", "charge_payment", "charge_debt")


async def balance(db: Database, client_id: UUID) -> Decimal | None:
    """The client's balance; None when there is no such client."""
    value = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client_id)
    return None if value is None else Decimal(value)


async def held(db: Database, client_id: UUID) -> Decimal:
    """Money currently on hold for the client's sessions."""
    value = await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM holds WHERE client_id = $1 AND status = 'held'",
        client_id,
    )
    return Decimal(value).quantize(Decimal("0.01"))


async def wallet(db: Database, client_id: UUID) -> tuple[Decimal, Decimal]:
    """The client's balance and what is on hold for it, in one read.

    Raises:
        NotFound: ``client_not_found``.
    """
    row = await db.fetchrow(
        """SELECT c.balance, (SELECT coalesce(sum(h.amount), 0) FROM holds h
                              WHERE h.client_id = c.id AND h.status = 'held') AS held
           FROM clients c WHERE c.id = $1""",
        client_id,
    )
    if row is None:
        raise NotFound(f"client {client_id} not found", code="client_not_found")
    return Decimal(row["balance"]), Decimal(row["held"]).quantize(Decimal("0.01"))


async def entries(
    db: Database, client_id: UUID, *, limit: int, offset: int, entry_type: str | None
) -> list[Row]:
    """The client's ledger, newest first."""
    return await db.fetch(
        """SELECT id, type, amount, balance_before, balance_after, hold_id, session_id,
                  invoice_id, idempotency_key, description, created_at
           FROM ledger_entries
           WHERE client_id = $1 AND ($2::text IS NULL OR type = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4""",
        client_id,
        entry_type,
        limit,
        offset,
    )


async def history(
    db: Database,
    client_id: UUID,
    *,
    types: list[str] | None,
    date_from: datetime | None,
    date_to: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """A page of the client's ledger for the app, newest first, and how many entries match."""
    rows = await db.fetch(
        """SELECT id, type, amount, balance_before, balance_after, session_id, invoice_id,
                  description, created_at, count(*) OVER () AS total
           FROM ledger_entries
           WHERE client_id = $1 AND ($2::text[] IS NULL OR type = ANY($2))
             AND ($3::timestamptz IS NULL OR created_at >= $3)
             AND ($4::timestamptz IS NULL OR created_at < $4)
           ORDER BY id DESC LIMIT $5 OFFSET $6""",
        client_id,
        types,
        date_from,
        date_to,
        limit,
        offset,
    )
    return rows, (rows[0]["total"] if rows else 0)


async def discrepancies(db: Database) -> list[Row]:
    """Clients whose balance is not the sum of their entries (``id``, ``balance``,
    ``entries_sum``); should always be none."""
    return await db.fetch(
        """SELECT c.id, c.balance, coalesce(sum(e.amount), 0) AS entries_sum
           FROM clients c LEFT JOIN ledger_entries e ON e.client_id = c.id
           GROUP BY c.id HAVING c.balance <> coalesce(sum(e.amount), 0)"""
    )


async def charged_since(db: Database, since: datetime) -> Decimal:
    """The money charging moved out of wallets since ``since`` (net of refunds)."""
    value = await db.fetchval(
        """SELECT coalesce(sum(-amount), 0) FROM ledger_entries
           WHERE created_at >= $1 AND type = ANY($2::text[])""",
        since,
        list(CHARGE_TYPES),
    )
    return Decimal(value)
