"""The central system over real WebSockets: handshake rules, every charger message, every server
command, the malformed-frame corpus, and reconnects."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from actors.charge_point.handlers import HANDLERS
from actors.charge_point.passwords import LoginThrottle
from actors.charge_point.station import StationActor
from actors.charge_point.telemetry import Telemetry
from cpms.ocpp.frames import Call, CallResult, parse_frame
from cpms.ocpp.meter import parse_samples
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage import stations as store
from storage.clients import ensure_client
from tests.ocpp_client import connect
from tests.ocpp_server import ADMIN, CHARGER_ANSWERS, NOW, PASSWORD, admin, provision


async def test_handshake_rules(server: Endpoints, db: Database) -> None:
    base = server.ocpp_url
    with pytest.raises(ConnectionRejected) as info:
        async with connect(base, "CP-1", PASSWORD, subprotocol=False):
            pass
    assert info.value.status_code == 400
    with pytest.raises(ConnectionRejected) as info:
        async with connect(base, "NOPE-1", PASSWORD):
            pass
    assert info.value.status_code == 404
    for password in (None, "wrong"):
        with pytest.raises(ConnectionRejected) as info:
            async with connect(base, "CP-1", password):
                pass
        assert info.value.status_code == 401
    async with connect(base, "CP-1", PASSWORD) as cp:
        assert cp.ws.subprotocol == "ocpp1.6"
        boot = await cp.call(
            "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
        )
        assert boot["status"] == "Accepted" and boot["interval"] == 60
    # Once a password has been accepted, a wrong one is still refused (the check is cached).
    with pytest.raises(ConnectionRejected) as info:
        async with connect(base, "CP-1", "wrong"):
            pass
    assert info.value.status_code == 401


async def test_wrong_station_passwords_are_throttled_and_known_chargers_still_get_in(
    server: Endpoints,
) -> None:
    """Issue 15, item 10: each wrong password cost an unthrottled scrypt."""
    async with connect(server.ocpp_url, "CP-1", PASSWORD):
        pass  # CP-1's charger has been let in before
    for _ in range(10):
        with pytest.raises(ConnectionRejected) as info:
            async with connect(server.ocpp_url, "CP-1", "guess"):
                pass
        assert info.value.status_code == 401
    for station, password in (("CP-1", "guess"), ("CP-2", PASSWORD)):  # the address is throttled
        with pytest.raises(ConnectionRejected) as info:
            async with connect(server.ocpp_url, station, password):
                pass
        assert info.value.status_code == 429
        assert 50 < int(dict(info.value.headers)[b"retry-after"]) <= 60
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:  # the real charger: in
        assert "currentTime" in await cp.call("Heartbeat", {})


async def test_the_login_throttle_counts_per_key_within_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = LoginThrottle(limit=3, window=60)
    for _ in range(3):
        assert throttle.retry_after("station:A", "ip:1") == 0
        throttle.failed("station:A", "ip:1")
    assert throttle.retry_after("station:A", "ip:2") == 60
    assert throttle.retry_after("station:B", "ip:1") == 60
    assert throttle.retry_after("station:B", "ip:2") == 0
    await trio.sleep(61)
    assert throttle.retry_after("station:A", "ip:1") == 0


async def test_a_whole_transaction(server: Endpoints, db: Database) -> None:
    client = uuid.uuid4()
    await ensure_client(db, client)
    await store.create_id_tag(db, "TAG-OK", client_id=client)
    await store.create_id_tag(db, "TAG-BLOCKED", status="Blocked")
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:
        boot = await cp.call(
            "BootNotification",
            {
                "chargePointVendor": "ACME",
                "chargePointModel": "Fast-120",
                "firmwareVersion": "1.2.3",
                "chargePointSerialNumber": "SN-1",
            },
        )
        assert boot["status"] == "Accepted" and boot["interval"] == 60 and boot["currentTime"]
        assert "currentTime" in await cp.call("Heartbeat", {})
        for connector in (0, 1, 2):
            await cp.call(
                "StatusNotification",
                {"connectorId": connector, "errorCode": "NoError", "status": "Available"},
            )
        assert (await cp.call("Authorize", {"idTag": "TAG-OK"}))["idTagInfo"] == {
            "status": "Accepted"
        }
        assert (await cp.call("Authorize", {"idTag": "TAG-BLOCKED"}))["idTagInfo"]["status"] == (
            "Blocked"
        )
        assert (await cp.call("Authorize", {"idTag": "WHO"}))["idTagInfo"]["status"] == "Invalid"
        started = await cp.call(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG-OK", "meterStart": 1000, "timestamp": NOW},
        )
        tx = started["transactionId"]
        assert started["idTagInfo"]["status"] == "Accepted" and tx >= 1000
        await cp.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        )
        await cp.call(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": tx,
                "meterValue": [
                    {
                        "timestamp": "2026-11-22T10:05:00Z",
                        "sampledValue": [
                            {
                                "value": "6.5",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "kWh",
                            },
                            {"value": "22000", "measurand": "Power.Active.Import", "unit": "W"},
                            {"value": "64", "measurand": "SoC", "unit": "Percent"},
                            {
                                "value": "31.5",
                                "measurand": "Current.Import",
                                "unit": "A",
                                "phase": "L1",
                            },
                            {"value": "231", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
                        ],
                    }
                ],
            },
        )
        await trio.sleep(0.5)  # readings are written in batches
        row = await db.fetchrow("SELECT * FROM charging_sessions WHERE transaction_id=$1", tx)
        assert row is not None
        assert (row["energy_kwh"], row["power_kw"], row["soc_percent"]) == (
            Decimal("5.500"),
            Decimal("22.000"),
            64,
        )
        stopped = await cp.call(
            "StopTransaction",
            {
                "transactionId": tx,
                "idTag": "TAG-OK",
                "meterStop": 12000,
                "timestamp": "2026-11-22T10:30:00Z",
                "reason": "Local",
            },
        )
        assert stopped == {"idTagInfo": {"status": "Accepted"}}
    row = await db.fetchrow("SELECT * FROM charging_sessions WHERE transaction_id=$1", tx)
    assert row is not None
    assert (row["status"], row["energy_kwh"], row["client_id"]) == (
        "settled",
        Decimal("11.000"),
        client,
    )
    station = await store.get_station(db, "CP-1")
    assert station is not None
    assert (station["vendor"], station["firmware_version"], station["station_status"]) == (
        "ACME",
        "1.2.3",
        "Available",
    )
    samples = await db.fetch("SELECT measurand, value, unit FROM meter_samples ORDER BY id")
    assert ("Energy.Active.Import.Register", Decimal("6500.0"), "Wh") in [
        (s["measurand"], s["value"], s["unit"]) for s in samples
    ]
    await trio.sleep(0.5)  # the message log is written in batches
    logged = await db.fetch(
        "SELECT direction, action FROM ocpp_messages WHERE station_id='CP-1' ORDER BY id"
    )
    assert ("in", "StartTransaction") in [(r["direction"], r["action"]) for r in logged]
    assert ("out", "StopTransaction") in [(r["direction"], r["action"]) for r in logged]


async def test_every_server_command(server: Endpoints) -> None:
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:
        await cp.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        for action, (request, answer) in CHARGER_ANSWERS.items():
            seen: list[tuple[str, dict[str, Any]]] = []
            async with trio.open_nursery() as nursery:

                async def charger(
                    reply: dict[str, Any] = answer, log: list[tuple[str, dict[str, Any]]] = seen
                ) -> None:
                    log.append(await cp.answer(lambda _a, _p: reply))

                nursery.start_soon(charger)
                response = await admin(server, "CP-1", action, request)
            assert response.status_code == 200, response.text
            assert response.json()["response"] == answer, action
            assert seen == [(action, request)], action

        # A charger answer that breaks the schema is refused, not passed on.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cp.answer, lambda _a, _p: {"status": "Maybe"})
            response = await admin(server, "CP-1", "Reset", {"type": "Hard"})
        assert response.status_code == 503
        assert response.json()["error"] == "ocpp_communication_error"
        # No answer at all: the command times out, and the next one still works.
        response = await admin(server, "CP-1", "ClearCache", {}, timeout=0.3)
        assert (response.status_code, response.json()["error"]) == (503, "timeout")
        await cp.receive()  # the unanswered ClearCache
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cp.answer, lambda _a, _p: {"status": "Accepted"})
            response = await admin(server, "CP-1", "ClearCache", {})
        assert response.json()["response"] == {"status": "Accepted"}

    response = await admin(server, "CP-1", "Reset", {"type": "Soft"})
    assert (response.status_code, response.json()["error"]) == (503, "station_offline")
    response = await admin(server, "CP-1", "Reset", {"type": "Sideways"})
    assert (response.status_code, response.json()["error"]) == (400, "validation_error")
    response = await admin(server, "CP-1", "BootNotification", {})
    assert (response.status_code, response.json()["error"]) == (404, "unknown_action")
    response = await admin(server, "NOPE", "Reset", {"type": "Soft"})
    assert (response.status_code, response.json()["error"]) == (404, "station_not_found")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        refused = await http.post("/api/v1/admin/stations/CP-1/ocpp/Reset", json={"type": "Soft"})
        log = await http.get(
            "/api/v1/admin/stations/CP-1/messages", headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")  # no token
    actions = {(m["direction"], m["action"]) for m in log.json()["messages"]}
    assert ("out", "GetConfiguration") in actions and ("in", "BootNotification") in actions


async def station_status(server: Endpoints, station: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get(f"/api/v1/station/status/{station}")
    return dict(response.json())


MALFORMED = [
    ("not json", "{nope", "FormationViolation"),
    ("not an array", '{"a": 1}', "FormationViolation"),
    ("wrong message type id", '[7, "m1", "Heartbeat", {}]', "PropertyConstraintViolation"),
    ("message type not a number", '["2", "m1", "Heartbeat", {}]', "TypeConstraintViolation"),
    ("missing elements", '[2, "m1", "Heartbeat"]', "ProtocolError"),
    ("payload not an object", '[2, "m1", "Heartbeat", []]', "TypeConstraintViolation"),
    ("unknown action", '[2, "m1", "FlyToTheMoon", {}]', "NotImplemented"),
    ("action for the other side", '[2, "m1", "Reset", {"type": "Soft"}]', "NotSupported"),
    ("missing field", '[2, "m1", "StartTransaction", {"connectorId": 1}]', "ProtocolError"),
    ("wrong type", '[2, "m1", "Authorize", {"idTag": 12}]', "TypeConstraintViolation"),
    (
        "too long",
        '[2, "m1", "Authorize", {"idTag": "' + "x" * 21 + '"}]',
        "TypeConstraintViolation",
    ),
    (
        "bad enum",
        '[2, "m1", "StatusNotification", {"connectorId": 1, "errorCode": "Oops", '
        '"status": "Available"}]',
        "PropertyConstraintViolation",
    ),
    ("extra field", '[2, "m1", "Heartbeat", {"x": 1}]', "FormationViolation"),
    (
        "connector out of range",
        '[2, "m1", "StatusNotification", {"connectorId": 9, '
        '"errorCode": "NoError", "status": "Available"}]',
        "PropertyConstraintViolation",
    ),
    (
        "meter value not a number",
        '[2, "m1", "MeterValues", {"connectorId": 1, "meterValue": '
        '[{"timestamp": "2026-11-22T10:00:00Z", "sampledValue": [{"value": "lots"}]}]}]',
        "PropertyConstraintViolation",
    ),
    ("result for an unknown id", '[3, "m1", {}]', "ProtocolError"),
    (
        "oversized",
        '[2, "m1", "DataTransfer", {"vendorId": "V", "data": "' + "x" * 70000 + '"}]',
        "FormationViolation",
    ),
]


@pytest.mark.parametrize(("case", "raw", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_frames_get_their_callerror(
    server: Endpoints, case: str, raw: str, code: str
) -> None:
    async with (
        connect(server.ocpp_url, "CP-1", PASSWORD) as bad,
        connect(server.ocpp_url, "CP-2", PASSWORD) as good,
    ):
        await bad.send_raw(raw)
        reply = await bad.receive()
        assert reply[0] == 4 and reply[2] == code, reply
        if case not in ("not json", "not an array"):
            assert reply[1] == "m1"
        # The same connection and another station go on being served.
        assert "currentTime" in await bad.call("Heartbeat", {})
        assert (
            await good.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        )["status"] == "Accepted"


async def test_a_new_connection_replaces_the_old(server: Endpoints) -> None:
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as first:
        await first.call("Heartbeat", {})
        async with connect(server.ocpp_url, "CP-1", PASSWORD) as second:
            await second.call("Heartbeat", {})
            with pytest.raises(ConnectionClosed) as closed:
                await first.receive()
            assert closed.value.reason.code == 1000
            assert closed.value.reason.reason == "replaced by a new connection"
            await second.call(
                "StatusNotification",
                {"connectorId": 2, "errorCode": "NoError", "status": "Available"},
            )
            status = await station_status(server, "CP-1")
            assert status["is_online"] and status["status"] == "available"
            assert status["connectors"][1]["status"] == "Available"


async def test_unknown_station_registers_itself_when_allowed(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, ocpp_auto_register=True
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    async with connect(endpoints.ocpp_url, "SIM-0001") as cp:
        boot = await cp.call(
            "BootNotification", {"chargePointVendor": "S", "chargePointModel": "M"}
        )
        assert boot["status"] == "Accepted"
        assert (await cp.call("Authorize", {"idTag": "ANYONE"}))["idTagInfo"]["status"] == (
            "Accepted"
        )
    station = await store.get_station(db, "SIM-0001")
    assert station is not None and station["accept_unknown_tags"]
    assert [c["connector_id"] for c in await store.connectors(db, "SIM-0001")] == [1, 2]

    async def first_contact(ready: trio.Event) -> None:
        with contextlib.suppress(ConnectionClosed):  # the later connection replaces the other
            async with connect(endpoints.ocpp_url, "SIM-0002") as cp:
                boot = {"chargePointVendor": "S", "chargePointModel": "M"}
                assert (await cp.call("BootNotification", boot))["status"] == "Accepted"
                ready.set()
                await trio.sleep_forever()

    with trio.fail_after(20):  # two first contacts at once: one record, both let in
        async with trio.open_nursery() as contacts:
            booted = [trio.Event(), trio.Event()]
            for ready in booted:
                contacts.start_soon(first_contact, ready)
            for ready in booted:
                await ready.wait()
            contacts.cancel_scope.cancel()
    assert [c["connector_id"] for c in await store.connectors(db, "SIM-0002")] == [1, 2]
    # made by an operator since the server started (no actor yet): its password is asked for
    await provision(db, "CP-LATE")
    with pytest.raises(ConnectionRejected) as info:
        async with connect(endpoints.ocpp_url, "CP-LATE"):
            raise AssertionError("let in without its password")
    assert info.value.status_code == 401
    async with connect(endpoints.ocpp_url, "CP-LATE", PASSWORD) as cp:
        boot = {"chargePointVendor": "S", "chargePointModel": "M"}
        assert (await cp.call("BootNotification", boot))["status"] == "Accepted"
        payload = {"connectorId": 2, "errorCode": "NoError", "status": "Available"}
        await cp.call("StatusNotification", payload)
    late = await store.get_station(db, "CP-LATE")
    assert late is not None and late["connectors_count"] == 3 and not late["accept_unknown_tags"]
    assert [
        (c["connector_id"], c["connector_type"]) for c in await store.connectors(db, "CP-LATE")
    ] == [
        (1, "CCS2"),
        (2, "GBT"),
    ]
    shutdown.set()


async def test_a_first_contact_finds_a_record_made_meanwhile_as_it_was_made(db: Database) -> None:
    """Registration on first contact neither overwrites a record an operator made a moment
    before (its password then asked for) nor adds connectors to it; a new one comes back as
    stored."""
    await provision(db, "CP-MADE")
    specs = [store.ConnectorSpec(n, "Type2", Decimal("22")) for n in (1, 2)]
    stored = await store.register_first_contact(
        db, "CP-MADE", connectors_count=10, connectors=specs, accept_unknown_tags=True
    )
    assert stored is not None
    row, connectors, made = stored
    assert not made and row["password_hash"] is not None and row["connectors_count"] == 3
    assert not row["accept_unknown_tags"]
    assert [(c["connector_id"], c["connector_type"]) for c in connectors] == [
        (1, "CCS2"),
        (2, "GBT"),
    ]
    stored = await store.register_first_contact(
        db, "SIM-NEW", connectors_count=10, connectors=specs, accept_unknown_tags=True
    )
    assert stored is not None
    row, connectors, made = stored
    assert made and row["password_hash"] is None and row["connectors_count"] == 10
    assert row["registration_status"] and row["accept_unknown_tags"]
    assert [(c["connector_id"], c["power_kw"]) for c in connectors] == [
        (1, Decimal("22")),
        (2, Decimal("22")),
    ]


async def test_queued_transaction_messages_are_accepted_once_after_restart(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    await provision(db, "CP-9")
    settings = Settings(database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0)
    start = {"connectorId": 2, "idTag": "ANY", "meterStart": 500, "timestamp": NOW}
    for _restart in range(2):
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
            async with connect(endpoints.ocpp_url, "CP-9", PASSWORD) as cp:
                # The charger replays its queue: the same StartTransaction, then the rest.
                tx = (await cp.call("StartTransaction", start))["transactionId"]
                await cp.call(
                    "MeterValues",
                    {
                        "connectorId": 2,
                        "transactionId": tx,
                        "meterValue": [
                            {
                                "timestamp": "2026-11-22T10:10:00Z",
                                "sampledValue": [{"value": "3500", "unit": "Wh"}],
                            }
                        ],
                    },
                )
                await cp.call(
                    "StopTransaction",
                    {"transactionId": tx, "meterStop": 7500, "timestamp": "2026-11-22T10:20:00Z"},
                )
            shutdown.set()
    sessions = await db.fetch("SELECT transaction_id, energy_kwh, status FROM charging_sessions")
    assert [(s["transaction_id"], s["energy_kwh"], s["status"]) for s in sessions] == [
        (tx, Decimal("7.000"), "settled")
    ]
    samples = await db.fetchval("SELECT count(*) FROM meter_samples WHERE transaction_id=$1", tx)
    assert samples == 2  # each MeterValues was stored as sent; nothing was merged or lost


def test_frames_serialise_compactly() -> None:
    from cpms.ocpp.frames import Call, parse_frame

    call = Call("1", "Heartbeat", {})
    assert call.encode() == '[2,"1","Heartbeat",{}]'
    assert parse_frame(call.encode()) == call
    assert json.loads(call.encode()) == [2, "1", "Heartbeat", {}]


async def test_flooding_charger_gets_generic_errors_and_stays_served(server: Endpoints) -> None:
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:
        for n in range(150):  # far past the burst of 100, without waiting for answers
            await cp.send_raw(json.dumps([2, f"f{n}", "Heartbeat", {}]))
        replies = [await cp.receive() for _ in range(150)]
        codes = [r[2] if r[0] == 4 else "ok" for r in replies]
        assert codes.count("ok") >= 100 and codes.count("GenericError") >= 1
        await trio.sleep(2)  # the bucket refills
        assert "currentTime" in await cp.call("Heartbeat", {})


async def test_a_sustained_flood_is_disconnected_and_nobody_else_notices(
    server: Endpoints,
) -> None:
    """Issue 15, item 9: 1,000 frames/s used to be answered forever (39 % of a core)."""
    async with connect(server.ocpp_url, "CP-2", PASSWORD) as bystander:
        async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:

            async def flood() -> None:
                with contextlib.suppress(ConnectionClosed):
                    for n in range(5_000):
                        await cp.send_raw(json.dumps([2, f"f{n}", "Heartbeat", {}]))
                        if n % 10 == 0:
                            await trio.sleep(0.01)  # about 1,000 frames/s

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                with trio.fail_after(20), pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await cp.receive()
                nursery.cancel_scope.cancel()
            assert closed.value.reason.code == 1008
        assert "currentTime" in await bystander.call("Heartbeat", {})


def masked_text_frame(payload: bytes) -> bytes:
    """One client text frame (RFC 6455 §5.2) carrying ``payload`` as it is, valid UTF-8 or not."""
    assert len(payload) < 126
    mask = b"\x0f\xa0\x5a\x33"
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_a_text_frame_that_is_not_utf8_is_closed_with_1007(server: Endpoints) -> None:
    """Issue 15, item 10: the connection used to be dropped without a close frame."""
    async with connect(server.ocpp_url, "CP-2", PASSWORD) as bystander:
        async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:
            assert "currentTime" in await cp.call("Heartbeat", {})
            not_utf8 = b'[2,"u1","Heartbeat",{"x":"\xc3\x28"}]'
            await cp.ws._stream.send_all(masked_text_frame(not_utf8))
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await cp.receive()
            assert closed.value.reason.code == 1007
        assert "currentTime" in await bystander.call("Heartbeat", {})
        async with connect(server.ocpp_url, "CP-1", PASSWORD) as again:  # nothing held against it
            assert "currentTime" in await again.call("Heartbeat", {})


async def test_a_flooding_chargers_answers_to_our_commands_still_count(server: Endpoints) -> None:
    """The bucket is kept empty by a flood of CALLs, yet each command's answer gets through: the
    server asked for it (one CALL outstanding at a time, so answers can't flood)."""
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as cp:
        await cp.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        refused = 0

        async def flood() -> None:
            for n in itertools.count():
                await cp.send_raw(json.dumps([2, f"f{n}", "Heartbeat", {}]))
                await trio.sleep(1 / 60)  # 60 frames/s against 20/s allowed: refused, not cut

        async def read() -> None:
            nonlocal refused
            while True:
                frame = await cp.receive()
                if frame[0] == 2:  # a command of ours: answer it
                    await cp.send_raw(json.dumps([3, frame[1], {"status": "Accepted"}]))
                elif frame[0] == 4 and frame[2] == "GenericError":
                    refused += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(read)
            with trio.fail_after(10):
                while refused < 20:  # noqa: ASYNC110 - the burst is spent, the flood refused
                    await trio.sleep(0.05)
            for _ in range(3):
                response = await admin(server, "CP-1", "ClearCache", {}, timeout=2)
                assert response.json()["response"] == {"status": "Accepted"}, response.json()
            nursery.cancel_scope.cancel()


async def test_tls_security_profile_2(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    import ssl

    import trustme
    from trio_websocket import open_websocket_url

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    await provision(db, "CP-TLS")
    settings = Settings(
        database_url=dsn,
        data_dir=tmp_path,
        http_port=0,
        ocpp_port=0,
        ocpp_tls_cert=tmp_path / "cert.pem",
        ocpp_tls_key=tmp_path / "key.pem",
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    assert endpoints.ocpp_url.startswith("wss://")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    token = base64.b64encode(f"CP-TLS:{PASSWORD}".encode())
    async with open_websocket_url(
        f"{endpoints.ocpp_url}/CP-TLS",
        ssl_context=client,
        subprotocols=["ocpp1.6"],
        extra_headers=[(b"Authorization", b"Basic " + token)],
    ) as ws:
        await ws.send_message(json.dumps([2, "t1", "Heartbeat", {}]))
        reply = json.loads(await ws.get_message())
        assert reply[0] == 3 and "currentTime" in reply[2]
    shutdown.set()


async def test_strings_text_cannot_hold_are_refused_and_the_log_goes_on(
    server: Endpoints, db: Database
) -> None:
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as charger:
        for data in ("nul \\u0000 here", "lone \\ud800 surrogate"):
            await charger.send_raw(f'[2,"d1","DataTransfer",{{"vendorId":"V","data":"{data}"}}]')
            reply = await charger.receive()
            assert reply[:3] == [4, "d1", "FormationViolation"], reply
        await charger.call("Heartbeat", {})
        for _ in range(50):
            await trio.sleep(0.1)
            logged = await db.fetch(
                "SELECT direction, action FROM ocpp_messages WHERE station_id='CP-1'"
            )
            if ("out", "Heartbeat") in [(r["direction"], r["action"]) for r in logged]:
                break
        assert ("in", "Heartbeat") in [(r["direction"], r["action"]) for r in logged]


async def test_a_row_the_database_refuses_costs_only_itself(db: Database) -> None:
    telemetry = Telemetry()
    good = Call("g1", "Heartbeat", {})
    telemetry.frame("CP-1", "in", good, None)
    bad = '[2,"b1","DataTransfer",{not json}]'  # as if cut from a frame that was not
    telemetry.frame("CP-1", "in", Call("b1", "DataTransfer", {}), None, bad)
    telemetry.frame("CP-1", "out", CallResult("g1", {"currentTime": "x"}), "Heartbeat")
    with trio.move_on_after(1):
        await telemetry.run(db, flush_every=0.05)
    rows = await db.fetch("SELECT unique_id, direction FROM ocpp_messages ORDER BY id")
    assert [(r["unique_id"], r["direction"]) for r in rows] == [("g1", "in"), ("g1", "out")]
    assert telemetry.dropped == 1


async def test_the_message_log_keeps_every_character(db: Database) -> None:
    telemetry = Telemetry()
    # whitespace between tokens (a newline, a tab) and escapes stay in the payload cut from a frame
    text = '[2,"u1","DataTransfer",{"vendorId":"V",\n\t"data":"a\\\\b \\"q\\" \\t"}]'
    telemetry.frame("CP\\1", "in", parse_frame(text), None, text)
    telemetry.frame("CP\\1", "out", CallResult("t\tb\r\nc", {}), None)
    with trio.move_on_after(1):
        await telemetry.run(db, flush_every=0.05)
    rows = await db.fetch(
        "SELECT station_id, unique_id, action, payload FROM ocpp_messages ORDER BY id"
    )
    assert [tuple(r.values()) for r in rows] == [
        ("CP\\1", "u1", "DataTransfer", {"vendorId": "V", "data": 'a\\b "q" \t'}),
        ("CP\\1", "t\tb\r\nc", None, {}),
    ]
    assert telemetry.dropped == 0


async def test_meter_samples_are_copied_with_their_empty_fields(db: Database) -> None:
    telemetry = Telemetry()
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    samples = parse_samples(
        [
            {
                "timestamp": at.isoformat(),
                "sampledValue": [
                    {"value": "6.5", "unit": "kWh"},
                    {"value": "230.1", "measurand": "Voltage", "phase": "L1", "unit": "V"},
                    {"value": "1E+3", "measurand": "Power.Active.Import", "context": "Trigger"},
                ],
            }
        ],
        "m1",
    )
    telemetry.samples("CP\\1", 2, None, samples[:1])
    telemetry.samples("CP-2", 1, 1234, samples[1:])
    telemetry.heartbeat("CP-2")
    with trio.move_on_after(1):
        await telemetry.run(db, flush_every=0.05)
    rows = await db.fetch(
        """SELECT station_id, connector_id, transaction_id, sampled_at, measurand, phase, unit,
                  context, location, value FROM meter_samples ORDER BY id"""
    )
    assert [tuple(r.values()) for r in rows] == [
        (
            "CP\\1",
            2,
            None,
            at,
            "Energy.Active.Import.Register",
            None,
            "Wh",
            None,
            None,
            Decimal("6500.0"),
        ),
        ("CP-2", 1, 1234, at, "Voltage", "L1", "V", None, None, Decimal("230.1")),
        ("CP-2", 1, 1234, at, "Power.Active.Import", None, "W", "Trigger", None, Decimal(1000)),
    ]
    assert (telemetry.written, telemetry.dropped) == (4, 0)


async def test_a_crashed_station_actor_lets_its_connection_go(
    server: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: StationActor) -> None:
        raise RuntimeError("a bug in the actor")

    async with connect(server.ocpp_url, "CP-1", PASSWORD) as charger:
        assert "currentTime" in await charger.call("Heartbeat", {})
        monkeypatch.setattr(StationActor, "publish", broken)  # the next status change crashes it
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        assert await charger.call("StatusNotification", status) == {}  # answered, then crashed
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await charger.receive()  # closed, so the charger connects again
    monkeypatch.undo()
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as charger:  # to the restarted actor
        assert "currentTime" in await charger.call("Heartbeat", {})
        assert await charger.call("StatusNotification", status) == {}


async def test_a_failing_handler_answers_internal_error_and_the_station_goes_on(
    server: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> dict[str, Any]:
        raise ConnectionError("database went away")

    monkeypatch.setitem(HANDLERS, "Authorize", broken)
    async with connect(server.ocpp_url, "CP-1", PASSWORD) as charger:
        await charger.send_raw('[2,"a1","Authorize",{"idTag":"T1"}]')
        assert (await charger.receive())[:3] == [4, "a1", "InternalError"]
        assert "currentTime" in await charger.call("Heartbeat", {})


async def test_one_stations_bad_frames_never_cost_another_stations_telemetry(
    server: Endpoints, db: Database
) -> None:
    """Issue 15, item 8: NaN, Infinity or 1e999999 in three stations' frames made the batched
    writer drop a victim's samples and log rows. They are refused at the door now, and the
    victim's every row is written."""
    nasty = [
        '[2,"n1","DataTransfer",{"vendorId":"V","data":"x","messageId":NaN}]',
        '[2,"n2","Heartbeat",{"x":Infinity}]',
        '[2,"n3","Heartbeat",{"x":1e999999}]',
        '[2,"n4","Heartbeat",{"x":1.' + "1" * 20_000 + "}]",
    ]
    victim_frames = 20
    async with (
        connect(server.ocpp_url, "CP-1", PASSWORD) as attacker,
        connect(server.ocpp_url, "CP-2", PASSWORD) as victim,
    ):
        for n in range(victim_frames):
            for text in nasty:
                await attacker.send_raw(text)
                reply = await attacker.receive()
                assert reply[0] == 4 and reply[2] == "FormationViolation", reply
            payload = {
                "connectorId": 1,
                "meterValue": [
                    {"timestamp": NOW, "sampledValue": [{"value": str(1000 + n), "unit": "Wh"}]}
                ],
            }
            assert await victim.call("MeterValues", payload) == {}
    samples = "SELECT count(*) FROM meter_samples WHERE station_id = 'CP-2'"
    logged = "SELECT count(*) FROM ocpp_messages WHERE station_id = 'CP-2'"
    with trio.fail_after(10):  # the writer flushes in the background
        while await db.fetchval(samples) < victim_frames:  # noqa: ASYNC110
            await trio.sleep(0.05)
        while await db.fetchval(logged) < 2 * victim_frames:  # noqa: ASYNC110
            await trio.sleep(0.05)
