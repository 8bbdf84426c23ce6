"""A SessionActor's deadlines on trio's autojump clock: the actor runs against the test database
and ledger, a stand-in station actor that answers commands as told, and a machine clock that
follows trio's, so minutes and hours pass without waiting for them."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing

from actors import provisioning as prov
from actors.charge_point.config import StationTariffs
from actors.charge_point.messages import STATION, Command, Snapshot
from actors.ledger import Ledger, storage_actor_spec
from actors.runtime import ChildSpec, Registry, Restart, Supervisor, run_supervisor
from actors.runtime._address import Address
from actors.runtime._mailbox import Mailbox
from actors.session.deps import SessionDeps
from actors.session.lifecycle import session_spec
from actors.session.machine import Timings
from actors.session.messages import Begin, ChargerStarted, MeterReading, SessionMsg, StartRequest
from cpms.kernel.charging import Limit
from cpms.kernel.events import EventBus, SessionChanged
from cpms.ocpp.connector_state import ConnectorState
from storage import Database
from storage.clients import ensure_client
from tests.clock import hold_while_the_database_answers
from tests.ocpp_server import provision

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
TICK = 30.0  # no deadline is ever further away than this (see ``ticker``)
TIMINGS = Timings(
    start_timeout=600,
    max_duration=3600,
    offline_grace=600,
    offline_check=30,
    command_timeout=30,
    stop_check=60,
    settle_wait=15,
)


def virtual_now() -> datetime:
    return T0 + timedelta(seconds=trio.current_time())


@dataclass
class Station:
    """What a session sees of a station's actor: a snapshot, and answers to its commands."""

    answers: dict[str, str]
    status: str = "Available"
    online: bool = True
    received: list[tuple[float, str]] = field(default_factory=list)

    def snapshot(self) -> Snapshot:
        connector = ConnectorState(self.status, power_kw=Decimal("120"), configured=True)
        return Snapshot("CP-1", self.online, self.online, "Accepted", "active", "Available",
                        {1: connector})  # fmt: skip

    async def run(self, mailbox: Mailbox[Any], *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            envelope = await mailbox.receive()
            message = envelope.message
            assert isinstance(message, Command)
            self.received.append((trio.current_time(), message.action))
            envelope.respond({"status": self.answers.get(message.action, "Accepted")})

    def count(self, action: str) -> int:
        return sum(1 for _, name in self.received if name == action)


@dataclass
class Rig:
    db: Database
    ledger: Ledger
    registry: Registry
    supervisor: Supervisor
    station: Station
    client: uuid.UUID
    bus: EventBus
    events: trio.MemoryReceiveChannel[Any]

    async def begin(self, limit: Limit) -> uuid.UUID:
        deps = SessionDeps(
            self.db, self.ledger, self.registry, self.bus, StationTariffs(self.db), TIMINGS,
            clock=virtual_now,
        )  # fmt: skip
        session = uuid.uuid4()
        ref = self.supervisor.start_child_soon(session_spec(session, deps, new=True))
        await ref.ask(Begin(StartRequest(self.client, "CP-1", 1, limit)), timeout=10**6)
        return session

    async def tell(self, session: uuid.UUID, message: SessionMsg) -> None:
        ref = self.registry.lookup("session", str(session))
        assert ref is not None
        await ref.tell(message)

    async def row(self, session: uuid.UUID) -> dict[str, Any]:
        row = await self.db.fetchrow("SELECT * FROM charging_sessions WHERE id = $1", session)
        assert row is not None
        return dict(row)

    async def until(self, session: uuid.UUID, status: str, within: float) -> float:
        """The virtual time at which the session publishes ``status`` (within ``within`` s; the
        test waits on the bus, not by polling the database)."""
        with trio.fail_after(within + 2 * TICK):
            async for event in self.events:
                if not isinstance(event, SessionChanged):
                    continue  # a milestone tells the same, after its view
                data = event.message()["data"]
                if data["id"] == str(session) and data["status"] == status:
                    break
        return trio.current_time()

    async def balance(self) -> Decimal:
        value = await self.db.fetchval("SELECT balance FROM clients WHERE id = $1", self.client)
        return Decimal(value)


async def ticker() -> None:
    """Keeps a deadline at most ``TICK`` ahead, so a jump made while the database was answering
    can't reach a test's own timeout."""
    while True:  # noqa: ASYNC110 - a tick, not a wait for something
        await trio.sleep(TICK)


@pytest.fixture
def answers() -> dict[str, str]:
    return {}


@pytest.fixture
async def rig(
    db: Database, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
    answers: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Rig]:  # fmt: skip
    # The clock (the test's, so its tests ask for it too) jumps only after the run loop has been
    # idle this long, and never while a task waits for the database (real time, another thread).
    autojump_clock.autojump_threshold = 0.02
    hold_while_the_database_answers(db, autojump_clock, monkeypatch)
    nursery.start_soon(ticker)
    await prov.add_tariff(db, prov.TariffIn(id="T1", name="DC", price_per_kwh=Decimal("15.00")))
    await provision(db, "CP-1")
    await db.execute("UPDATE stations SET tariff_id = 'T1' WHERE id = 'CP-1'")
    registry = Registry()
    supervisor: Supervisor = await nursery.start(run_supervisor, "test", registry)
    storage = await supervisor.start_child(storage_actor_spec(db))
    ledger = Ledger(storage, db, timeout=10**6)  # the database answers in real time
    station = Station(answers)
    await supervisor.start_child(
        ChildSpec(Address(STATION, "CP-1"), station.run, Restart.PERMANENT)
    )
    registry.show(Address(STATION, "CP-1"), station.snapshot)
    client = uuid.uuid4()
    await ensure_client(db, client)
    await ledger.credit(client, "500", key=f"topup-{client}")
    bus = EventBus()
    with bus.subscribe() as events:
        yield Rig(db, ledger, registry, supervisor, station, client, bus, events)


async def charging(rig: Rig, limit: Limit) -> uuid.UUID:
    """A session the charger has started (register at 5,000 Wh), its connector Charging."""
    session = await rig.begin(limit)
    await rig.until(session, "starting", within=TICK)
    await rig.tell(session, ChargerStarted(1001, 5_000, virtual_now()))
    rig.station.status = "Charging"
    await rig.until(session, "charging", within=TICK)
    assert rig.station.count("RemoteStartTransaction") == 1
    return session


async def test_no_start_transaction_within_the_timeout_gives_the_money_back(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    began = trio.current_time()
    session = await rig.begin(Limit("amount", Decimal("100")))
    took = await rig.until(session, "cancelled", within=700) - began
    assert TIMINGS.start_timeout <= took <= TIMINGS.start_timeout + TICK
    assert "did not start" in (await rig.row(session))["error"]
    assert await rig.balance() == 500


@pytest.mark.parametrize("answers", [{"RemoteStopTransaction": "Rejected"}])
async def test_a_rejected_stop_settles_on_the_last_reading_when_the_charger_has_ended(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    session = await charging(rig, Limit("energy", Decimal("1")))
    rig.station.status = "Available"  # it ended, and its StopTransaction is lost
    began = trio.current_time()
    await rig.tell(session, MeterReading(6_500, None, None, virtual_now() + timedelta(seconds=60)))
    took = await rig.until(session, "settled", within=120) - began
    assert 2 * TIMINGS.settle_wait <= took <= 2 * TIMINGS.settle_wait + TICK  # two looks
    assert rig.station.count("TriggerMessage") >= 1
    row = await rig.row(session)
    assert row["settled_by"] == "last_reading" and row["stop_reason"] == "limit_reached"
    assert row["final_cost"] == Decimal("22.50")  # 1.5 kWh × 15
    assert await rig.balance() == Decimal("477.50")


async def test_a_charger_that_keeps_charging_is_asked_again_and_the_cap_settles(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """RemoteStop Accepted, no StopTransaction, the connector Charging for ever: asked again
    with backoff, and settled on the last reading at the cap plus the grace."""
    began = trio.current_time()
    session = await charging(rig, Limit("energy", Decimal("1")))
    await rig.tell(session, MeterReading(6_500, None, None, virtual_now() + timedelta(seconds=60)))
    await rig.until(session, "stopping", within=TICK)
    took = await rig.until(session, "settled", within=TIMINGS.max_duration + 1200) - began
    final = TIMINGS.max_duration + TIMINGS.offline_grace  # the cap, plus the grace to report
    # settling waits on the database several times, and the clock may jump up to a tick during
    # each wait on a busy machine; a look missed would show the backoff's 600 s
    assert final <= took <= final + 3 * TICK, took
    stops = [at for at, name in rig.station.received if name == "RemoteStopTransaction"]
    waits = [b - a for a, b in itertools.pairwise(stops)]
    assert len(stops) >= 4 and waits[0] >= TIMINGS.stop_check
    # backing off; a look the clock's jump delayed by up to a tick (a database answer in
    # flight) makes that wait a tick longer and the next one, due at its stored time, shorter
    assert all(b >= a - 2 * TICK for a, b in itertools.pairwise(waits)), waits
    assert max(waits) <= TIMINGS.stop_backoff_max + TICK
    assert max(waits) >= 4 * TIMINGS.stop_check  # it did back off (an accepted stop kept it)
    row = await rig.row(session)
    assert row["settled_by"] == "last_reading" and row["final_cost"] == Decimal("22.50")


async def test_a_charger_gone_past_the_grace_settles_on_the_last_reading(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    session = await charging(rig, Limit("amount", Decimal("100")))
    await rig.tell(session, MeterReading(6_000, None, None, virtual_now() + timedelta(seconds=60)))
    rig.station.online = False  # after the reading: the session takes its mail in order
    began = trio.current_time()
    took = await rig.until(session, "settled", within=TIMINGS.offline_grace + 120) - began
    grace = TIMINGS.offline_grace  # from the first look that finds it gone
    assert grace <= took <= grace + TIMINGS.offline_check + TICK
    row = await rig.row(session)
    assert row["stop_reason"] == "charger_offline" and row["final_cost"] == Decimal("15.00")


async def test_the_cap_stops_a_session_that_charges_on(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    began = trio.current_time()
    session = await charging(rig, Limit("amount", Decimal("100")))
    took = await rig.until(session, "stopping", within=TIMINGS.max_duration + 60) - began
    assert TIMINGS.max_duration <= took <= TIMINGS.max_duration + TIMINGS.offline_check + TICK
    assert (await rig.row(session))["stop_reason"] == "max_duration"
    assert rig.station.count("RemoteStopTransaction") == 1
