"""Stations, connectors, id tags and OCPP transactions in PostgreSQL (trio side)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from cpms.kernel.errors import Conflict, InvalidRequest, NotFound
from storage.database import Database, Row


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    connector_id: int
    connector_type: str
    power_kw: Decimal


async def get_station(db: Database, station_id: str) -> Row | None:
    return await db.fetchrow("SELECT * FROM stations WHERE id = $1", station_id)


async def connectors(db: Database, station_id: str) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM connectors WHERE station_id = $1 ORDER BY connector_id", station_id
    )


async def create_station(
    db: Database,
    station_id: str,
    *,
    connectors_count: int,
    location_id: str | None = None,
    connectors: list[ConnectorSpec] | None = None,
    model: str | None = None,
    password_hash: str | None = None,
    tariff_id: str | None = None,
    owner_id: uuid.UUID | None = None,
    accept_unknown_tags: bool = False,
) -> None:
    """Add a station with its configured connectors (at most ``connectors_count`` of them).

    Raises:
        InvalidRequest: connector numbers outside 1..connectors_count, or a bad count.
        Conflict: the station exists (``station_exists``).
        NotFound: unknown location or tariff.
    """
    if not 1 <= connectors_count <= 10:
        raise InvalidRequest("connectors_count must be 1..10", code="validation_error")
    specs = connectors or []
    for spec in specs:
        if not 1 <= spec.connector_id <= connectors_count:
            raise InvalidRequest(
                f"connector {spec.connector_id} is outside 1..{connectors_count}",
                code="validation_error",
            )
    if await get_station(db, station_id) is not None:
        raise Conflict(f"station {station_id} already exists", code="station_exists")
    if location_id is not None and not await db.fetchval(
        "SELECT 1 FROM locations WHERE id = $1", location_id
    ):
        raise NotFound(f"location {location_id} not found", code="location_not_found")
    await db.execute(
        """INSERT INTO stations (id, location_id, connectors_count, model, password_hash,
                                 tariff_id, owner_id, accept_unknown_tags)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        station_id,
        location_id,
        connectors_count,
        model,
        password_hash,
        tariff_id,
        owner_id,
        accept_unknown_tags,
    )
    for spec in specs:
        await db.execute(
            """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
               VALUES ($1, $2, $3, $4)""",
            station_id,
            spec.connector_id,
            spec.connector_type,
            spec.power_kw,
        )


async def register_first_contact(
    db: Database,
    station_id: str,
    *,
    connectors_count: int,
    connectors: list[ConnectorSpec],
    accept_unknown_tags: bool,
) -> tuple[Row, list[Row], bool] | None:
    """A station not known to be there provisioned as it first connects (auto-registration):
    its record and connectors in one statement (one round trip, all or nothing), which also
    gives them back as stored, and whether it made them; or, there already (made before, by a
    concurrent connection, or by an operator), as it is. None if an operator deleted it that
    same moment."""
    return await db.run_with_connection(
        _register_first_contact, station_id, connectors_count, connectors, accept_unknown_tags
    )


_OF = "connector__"
_CONNECTOR_COLUMNS = ("connector_id", "connector_type", "power_kw", "status", "error_code")
#: the record and its connectors made in one statement: a row per connector, the station's
#: columns in each, the connector's prefixed
_REGISTER = f"""
    WITH made AS (
        INSERT INTO stations (id, connectors_count, accept_unknown_tags) VALUES ($1, $2, $3)
        ON CONFLICT (id) DO NOTHING RETURNING *
    ), added AS (
        INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
        SELECT made.id, c.* FROM made, unnest($4::int[], $5::text[], $6::numeric[]) AS c
        RETURNING *
    )
    SELECT made.*, {", ".join(f"added.{c} AS {_OF}{c}" for c in _CONNECTOR_COLUMNS)}
    FROM made LEFT JOIN added ON true ORDER BY added.connector_id
"""


async def _register_first_contact(
    conn: asyncpg.Connection,
    station_id: str,
    connectors_count: int,
    connectors: list[ConnectorSpec],
    accept_unknown_tags: bool,
) -> tuple[Row, list[Row], bool] | None:
    made = await conn.fetch(
        _REGISTER,
        station_id,
        connectors_count,
        accept_unknown_tags,
        [c.connector_id for c in connectors],
        [c.connector_type for c in connectors],
        [c.power_kw for c in connectors],
    )
    if made:
        station = {k: v for k, v in made[0].items() if not k.startswith(_OF)}
        added = [{c: row[_OF + c] for c in _CONNECTOR_COLUMNS} for row in made]
        return station, [c for c in added if c["connector_id"] is not None], True
    # there already: as it is now (a statement of its own sees what was committed meanwhile)
    row = await conn.fetchrow("SELECT * FROM stations WHERE id = $1", station_id)
    if row is None:
        return None
    found = await conn.fetch(
        "SELECT * FROM connectors WHERE station_id = $1 ORDER BY connector_id", station_id
    )
    return dict(row), [dict(c) for c in found], False


async def record_field(db: Database, station_id: str, column: str, value: str) -> None:
    if column not in ("firmware_status", "diagnostics_status"):
        raise ValueError(column)
    await db.execute(f"UPDATE stations SET {column} = $2 WHERE id = $1", station_id, value)


async def id_tag_info(db: Database, id_tag: str, *, accept_unknown: bool) -> dict[str, Any]:
    """The ``idTagInfo`` for ``id_tag``: Accepted/Blocked/Expired/Invalid, parent, expiry."""
    row = await db.fetchrow(
        "SELECT status, expires_at, parent_id_tag FROM id_tags WHERE id_tag = $1", id_tag
    )
    if row is None:
        return {"status": "Accepted" if accept_unknown else "Invalid"}
    status = row["status"]
    expires: datetime | None = row["expires_at"]
    if status == "Accepted" and expires is not None and expires <= datetime.now(UTC):
        status = "Expired"
    info: dict[str, Any] = {"status": status}
    if expires is not None:
        info["expiryDate"] = expires.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if row["parent_id_tag"]:
        info["parentIdTag"] = row["parent_id_tag"]
    return info


async def tag_client(db: Database, id_tag: str) -> uuid.UUID | None:
    value = await db.fetchval("SELECT client_id FROM id_tags WHERE id_tag = $1", id_tag)
    return value if isinstance(value, uuid.UUID) else None


async def create_id_tag(
    db: Database,
    id_tag: str,
    *,
    client_id: uuid.UUID | None = None,
    parent: str | None = None,
    status: str = "Accepted",
    expires_at: datetime | None = None,
) -> None:
    if not 1 <= len(id_tag) <= 20:
        raise InvalidRequest("id tag must be 1..20 characters", code="validation_error")
    if status not in ("Accepted", "Blocked", "Expired", "Invalid"):
        raise InvalidRequest("status must be Accepted, Blocked, Expired or Invalid")
    if await db.fetchval("SELECT 1 FROM id_tags WHERE id_tag = $1", id_tag):
        raise Conflict(f"id tag {id_tag} already exists", code="id_tag_exists")
    if client_id is not None and not await db.fetchval(
        "SELECT 1 FROM clients WHERE id = $1", client_id
    ):
        raise NotFound(f"client {client_id} not found", code="client_not_found")
    await db.execute(
        """INSERT INTO id_tags (id_tag, client_id, parent_id_tag, status, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        id_tag,
        client_id,
        parent,
        status,
        expires_at,
    )


async def all_with_connectors(db: Database) -> list[tuple[Row, list[Row]]]:
    """Every station with its connectors, in two statements (start-up with thousands)."""
    by_station: dict[str, list[Row]] = {}
    for c in await db.fetch("SELECT * FROM connectors ORDER BY station_id, connector_id"):
        by_station.setdefault(c["station_id"], []).append(c)
    return [
        (row, by_station.get(row["id"], []))
        for row in await db.fetch("SELECT * FROM stations ORDER BY id")
    ]


async def connectors_of(db: Database, station_ids: list[str]) -> list[Row]:
    """The configured connectors of these stations, by station and number."""
    return await db.fetch(
        """SELECT * FROM connectors WHERE station_id = ANY($1) ORDER BY station_id, connector_id""",
        station_ids,
    )


async def remember_verifiers(db: Database, rows: list[tuple[str, str, str]]) -> None:
    """Password verifiers as ``(station, the password hash it was made for, verifier)``: each
    written only where the record still holds that hash (a password changed meanwhile)."""
    await db.execute(
        """UPDATE stations s SET password_verifier = v.verifier
           FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, hash, verifier)
           WHERE s.id = v.id AND s.password_hash = v.hash""",
        [row[0] for row in rows],
        [row[1] for row in rows],
        [row[2] for row in rows],
    )
