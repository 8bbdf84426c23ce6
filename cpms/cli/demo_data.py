"""A small, realistic network in Bishkek for ``cpms seed-demo``: tariffs in KGS, five locations
with coordinates, and stations with mixed CCS2 / GBT / Type2 connectors (one with fewer configured
connectors than physical ones: an operator may offer only some of a charger's outlets)."""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal

from actors import provisioning as prov
from cpms.kernel.errors import Conflict
from cpms.kernel.validation import validate
from storage import Database

D = Decimal

TARIFFS = [
    prov.TariffIn(id="TAR-AC", name="AC до 22 кВт", price_per_kwh=D("13.50")),
    prov.TariffIn(
        id="TAR-DC", name="DC быстрая зарядка", price_per_kwh=D("15.00"), session_fee=D("10.00")
    ),
]

LOCATIONS = [
    prov.LocationIn(
        id="EVP-LOC-001",
        name="ТЦ Дордой Плаза",
        address="ул. Ибраимова, 115",
        city="Бишкек",
        country="Кыргызстан",
        latitude=D("42.874600"),
        longitude=D("74.612200"),
        tariff_id="TAR-DC",
    ),
    prov.LocationIn(
        id="EVP-LOC-002",
        name="Asia Mall",
        address="пр. Чуй, 3",
        city="Бишкек",
        country="Кыргызстан",
        latitude=D("42.855300"),
        longitude=D("74.585300"),
        tariff_id="TAR-AC",
    ),
    prov.LocationIn(
        id="EVP-LOC-003",
        name="Бишкек Парк",
        address="ул. Киевская, 148",
        city="Бишкек",
        country="Кыргызстан",
        latitude=D("42.875300"),
        longitude=D("74.590400"),
        tariff_id="TAR-DC",
    ),
    prov.LocationIn(
        id="EVP-LOC-004",
        name="Площадь Ала-Тоо",
        address="пр. Чуй, 111",
        city="Бишкек",
        country="Кыргызстан",
        latitude=D("42.876500"),
        longitude=D("74.603600"),
        tariff_id="TAR-AC",
    ),
    prov.LocationIn(
        id="EVP-LOC-005",
        name="Аэропорт Манас",
        address="Аэропорт Манас",
        city="Бишкек",
        country="Кыргызстан",
        latitude=D("43.055300"),
        longitude=D("74.477600"),
        tariff_id="TAR-DC",
    ),
]


def _station(
    sid: str, loc: str, count: int, *connectors: tuple[int, str, str], model: str
) -> dict[str, object]:
    return {
        "id": sid,
        "location_id": loc,
        "connectors_count": count,
        "model": model,
        "connectors": [
            {"connector_id": n, "connector_type": t, "power_kw": p} for n, t, p in connectors
        ],
    }


STATIONS = [
    _station(
        "EVP-001-01",
        "EVP-LOC-001",
        2,
        (1, "CCS2", "120"),
        (2, "GBT", "60"),
        model="ChargePoint Express 250",
    ),
    _station(
        "EVP-001-02", "EVP-LOC-001", 2, (1, "Type2", "22"), (2, "Type2", "22"), model="ABB Terra AC"
    ),
    _station(
        "EVP-002-01", "EVP-LOC-002", 3, (1, "GBT", "60"), (2, "GBT", "60"), model="XCharge C6"
    ),
    _station(
        "EVP-003-01", "EVP-LOC-003", 2, (1, "CCS2", "150"), (2, "CCS2", "150"), model="Kempower S"
    ),
    _station("EVP-004-01", "EVP-LOC-004", 1, (1, "Type2", "22"), model="Wallbox Commander"),
    _station(
        "EVP-005-01", "EVP-LOC-005", 2, (1, "CCS2", "120"), (2, "GBT", "120"), model="ABB Terra 184"
    ),
]

#: RFID cards of the demo's drivers (``cpms demo`` hands them out to simulated drivers).
ID_TAGS = [prov.IdTagIn(id_tag=f"DEMO-CARD-{n:04d}") for n in range(1, 21)]


async def seed_demo(db: Database, *, station_password: str | None = None) -> dict[str, int]:
    """Add whatever of the demo network is missing; returns how many of each were added."""
    added = {"tariffs": 0, "locations": 0, "stations": 0, "id_tags": 0}
    for tariff in TARIFFS:
        added["tariffs"] += await _try(prov.add_tariff(db, tariff))
    for location in LOCATIONS:
        added["locations"] += await _try(prov.add_location(db, location))
    for data in STATIONS:
        station = validate(
            prov.StationIn, {**data, "password": station_password, "tariff_id": None}
        )
        added["stations"] += await _try(prov.add_station(db, station))
    for tag in ID_TAGS:
        added["id_tags"] += await _try(prov.add_id_tag(db, tag))
    return added


async def _try(step: Awaitable[None]) -> int:
    try:
        await step
    except Conflict:
        return 0
    return 1
