"""Tariffs (with their time-of-day rates) and the network an operator provisions around the
stations: locations, the check and patch of a provisioned row, and the app's view of locations."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from cpms.kernel.charging import Tariff, TimeRate
from storage.database import Database, Row

_TARIFF_COLUMNS = """t.id, t.price_per_kwh, t.session_fee, t.price_per_minute, t.currency,
    r.tariff_id AS rate_of, r.starts_at, r.ends_at, r.price_per_kwh AS rate_price, r.weekdays"""


async def tariff_for_station(db: Database, station_id: str) -> Tariff | None:
    """The station's tariff, or its location's; None when neither has one. One statement: a row
    per time-of-day rate, or one row with no rate."""
    rows = await db.fetch(
        f"""SELECT {_TARIFF_COLUMNS}
            FROM stations s
            LEFT JOIN locations l ON l.id = s.location_id
            JOIN tariffs t ON t.id = coalesce(s.tariff_id, l.tariff_id)
            LEFT JOIN tariff_rates r ON r.tariff_id = t.id
            WHERE s.id = $1
            ORDER BY r.starts_at""",
        station_id,
    )
    return _tariff(rows) if rows else None


async def station_tariffs(db: Database) -> dict[str, Tariff | None]:
    """Every station's tariff (its own or its location's, None when neither has one), in two
    statements whatever the number of stations. A station whose tariff was added between the
    two is left out (to be read alone)."""
    rows = await db.fetch(
        f"""SELECT {_TARIFF_COLUMNS}
            FROM tariffs t LEFT JOIN tariff_rates r ON r.tariff_id = t.id
            ORDER BY t.id, r.starts_at"""
    )
    by_tariff: dict[str, list[Row]] = {}
    for row in rows:
        by_tariff.setdefault(row["id"], []).append(row)
    tariffs = {tariff_id: _tariff(its_rows) for tariff_id, its_rows in by_tariff.items()}
    stations = await db.fetch(
        """SELECT s.id, coalesce(s.tariff_id, l.tariff_id) AS tariff_id
           FROM stations s LEFT JOIN locations l ON l.id = s.location_id"""
    )
    known: dict[str, Tariff | None] = {}
    for row in stations:
        if row["tariff_id"] is None:
            known[row["id"]] = None
        elif row["tariff_id"] in tariffs:
            known[row["id"]] = tariffs[row["tariff_id"]]
    return known


def _tariff(rows: list[Row]) -> Tariff:
    """A tariff from its rows (see ``_TARIFF_COLUMNS``): one per time-of-day rate, or one."""
    row = rows[0]
    return Tariff(
        row["id"],
        row["price_per_kwh"],
        row["session_fee"],
        row["price_per_minute"],
        tuple(
            TimeRate(
                r["starts_at"],
                r["ends_at"],
                r["rate_price"],
                None if r["weekdays"] is None else frozenset(r["weekdays"]),
            )
            for r in rows
            if r["rate_of"] is not None
        ),
        row["currency"].strip(),
    )


#: The provisioned tables a generic existence check or patch may name (never input).
Table = Literal["tariffs", "locations", "stations", "clients", "id_tags", "owners"]
_KEYS: dict[str, str] = {
    "owners": "id",
    "tariffs": "id",
    "locations": "id",
    "stations": "id",
    "clients": "id",
    "id_tags": "id_tag",
}
_COLUMN = re.compile(r"[a-z_]+")


async def exists(db: Database, table: Table, ident: object) -> bool:
    """Whether ``table`` has a row with this key."""
    return bool(await db.fetchval(f"SELECT 1 FROM {table} WHERE {_KEYS[table]} = $1", ident))


async def patch(db: Database, table: Table, ident: object, changes: dict[str, object]) -> bool:
    """Set ``changes`` (column → value) on one row; False when there is no such row. The
    columns are field names of cpms's own validated models, never input."""
    key = _KEYS[table]
    if not await exists(db, table, ident):
        return False
    for column, value in changes.items():
        assert _COLUMN.fullmatch(column)
        await db.execute(f"UPDATE {table} SET {column} = $2 WHERE {key} = $1", ident, value)
    return True


async def add_tariff(
    db: Database,
    tariff_id: str,
    *,
    name: str,
    price_per_kwh: Decimal,
    session_fee: Decimal,
    currency: str,
) -> None:
    await db.execute(
        """INSERT INTO tariffs (id, name, price_per_kwh, session_fee, currency)
           VALUES ($1, $2, $3, $4, $5)""",
        tariff_id,
        name,
        price_per_kwh,
        session_fee,
        currency,
    )


async def add_location(
    db: Database,
    location_id: str,
    *,
    name: str,
    address: str | None,
    city: str | None,
    country: str | None,
    latitude: Decimal | None,
    longitude: Decimal | None,
    tariff_id: str | None,
) -> None:
    await db.execute(
        """INSERT INTO locations (id, name, address, city, country, latitude, longitude,
                                  tariff_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        location_id,
        name,
        address,
        city,
        country,
        latitude,
        longitude,
        tariff_id,
    )


async def active_locations(db: Database, location_id: str | None = None) -> list[Row]:
    """Active locations (one, or all), by id."""
    return await db.fetch(
        """SELECT * FROM locations
           WHERE status = 'active' AND ($1::text IS NULL OR id = $1) ORDER BY id""",
        location_id,
    )


async def stations_at(db: Database, location_ids: list[str]) -> list[Row]:
    """The stations in service at these locations, each with its tariff's prices."""
    return await db.fetch(
        """SELECT s.*, t.price_per_kwh, t.session_fee, t.currency
           FROM stations s
           LEFT JOIN locations l ON l.id = s.location_id
           LEFT JOIN tariffs t ON t.id = coalesce(s.tariff_id, l.tariff_id)
           WHERE s.location_id = ANY($1) AND s.admin_status <> 'inactive'
           ORDER BY s.id""",
        location_ids,
    )


async def connector_statuses(db: Database) -> list[Row]:
    """Every station's location and its connectors' recorded statuses (``connectors``)."""
    return await db.fetch(
        """SELECT s.id, s.location_id, array_remove(array_agg(c.status), NULL) AS connectors
           FROM stations s LEFT JOIN connectors c ON c.station_id = s.id
           GROUP BY s.id, s.location_id"""
    )


async def station_board(db: Database) -> list[Row]:
    """Every station in service with its location and its connectors (``connector_ids``,
    ``statuses``, ``powers``, ``types``, in connector order), for the app's live view."""
    return await db.fetch(
        """SELECT s.id, s.location_id,
                  coalesce(array_agg(c.connector_id ORDER BY c.connector_id)
                           FILTER (WHERE c.connector_id IS NOT NULL), '{}') AS connector_ids,
                  coalesce(array_agg(c.status ORDER BY c.connector_id)
                           FILTER (WHERE c.connector_id IS NOT NULL), '{}') AS statuses,
                  coalesce(array_agg(c.power_kw ORDER BY c.connector_id)
                           FILTER (WHERE c.connector_id IS NOT NULL), '{}') AS powers,
                  coalesce(array_agg(c.connector_type ORDER BY c.connector_id)
                           FILTER (WHERE c.connector_id IS NOT NULL), '{}') AS types
           FROM stations s LEFT JOIN connectors c ON c.station_id = s.id
           WHERE s.admin_status <> 'inactive'
           GROUP BY s.id, s.location_id ORDER BY s.id"""
    )
