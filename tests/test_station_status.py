"""Station and location status (seed 001 §2) and the offline timer of the ChargePointActor."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
import trio.testing

from actors.charge_point.actor import charge_point_spec
from actors.charge_point.messages import Attach, GetSnapshot, shown_snapshot
from actors.charge_point.telemetry import Telemetry
from actors.location_status import run_location_status
from actors.runtime import Registry, Supervisor, run_supervisor
from cpms.kernel.events import (
    ConnectorShown,
    EventBus,
    LocationStatusChanged,
    StationStatusChanged,
)
from cpms.kernel.status import location_status, station_status
from cpms.ocpp.frames import Call, Frame
from storage import Database
from storage import stations as store


@pytest.mark.parametrize(
    ("online", "admin", "connectors", "expected"),
    [
        (False, "active", ["Available"], "offline"),
        (True, "maintenance", ["Available"], "maintenance"),
        (True, "active", ["Available", "Charging"], "available"),
        (True, "active", ["Charging", "SuspendedEV"], "occupied"),
        (True, "active", ["Faulted", "Charging"], "occupied"),
        (True, "active", ["Faulted", "Unavailable"], "maintenance"),
    ],
)
def test_station_status(online: bool, admin: str, connectors: list[str], expected: str) -> None:
    assert station_status(online, admin, connectors) == expected


@pytest.mark.parametrize(
    ("stations", "expected"),
    [
        (["available", "offline", "maintenance"], "offline"),
        (["available", "maintenance", "occupied"], "maintenance"),
        (["occupied", "occupied"], "occupied"),
        (["available", "available"], "available"),
        (["available", "occupied"], "partial"),
        ([], "offline"),
    ],
)
def test_location_status_priority(stations: list[str], expected: str) -> None:
    assert location_status(stations) == expected  # type: ignore[arg-type]


class FakeLink:
    """A charger connection the test speaks through: ``call`` sends a frame and waits for the
    answer."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._in, self._out = trio.open_memory_channel[Frame](10)
        self._answered = trio.Event()

    async def call(self, frame: Frame) -> str:
        self._answered = trio.Event()
        await self._in.send(frame)
        await self._answered.wait()
        return self.sent[-1]

    async def receive(self) -> str | bytes | None:
        return (await self._out.receive()).encode()

    async def send(self, text: str) -> None:
        self.sent.append(text)
        self._answered.set()

    def close(self, code: int, reason: str) -> None:
        pass

    def release(self) -> None:
        pass


async def test_offline_exactly_after_silence_and_back_on_the_next_frame(
    db: Database, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.2  # jump only when idle, not while a query is in flight
    await store.create_station(
        db, "CP-T", connectors_count=1, connectors=[store.ConnectorSpec(1, "Type2", Decimal(22))]
    )
    bus = EventBus()
    link = FakeLink()
    async with trio.open_nursery() as nursery:
        sup: Supervisor = await nursery.start(run_supervisor, "t", Registry())
        telemetry = Telemetry()
        await nursery.start(telemetry.run, db)
        ref = await sup.start_child(
            charge_point_spec("CP-T", db=db, bus=bus, offline_after=300, telemetry=telemetry)
        )
        with bus.subscribe() as events:
            await ref.tell(Attach(link))
            await link.call(
                Call(
                    "1",
                    "StatusNotification",
                    {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
                )
            )
            assert (await ref.ask(GetSnapshot())).status == "available"
            began = trio.current_time()
            await trio.sleep(299)
            assert (await ref.ask(GetSnapshot())).online
            await trio.sleep(2)
            snapshot = await ref.ask(GetSnapshot())
            assert not snapshot.online and snapshot.status == "offline"
            assert 300 <= trio.current_time() - began <= 301
            row = await store.get_station(db, "CP-T")
            assert row is not None and row["is_online"] is False
            await link.call(Call("2", "Heartbeat", {}))
            assert (await ref.ask(GetSnapshot())).status == "available"
            # a sender that yields after queueing wakes the actor late, its mail already taken
            ref.mailbox._wake()
            with trio.fail_after(10):
                assert '"currentTime"' in await link.call(Call("3", "Heartbeat", {}))
            seen = []
            while True:
                try:
                    seen.append(events.receive_nowait().message()["data"]["status"])
                except trio.WouldBlock:
                    break
        # online with its connector free (the first frame brought both: one event, no flicker
        # of "nothing usable" before it), silent, back
        assert seen == ["available", "offline", "available"]
        nursery.cancel_scope.cancel()


async def test_a_charge_point_shows_its_state_while_it_runs(db: Database) -> None:
    """What a start checks a station against is read from the registry without asking its
    actor; it is the actor's state at that moment, and gone once the actor has stopped."""
    await store.create_station(
        db, "CP-V", connectors_count=1, connectors=[store.ConnectorSpec(1, "Type2", Decimal(22))]
    )
    registry, link = Registry(), FakeLink()
    async with trio.open_nursery() as nursery:
        sup: Supervisor = await nursery.start(run_supervisor, "t", registry)
        telemetry = Telemetry()
        await nursery.start(telemetry.run, db)
        spec = charge_point_spec(
            "CP-V", db=db, bus=EventBus(), telemetry=telemetry, registry=registry
        )
        ref = await sup.start_child(spec)
        shown = shown_snapshot(registry, "CP-V")
        assert shown is not None and not shown.connected
        await ref.tell(Attach(link))
        for status in ("Available", "Faulted"):
            await link.call(
                Call(
                    status,
                    "StatusNotification",
                    {"connectorId": 1, "errorCode": "NoError", "status": status},
                )
            )
            shown = shown_snapshot(registry, "CP-V")
            assert shown is not None and shown.connected and shown.online
            assert shown.connectors[1].status == status
            assert shown == await ref.ask(GetSnapshot())
        assert sup.terminate_child(spec.address)
        await trio.testing.wait_all_tasks_blocked()
        assert shown_snapshot(registry, "CP-V") is None
        nursery.cancel_scope.cancel()


async def test_location_updates_follow_station_events(db: Database, nursery: trio.Nursery) -> None:
    await db.execute("INSERT INTO locations (id, name) VALUES ('LOC-1', 'Mall')")
    for sid in ("A", "B"):
        await store.create_station(
            db,
            sid,
            connectors_count=1,
            location_id="LOC-1",
            connectors=[store.ConnectorSpec(1, "GBT", Decimal(60))],
        )
    bus = EventBus()
    with bus.subscribe() as events:
        await nursery.start(run_location_status, db, bus)

        def station(sid: str, status: str, connector: str) -> None:
            shown = (ConnectorShown(1, connector, Decimal(60)),)
            bus.publish(StationStatusChanged(sid, "LOC-1", status, shown, "2026-01-01T00:00:00Z"))  # type: ignore[arg-type]

        async def next_location() -> dict[str, object]:
            while True:
                event = await events.receive()
                if isinstance(event, LocationStatusChanged):
                    return dict(event.message()["data"])

        station("A", "available", "Available")
        first = await next_location()  # B has not reported: still offline
        assert (first["status"], first["stations_count"], first["total_connectors"]) == (
            "offline",
            2,
            2,
        )
        station("B", "occupied", "Charging")
        second = await next_location()
        assert second["status"] == "partial"
        assert (
            second["available_stations"],
            second["occupied_stations"],
            second["available_connectors"],
        ) == (1, 1, 1)
        station("A", "occupied", "Charging")
        assert (await next_location())["status"] == "occupied"
        # B moves to another location: both locations are told
        shown = (ConnectorShown(1, "Charging", Decimal(60)),)
        bus.publish(StationStatusChanged("B", "LOC-2", "occupied", shown, "2026-01-01T00:00:01Z"))
        moved = {}
        while len(moved) < 2:
            update = await next_location()
            moved[update["location_id"]] = update
        assert (moved["LOC-1"]["stations_count"], moved["LOC-1"]["total_connectors"]) == (1, 1)
        assert (moved["LOC-2"]["stations_count"], moved["LOC-2"]["status"]) == (1, "occupied")
