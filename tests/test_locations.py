"""The public map endpoints over the demo network, with one charger online."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from cpms.cli.demo_data import seed_demo
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from sim.charger import VirtualChargePoint
from storage import Database
from tests.documented import documented_client


@pytest.fixture
async def server(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Endpoints]:
    await seed_demo(db)
    settings = Settings(database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0)
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    yield endpoints
    shutdown.set()


async def get(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    reply = await http.get(path, params=params)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def test_locations_statuses_filters_and_cache(server: Endpoints) -> None:
    async with documented_client(base_url=server.http_url) as http:
        first = await get(http, "/api/v1/locations")
        assert first["success"] and first["total_locations"] == 5 and not first["cached"]
        assert {loc["status"] for loc in first["locations"]} == {"offline"}
        assert "stations" not in first["locations"][0]
        assert (await get(http, "/api/v1/locations"))["cached"]

        specs = [(120.0, True), (60.0, True)]
        async with VirtualChargePoint(
            "EVP-001-01", server.ocpp_url, connectors=specs, reconnect_delay=(0.05, 0.1)
        ) as cp:
            await cp.wait_booted()
            with trio.fail_after(5):
                while cp._outbox:  # noqa: ASYNC110 - the statuses go out
                    await trio.sleep(0.02)
            await trio.sleep(0.3)
            fresh = await get(http, "/api/v1/locations", include_stations="true")
            assert not fresh["cached"]  # a status event dropped the cached answer
            dordoi = next(loc for loc in fresh["locations"] if loc["id"] == "EVP-LOC-001")
            station = next(s for s in dordoi["stations"] if s["id"] == "EVP-001-01")
            assert station["status"] == "available"
            assert station["connector_types"] == ["CCS2", "GBT"]
            assert station["tariff"] == {
                "price_per_kwh": 15.0,
                "session_fee": 10.0,
                "currency": "KGS",
            }
            assert station["connectors_summary"] == {"available": 2, "occupied": 0, "faulted": 0}
            assert dordoi["status"] == "offline"  # its other station is not connected
            assert dordoi["stations_summary"]["available"] == 1
            assert dordoi["coordinates"] == {"latitude": 42.8746, "longitude": 74.6122}

        gbt = await get(http, "/api/v1/locations", connector_type="gbt", include_stations="1")
        assert gbt["total_locations"] >= 1
        for loc in gbt["locations"]:
            assert all("GBT" in s["connector_types"] for s in loc["stations"])
        fast = await get(http, "/api/v1/locations", min_power="150", include_stations="1")
        assert [s["id"] for loc in fast["locations"] for s in loc["stations"]] == ["EVP-003-01"]
        city = await get(http, "/api/v1/locations", city="бишкек")
        assert city["total_locations"] == 5
        assert (await get(http, "/api/v1/locations", city="Ош"))["total_locations"] == 0

        one = await get(http, "/api/v1/locations/EVP-LOC-002")
        assert one["location"]["id"] == "EVP-LOC-002" and one["location"]["stations"]
        missing = await http.get("/api/v1/locations/NOPE")
        assert missing.status_code == 404 and missing.json()["error"] == "location_not_found"
        bad = await http.get("/api/v1/locations", params={"min_power": "fast"})
        assert bad.status_code == 400 and bad.json()["error"] == "validation_error"
