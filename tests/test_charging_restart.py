"""A server killed (SIGKILL) in the middle of a charging session: after the restart the session's
actor is rebuilt from its row, the charger's queued messages arrive, and it settles exactly."""

from __future__ import annotations

import signal
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import trio

from actors import provisioning as prov
from actors.push.webpush import new_key_pair
from cpms.kernel.validation import validate
from sim.charger import VirtualChargePoint
from storage import open_storage
from tests.push_stub import PushStub
from tests.test_cli import clean_env, cpms, free_port, serve, stop, wait_healthy
from tests.tokens import SECRET, bearer, hs256

PASSWORD = "station-pass-1"


async def provision(pg_dir: Path) -> None:
    async with open_storage(database_url=None, pg_dir=pg_dir) as db:
        await prov.add_tariff(
            db,
            prov.TariffIn(
                id="T1", name="DC", price_per_kwh=Decimal("15.00"), session_fee=Decimal("10.00")
            ),
        )
        await prov.add_station(
            db,
            validate(
                prov.StationIn,
                {
                    "id": "CP-K",
                    "connectors_count": 2,
                    "connectors": [{"connector_id": 1, "connector_type": "CCS2", "power_kw": 60}],
                    "password": PASSWORD,
                    "tariff_id": "T1",
                },
            ),
        )


async def check_ledger(pg_dir: Path, client: uuid.UUID) -> tuple[Decimal, dict[str, object]]:
    async with open_storage(database_url=None, pg_dir=pg_dir) as db:
        balance = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
        total = await db.fetchval(
            "SELECT sum(amount) FROM ledger_entries WHERE client_id = $1", client
        )
        open_holds = await db.fetchval("SELECT count(*) FROM holds WHERE status = 'held'")
        session = await db.fetchrow("SELECT * FROM charging_sessions")
    assert balance == total and open_holds == 0
    assert session is not None
    return Decimal(balance), session


async def test_sigkill_mid_session_then_restart_settles_exactly(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """... and its driver is told once that it started and once that it ended (a push service
    stub over a real socket), though the server died in between."""
    push = PushStub()
    await nursery.start(push.serve)
    data = tmp_path / "data"
    env = {
        **clean_env(data),
        "CPMS_JWT_SECRET": SECRET,
        "CPMS_VAPID_PRIVATE_KEY": new_key_pair()[0],
        "CPMS_VAPID_SUBJECT": "mailto:ops@example.com",
        "CPMS_PUSH_ALLOW_HTTP": "true",
    }
    await provision(data / "pg")
    http_port, ocpp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    client = uuid.uuid4()
    me = bearer(hs256(client))
    credited = await trio.to_thread.run_sync(
        lambda: cpms("wallet", "credit", str(client), "300", "--reason", "t", "--create", env=env)
    )
    assert credited.returncode == 0, credited.stderr

    server = serve(env, http_port, ocpp_port)
    cp = VirtualChargePoint(
        "CP-K",
        f"ws://127.0.0.1:{ocpp_port}/ws",
        password=PASSWORD,
        connectors=1,
        meter_interval=0.2,
        time_scale=60,
        reconnect_delay=(0.2, 0.3),
    )
    try:
        await trio.to_thread.run_sync(wait_healthy, base, server)
        async with cp, httpx.AsyncClient(base_url=base, timeout=30) as http:
            await cp.wait_booted(timeout=30)
            phone = push.browser()
            subscribed = await http.post(
                "/api/v1/notifications/subscribe", headers=me, json=phone.subscription()
            )
            assert subscribed.status_code == 201, subscribed.text
            reply = await http.post(
                "/api/v1/charging/start",
                headers=me,
                json={"station_id": "CP-K", "connector_id": 1, "amount_som": 200},
            )
            assert reply.status_code == 200, reply.text
            session = reply.json()["session_id"]
            with trio.fail_after(20):
                while cp.connectors[1].tx is None or cp.connectors[1].tx.transaction_id is None:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                while cp.connectors[1].energy < cp.connectors[1].tx.meter_start + 500:  # noqa: ASYNC110
                    await trio.sleep(0.05)

            await push.wait_for(phone, "charging_started")
            server.send_signal(signal.SIGKILL)  # no goodbye: the server just dies
            server.wait(timeout=30)
            with trio.fail_after(10):
                while cp.connected:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await trio.sleep(1)  # meter values pile up in the charger's queue
            await cp.unplug(1)  # the driver leaves while the server is down
            assert [i.action for i in cp._outbox][-1] == "StopTransaction"
            meter_stop = cp.connectors[1].register

            server = serve(env, http_port, ocpp_port)
            await trio.to_thread.run_sync(wait_healthy, base, server)
            with trio.fail_after(30):
                while True:
                    reply = await http.get(f"/api/v1/charging/status/{session}", headers=me)
                    if reply.json()["session"]["status"] == "settled":
                        break
                    await trio.sleep(0.1)
            assert not cp._outbox  # everything the charger kept was accepted
            await push.wait_for(phone, "charging_completed")
    finally:
        code, _took, err = await trio.to_thread.run_sync(stop, server)  # what was queued is sent
    assert code == 0, err
    told = [m["type"] for m in push.of(phone)]
    assert sorted(told) == ["charging_completed", "charging_started"], told
    view = reply.json()["session"]
    balance, row = await check_ledger(data / "pg", client)
    energy = (Decimal(meter_stop) - Decimal(row["meter_start_wh"])) / 1000  # type: ignore[arg-type]
    cost = (energy * 15 + 10).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert Decimal(str(view["final_cost"])) == cost == row["final_cost"]
    assert balance == Decimal("300") - cost
    assert row["meter_stop_wh"] == meter_stop and row["stop_reason"] == "Local"
