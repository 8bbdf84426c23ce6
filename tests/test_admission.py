"""Admission control in reconnect storms (issue 21): while the door is saturated an idle charger's
boot is answered Pending with a random interval and its next boot is accepted; a charger with a
transaction open is let in at once, and its queued StopTransaction settles the session exactly."""

from __future__ import annotations

import socket
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import trio
from pydantic import ValidationError

from actors.charge_point import listener
from actors.charge_point.admission import Admission, accept_queue
from cpms.settings import Settings
from storage import Database
from tests.ocpp_client import connect
from tests.ocpp_server import PASSWORD
from tests.test_charging import open_rig

BOOT = {"chargePointVendor": "ACME", "chargePointModel": "Fast-120"}


def test_the_accept_queue_is_read_from_the_kernel() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        assert accept_queue(server) == 0
        clients = [socket.create_connection(server.getsockname()) for _ in range(5)]
        try:
            assert accept_queue(server) == 5
            accepted, _ = server.accept()
            accepted.close()
            assert accept_queue(server) == 4
        finally:
            for client in clients:
                client.close()


def test_pending_intervals_are_spread_and_the_next_boot_is_accepted() -> None:
    storm = Admission(queue_limit=100, pending_min=5, pending_max=30, backlog=lambda: 101)
    intervals = [storm.interval(f"CP-{n}", in_transaction=False) for n in range(200)]
    assert all(isinstance(i, int) and 5 <= i <= 30 for i in intervals)
    assert len(set(intervals)) > 10  # the herd is spread, not sent back in step
    assert [storm.interval(f"CP-{n}", in_transaction=False) for n in range(200)] == [None] * 200
    assert storm.interval("CP-0", in_transaction=False) is not None  # deferred again, once
    assert storm.interval("CP-TX", in_transaction=True) is None  # a session first
    calm = Admission(queue_limit=100, backlog=lambda: 60)
    calm.connecting = 40
    assert not calm.saturated() and calm.interval("CP-1", in_transaction=False) is None
    calm.connecting = 41
    assert calm.saturated()


def test_the_pending_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ocpp_pending_min"):
        Settings(data_dir=tmp_path, ocpp_pending_min=40, ocpp_pending_max=10)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ocpp_pending_min=0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ocpp_admit_queue=0)


async def test_a_storm_defers_idle_chargers_and_lets_an_open_session_settle(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    pressure = 0  # connections the kernel holds in the OCPP port's accept queue, as the door sees
    monkeypatch.setattr(listener, "accept_queue", lambda _sock: pressure)
    rig = await open_rig(
        db, dsn, tmp_path, nursery, ocpp_admit_queue=50, ocpp_pending_min=5, ocpp_pending_max=30
    )
    client, me = await rig.client("300")
    async with rig.charger("CP-1", connectors=1, time_scale=60) as cp:
        await cp.wait_booted()
        session = await rig.started(me)
        await rig.until_status(session, me, "charging")
        with trio.fail_after(20):
            while (tx := cp.connectors[1].tx) is None or cp.connectors[1].energy < (  # noqa: ASYNC110
                tx.meter_start + 300
            ):
                await trio.sleep(0.05)
        cp.go_offline()  # the node restarts, the network blinks: everyone comes back at once
        with trio.fail_after(10):
            while cp.connected:  # noqa: ASYNC110
                await trio.sleep(0.05)
        pressure = 10_000

        async with connect(rig.endpoints.ocpp_url, "CP-2", PASSWORD) as idle:
            first = await idle.call("BootNotification", BOOT)
            assert first["status"] == "Pending" and 5 <= first["interval"] <= 30
            assert first["currentTime"]
            again = await idle.call("BootNotification", BOOT)  # its next boot: in
            assert again["status"] == "Accepted" and again["interval"] == 60

        await trio.sleep(0.3)  # meter values pile up in the charger's queue
        await cp.unplug(1)  # the driver leaves while the charger is away
        assert [item.action for item in cp._outbox][-1] == "StopTransaction"
        meter_stop = cp.connectors[1].register
        boots = cp.stats.sent["BootNotification"]
        cp.go_online()
        with trio.fail_after(20):
            while not (cp.connected and not cp._outbox):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert cp.stats.sent["BootNotification"] == boots + 1  # let in at its first boot
        assert cp.boot_status == "Accepted"
        view = await rig.until_status(session, me, "settled", timeout=20)
    row = await db.fetchrow("SELECT * FROM charging_sessions WHERE id = $1::uuid", session)
    assert row is not None and row["meter_stop_wh"] == meter_stop
    energy = (Decimal(meter_stop) - Decimal(row["meter_start_wh"])) / 1000
    cost = (energy * 15 + 10).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert Decimal(str(view["final_cost"])) == cost == row["final_cost"]
    balance = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
    total = await db.fetchval("SELECT sum(amount) FROM ledger_entries WHERE client_id = $1", client)
    assert balance == total == Decimal("300") - cost
    assert await db.fetchval("SELECT count(*) FROM holds WHERE status = 'held'") == 0
    assert cp.stats.errors == {}
