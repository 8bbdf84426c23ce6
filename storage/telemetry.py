"""The OCPP message log and meter samples: writing a telemetry flush (on the storage loop, for
``actors.charge_point.telemetry``), reading the log, and pruning it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg

from cpms.kernel.timeutil import parse_time
from storage.database import Database, Row, dumps

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


@dataclass(frozen=True, slots=True)
class StationRows:
    """What chargers reported of their stations since the last flush, the latest of each, as
    the columns of the flush's updates."""

    boots: tuple[list[Any], ...]
    online: tuple[list[str], list[bool]]
    stations: tuple[list[Any], ...]  # StatusNotifications of connector 0
    connectors: tuple[list[Any], ...]

    @classmethod
    def of(
        cls,
        boots: dict[str, tuple[dict[str, Any], datetime]],
        online: dict[str, bool],
        statuses: dict[tuple[str, int], tuple[dict[str, Any], datetime]],
    ) -> StationRows:
        boot_rows = [
            (
                station,
                p.get("chargePointVendor"),
                p.get("chargePointModel"),
                p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
                p.get("firmwareVersion"),
                dumps(p),
                at,
            )
            for station, (p, at) in boots.items()
        ]
        station_rows, connector_rows = [], []
        for (station, connector), (p, at) in statuses.items():
            if connector == 0:
                station_rows.append((station, p["status"], p["errorCode"]))
            else:
                connector_rows.append(
                    (
                        station,
                        connector,
                        p["status"],
                        p["errorCode"],
                        p.get("info"),
                        p.get("vendorErrorCode"),
                        parse_time(p.get("timestamp")) or at,
                    )
                )
        return cls(
            _columns(boot_rows, 7),
            (list(online), list(online.values())),
            _columns(station_rows, 3),
            _columns(connector_rows, 7),
        )


def _columns(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    return tuple([row[i] for row in rows] for i in range(width))


async def _store_stations(conn: asyncpg.Connection, rows: StationRows) -> None:
    if rows.boots[0]:
        await conn.execute(
            """UPDATE stations s SET vendor = b.vendor, model = coalesce(b.model, s.model),
                      serial_number = coalesce(b.serial, s.serial_number),
                      firmware_version = coalesce(b.firmware, s.firmware_version),
                      boot_info = b.info::jsonb, last_boot_at = b.at, updated_at = b.at
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::timestamptz[])
                    AS b(id, vendor, model, serial, firmware, info, at)
               WHERE s.id = b.id""",
            *rows.boots,
        )
    if rows.online[0]:
        await conn.execute(
            """UPDATE stations s SET is_online = o.online
               FROM unnest($1::text[], $2::bool[]) AS o(id, online) WHERE s.id = o.id""",
            *rows.online,
        )
    if rows.stations[0]:
        await conn.execute(
            """UPDATE stations s SET station_status = t.status, station_error_code = t.code
               FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, status, code)
               WHERE s.id = t.id""",
            *rows.stations,
        )
    if rows.connectors[0]:
        await conn.execute(
            """UPDATE connectors c SET status = t.status, error_code = t.code, info = t.info,
                      vendor_error_code = t.vendor_code, status_at = t.at
               FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::timestamptz[])
                    AS t(station_id, connector_id, status, code, info, vendor_code, at)
               WHERE c.station_id = t.station_id AND c.connector_id = t.connector_id""",
            *rows.connectors,
        )


async def store_telemetry(
    conn: asyncpg.Connection,
    messages: bytes,
    samples: bytes,
    heartbeats: tuple[list[str], list[datetime]],
    readings: tuple[list[Any], ...],
    stations: StationRows,
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
        await _store_stations(conn, stations)


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
