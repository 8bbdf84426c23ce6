"""Money under load: 200 drivers at 200 simulated stations start, charge and stop at once (some
by their limit, some by hand, some by a charger fault); then every wallet is exact."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from pathlib import Path

import trio
import trio.lowlevel

from sim.charger import VirtualChargePoint
from storage import Database
from tests.test_charging import Rig, open_rig
from tests.tokens import bearer, hs256

DRIVERS = 200


async def test_two_hundred_concurrent_sessions_leave_every_wallet_exact(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    rig: Rig = await open_rig(db, dsn, tmp_path, nursery, session_start_timeout=60)
    await db.execute(
        """INSERT INTO stations (id, connectors_count, tariff_id)
           SELECT 'M-' || lpad(n::text, 3, '0'), 1, 'T1' FROM generate_series(1, $1) n""",
        DRIVERS,
    )
    await db.execute(
        """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
           SELECT id, 1, 'CCS2', 50 FROM stations WHERE id LIKE 'M-%'"""
    )
    rng = random.Random(7)
    credits: dict[uuid.UUID, Decimal] = {}
    outcomes: dict[str, int] = {"limit": 0, "hand": 0, "fault": 0, "refused": 0}

    async def driver(n: int, cp: VirtualChargePoint) -> None:
        client = uuid.uuid4()
        me = bearer(hs256(client))
        credit = Decimal(rng.randrange(30, 400))
        credits[client] = credit
        assert (await rig.http.get("/api/v1/balance/get", headers=me)).status_code == 200
        await rig.ledger.credit(client, credit, key=f"money-{client}")
        await cp.wait_booted(timeout=60)
        way = ("limit", "hand", "fault")[n % 3]
        body = {"station_id": cp.station_id, "connector_id": 1}
        if way == "limit":
            body["energy_kwh"] = rng.choice([0.5, 1, 2])
        elif rng.random() < 0.5:
            body["amount_som"] = rng.choice([20, 50, 100])
        reply = await rig.http.post("/api/v1/charging/start", headers=me, json=body)
        if reply.status_code != 200:
            assert reply.json()["error"] == "insufficient_balance", reply.text
            outcomes["refused"] += 1
            return
        session = reply.json()["session_id"]
        with trio.fail_after(60):
            while cp.connectors[1].tx is None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        await trio.sleep(rng.uniform(0.2, 1.5))
        if way == "hand":
            stop = await rig.http.post(
                "/api/v1/charging/stop", headers=me, json={"session_id": session}
            )
            assert stop.status_code == 200, stop.text
        elif way == "fault":
            await cp.fault(1)
        with trio.fail_after(60):
            while (await rig.status(session, me))["status"] != "settled":  # noqa: ASYNC110
                await trio.sleep(0.1)
        outcomes[way] += 1

    chargers = [
        VirtualChargePoint(
            f"M-{n:03d}",
            rig.endpoints.ocpp_url,
            connectors=1,
            meter_interval=0.3,
            time_scale=300,
            reconnect_delay=(0.1, 0.5),
        )
        for n in range(1, DRIVERS + 1)
    ]
    async with trio.open_nursery() as fleet:
        for cp in chargers:
            await fleet.start(_run, cp)
        async with trio.open_nursery() as drivers:
            for n, cp in enumerate(chargers):
                drivers.start_soon(driver, n, cp)
        fleet.cancel_scope.cancel()
    await trio.sleep(0.3)

    assert sum(outcomes.values()) == DRIVERS and min(outcomes["limit"], outcomes["hand"]) > 30
    assert outcomes["fault"] > 30
    for client, credit in credits.items():
        balance = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
        entries = await db.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE client_id = $1", client
        )
        costs = await db.fetchval(
            """SELECT coalesce(sum(final_cost), 0) FROM charging_sessions
               WHERE client_id = $1 AND status = 'settled'""",
            client,
        )
        assert balance == entries == credit - costs, (client, balance, entries, credit, costs)
    assert await db.fetchval("SELECT count(*) FROM holds WHERE status = 'held'") == 0
    assert (
        await db.fetchval("SELECT count(*) FROM charging_sessions WHERE status <> 'settled'") == 0
    )
    await rig.http.aclose()
    rig.shutdown.set()


async def _run(cp: VirtualChargePoint, task_status: trio.TaskStatus[None]) -> None:
    async with cp:
        task_status.started()
        await trio.sleep_forever()
