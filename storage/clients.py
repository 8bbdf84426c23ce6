"""Client records (not their money: balances change only through the ledger)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from cpms.kernel.errors import InvalidRequest, NotFound
from storage.database import Database, Row

ClientStatus = Literal["active", "blocked", "pending_deletion"]
STATUSES: tuple[ClientStatus, ...] = ("active", "blocked", "pending_deletion")
_COLUMNS = "id, phone, email, name, status, balance, created_at, updated_at"


async def ensure_client(
    db: Database,
    client_id: UUID,
    *,
    phone: str | None = None,
    email: str | None = None,
    name: str | None = None,
) -> Row:
    """The client's record, created with a zero balance if this is its first appearance. One
    statement; a second only when another transaction created the record meanwhile (the first
    statement's snapshot doesn't see it)."""
    row = await db.fetchrow(
        f"""WITH created AS (
                INSERT INTO clients (id, phone, email, name) VALUES ($1, $2, $3, $4)
                ON CONFLICT (id) DO NOTHING
                RETURNING {_COLUMNS}
            )
            SELECT {_COLUMNS} FROM created
            UNION ALL
            SELECT {_COLUMNS} FROM clients WHERE id = $1""",
        client_id,
        phone,
        email,
        name,
    )
    return row if row is not None else await get_client(db, client_id)


async def get_client(db: Database, client_id: UUID) -> Row:
    """Raises ``NotFound`` (``client_not_found``) for an unknown id."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM clients WHERE id = $1", client_id)
    if row is None:
        raise NotFound(f"client {client_id} not found", code="client_not_found")
    return row


async def set_client_status(db: Database, client_id: UUID, status: str) -> None:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    done = await db.execute(
        "UPDATE clients SET status = $2, updated_at = now() WHERE id = $1", client_id, status
    )
    if done.endswith(" 0"):
        raise NotFound(f"client {client_id} not found", code="client_not_found")


async def standing(db: Database, client_id: UUID) -> Row | None:
    """The client's ``status`` and ``balance`` (None: no such client)."""
    return await db.fetchrow("SELECT status, balance FROM clients WHERE id = $1", client_id)
