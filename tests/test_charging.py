"""Charging sessions end to end: the app's REST calls, a simulated charger, the ledger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import provisioning as prov
from actors.ledger import Ledger
from actors.session.messages import hold_for, session_tag
from cpms.kernel.charging import Limit
from cpms.server.app import Endpoints
from sim.charger import VirtualChargePoint
from storage import Database
from storage import sessions as sessions_store
from storage.clients import ensure_client
from tests.conftest import start_ledger
from tests.documented import documented_client
from tests.ocpp_server import PASSWORD, provision, start_server
from tests.tokens import SECRET, bearer, hs256

D = Decimal


@dataclass
class Rig:
    endpoints: Endpoints
    http: httpx.AsyncClient
    db: Database
    ledger: Ledger
    shutdown: trio.Event

    def charger(self, station: str = "CP-1", **options: Any) -> VirtualChargePoint:
        options.setdefault("meter_interval", 0.1)
        options.setdefault("reconnect_delay", (0.05, 0.1))
        return VirtualChargePoint(station, self.endpoints.ocpp_url, password=PASSWORD, **options)

    async def client(self, balance: str) -> tuple[uuid.UUID, dict[str, str]]:
        client = uuid.uuid4()
        headers = bearer(hs256(client))
        assert (await self.http.get("/api/v1/balance/get", headers=headers)).status_code == 200
        if Decimal(balance):
            await self.ledger.credit(client, balance, key=f"topup-{client}")
        return client, headers

    async def balance(self, headers: dict[str, str]) -> dict[str, Any]:
        return dict((await self.http.get("/api/v1/balance/get", headers=headers)).json())

    async def status(self, session: str, headers: dict[str, str]) -> dict[str, Any]:
        reply = await self.http.get(f"/api/v1/charging/status/{session}", headers=headers)
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["session"])

    async def start(self, headers: dict[str, str], **body: Any) -> httpx.Response:
        body.setdefault("station_id", "CP-1")
        body.setdefault("connector_id", 1)
        return await self.http.post("/api/v1/charging/start", headers=headers, json=body)

    async def started(self, headers: dict[str, str], **body: Any) -> str:
        reply = await self.start(headers, **body)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["session_id"])

    async def until_status(
        self, session: str, headers: dict[str, str], wanted: str, timeout: float = 10
    ) -> dict[str, Any]:
        return await self.until_view(session, headers, lambda v: v["status"] == wanted, timeout)

    async def until_view(
        self,
        session: str,
        headers: dict[str, str],
        check: Callable[[dict[str, Any]], bool],
        timeout: float = 10,
    ) -> dict[str, Any]:
        """The session as the app sees it, once ``check`` holds (the server's own clock runs:
        a bounded poll of what it answers)."""
        with trio.fail_after(timeout):
            while not check(view := await self.status(session, headers)):  # noqa: ASYNC110
                await trio.sleep(0.05)
        return view

    async def exact(self, client: uuid.UUID) -> Decimal:
        """The client's balance, checked against its ledger entries; no hold left open."""
        balance = await self.db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
        total = await self.db.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE client_id = $1", client
        )
        held = await self.db.fetchval(
            "SELECT count(*) FROM holds WHERE client_id = $1 AND status = 'held'", client
        )
        assert balance == total and held == 0, (balance, total, held)
        return Decimal(balance)


async def open_rig(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, **overrides: Any
) -> Rig:
    """A server with stations CP-1 and CP-2 (connectors 1 CCS2 120 kW and 2 GBT 60 kW, tariff
    15 som/kWh + 10 som per session) and an app-token secret."""
    await prov.add_tariff(
        db, prov.TariffIn(id="T1", name="DC", price_per_kwh=D("15.00"), session_fee=D("10.00"))
    )
    for name in ("CP-1", "CP-2"):
        await provision(db, name)
        await db.execute("UPDATE stations SET tariff_id = 'T1' WHERE id = $1", name)
    options: dict[str, Any] = {
        "session_start_timeout": 3,
        "session_offline_grace": 2,
        **overrides,
    }
    endpoints, shutdown = await start_server(nursery, dsn, tmp_path, jwt_secret=SECRET, **options)
    ledger_rig = await start_ledger(nursery, db)
    http = documented_client(base_url=endpoints.http_url, timeout=30)
    return Rig(endpoints, http, db, ledger_rig.ledger, shutdown)


@asynccontextmanager
async def running_rig(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, **overrides: Any
) -> AsyncIterator[Rig]:
    """:func:`open_rig`, stopped on exit."""
    rig = await open_rig(db, dsn, tmp_path, nursery, **overrides)
    try:
        yield rig
    finally:
        await rig.http.aclose()
        rig.shutdown.set()


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    async with running_rig(db, dsn, tmp_path, nursery) as rig:
        yield rig


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state another task changes
            await trio.sleep(0.02)


async def entries(db: Database, client: uuid.UUID) -> list[tuple[str, Decimal]]:
    rows = await db.fetch(
        "SELECT type, amount FROM ledger_entries WHERE client_id = $1 ORDER BY id", client
    )
    return [(r["type"], r["amount"]) for r in rows]


async def test_energy_limit_stops_the_charger_and_settles(rig: Rig) -> None:
    client, me = await rig.client("500")
    async with rig.charger(time_scale=600) as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)
        reply = await rig.http.post(
            "/api/v1/charging/start",
            headers=me,
            json={"station_id": "CP-1", "connector_id": 1, "energy_kwh": 2},
        )
        assert reply.status_code == 200, reply.text
        started = reply.json()
        assert started["success"] and started["limit_type"] == "energy"
        assert D(str(started["reserved_amount"])) == D("40.00")  # 2 × 15 + 10
        session = started["session_id"]
        assert (await rig.balance(me))["balance"] == 460
        await until(lambda: cp.connectors[1].tx is not None)
        tx = cp.connectors[1].tx
        assert tx is not None
        await tx.ended.wait()  # the limit stopped it: RemoteStopTransaction
        assert tx.stop_reason == "Remote"
        view = await rig.until_status(session, me, "settled")
    assert view["limit_reached"] and view["energy_consumed"] >= 2
    cost = D(str(view["final_cost"]))
    energy = D(str(view["energy_consumed"]))
    assert cost == (energy * 15 + 10).quantize(D("0.01"), rounding=ROUND_HALF_UP)
    history = await entries(rig.db, client)
    assert history[:2] == [("topup", D("500.00")), ("charge_reserve", D("-40.00"))]
    assert await rig.exact(client) == D("500") - cost
    assert (await rig.balance(me))["reserved"] == 0


async def test_amount_limit_and_an_overrun_paid_from_the_free_balance(rig: Rig) -> None:
    client, me = await rig.client("100")
    async with rig.charger(time_scale=600) as cp:
        await cp.wait_booted()
        reply = await rig.start(me, amount_som=50)
        started = reply.json()
        assert (started["reserved_amount"], started["estimated_energy"]) == (50, 2.7)
        session = started["session_id"]
        await until(lambda: cp.connectors[1].tx is not None)
        view = await rig.until_status(session, me, "settled")
    cost = D(str(view["final_cost"]))
    assert cost >= 50 and view["limit_reached"]
    kinds = [kind for kind, _ in await entries(rig.db, client)]
    assert kinds[:2] == ["topup", "charge_reserve"]
    assert ("charge_payment" in kinds) == (cost > 50)  # stopping takes a moment
    assert await rig.exact(client) == D("100") - cost


async def test_no_limit_reserves_up_to_200_and_the_owner_stops(rig: Rig) -> None:
    client, me = await rig.client("150")
    async with rig.charger(time_scale=60) as cp:
        await cp.wait_booted()
        session = await rig.started(me)
        view = await rig.status(session, me)
        assert (view["reserved_amount"], view["limit_type"]) == (150, "none")
        await rig.until_status(session, me, "charging")
        await until(lambda: cp.connectors[1].energy > cp.connectors[1].tx.meter_start + 100)  # type: ignore[union-attr]
        other, them = await rig.client("0")
        refused = await rig.http.post(
            "/api/v1/charging/stop", headers=them, json={"session_id": session}
        )
        assert refused.status_code == 403 and refused.json()["error"] == "access_denied"
        assert (
            await rig.http.get(f"/api/v1/charging/status/{session}", headers=them)
        ).status_code == 403
        stop = await rig.http.post(
            "/api/v1/charging/stop", headers=me, json={"session_id": session}
        )
        assert stop.status_code == 200, stop.text
        outcome = stop.json()
    assert outcome["status"] == "settled"
    cost, refund = D(str(outcome["final_cost"])), D(str(outcome["refunded_amount"]))
    assert cost + refund == 150 and cost > 10
    assert await rig.exact(client) == D("150") - cost
    history = (await rig.http.get("/api/v1/charging/history", headers=me)).json()
    assert [s["id"] for s in history["sessions"]] == [session] and history["total"] == 1
    del other


async def test_a_session_the_charger_never_starts_is_refunded(rig: Rig) -> None:
    client, me = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        cp.drop_responses = True  # RemoteStartTransaction goes unanswered
        session = await rig.started(me, energy_kwh=1)
        assert (await rig.balance(me))["reserved"] == 25
        view = await rig.until_status(session, me, "cancelled", timeout=8)  # 3 s start timeout
    assert view["refunded_amount"] == 25 and "did not start" in view["error"]
    assert await rig.exact(client) == 100


async def test_stop_before_the_charger_starts_cancels_with_a_full_refund(rig: Rig) -> None:
    client, me = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        cp.drop_responses = True
        session = await rig.started(me, amount_som=30)
        stop = await rig.http.post(
            "/api/v1/charging/stop", headers=me, json={"session_id": session}
        )
        assert stop.json()["status"] == "cancelled" and stop.json()["refunded_amount"] == 30
    assert await rig.exact(client) == 100


async def test_a_refused_remote_start_is_refunded(rig: Rig) -> None:
    client, me = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        cp.connectors[1].inoperative = True  # unknown to the server: the charger says Rejected
        session = await rig.started(me, amount_som=30)
        view = await rig.until_status(session, me, "rejected")
    assert view["refunded_amount"] == 30
    assert await rig.exact(client) == 100


async def test_overrun_beyond_the_free_balance_is_debt(rig: Rig) -> None:
    client, me = await rig.client("60")
    async with rig.charger(time_scale=600) as cp:
        await cp.wait_booted()
        session = await rig.started(me, amount_som=50)
        await rig.until_status(session, me, "charging")
        cp.drop_responses = True  # RemoteStopTransaction goes unanswered: it charges on
        connector = cp.connectors[1]
        await until(lambda: (connector.energy - connector.tx.meter_start) / 1000 * 15 + 10 > 80)  # type: ignore[union-attr]
        await cp.unplug(1)
        cp.drop_responses = False
        view = await rig.until_status(session, me, "settled")
    cost = D(str(view["final_cost"]))
    assert cost > 80 and D(str(view["debt_amount"])) == cost - 60
    kinds = [kind for kind, _ in await entries(rig.db, client)]
    assert kinds == ["topup", "charge_reserve", "charge_payment", "charge_debt"]
    assert await rig.exact(client) == 60 - cost  # negative: the client owes


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"station_id": "NOPE"}, 404, "station_not_found"),
        ({"connector_id": 3}, 404, "connector_not_found"),
        ({"station_id": "CP-2"}, 503, "station_offline"),
        ({"connector_id": 0}, 400, "validation_error"),
        ({"connector_id": 11}, 400, "validation_error"),
        ({"energy_kwh": 0}, 400, "validation_error"),
        ({"energy_kwh": -1}, 400, "validation_error"),
        ({"amount_som": 100001}, 400, "validation_error"),
        ({"amount_som": 10, "energy_kwh": 1}, 400, "validation_error"),
        ({"amount_som": "lots"}, 400, "validation_error"),
        ({"client_id": str(uuid.uuid4())}, 403, "client_mismatch"),
        ({"energy_kwh": 100}, 402, "insufficient_balance"),
        ({"surprise": 1}, 400, "validation_error"),
    ],
)
async def test_refusals_reserve_nothing(
    rig: Rig, body: dict[str, Any], status: int, code: str
) -> None:
    client, me = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)
        reply = await rig.start(me, **body)
    assert reply.status_code == status, reply.text
    assert reply.json()["success"] is False and reply.json()["error"] == code
    if code == "insufficient_balance":
        assert (reply.json()["required_amount"], reply.json()["current_balance"]) == (1510, 100)
    assert await entries(rig.db, client) == [("topup", D("100.00"))]
    assert await rig.db.fetchval("SELECT count(*) FROM charging_sessions") == 0


async def test_station_and_client_states_that_refuse(rig: Rig) -> None:
    client, me = await rig.client("5")
    _, broke = await rig.client("0")

    async def operator(sql: str, then: str) -> None:
        """Change a station as the CLI would (in the database, not through the server) and
        wait for the server to take it up: until then a start by a client with no money is
        refused by the ledger, and moves nothing."""
        await rig.db.execute(sql)
        with trio.fail_after(10):
            while (await rig.start(broke)).json()["error"] != then:  # noqa: ASYNC110 - polls the server
                await trio.sleep(0.02)

    async with rig.charger() as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)
        reply = await rig.start(me)
        assert reply.json()["error"] == "insufficient_balance"  # no limit needs 10
        assert reply.json()["required_amount"] == 10
        await rig.ledger.credit(client, "100", key="more")
        await cp.fault(2)
        await until(lambda: not cp._outbox)
        assert (await rig.start(me, connector_id=2)).json()["error"] == "connector_faulted"
        maintenance = "UPDATE stations SET admin_status = 'maintenance' WHERE id = 'CP-1'"
        await operator(maintenance, then="station_maintenance")
        assert (await rig.start(me)).json()["error"] == "station_maintenance"
        active = "UPDATE stations SET admin_status = 'active' WHERE id = 'CP-1'"
        await operator(active, then="insufficient_balance")
        untariffed = "UPDATE stations SET tariff_id = NULL WHERE id = 'CP-1'"
        await operator(untariffed, then="station_unavailable")
        assert (await rig.start(me)).json()["error"] == "station_unavailable"  # nothing to bill
        tariffed = "UPDATE stations SET tariff_id = 'T1' WHERE id = 'CP-1'"
        await operator(tariffed, then="insufficient_balance")
        await rig.db.execute("UPDATE clients SET status = 'blocked' WHERE id = $1", client)
        assert (await rig.start(me)).json()["error"] == "client_blocked"
        await rig.db.execute("UPDATE clients SET status = 'pending_deletion' WHERE id = $1", client)
        assert (await rig.start(me)).json()["error"] == "client_pending_deletion"
    assert await rig.exact(client) == 105
    assert await rig.db.fetchval("SELECT count(*) FROM charging_sessions") == 0


async def test_concurrent_starts_on_one_connector_one_wins(rig: Rig) -> None:
    drivers = [await rig.client("100") for _ in range(6)]
    replies: list[httpx.Response] = []
    async with rig.charger() as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)
        cp.drop_responses = True  # keep the winner in "starting"

        async def go(headers: dict[str, str]) -> None:
            replies.append(await rig.start(headers, amount_som=20))

        async with trio.open_nursery() as nursery:
            for _, headers in drivers:
                nursery.start_soon(go, headers)
    winners = [r for r in replies if r.status_code == 200]
    assert len(winners) == 1
    assert {r.json()["error"] for r in replies if r.status_code != 200} == {"connector_occupied"}
    reserved = await rig.db.fetchval("SELECT count(*) FROM holds")
    assert reserved == 1


async def test_charger_gone_while_charging_settles_on_the_last_meter(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    rig = await open_rig(db, dsn, tmp_path, nursery, ocpp_offline_after=1)
    client, me = await rig.client("200")
    async with rig.charger(time_scale=60) as cp:
        await cp.wait_booted()
        session = await rig.started(me, amount_som=100)
        await rig.until_status(session, me, "charging")
        await until(lambda: cp.connectors[1].energy > cp.connectors[1].tx.meter_start + 200)  # type: ignore[union-attr]
        cp.go_offline()
        view = await rig.until_status(session, me, "settled", timeout=15)
    assert view["stop_reason"] == "charger_offline"
    cost = D(str(view["final_cost"]))
    assert cost > 10 and await rig.exact(client) == 200 - cost
    await rig.http.aclose()
    rig.shutdown.set()


async def test_a_session_over_its_maximum_duration_is_stopped(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    rig = await open_rig(db, dsn, tmp_path, nursery, session_max_duration=2)
    client, me = await rig.client("100")
    async with rig.charger(time_scale=10) as cp:
        await cp.wait_booted()
        session = await rig.started(me)
        await rig.until_status(session, me, "charging")
        view = await rig.until_status(session, me, "settled", timeout=10)
    assert view["stop_reason"] == "max_duration"
    assert await rig.exact(client) == 100 - D(str(view["final_cost"]))
    await rig.http.aclose()
    rig.shutdown.set()


async def test_a_card_session_is_billed_to_its_client(rig: Rig) -> None:
    client, me = await rig.client("100")
    poor, _ = await rig.client("5")
    await rig.db.execute(
        "INSERT INTO id_tags (id_tag, client_id) VALUES ('CARD-1', $1), ('CARD-2', $2)",
        client,
        poor,
    )
    async with rig.charger(time_scale=60) as cp:
        await cp.wait_booted()
        assert await cp.plug_in(1, "CARD-2") is None  # 5 som can't cover the 10 som minimum
        tx = await cp.plug_in(1, "CARD-1")
        assert tx is not None
        await until(lambda: tx.transaction_id is not None)
        assert (await rig.balance(me))["reserved"] == 100  # min(balance, 200)
        await until(lambda: cp.connectors[1].energy > tx.meter_start + 300)
        await cp.unplug(1)
        await until(lambda: not cp._outbox)
        history = (await rig.http.get("/api/v1/charging/history", headers=me)).json()
        [session] = history["sessions"]
        view = await rig.until_status(session["id"], me, "settled")
        # where charging costs nothing (no tariff), a card needs no money
        await rig.db.execute("UPDATE stations SET tariff_id = NULL WHERE id = 'CP-1'")
        with trio.fail_after(10):
            while True:  # the change reaches the server as a notification
                answer = await cp.request("Authorize", {"idTag": "CARD-2"})
                if answer["idTagInfo"]["status"] == "Accepted":
                    break
                await trio.sleep(0.05)
    energy = D(str(view["energy_consumed"]))
    cost = (energy * 15 + 10).quantize(D("0.01"), rounding=ROUND_HALF_UP)
    assert D(str(view["final_cost"])) == cost and view["stop_reason"] == "Local"
    assert await rig.exact(client) == 100 - cost
    assert await rig.exact(poor) == 5


async def test_a_start_racing_the_start_timeout_is_never_lost(rig: Rig) -> None:
    """The charger's StartTransaction is attached just as the start timeout fires: the session
    goes on as charging (nothing refunded); a StartTransaction after a session has ended is told
    Invalid, so no charger charges for free."""
    client, me = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        cp.drop_responses = True  # the charger never answers RemoteStart...
        session = await rig.started(me, amount_som=30)
        # ...but its StartTransaction gets recorded; the actor has not heard of it yet
        attached = await sessions_store.attach_transaction(
            rig.db, uuid.UUID(session), 1000, datetime.now(UTC)
        )
        assert attached is not None
        view = await rig.until_status(session, me, "charging", timeout=8)  # 3 s timeout passed
        assert view["transaction_id"] == attached and (await rig.balance(me))["reserved"] == 30

        late = await rig.started(me, connector_id=2, amount_som=20)
        await rig.until_status(late, me, "cancelled", timeout=8)
        tag = session_tag(uuid.UUID(late))
        assert (
            await sessions_store.attach_transaction(rig.db, uuid.UUID(late), 0, datetime.now(UTC))
            is None
        )
        cp.drop_responses = False
        answer = await cp.request(
            "StartTransaction",
            {"connectorId": 2, "idTag": tag, "meterStart": 0, "timestamp": "2026-11-22T10:00:00Z"},
        )
        assert answer["idTagInfo"]["status"] == "Invalid"
    del client


async def test_reserved_sessions_found_at_start_up(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A row still "reserved" when the server starts (it stopped between the hold and asking
    the charger): with its money held, the charger is asked once it is back (asked while it is
    offline, it would refuse, and the driver's start be lost); with its money already given
    back, it ends cancelled; with no hold at all (a row from before rows and holds were written
    together), it is dropped."""
    await prov.add_tariff(db, prov.TariffIn(id="T1", name="DC", price_per_kwh=D("15.00")))
    for name in ("CP-1", "CP-2"):
        await provision(db, name)
    ledger = (await start_ledger(nursery, db)).ledger
    client = uuid.uuid4()
    await ensure_client(db, client)
    await ledger.credit(client, "100", key=f"topup-{client}")

    def claim(station: str, connector: int) -> sessions_store.SessionClaim:
        session = uuid.uuid4()
        now = datetime.now(UTC)
        return sessions_store.SessionClaim(
            session, client, station, connector, session_tag(session), "app",
            Limit("amount", D("20")), "T1", D("15.00"), D("0"), now + timedelta(minutes=10),
            now + timedelta(hours=12), D("20.00"), hold_for(session),
        )  # fmt: skip

    async def reserve(c: sessions_store.SessionClaim) -> None:
        key = f"session:{c.session_id}:reserve"
        await ledger.reserve(
            client, "20", key=key, hold_id=c.hold_id, session_id=c.session_id, claim=c
        )

    held, given_back, orphan = claim("CP-1", 1), claim("CP-1", 2), claim("CP-2", 1)
    await reserve(held)
    await reserve(given_back)
    await ledger.release(given_back.hold_id, key=f"session:{given_back.session_id}:release")
    await db.run_with_connection(
        lambda conn: conn.execute(
            sessions_store.insert_claims_sql(1), *sessions_store.claim_arrays([orphan])
        )
    )

    async def status(c: sessions_store.SessionClaim) -> str | None:
        value = await db.fetchval(
            "SELECT status FROM charging_sessions WHERE id = $1", c.session_id
        )
        return None if value is None else str(value)

    async def until(wanted: list[str | None], timeout: float) -> None:
        with trio.fail_after(timeout):
            while [await status(c) for c in (held, given_back, orphan)] != wanted:  # noqa: ASYNC110
                await trio.sleep(0.05)

    endpoints, shutdown = await start_server(nursery, dsn, tmp_path, jwt_secret=SECRET)
    # resumed before any charger can connect: asked while offline, the held one would be
    # rejected at once; it stays reserved, and is asked once its charger is back
    await until(["reserved", "cancelled", None], timeout=10)
    charger = VirtualChargePoint("CP-1", endpoints.ocpp_url, password=PASSWORD, meter_interval=1)
    async with charger:
        await until(["charging", "cancelled", None], timeout=15)
        assert charger.stats.received["RemoteStartTransaction"] == 1
    assert await ledger.balance(client) == D("80.00")
    assert await db.fetchval("SELECT count(*) FROM holds WHERE status = 'held'") == 1
    shutdown.set()


async def test_an_open_session_without_an_actor_is_found_and_driven(rig: Rig) -> None:
    """A session whose actor is gone (retired after repeated crashes, or never started) is
    found by the sweeper and driven to its end: here its charger never connects, so its start
    times out and the money comes back."""
    client, me = await rig.client("100")
    session = uuid.uuid4()
    now = datetime.now(UTC)
    claim = sessions_store.SessionClaim(
        session, client, "CP-1", 1, session_tag(session), "app", Limit("amount", D("20")), "T1",
        D("15.00"), D("0"), now + timedelta(seconds=3), now + timedelta(hours=12), D("20.00"),
        hold_for(session),
    )  # fmt: skip
    await rig.ledger.reserve(
        client, "20", key=f"session:{session}:reserve", hold_id=claim.hold_id,
        session_id=session, claim=claim,
    )  # fmt: skip
    await rig.db.execute("UPDATE charging_sessions SET status = 'starting' WHERE id = $1", session)
    await rig.until_status(str(session), me, "cancelled", timeout=15)
    assert await rig.exact(client) == 100
