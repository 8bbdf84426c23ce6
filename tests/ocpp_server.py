"""Shared pieces of the OCPP tests: a provisioned server, the admin call, and one request and
answer per central-system command."""

from __future__ import annotations

import functools
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from cpms.kernel.passwords import hash_password
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage import stations as store
from tests.documented import documented_client

PASSWORD = "s3cret-pass"
#: a station password's scrypt hash, made once per password and run (45 ms each)
_hashed = functools.cache(hash_password)
ADMIN = "admin-test-token"
NOW = "2026-11-22T10:00:00Z"


async def provision(db: Database, station: str, password: str | None = PASSWORD) -> None:
    specs = [
        store.ConnectorSpec(1, "CCS2", Decimal("120")),
        store.ConnectorSpec(2, "GBT", Decimal("60")),
    ]
    await store.create_station(
        db,
        station,
        connectors_count=3,
        connectors=specs,
        password_hash=None if password is None else _hashed(password),
    )


CHARGER_ANSWERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "RemoteStartTransaction": ({"idTag": "TAG-OK", "connectorId": 1}, {"status": "Accepted"}),
    "RemoteStopTransaction": ({"transactionId": 1001}, {"status": "Accepted"}),
    "ChangeAvailability": ({"connectorId": 1, "type": "Inoperative"}, {"status": "Scheduled"}),
    "Reset": ({"type": "Soft"}, {"status": "Accepted"}),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "GetConfiguration": (
        {"key": ["HeartbeatInterval"]},
        {
            "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}],
            "unknownKey": [],
        },
    ),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "30"}, {"status": "Accepted"}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "TriggerMessage": (
        {"requestedMessage": "StatusNotification", "connectorId": 1},
        {"status": "Accepted"},
    ),
    "ReserveNow": (
        {"connectorId": 1, "expiryDate": NOW, "idTag": "TAG-OK", "reservationId": 7},
        {"status": "Accepted"},
    ),
    "CancelReservation": ({"reservationId": 7}, {"status": "Accepted"}),
    "SetChargingProfile": (
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
                },
            },
        },
        {"status": "Accepted"},
    ),
    "ClearChargingProfile": ({"id": 1}, {"status": "Accepted"}),
    "GetCompositeSchedule": (
        {"connectorId": 1, "duration": 3600},
        {
            "status": "Accepted",
            "connectorId": 1,
            "scheduleStart": NOW,
            "chargingSchedule": {
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
            },
        },
    ),
    "GetDiagnostics": ({"location": "ftp://diag.example/upload"}, {"fileName": "diag.zip"}),
    "UpdateFirmware": ({"location": "https://fw.example/fw.bin", "retrieveDate": NOW}, {}),
    "SendLocalList": (
        {
            "listVersion": 2,
            "updateType": "Full",
            "localAuthorizationList": [{"idTag": "TAG-OK", "idTagInfo": {"status": "Accepted"}}],
        },
        {"status": "Accepted"},
    ),
    "GetLocalListVersion": ({}, {"listVersion": 2}),
    "DataTransfer": (
        {"vendorId": "ACME", "messageId": "ping", "data": "1"},
        {"status": "Accepted", "data": "pong"},
    ),
}


async def admin(
    server: Endpoints, station: str, action: str, payload: dict[str, Any], timeout: float = 5
) -> httpx.Response:
    async with documented_client(base_url=server.http_url, timeout=30) as http:
        return await http.post(
            f"/api/v1/admin/stations/{station}/ocpp/{action}",
            json=payload,
            params={"timeout": timeout},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )


async def start_server(
    nursery: trio.Nursery, dsn: str, data_dir: Path, **options: Any
) -> tuple[Endpoints, trio.Event]:
    """A whole cpms on the test database and free ports, with ``options`` as settings; set the
    event to stop it."""
    settings = Settings(database_url=dsn, data_dir=data_dir, http_port=0, ocpp_port=0, **options)
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    return endpoints, shutdown
