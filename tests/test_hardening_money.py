"""A charger's absurd meter can't bill a driver, brick a session or keep the server from starting
(issue 15, items 1 and 2): implausible readings are flagged and the session settles on its last
plausible one; a row holding an absurd reading from before is settled the same way at start-up."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from storage import Database
from tests.ocpp_client import RawCharger, connect
from tests.ocpp_server import PASSWORD, start_server
from tests.test_charging import Rig, open_rig
from tests.tokens import SECRET

GLITCH = 4_294_967_295  # a 32-bit register's -1: a classic firmware bug


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    rig = await open_rig(db, dsn, tmp_path, nursery)
    yield rig
    await rig.http.aclose()
    rig.shutdown.set()


async def charging(rig: Rig, cp: RawCharger, me: dict[str, str]) -> tuple[str, int, datetime]:
    """An app session on CP-1 connector 1 (120 kW) started by ``cp``; its transaction id and
    the charger's start time."""
    await cp.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: cp.answer(lambda action, payload: {"status": "Accepted"})  # RemoteStart
        )
        session = await rig.started(me)
    tag = (await rig.db.fetchval("SELECT id_tag FROM charging_sessions WHERE id = $1",
                                 uuid.UUID(session)))  # fmt: skip
    started = datetime.now(UTC)
    answer = await cp.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": tag, "meterStart": 5_000, "timestamp": stamp(started)},
    )
    assert answer["idTagInfo"]["status"] == "Accepted"
    await rig.until_status(session, me, "charging")
    return session, int(answer["transactionId"]), started


def meter(tx: int, wh: int, at: datetime) -> dict[str, Any]:
    sampled = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    return {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [{"timestamp": stamp(at), "sampledValue": sampled}],
    }


def stop(tx: int, wh: int, at: datetime) -> dict[str, Any]:
    return {"transactionId": tx, "meterStop": wh, "timestamp": stamp(at)}


async def test_a_wrapped_meter_bills_the_last_plausible_reading_and_flags_the_session(
    rig: Rig,
) -> None:
    client, me = await rig.client("500")
    async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as cp:
        session, tx, t0 = await charging(rig, cp, me)
        await cp.call("MeterValues", meter(tx, 6_000, t0 + timedelta(seconds=60)))
        await cp.call("MeterValues", meter(tx, GLITCH, t0 + timedelta(seconds=65)))
        with trio.fail_after(10):  # the session takes the readings after they are answered
            while (view := await rig.status(session, me))["energy_consumed"] != 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert view["current_cost"] == 25  # 1 kWh × 15 + 10: the glitch is not billed
        await cp.call("StopTransaction", stop(tx, GLITCH, t0 + timedelta(seconds=70)))
        view = await rig.until_status(session, me, "settled")
    assert view["final_cost"] == 25 and view["energy_consumed"] == 1
    assert await rig.exact(client) == 475
    row = await rig.db.fetchrow(
        "SELECT meter_anomalies, meter_flag, meter_stop_wh FROM charging_sessions WHERE id = $1",
        uuid.UUID(session),
    )
    assert row is not None and row["meter_anomalies"] == 2 and str(GLITCH) in row["meter_flag"]
    assert row["meter_stop_wh"] == GLITCH  # what the charger said is kept, not billed


async def test_an_absurd_meter_stop_settles_and_the_next_session_works(rig: Rig) -> None:
    client, me = await rig.client("500")
    async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as cp:
        session, tx, t0 = await charging(rig, cp, me)
        reply = await cp.call("StopTransaction", stop(tx, 10**15, t0 + timedelta(seconds=30)))
        assert reply == {}
        view = await rig.until_status(session, me, "settled")
        assert view["final_cost"] == 10 and view["energy_consumed"] == 0  # the session fee
        assert await rig.exact(client) == 490
        # nothing is left broken: the same charger and driver charge again
        await cp.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        )
        again, tx2, t1 = await charging(rig, cp, me)
        await cp.call("StopTransaction", stop(tx2, 7_000, t1 + timedelta(seconds=120)))
        assert (await rig.until_status(again, me, "settled"))["final_cost"] == 40
    assert await rig.exact(client) == 450


async def test_out_of_range_numbers_and_dates_get_property_constraint_violation(rig: Rig) -> None:
    """Issue 15, item 7: numbers and dates nothing can store are refused at the door."""
    async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as cp:
        now = datetime.now(UTC)
        start = {"connectorId": 1, "idTag": "T", "timestamp": stamp(now)}
        off_the_calendar = {**stop(1, 1, now), "timestamp": "0001-01-01T00:00:00+14:00"}
        cases = [
            ("StartTransaction", {**start, "meterStart": 2**63}),
            ("StartTransaction", {**start, "meterStart": 1e20}),
            ("StopTransaction", stop(-2147483649, 1, now)),
            ("StopTransaction", off_the_calendar),
            (
                "StatusNotification",
                {"connectorId": 2**31, "errorCode": "NoError", "status": "Available"},
            ),
        ]
        for action, payload in cases:
            await cp.send_raw(json.dumps([2, "u1", action, payload]))
            reply = await cp.receive()
            assert reply[:3] == [4, "u1", "PropertyConstraintViolation"], (action, reply)
        for value in ("1e999999999", "1e-999999999", "9" * 40):
            at = datetime.now(UTC)
            frame = meter(1, 0, at)
            frame["meterValue"][0]["sampledValue"][0]["value"] = value
            await cp.send_raw(json.dumps([2, "u2", "MeterValues", frame]))
            reply = await cp.receive()
            assert reply[:3] == [4, "u2", "PropertyConstraintViolation"], (value, reply)
        assert await cp.call("Heartbeat", {})  # the connection is still open and served
    count = await rig.db.fetchval("SELECT count(*) FROM charging_sessions")
    assert count == 0  # nothing was recorded


async def test_a_server_starts_and_settles_a_session_recorded_with_an_absurd_meter(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Issue 15, item 1: a row written before readings were checked (meter_last 1e15, its
    energy and cost with it, and a recorded meterStop of 1e15) made every start fail."""
    async with trio.open_nursery() as first:  # the first server, gone for good at its end
        rig = await open_rig(db, dsn, tmp_path, first)
        client, me = await rig.client("500")
        async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as cp:
            session, _tx, t0 = await charging(rig, cp, me)
        await rig.http.aclose()
        first.cancel_scope.cancel()  # as abrupt as a crash: the row stays as it was
    await db.execute(
        """UPDATE charging_sessions SET status = 'stopping', meter_last_wh = $2,
                  energy_kwh = 999999999.999, current_cost = 9999999999.99,
                  meter_stop_wh = $2, stopped_at = $3 WHERE id = $1""",
        uuid.UUID(session),
        10**15,
        t0 + timedelta(seconds=60),
    )
    endpoints, shutdown = await start_server(nursery, dsn, tmp_path / "2", jwt_secret=SECRET)
    try:
        async with httpx.AsyncClient(base_url=endpoints.http_url, timeout=30) as http:
            assert (await http.get("/health")).status_code == 200
            with trio.fail_after(10):
                while True:
                    reply = await http.get(f"/api/v1/charging/status/{session}", headers=me)
                    view = reply.json()["session"]
                    if view["status"] == "settled":
                        break
                    await trio.sleep(0.05)
    finally:
        shutdown.set()
    assert view["final_cost"] == 10  # the session fee: no plausible energy was recorded
    assert await rig.exact(client) == 490
    flag = await db.fetchval(
        "SELECT meter_flag FROM charging_sessions WHERE id = $1", uuid.UUID(session)
    )
    assert flag is not None
