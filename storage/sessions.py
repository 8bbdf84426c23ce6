"""Charging sessions as the SessionActor persists them, and the reads around them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cpms.kernel.charging import Limit
from cpms.kernel.session_status import OPEN_VALUES
from storage.database import Database, Row

OPEN = OPEN_VALUES


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """A new session's row, written by the StorageActor in the transaction that holds its
    reservation (:class:`storage.ledger_ops.Reserve`): it takes the connector (one open session
    per connector), and the row exists exactly when its hold does."""

    session_id: uuid.UUID
    client_id: uuid.UUID
    station_id: str
    connector_id: int
    id_tag: str
    origin: str
    limit: Limit
    tariff_id: str | None
    rate: Decimal
    session_fee: Decimal
    start_deadline: datetime | None
    max_deadline: datetime
    reserved: Decimal
    hold_id: uuid.UUID

    def row(self) -> tuple[Any, ...]:
        """The values :func:`insert_claims_sql` takes, as one array each."""
        return (
            self.session_id,
            self.client_id,
            self.station_id,
            self.connector_id,
            self.id_tag,
            self.origin,
            self.limit.kind,
            self.limit.value,
            self.tariff_id,
            self.rate,
            self.session_fee,
            self.start_deadline,
            self.max_deadline,
            self.reserved,
            self.hold_id,
        )


# the types of SessionClaim.row(), in order
_CLAIM_TYPES = [
    "uuid",
    "uuid",
    "text",
    "smallint",
    "text",
    "text",
    "text",
    "numeric",
    "text",
    "numeric",
    "numeric",
    "timestamptz",
    "timestamptz",
    "numeric",
    "uuid",
]


def insert_claims_sql(first: int) -> str:
    """An INSERT of claims' rows from :meth:`SessionClaim.row` arrays given as parameters
    ``$first`` onwards, returning the ids written: a claim on a connector with an open session,
    or whose row is already there (a replay), writes nothing."""
    arrays = ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(_CLAIM_TYPES))
    return f"""
INSERT INTO charging_sessions (id, client_id, station_id, connector_id, id_tag, origin, status,
                               limit_type, limit_value, tariff_id, rate_per_kwh, session_fee,
                               start_deadline, max_deadline, reserved_amount, hold_id)
SELECT c.id, c.client_id, c.station_id, c.connector_id, c.id_tag, c.origin, 'reserved',
       c.limit_type, c.limit_value, c.tariff_id, c.rate, c.fee, c.start_deadline,
       c.max_deadline, c.reserved, c.hold_id
FROM unnest({arrays})
     AS c(id, client_id, station_id, connector_id, id_tag, origin, limit_type, limit_value,
          tariff_id, rate, fee, start_deadline, max_deadline, reserved, hold_id)
ON CONFLICT DO NOTHING
RETURNING id"""


def claim_arrays(claims: list[SessionClaim]) -> list[list[Any]]:
    """The parameters of :func:`insert_claims_sql`."""
    if not claims:
        return [[] for _ in _CLAIM_TYPES]
    return [list(column) for column in zip(*(c.row() for c in claims), strict=True)]


async def hold_status(db: Database, hold_id: uuid.UUID) -> str | None:
    """``held``, ``released`` or ``captured``; None when there is no such hold."""
    status: str | None = await db.fetchval("SELECT status FROM holds WHERE id = $1", hold_id)
    return status


async def forget(db: Database, session_id: uuid.UUID) -> None:
    """Remove a session that never held money: a ``reserved`` row without a hold, written before
    rows and holds were written together."""
    await db.execute(
        "DELETE FROM charging_sessions WHERE id = $1 AND status = 'reserved'", session_id
    )


async def save(db: Database, session_id: uuid.UUID, **fields: Any) -> None:
    """Write the given columns of a session (the actor's own state)."""
    names = list(fields)
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
    await db.execute(
        f"UPDATE charging_sessions SET {assignments}, updated_at = now() WHERE id = $1",
        session_id,
        *fields.values(),
    )


async def get(db: Database, session_id: uuid.UUID) -> Row | None:
    return await db.fetchrow("SELECT * FROM charging_sessions WHERE id = $1", session_id)


async def open_sessions(db: Database) -> list[Row]:
    """Sessions with work left: open ones with money held, and ones settled on their last
    reading whose late StopTransaction is recorded (to settle again). Each has (or had) a
    SessionActor."""
    return await db.fetch(
        """SELECT * FROM charging_sessions
           WHERE hold_id IS NOT NULL
             AND (status = ANY($1::text[])
                  OR (status = 'settled' AND settled_by = 'last_reading'
                      AND meter_stop_wh IS NOT NULL))""",
        OPEN,
    )


async def open_on_station(db: Database, station_id: str) -> list[Row]:
    """The station's sessions not ended yet, by connector (its public status shows them)."""
    return await db.fetch(
        """SELECT id AS session_id, connector_id, status, energy_kwh, power_kw, started_at
           FROM charging_sessions
           WHERE station_id = $1 AND status = ANY($2::text[])
           ORDER BY connector_id""",
        station_id,
        OPEN,
    )


async def list_open(db: Database, limit: int = 1000) -> list[Row]:
    """Sessions not ended yet, oldest first (for operators)."""
    return await db.fetch(
        """SELECT * FROM charging_sessions WHERE status = ANY($1::text[])
           ORDER BY created_at LIMIT $2""",
        OPEN,
        limit,
    )


async def recent(db: Database, limit: int = 50) -> list[Row]:
    """The newest sessions, whatever their state."""
    return await db.fetch(
        "SELECT * FROM charging_sessions ORDER BY created_at DESC LIMIT $1", limit
    )


async def held_holds(db: Database) -> list[Row]:
    """Sessions whose money is still on hold, with the hold's amount and age."""
    return await db.fetch(
        """SELECT s.*, h.amount AS hold_amount, h.created_at AS held_since
           FROM holds h JOIN charging_sessions s ON s.hold_id = h.id
           WHERE h.status = 'held' ORDER BY h.created_at"""
    )


async def awaiting_start(
    db: Database, station_id: str, connector_id: int, id_tag: str
) -> Row | None:
    """The app session a StartTransaction with ``id_tag`` on this connector belongs to."""
    return await db.fetchrow(
        """SELECT * FROM charging_sessions
           WHERE station_id = $1 AND connector_id = $2 AND id_tag = $3 AND origin = 'app'
             AND status = ANY($4::text[])""",
        station_id,
        connector_id,
        id_tag,
        OPEN,
    )


async def open_by_tag(db: Database, station_id: str, id_tag: str) -> Row | None:
    return await db.fetchrow(
        """SELECT id FROM charging_sessions
           WHERE station_id = $1 AND id_tag = $2 AND origin = 'app' AND status = ANY($3::text[])""",
        station_id,
        id_tag,
        OPEN,
    )


async def record_stop(
    db: Database, session_id: uuid.UUID, meter_stop: int, stopped_at: datetime, reason: str
) -> bool:
    """Note the charger's StopTransaction on an open session; False if it has ended already."""
    result = await db.execute(
        """UPDATE charging_sessions
           SET meter_stop_wh = $2, stopped_at = $3, stop_reason = coalesce(stop_reason, $4),
               updated_at = now()
           WHERE id = $1 AND status = ANY($5::text[])""",
        session_id,
        meter_stop,
        stopped_at,
        reason,
        OPEN,
    )
    return not result.endswith(" 0")


async def record_late_stop(
    db: Database, session_id: uuid.UUID, meter_stop: int, stopped_at: datetime
) -> bool:
    """Note a StopTransaction that came after its session was settled on its last reading;
    False if the session was settled otherwise, or on its stop already."""
    result = await db.execute(
        """UPDATE charging_sessions
           SET meter_stop_wh = $2, stopped_at = $3, updated_at = now()
           WHERE id = $1 AND status = 'settled' AND settled_by = 'last_reading'
             AND meter_stop_wh IS NULL""",
        session_id,
        meter_stop,
        stopped_at,
    )
    return not result.endswith(" 0")


async def open_billed_session_on(db: Database, station_id: str, connector_id: int) -> Row | None:
    """The open session holding money on this connector (app or card), if any."""
    return await db.fetchrow(
        """SELECT * FROM charging_sessions
           WHERE station_id = $1 AND connector_id = $2 AND hold_id IS NOT NULL
             AND status = ANY($3::text[])""",
        station_id,
        connector_id,
        OPEN,
    )


async def attach_transaction(
    db: Database, session_id: uuid.UUID, meter_start: int, started_at: datetime
) -> int | None:
    """Give the session its OCPP transaction id (the same one again for a replay); None when
    the session has ended meanwhile (see :func:`close_unstarted`)."""
    transaction_id = await db.fetchval(
        """UPDATE charging_sessions
           SET transaction_id = coalesce(transaction_id, nextval('ocpp_transaction_id_seq')),
               meter_start_wh = coalesce(meter_start_wh, $2),
               meter_last_wh = coalesce(meter_last_wh, $2),
               started_at = coalesce(started_at, $3), updated_at = now()
           WHERE id = $1 AND status = ANY($4::text[]) AND NOT start_closed
           RETURNING transaction_id""",
        session_id,
        meter_start,
        started_at,
        OPEN,
    )
    return None if transaction_id is None else int(transaction_id)


async def close_unstarted(db: Database, session_id: uuid.UUID) -> bool:
    """Close a session the charger has not started to any StartTransaction, atomically with
    respect to :func:`attach_transaction`: False when a transaction got attached first. (Its
    status changes when the actor has given the money back.)"""
    result = await db.execute(
        """UPDATE charging_sessions SET start_closed = true, updated_at = now()
           WHERE id = $1 AND transaction_id IS NULL""",
        session_id,
    )
    return not result.endswith(" 0")


async def history(
    db: Database,
    client_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
    date_from: datetime | None,
    date_to: datetime | None,
    station_id: str | None,
) -> tuple[list[Row], int]:
    rows = await db.fetch(
        """SELECT *, count(*) OVER () AS total FROM charging_sessions
           WHERE client_id = $1 AND status NOT IN ('reserved')
             AND ($2::timestamptz IS NULL OR created_at >= $2)
             AND ($3::timestamptz IS NULL OR created_at < $3)
             AND ($4::text IS NULL OR station_id = $4)
           ORDER BY created_at DESC LIMIT $5 OFFSET $6""",
        client_id,
        date_from,
        date_to,
        station_id,
        limit,
        offset,
    )
    return rows, (rows[0]["total"] if rows else 0)


async def counts_since(db: Database, since: datetime) -> Row:
    """Sessions created since ``since``: how many (``sessions``), how many settled
    (``settled``), and their energy (``energy``, kWh)."""
    row = await db.fetchrow(
        """SELECT count(*) AS sessions, coalesce(sum(energy_kwh), 0) AS energy,
                  count(*) FILTER (WHERE status = 'settled') AS settled
           FROM charging_sessions WHERE created_at >= $1""",
        since,
    )
    assert row is not None  # an aggregate always has its row
    return row


OPEN_STATES = ("reserved", "starting", "charging", "stopping")


async def open_session_counts(db: Database) -> dict[str, int]:
    """How many sessions are in each open state (every open state named, 0 when none)."""
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM charging_sessions"
        " WHERE status IN ('reserved', 'starting', 'charging', 'stopping') GROUP BY status"
    )
    counts = dict.fromkeys(OPEN_STATES, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts
