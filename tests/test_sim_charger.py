"""The virtual charge point against the real server: boot, status sequences, sessions, every
command answered conformingly, faults, and the offline queue."""

from __future__ import annotations

import uuid
from typing import Any

import trio

from cpms.ocpp import schemas
from cpms.server.app import Endpoints
from sim.charger import VirtualChargePoint
from sim.commands import ANSWERS
from sim.curve import Vehicle
from storage import Database
from storage import stations as store
from storage.clients import ensure_client
from tests.ocpp_server import CHARGER_ANSWERS, PASSWORD, admin


async def tagged(db: Database, tag: str = "TAG-SIM") -> str:
    client = uuid.uuid4()
    await ensure_client(db, client)
    await store.create_id_tag(db, tag, client_id=client)
    return tag


def charger(server: Endpoints, station: str = "CP-1", **options: Any) -> VirtualChargePoint:
    options.setdefault("meter_interval", 0.2)
    options.setdefault("reconnect_delay", (0.05, 0.1))
    return VirtualChargePoint(station, server.ocpp_url, password=PASSWORD, **options)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state another task changes
            await trio.sleep(0.02)


async def transactions(db: Database) -> list[dict[str, Any]]:
    return await db.fetch(
        "SELECT transaction_id, status, meter_start_wh, meter_stop_wh, stop_reason"
        " FROM charging_sessions ORDER BY transaction_id"
    )


async def test_boots_and_reports_every_connector(server: Endpoints, db: Database) -> None:
    async with charger(server, connectors=3) as cp:
        await cp.wait_booted()
        assert cp.boot_status == "Accepted" and cp.config["HeartbeatInterval"] == "60"
        await until(lambda: cp.stats.sent["StatusNotification"] >= 4)
        with trio.fail_after(10):  # the boot is written with the next telemetry batch
            while (await store.get_station(db, "CP-1") or {}).get("vendor") != "cpms-sim":  # noqa: ASYNC110
                await trio.sleep(0.05)
    assert cp.stats.errors == {}


async def test_a_driver_session_walks_the_status_sequence(server: Endpoints, db: Database) -> None:
    tag = await tagged(db)
    async with charger(server, time_scale=600) as cp:
        await cp.wait_booted()
        tx = await cp.plug_in(1, tag, vehicle=Vehicle(40, 97.0, 11), stop_after=0.3)
        assert tx is not None
        await tx.ended.wait()
        await until(lambda: not cp._outbox)
    history = cp.connectors[1].history
    assert history == ["Preparing", "Charging", "SuspendedEV", "Finishing", "Available"]
    [row] = await transactions(db)
    assert row["status"] == "settled" and row["stop_reason"] == "EVDisconnected"
    assert row["meter_stop_wh"] > row["meter_start_wh"]  # the energy register only grows
    assert cp.stats.sent["MeterValues"] >= 2 and cp.stats.errors == {}


async def test_an_unknown_tag_is_refused_at_the_charger(server: Endpoints) -> None:
    async with charger(server) as cp:
        await cp.wait_booted()
        assert await cp.plug_in(1, "NOBODY") is None
        assert cp.connectors[1].history == ["Preparing", "Available"]
        assert cp.stats.events["authorize_refused"] == 1


def test_every_command_answer_is_valid_ocpp() -> None:
    cp = VirtualChargePoint("CP-X", "ws://unused/ws")
    for action, (request, _) in CHARGER_ANSWERS.items():
        schemas.validate(action, request, "1")
        answer, _after = ANSWERS[action](cp, request)
        schemas.validate(f"{action}Response", answer, "1")


async def test_every_command_through_the_server(server: Endpoints, db: Database) -> None:
    tag = await tagged(db, "TAG-OK")
    async with charger(server, time_scale=10) as cp:
        await cp.wait_booted()
        for action, (request, _) in CHARGER_ANSWERS.items():
            if action == "RemoteStopTransaction":
                await until(lambda: cp.connectors[1].tx is not None)
                await until(lambda: cp.connectors[1].tx.transaction_id is not None)  # type: ignore[union-attr]
                request = {"transactionId": cp.connectors[1].tx.transaction_id}  # type: ignore[union-attr]
            if action == "ReserveNow":  # ChangeAvailability took connector 1 out of service
                await admin(
                    server, "CP-1", "ChangeAvailability", {"connectorId": 1, "type": "Operative"}
                )
                await until(lambda: cp.connectors[1].status == "Available")
            if action == "Reset":
                continue  # below, it reconnects
            reply = await admin(server, "CP-1", action, request)
            assert reply.status_code == 200, (action, reply.text)
            answer = reply.json()["response"]
            schemas.validate(f"{action}Response", answer, "1")
            if action == "RemoteStartTransaction":
                assert answer["status"] == "Accepted"
        assert sorted(cp.stats.received) == sorted(set(CHARGER_ANSWERS) - {"Reset"})
        before = cp.connections
        assert (await admin(server, "CP-1", "Reset", {"type": "Soft"})).json()["response"] == {
            "status": "Accepted"
        }
        await until(lambda: cp.connections > before and cp.connected)
        # the progress notifications that follow GetDiagnostics and UpdateFirmware arrive
        query = "SELECT diagnostics_status, firmware_status FROM stations WHERE id = 'CP-1'"
        with trio.fail_after(5):
            while list((await db.fetchrow(query) or {}).values()) != ["Uploaded", "Installed"]:  # noqa: ASYNC110
                await trio.sleep(0.1)
    assert [r["stop_reason"] for r in await transactions(db)] == ["Remote"]
    assert not [e for e in cp.stats.errors if not e.startswith("callerror:TriggerMessage")]
    del tag


async def test_queued_transaction_messages_replay_after_reconnect(
    server: Endpoints, db: Database
) -> None:
    tag = await tagged(db)
    async with charger(server, time_scale=60) as cp:
        await cp.wait_booted()
        tx = await cp.plug_in(1, tag, vehicle=Vehicle(60, 20.0, 11))
        assert tx is not None
        await until(lambda: tx.transaction_id is not None)
        cp.go_offline()
        await until(lambda: not cp.connected)
        await trio.sleep(0.7)  # meter values pile up while offline
        await cp.unplug(1)
        queued = [item.action for item in cp._outbox]
        assert queued[-1] == "StopTransaction" and queued.count("MeterValues") >= 2
        cp.go_online()
        await until(lambda: cp.connected and not cp._outbox)
    [row] = await transactions(db)
    assert row["status"] == "settled" and row["stop_reason"] == "Local"
    query = "SELECT count(*) FROM meter_samples WHERE transaction_id = $1"
    with trio.fail_after(5):  # meter samples are written in batches
        while await db.fetchval(query, tx.transaction_id) < 5 * queued.count("MeterValues"):  # noqa: ASYNC110
            await trio.sleep(0.1)
    assert cp.stats.errors == {}


async def test_faults(server: Endpoints, db: Database) -> None:
    tag = await tagged(db)
    async with charger(server, time_scale=60) as cp:
        await cp.wait_booted()
        tx = await cp.plug_in(2, tag, vehicle=Vehicle(60, 20.0, 11))
        assert tx is not None
        await cp.fault(2, "GroundFailure")
        assert cp.connectors[2].status == "Faulted"
        assert await cp.plug_in(2, tag) is None  # a faulted connector takes nobody
        await cp.send_malformed()
        await until(lambda: cp.stats.events["unmatched:4"] == 1)  # its CALLERROR came back
        cp.clear_fault(2)
        cp.disconnect(reconnect_after=0.05)
        await until(lambda: cp.connections == 2 and cp.connected and not cp._outbox)
        cp.response_delay = 0.3
        reply = await admin(server, "CP-1", "ClearCache", {})
        assert reply.status_code == 200
        cp.response_delay, cp.drop_responses = 0, True
        reply = await admin(server, "CP-1", "ClearCache", {}, timeout=0.5)
        assert reply.json()["error"] == "timeout", reply.text
    [row] = await transactions(db)
    assert row["stop_reason"] == "Other"
    assert cp.connectors[2].history[-2:] == ["Faulted", "Available"]


async def test_a_charging_profile_limits_the_power(server: Endpoints, db: Database) -> None:
    tag = await tagged(db)
    async with charger(server, time_scale=60) as cp:
        await cp.wait_booted()
        tx = await cp.plug_in(1, tag, vehicle=Vehicle(60, 20.0, 11))
        assert tx is not None
        await until(lambda: cp.connectors[1].power > 10)
        profile = {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 9,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6, "numberPhases": 3}],
                },
            },
        }
        reply = await admin(server, "CP-1", "SetChargingProfile", profile)
        assert reply.json()["response"] == {"status": "Accepted"}
        await until(lambda: 0 < cp.connectors[1].power <= 6 * 230 * 3 / 1000)  # 4.14 kW
        await admin(server, "CP-1", "ClearChargingProfile", {"connectorId": 1})
        await until(lambda: cp.connectors[1].power > 10)
        await cp.unplug(1)
