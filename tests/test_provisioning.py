"""Provisioning through the CLI and the admin REST API, and the demo network."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from cpms.cli.main import main
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage import stations as store
from tests.documented import documented_client
from tests.ocpp_client import connect

ADMIN = "admin-test-token"


def test_cli_provisions_a_network(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tariffs", "add", "TAR-1", "--name", "AC", "--price-per-kwh", "13.50"]) == 0
    assert (
        main(
            [
                "locations",
                "add",
                "LOC-1",
                "--name",
                "Mall",
                "--city",
                "Бишкек",
                "--lat",
                "42.87",
                "--lon",
                "74.59",
                "--tariff",
                "TAR-1",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "stations",
                "add",
                "ST-1",
                "--location",
                "LOC-1",
                "--connectors",
                "3",
                "--connector",
                "1:CCS2:120",
                "--connector",
                "2:GBT:60",
                "--password",
                "long-enough",
            ]
        )
        == 0
    )
    assert "3 connectors, with a password" in capsys.readouterr().out
    assert main(["tags", "add", "CARD-1"]) == 0
    assert (
        main(
            [
                "stations",
                "update",
                "ST-1",
                "--admin-status",
                "maintenance",
                "--accept-unknown-tags",
                "yes",
            ]
        )
        == 0
    )
    assert "updated" in capsys.readouterr().out
    assert main(["tariffs", "update", "TAR-1", "--price-per-kwh", "14.25"]) == 0
    assert main(["locations", "update", "LOC-1", "--name", "Mall 2", "--status", "inactive"]) == 0
    assert main(["tags", "update", "CARD-1", "--status", "Blocked"]) == 0
    shown = capsys.readouterr().out
    assert "tariff TAR-1 updated: price_per_kwh" in shown
    assert "location LOC-1 updated: name, status" in shown
    assert "id tag CARD-1 updated: status" in shown
    capsys.readouterr()
    for args, message in [
        (["stations", "add", "ST-1", "--connectors", "2"], "station_exists"),
        (
            ["stations", "add", "ST-2", "--connectors", "2", "--connector", "3:CCS2:50"],
            "outside 1..2",
        ),
        (
            ["stations", "add", "ST-2", "--connectors", "2", "--connector", "1:Plug:50"],
            "validation_error",
        ),
        (
            ["stations", "add", "ST-2", "--connectors", "2", "--location", "NOPE"],
            "location_not_found",
        ),
        (["stations", "add", "ST-2", "--connectors", "11"], "validation_error"),
        (["stations", "add", "ST 2", "--connectors", "1"], "validation_error"),
        (["tags", "add", "X" * 21], "validation_error"),
        (["stations", "update", "ST-1", "--admin-status", "broken"], "validation_error"),
        (["stations", "update", "NOPE", "--admin-status", "active"], "station_not_found"),
        (["tariffs", "update", "TAR-1", "--price-per-kwh", "-3"], "validation_error"),
        (["locations", "update", "NOPE", "--name", "x"], "location_not_found"),
        (["tags", "update", "CARD-1", "--status", "Lost"], "validation_error"),
        (["locations", "add", "LOC-2", "--name", "x", "--lat", "95"], "validation_error"),
    ]:
        assert main(args) == 1, args
        assert message in capsys.readouterr().err, args


def test_seed_demo_is_idempotent(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed-demo"]) == 0
    assert "6 stations added" in capsys.readouterr().out
    assert main(["seed-demo"]) == 0
    assert "0 stations added" in capsys.readouterr().out


async def test_admin_rest_provisioning_and_live_changes(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, admin_token=ADMIN
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with documented_client(base_url=endpoints.http_url, headers=headers) as http:
        assert (
            await http.post(
                "/api/v1/admin/tariffs",
                json={"id": "TAR-1", "name": "DC", "price_per_kwh": 15, "session_fee": 10},
            )
        ).status_code == 201
        assert (
            await http.post(
                "/api/v1/admin/locations",
                json={"id": "LOC-1", "name": "Mall", "tariff_id": "TAR-1"},
            )
        ).status_code == 201
        created = await http.post(
            "/api/v1/admin/stations",
            json={
                "id": "ST-1",
                "location_id": "LOC-1",
                "connectors_count": 2,
                "connectors": [{"connector_id": 1, "connector_type": "CCS2", "power_kw": 120}],
            },
        )
        assert created.status_code == 201, created.text
        bad = await http.post("/api/v1/admin/stations", json={"id": "ST-2"})
        assert (bad.status_code, bad.json()["error"]) == (400, "validation_error")
        assert "connectors_count" in bad.json()["message"]
        async with connect(endpoints.ocpp_url, "ST-1") as cp:
            boot = await cp.call(
                "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
            )
            assert boot["status"] == "Accepted"
            await cp.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
            patched = await http.patch(
                "/api/v1/admin/stations/ST-1", json={"admin_status": "maintenance"}
            )
            assert patched.status_code == 200
            status = (await http.get("/api/v1/station/status/ST-1")).json()
            assert status["status"] == "maintenance"
            await http.patch("/api/v1/admin/stations/ST-1", json={"registration_status": "Pending"})
            boot = await cp.call(
                "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
            )
            assert boot["status"] == "Pending"
        assert (
            await http.post("/api/v1/admin/id-tags", json={"id_tag": "CARD-9", "status": "Blocked"})
        ).status_code == 201
        for path, body, expected in [
            ("/api/v1/admin/locations/LOC-1", {"name": "Mall 2", "status": "inactive"}, 200),
            ("/api/v1/admin/tariffs/TAR-1", {"price_per_kwh": "16.50"}, 200),
            ("/api/v1/admin/tariffs/TAR-1", {"price_per_kwh": -1}, 400),
            ("/api/v1/admin/tariffs/TAR-1", {"price_per_kwh": None}, 400),
            ("/api/v1/admin/id-tags/CARD-9", {"status": "Accepted"}, 200),
            ("/api/v1/admin/id-tags/NOPE", {"status": "Accepted"}, 404),
            ("/api/v1/admin/locations/LOC-1", {"latitude": 123}, 400),
            # columns that always hold a value can't be emptied (was a 500: NOT NULL)
            ("/api/v1/admin/stations/ST-1", {"admin_status": None}, 400),
            ("/api/v1/admin/stations/ST-1", {"registration_status": None}, 400),
            ("/api/v1/admin/stations/ST-1", {"accept_unknown_tags": None}, 400),
            ("/api/v1/admin/locations/LOC-1", {"name": None}, 400),
            ("/api/v1/admin/locations/LOC-1", {"status": None}, 400),
        ]:
            response = await http.patch(path, json=body)
            assert response.status_code == expected, (path, body, response.text)
    row = await store.get_station(db, "ST-1")
    assert row is not None and row["admin_status"] == "maintenance"
    assert await db.fetchval("SELECT price_per_kwh FROM tariffs WHERE id='TAR-1'") == Decimal(
        "16.50"
    )
    assert await db.fetchval("SELECT status FROM id_tags WHERE id_tag='CARD-9'") == "Accepted"
    shutdown.set()


async def test_station_call_goes_through_the_running_server(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    await store.create_station(db, "ST-7", connectors_count=1)
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, admin_token=ADMIN
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPMS_")}
    env.update(CPMS_ADMIN_TOKEN=ADMIN, CPMS_DATABASE_URL=dsn, CPMS_LOG_LEVEL="WARNING")
    command = [
        sys.executable,
        "-m",
        "cpms",
        "station",
        "call",
        "ST-7",
        "Reset",
        '{"type": "Soft"}',
        "--url",
        endpoints.http_url,
    ]
    async with connect(endpoints.ocpp_url, "ST-7") as cp, trio.open_nursery() as inner:
        inner.start_soon(cp.answer, lambda _a, _p: {"status": "Accepted"})
        done = await trio.run_process(
            command, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "Accepted"}
    offline = await trio.run_process(
        command, env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert offline.returncode == 1 and b"station_offline" in offline.stderr
    shutdown.set()
