"""Issue 16's race over real sockets: a session reaches its limit and asks the charger to stop
while the charger ends the transaction itself. Whether its StopTransaction comes before the
answer to RemoteStopTransaction, after it, late, or never, the session settles, exactly."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from storage import Database
from tests.ocpp_client import connect
from tests.ocpp_server import ADMIN, PASSWORD
from tests.test_charging import Rig, open_rig
from tests.test_hardening_money import meter, stamp, stop

Answer = Callable[[str, dict[str, Any]], dict[str, Any]]


class Charger:
    """A raw OCPP charger whose reader answers the server's CALLs with ``answer`` (and records
    them) while the test makes its own CALLs, in whatever order the test wants."""

    def __init__(self, ws: Any, answer: Answer) -> None:
        self.ws = ws
        self.answer = answer
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived = trio.Event()
        self._ids = itertools.count(1)
        self._waiting: dict[str, trio.MemorySendChannel[list[Any]]] = {}

    async def read(self) -> None:
        while True:
            frame = json.loads(await self.ws.get_message())
            if frame[0] == 2:
                self.received.append((frame[2], frame[3]))
                self.arrived.set()
                self.arrived = trio.Event()
                reply = self.answer(frame[2], frame[3])
                await self.ws.send_message(json.dumps([3, frame[1], reply]))
            else:
                await self._waiting.pop(frame[1]).send(frame)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = f"t{next(self._ids)}"
        send, receive = trio.open_memory_channel[list[Any]](1)
        self._waiting[unique_id] = send
        await self.ws.send_message(json.dumps([2, unique_id, action, payload]))
        with trio.fail_after(10):
            frame = await receive.receive()
        assert frame[0] == 3, frame
        return dict(frame[2])

    def count(self, action: str) -> int:
        return sum(1 for name, _ in self.received if name == action)

    async def until_asked(self, action: str, times: int = 1, timeout: float = 15) -> None:
        with trio.fail_after(timeout):
            while self.count(action) < times:
                await self.arrived.wait()

    async def status(self, status: str) -> None:
        await self.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status}
        )


@asynccontextmanager
async def charger(rig: Rig, answer: Answer) -> AsyncIterator[Charger]:
    async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as raw:
        cp = Charger(raw.ws, answer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cp.read)
            yield cp
            nursery.cancel_scope.cancel()


def answers(stop_status: str) -> Answer:
    def answer(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "RemoteStopTransaction":
            return {"status": stop_status}
        return {"status": "Accepted"}  # RemoteStartTransaction, TriggerMessage

    return answer


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    rig = await open_rig(
        db, dsn, tmp_path, nursery, session_stop_check=2, session_settle_wait=1, admin_token=ADMIN
    )
    yield rig
    await rig.http.aclose()
    rig.shutdown.set()


async def at_limit(rig: Rig, cp: Charger, me: dict[str, str]) -> tuple[str, int, datetime]:
    """A 1 kWh session started by ``cp`` (register at 5,000 Wh), then a reading of 6,500 Wh:
    the limit is reached and the server asks for the stop."""
    await cp.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    await cp.status("Available")
    session = await rig.started(me, energy_kwh=1)
    await cp.until_asked("RemoteStartTransaction")
    tag = await rig.db.fetchval(
        "SELECT id_tag FROM charging_sessions WHERE id = $1", uuid.UUID(session)
    )
    t0 = datetime.now(UTC)
    started = await cp.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": tag, "meterStart": 5_000, "timestamp": stamp(t0)},
    )
    tx = int(started["transactionId"])
    await cp.status("Charging")
    await rig.until_status(session, me, "charging")
    await cp.call("MeterValues", meter(tx, 6_500, t0 + timedelta(seconds=60)))
    await cp.until_asked("RemoteStopTransaction")
    return session, tx, t0


def cost(wh: int) -> Decimal:
    """15 som/kWh from a 5,000 Wh start, plus the 10 som session fee."""
    return (Decimal(wh - 5_000) / 1000 * 15 + 10).quantize(Decimal("0.01"))


async def recharges(rig: Rig, session: str) -> list[Decimal]:
    rows = await rig.db.fetch(
        """SELECT amount FROM ledger_entries
           WHERE session_id = $1 AND operation_key LIKE '%:recharge'""",
        uuid.UUID(session),
    )
    return [row["amount"] for row in rows]


async def test_stop_transaction_before_the_rejection_settles_on_it(rig: Rig) -> None:
    client, me = await rig.client("500")
    async with charger(rig, answers("Rejected")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        await cp.call("StopTransaction", stop(tx, 6_600, t0 + timedelta(seconds=65)))
        view = await rig.until_status(session, me, "settled")
    assert view["final_cost"] == cost(6_600)
    assert await rig.exact(client) == 500 - cost(6_600)
    assert await recharges(rig, session) == []


async def test_stop_transaction_after_the_rejection_settles_on_it(rig: Rig) -> None:
    """The charger ended on its own a moment before the RemoteStop: it answers Rejected, then
    its StopTransaction arrives."""
    client, me = await rig.client("500")
    async with charger(rig, answers("Rejected")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        await cp.status("Finishing")
        await cp.call("StopTransaction", stop(tx, 6_600, t0 + timedelta(seconds=65)))
        await cp.status("Available")
        view = await rig.until_status(session, me, "settled")
    assert view["final_cost"] == cost(6_600)
    assert await rig.exact(client) == 500 - cost(6_600)
    assert await recharges(rig, session) == []


async def test_a_stop_transaction_that_never_comes_settles_on_the_last_reading_then_again_exactly(
    rig: Rig,
) -> None:
    """The exact case of issue 16: RemoteStop Rejected (the charger had finished), its
    StopTransaction lost. The session looks (TriggerMessage), finds the connector Available,
    and settles on the last reading; the StopTransaction, when it comes after all, settles it
    again by the difference, once."""
    client, me = await rig.client("500")
    async with charger(rig, answers("Rejected")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        await cp.status("Finishing")
        await cp.status("Available")
        view = await rig.until_status(session, me, "settled", timeout=20)
        assert cp.count("TriggerMessage") >= 1
        assert view["final_cost"] == cost(6_500) and view["stop_reason"] == "limit_reached"
        assert await rig.exact(client) == 500 - cost(6_500)
        row = await rig.db.fetchrow(
            "SELECT settled_by, meter_stop_wh FROM charging_sessions WHERE id = $1",
            uuid.UUID(session),
        )
        assert row is not None and row["settled_by"] == "last_reading"
        assert row["meter_stop_wh"] is None
        late = stop(tx, 6_700, t0 + timedelta(seconds=70))
        for _ in range(2):  # a charger replaying its queue sends it twice
            assert await cp.call("StopTransaction", late) == {}
        await rig.until_view(session, me, lambda v: v["final_cost"] == cost(6_700))
    assert await recharges(rig, session) == [cost(6_500) - cost(6_700)]
    assert await rig.exact(client) == 500 - cost(6_700)


async def test_a_charger_that_accepts_but_keeps_charging_is_asked_again(rig: Rig) -> None:
    """RemoteStop Accepted, yet no StopTransaction and the connector still Charging: the session
    asks again (with backoff) until the charger stops."""
    client, me = await rig.client("500")
    async with charger(rig, answers("Accepted")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        await cp.until_asked("RemoteStopTransaction", times=2, timeout=20)
        assert (await rig.status(session, me))["status"] == "stopping"
        await cp.call("StopTransaction", stop(tx, 6_800, t0 + timedelta(seconds=90)))
        view = await rig.until_status(session, me, "settled")
    assert view["final_cost"] == cost(6_800)
    assert await rig.exact(client) == 500 - cost(6_800)


async def test_operators_see_open_sessions_with_their_deadlines(rig: Rig) -> None:
    client, me = await rig.client("500")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with charger(rig, answers("Accepted")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        await rig.until_status(session, me, "stopping")
        reply = await rig.http.get("/api/v1/admin/sessions/open", headers=admin)
        assert reply.status_code == 200, reply.text
        (shown,) = [s for s in reply.json()["sessions"] if s["id"] == session]
        assert shown["status"] == "stopping" and shown["stop_reason"] == "limit_reached"
        assert shown["actor"] is True and shown["overdue"] is False
        assert shown["next_deadline"] is not None and shown["client_id"] == str(client)
        for query in ("limit=0", "limit=abc", "limit=1001", "limit=1&x=1"):
            refused = await rig.http.get(f"/api/v1/admin/sessions/open?{query}", headers=admin)
            assert refused.status_code == 400, (query, refused.text)
            assert refused.json()["success"] is False
        assert (await rig.http.get("/api/v1/admin/sessions/open")).status_code == 401
        await cp.call("StopTransaction", stop(tx, 6_600, t0 + timedelta(seconds=65)))
        await rig.until_status(session, me, "settled")
    reply = await rig.http.get("/api/v1/admin/sessions/open", headers=admin)
    assert [s for s in reply.json()["sessions"] if s["id"] == session] == []


async def test_stop_transaction_for_another_stations_or_an_unknown_transaction_settles_nothing(
    rig: Rig,
) -> None:
    """Bad input: another station's transaction id, an id that never existed, a meterStop
    below meterStart: the charger gets its answer, nothing is settled wrongly."""
    client, me = await rig.client("500")
    async with charger(rig, answers("Accepted")) as cp:
        session, tx, t0 = await at_limit(rig, cp, me)
        async with connect(rig.endpoints.ocpp_url, "CP-2", PASSWORD) as other:
            await other.call(
                "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
            )
            assert await other.call("StopTransaction", stop(tx, 9_000, t0)) == {}
            assert await other.call("StopTransaction", stop(987_654, 9_000, t0)) == {}
        assert await cp.call("StopTransaction", stop(2_000_000_000, 9_000, t0)) == {}
        assert (await rig.status(session, me))["status"] == "stopping"
        # a meterStop below meterStart is not billed as negative energy
        await cp.call("StopTransaction", stop(tx, 4_000, t0 + timedelta(seconds=90)))
        view = await rig.until_status(session, me, "settled")
    assert view["final_cost"] == cost(6_500)  # on the last plausible reading
    assert await rig.exact(client) == 500 - cost(6_500)
