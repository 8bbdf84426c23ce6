"""The OCPP message log and meter samples: writing a telemetry flush (on the storage loop, for
``actors.charge_point.telemetry``), reading the log, and pruning it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import asyncpg

from storage.database import Database, Row

MESSAGE_COLUMNS = [
    "station_id",
    "direction",
    "message_type",
    "unique_id",
    "action",
    "payload",
    "created_at",
]
SAMPLE_COLUMNS = [
    "station_id",
    "connector_id",
    "transaction_id",
    "sampled_at",
    "measurand",
    "phase",
    "unit",
    "context",
    "location",
    "value",
]


async def store_telemetry(
    conn: asyncpg.Connection,
    messages: bytes,
    samples: bytes,
    heartbeats: tuple[list[str], list[datetime]],
    readings: tuple[list[Any], ...],
) -> None:
    """One flush, on the storage loop, in one transaction that does not wait for the disk: a
    crash may cost the last moments of telemetry (never money), and the ledger's commits don't
    queue behind a flush's."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        for table, columns, data in (
            ("ocpp_messages", MESSAGE_COLUMNS, messages),
            ("meter_samples", SAMPLE_COLUMNS, samples),
        ):
            if data:
                # asyncpg takes a memoryview for the data (its stub omits that)
                source = cast(Any, memoryview(data))
                await conn.copy_to_table(table, source=source, columns=columns, format="text")
        if heartbeats[0]:
            await conn.execute(
                """UPDATE stations SET last_heartbeat_at = h.at, last_seen_at = h.at
                   FROM unnest($1::text[], $2::timestamptz[]) AS h(id, at)
                   WHERE stations.id = h.id""",
                *heartbeats,
            )
        if readings[0]:
            await conn.execute(
                """UPDATE charging_sessions c
                   SET meter_last_wh = coalesce(r.wh, c.meter_last_wh),
                       energy_kwh = CASE WHEN r.wh IS NULL THEN c.energy_kwh
                                    ELSE greatest(r.wh - c.meter_start_wh, 0) / 1000.0 END,
                       power_kw = coalesce(r.kw, c.power_kw),
                       soc_percent = coalesce(r.soc, c.soc_percent), updated_at = now()
                   FROM unnest($1::text[], $2::int[], $3::bigint[], $4::numeric[],
                               $5::smallint[]) AS r(station_id, tx, wh, kw, soc)
                   WHERE c.station_id = r.station_id AND c.transaction_id = r.tx
                     AND c.status = 'charging'""",
                *readings,
            )


async def station_messages(
    db: Database, station_id: str, *, before_id: int | None, limit: int
) -> list[Row]:
    """The station's OCPP message log, newest first, older than ``before_id`` when given."""
    return await db.fetch(
        """SELECT id, direction, message_type, unique_id, action, payload, created_at
           FROM ocpp_messages
           WHERE station_id = $1 AND ($2::bigint IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3""",
        station_id,
        before_id,
        limit,
    )


async def prune_messages(db: Database, older_than: datetime) -> None:
    """Forget the message log from before ``older_than``."""
    await db.execute("DELETE FROM ocpp_messages WHERE created_at < $1", older_than)
