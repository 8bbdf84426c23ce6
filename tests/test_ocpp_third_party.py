"""Conformance against a strict third-party OCPP 1.6J implementation (the ``ocpp`` package's
ChargePoint, which validates every message both ways against the OCPP JSON schemas)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from cpms.kernel.passwords import hash_password
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage import stations as store
from tests.documented import documented_client
from tests.test_ocpp_central import ADMIN, CHARGER_ANSWERS

SCRIPT = Path(__file__).with_name("third_party_charger.py")


class Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buffer = stream, b""

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise EOFError("the charger process ended")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))


async def test_third_party_charge_point_sees_no_violation(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    await store.create_station(
        db,
        "TP-1",
        connectors_count=2,
        password_hash=hash_password("third-party"),
        connectors=[store.ConnectorSpec(1, "CCS2", Decimal(120))],
    )
    await store.create_id_tag(db, "TAG-1")
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, admin_token=ADMIN
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), endpoints.ocpp_url, "TP-1", "third-party"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    lines = Lines(process.stdout)
    with trio.fail_after(30):
        first = await lines.next()
        assert first["kind"] == "answers", first
        assert first["answers"] == {
            "BootNotification": "Accepted",
            "Heartbeat": True,
            "StatusNotification": True,
            "Authorize": "Accepted",
            "StartTransaction": first["answers"]["StartTransaction"],
            "MeterValues": True,
            "StopTransaction": "Accepted",
            "DataTransfer": "UnknownVendorId",
            "DiagnosticsStatusNotification": True,
            "FirmwareStatusNotification": True,
        }
        assert (await lines.next())["kind"] == "ready"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with documented_client(base_url=endpoints.http_url, headers=headers) as http:
            for action, (request, _answer) in CHARGER_ANSWERS.items():
                response = await http.post(
                    f"/api/v1/admin/stations/TP-1/ocpp/{action}", json=request, timeout=10
                )
                assert response.status_code == 200, (action, response.text)
                seen = await lines.next()
                assert seen == {"kind": "command", "action": action}
    await process.stdin.aclose()
    with trio.fail_after(10):
        assert await process.wait() == 0
    shutdown.set()
