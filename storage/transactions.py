"""Transactions nobody pays for (a card without a client, or a station without a tariff): the
charger's own record of them. A billed session's row is written only through
:mod:`storage.sessions`."""

from __future__ import annotations

import uuid
from datetime import datetime

from cpms.kernel.session_status import OPEN_VALUES
from cpms.kernel.timeutil import parse_time
from storage.database import Database, Row

_OPEN = OPEN_VALUES  # a transaction still open is its session's


async def replayed(
    db: Database,
    station_id: str,
    connector_id: int,
    id_tag: str,
    meter_start: int,
    started_at: datetime,
) -> int | None:
    """The transaction id an identical StartTransaction got before, if one did."""
    existing = await db.fetchval(
        """SELECT transaction_id FROM charging_sessions
           WHERE station_id = $1 AND connector_id = $2 AND id_tag = $3
             AND meter_start_wh = $4 AND started_at = $5 AND transaction_id IS NOT NULL""",
        station_id,
        connector_id,
        id_tag,
        meter_start,
        started_at,
    )
    return None if existing is None else int(existing)


async def start_transaction(
    db: Database,
    station_id: str,
    connector_id: int,
    id_tag: str,
    meter_start: int,
    timestamp: str,
    client_id: uuid.UUID | None,
) -> tuple[int, bool]:
    """Record a StartTransaction; returns ``(transaction_id, is_new)``.

    The same StartTransaction sent again (a charger replaying its queue after a reconnect) gets
    the transaction id it got the first time. An unbilled transaction still open on the
    connector is closed as failed: the charger has moved on without telling us. A billed
    session's row is its SessionActor's alone to end (it has been told first, with
    ``Superseded``, and gives its connector and money back).
    """
    started_at = parse_time(timestamp)
    if started_at is not None:
        existing = await replayed(db, station_id, connector_id, id_tag, meter_start, started_at)
        if existing is not None:
            return existing, False
    await db.execute(
        """UPDATE charging_sessions SET status = 'failed', error = 'superseded by a new
                  transaction on the connector', updated_at = now()
           WHERE station_id = $1 AND connector_id = $2 AND status = ANY($3::text[])
             AND origin = 'rfid' AND hold_id IS NULL""",
        station_id,
        connector_id,
        list(_OPEN),
    )
    transaction_id = await db.fetchval(
        """INSERT INTO charging_sessions (id, client_id, station_id, connector_id, id_tag, origin,
                  status, transaction_id, meter_start_wh, meter_last_wh, started_at)
           VALUES ($1, $2, $3, $4, $5, 'rfid', 'charging', nextval('ocpp_transaction_id_seq'),
                   $6, $6, $7)
           RETURNING transaction_id""",
        uuid.uuid4(),
        client_id,
        station_id,
        connector_id,
        id_tag,
        meter_start,
        started_at,
    )
    return int(transaction_id), True


async def transaction(db: Database, station_id: str, transaction_id: int) -> Row | None:
    return await db.fetchrow(
        "SELECT * FROM charging_sessions WHERE station_id = $1 AND transaction_id = $2",
        station_id,
        transaction_id,
    )


async def stop_transaction(
    db: Database,
    station_id: str,
    transaction_id: int,
    meter_stop: int,
    timestamp: str,
    reason: str | None,
) -> bool:
    """Close the transaction once; False when unknown or already closed (nothing changes)."""
    result = await db.execute(
        """UPDATE charging_sessions
           SET meter_stop_wh = $3, meter_last_wh = $3,
               energy_kwh = greatest($3 - meter_start_wh, 0) / 1000.0,
               stopped_at = $4, stop_reason = $5, status = 'settled', settled_at = now(),
               updated_at = now()
           WHERE station_id = $1 AND transaction_id = $2 AND status = ANY($6::text[])""",
        station_id,
        transaction_id,
        meter_stop,
        parse_time(timestamp),
        reason or "Local",
        list(_OPEN),
    )
    return not result.endswith(" 0")
