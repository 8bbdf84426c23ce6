"""Public map data: ``GET /api/v1/locations`` and ``GET /api/v1/locations/{id}``.

Filters: ``location_id``, ``city`` (any case), ``search`` (a part of the name, address or city,
any case), ``connector_type`` and ``min_power`` (a location
qualifies, and its stations are listed, when a connector matches), ``include_stations``. Answers
are cached for 30 seconds and dropped as soon as any station or location status event is
published (``cached`` says which one you got).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, Response, jsonify

from actors.core import Core
from api.door import query
from cpms.kernel.errors import NotFound
from cpms.kernel.status import IN_USE, location_status, station_status
from storage import network
from storage import stations as store

CACHE_SECONDS = 30.0


class LocationsQuery(BaseModel):
    include_stations: bool = False
    include_status: bool = True  # accepted for the app's sake: statuses are always included
    location_id: str | None = None
    city: str | None = None
    connector_type: str | None = None
    min_power: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    search: str | None = Field(None, min_length=1, max_length=100)


class _Cache:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.entries: dict[str, tuple[float, int, dict[str, Any]]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        made, published, body = entry
        if time.monotonic() - made > CACHE_SECONDS or published != self.core.bus.published:
            del self.entries[key]
            return None
        return body

    def put(self, key: str, published: int, body: dict[str, Any]) -> None:
        if len(self.entries) > 1000:
            self.entries.clear()
        self.entries[key] = (time.monotonic(), published, body)


def _connector_matches(connector: dict[str, Any], query: LocationsQuery) -> bool:
    if query.connector_type and connector["connector_type"].lower() != query.connector_type.lower():
        return False
    return not (query.min_power is not None and connector["power_kw"] < query.min_power)


async def build(core: Core, query: LocationsQuery) -> list[dict[str, Any]]:
    db = core.db
    locations = await network.active_locations(db, query.location_id)
    if query.city is not None:  # compared here: the database's collation may not fold Cyrillic
        city = query.city.casefold()
        locations = [row for row in locations if (row["city"] or "").casefold() == city]
    if query.search is not None:  # any part of the name, address or city, in any case
        words = query.search.casefold()
        locations = [
            row
            for row in locations
            if any(words in (row[k] or "").casefold() for k in ("name", "address", "city"))
        ]
    ids = [row["id"] for row in locations]
    stations = await network.stations_at(db, ids)
    connectors = await store.connectors_of(db, [s["id"] for s in stations])
    by_station: dict[str, list[dict[str, Any]]] = {}
    for c in connectors:
        by_station.setdefault(c["station_id"], []).append(c)
    filtering = query.connector_type is not None or query.min_power is not None
    result = []
    for location in locations:
        station_views = []
        for s in (s for s in stations if s["location_id"] == location["id"]):
            own = by_station.get(s["id"], [])
            if filtering and not any(_connector_matches(c, query) for c in own):
                continue
            station_views.append(_station_view(s, own))
        if filtering and not station_views:
            continue
        statuses = [v["status"] for v in station_views]
        connectors_all = [
            c for v in station_views for c in v["connectors"] if v["status"] != "offline"
        ]
        view: dict[str, Any] = {
            "id": location["id"],
            "name": location["name"],
            "address": location["address"],
            "city": location["city"],
            "country": location["country"],
            "coordinates": {
                "latitude": location["latitude"],
                "longitude": location["longitude"],
            },
            "status": location_status(statuses),
            "stations_summary": {
                "total": len(statuses),
                **{
                    k: statuses.count(k)
                    for k in ("available", "occupied", "offline", "maintenance")
                },
            },
            "connectors_summary": {
                "total": sum(len(v["connectors"]) for v in station_views),
                **_connector_counts(connectors_all),
            },
        }
        if query.include_stations:
            view["stations"] = station_views
        result.append(view)
    return result


def _connector_counts(connectors: list[dict[str, Any]]) -> dict[str, int]:
    statuses = [c["status"] for c in connectors]
    return {
        "available": statuses.count("Available"),
        "occupied": sum(1 for s in statuses if s in IN_USE),
        "faulted": statuses.count("Faulted"),
    }


def _station_view(s: dict[str, Any], connectors: list[dict[str, Any]]) -> dict[str, Any]:
    status = station_status(
        bool(s["is_online"]), s["admin_status"], [c["status"] for c in connectors]
    )
    shown = [
        {
            "connector_id": c["connector_id"],
            "connector_type": c["connector_type"],
            "power_kw": c["power_kw"],
            "status": c["status"] if s["is_online"] else "Unavailable",
        }
        for c in connectors
    ]
    power = s["power_capacity"] or max((c["power_kw"] for c in connectors), default=None)
    return {
        "id": s["id"],
        "serial_number": s["serial_number"],
        "model": s["model"],
        "status": status,
        "power_capacity": power,
        "connectors_count": s["connectors_count"],
        "connector_types": [c["connector_type"] for c in connectors],
        "tariff": None
        if s["price_per_kwh"] is None
        else {
            "price_per_kwh": s["price_per_kwh"],
            "session_fee": s["session_fee"],
            "currency": (s["currency"] or "KGS").strip(),
        },
        "connectors_summary": _connector_counts(shown),
        "connectors": shown,
    }


def locations_blueprint(core: Core) -> Blueprint:
    bp = Blueprint("locations", __name__, url_prefix="/api/v1/locations")
    cache = _Cache(core)

    @bp.get("")
    async def every() -> Response:
        params = query(LocationsQuery)
        key = params.model_dump_json()
        body = cache.get(key)
        if body is not None:
            return jsonify({**body, "cached": True})
        published = core.bus.published
        locations = await build(core, params)
        body = {"success": True, "locations": locations, "total_locations": len(locations)}
        cache.put(key, published, body)
        return jsonify({**body, "cached": False})

    @bp.get("/<location_id>")
    async def one(location_id: str) -> Response:
        found = await build(core, LocationsQuery(location_id=location_id, include_stations=True))
        if not found:
            raise NotFound(f"location {location_id} not found", code="location_not_found")
        return jsonify({"success": True, "location": found[0]})

    return bp
