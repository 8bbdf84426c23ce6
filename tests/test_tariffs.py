"""A station's tariff as a session reads it: its own or its location's, with time-of-day rates."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

from storage import Database
from storage.network import tariff_for_station


async def _network(db: Database) -> None:
    await db.execute(
        """INSERT INTO tariffs (id, name, price_per_kwh, session_fee) VALUES
           ('DAY', 'day/night', 15, 20), ('FLAT', 'flat', 12, 0)"""
    )
    await db.execute(
        """INSERT INTO tariff_rates (tariff_id, starts_at, ends_at, weekdays, price_per_kwh) VALUES
           ('DAY', '23:00', '07:00', NULL, 8), ('DAY', '07:00', '09:00', '{1,2,3,4,5}', 18)"""
    )
    await db.execute("INSERT INTO locations (id, name, tariff_id) VALUES ('LOC', 'l', 'FLAT')")
    await db.execute(
        """INSERT INTO stations (id, connectors_count, location_id, tariff_id) VALUES
           ('OWN', 1, 'LOC', 'DAY'), ('INHERITS', 1, 'LOC', NULL), ('NONE', 1, NULL, NULL)"""
    )


async def test_own_tariff_with_its_rates_in_order(db: Database) -> None:
    await _network(db)
    tariff = await tariff_for_station(db, "OWN")
    assert tariff is not None
    assert (tariff.id, tariff.price_per_kwh, tariff.session_fee) == ("DAY", 15, 20)
    assert [(r.starts_at, r.ends_at, r.price_per_kwh, r.weekdays) for r in tariff.rates] == [
        (time(7), time(9), Decimal("18.00"), frozenset({1, 2, 3, 4, 5})),
        (time(23), time(7), Decimal("8.00"), None),
    ]
    # 02:00 in Bishkek is 20:00 UTC the day before
    assert tariff.rate_at(datetime(2026, 11, 22, 20, 0, tzinfo=UTC)) == Decimal("8.00")
    assert tariff.rate_at(datetime(2026, 11, 23, 6, 0, tzinfo=UTC)) == Decimal("15.00")


async def test_location_tariff_without_rates_and_no_tariff(db: Database) -> None:
    await _network(db)
    tariff = await tariff_for_station(db, "INHERITS")
    assert tariff is not None
    assert (tariff.id, tariff.rates, tariff.currency) == ("FLAT", (), "KGS")
    assert await tariff_for_station(db, "NONE") is None
    assert await tariff_for_station(db, "UNKNOWN") is None
