"""Operators' changes made outside the server (SQL, the CLI) reach the running server: station
actors read their record again, cached tariffs are dropped; nothing is cached while the watcher
is not listening, and after a lost connection every station reads its record again."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, cast

import trio

from actors import provisioning as prov
from actors.charge_point.config import StationTariffs, run_config_watch
from actors.charge_point.messages import STATION, Reload
from actors.runtime import (
    Address,
    ChildSpec,
    Intensity,
    Mailbox,
    Registry,
    Restart,
    Supervisor,
    run_supervisor,
)
from storage import Database
from tests.ocpp_server import provision

D = Decimal


async def recorder(
    mailbox: Mailbox[Any],
    *,
    heard: list[str],
    station: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A station actor that only notes what it is asked to do."""
    task_status.started()
    while True:
        try:
            envelope = await mailbox.receive()
        except trio.EndOfChannel:
            return
        if isinstance(envelope.message, Reload):
            heard.append(station)
        envelope.respond(None)


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state another task changes
            await trio.sleep(0.01)


async def stations(
    db: Database, nursery: trio.Nursery, names: list[str]
) -> tuple[Registry, list[str]]:
    registry, heard = Registry(), []
    supervisor: Supervisor = await nursery.start(run_supervisor, "stations", registry, Intensity())
    for name in names:
        await provision(db, name)
        run = partial(recorder, heard=heard, station=name)
        await supervisor.start_child(ChildSpec(Address(STATION, name), run, Restart.PERMANENT))
    return registry, heard


async def test_a_station_changed_in_the_database_reads_its_record_again(
    db: Database, nursery: trio.Nursery
) -> None:
    registry, heard = await stations(db, nursery, ["CP-A", "CP-B"])
    tariffs = StationTariffs(db)
    await nursery.start(run_config_watch, db, registry, tariffs)

    await db.execute("UPDATE stations SET admin_status = 'maintenance' WHERE id = 'CP-A'")
    await until(lambda: heard == ["CP-A"])
    await db.execute(
        "INSERT INTO connectors (station_id, connector_id, connector_type, power_kw) "
        "VALUES ('CP-B', 3, 'Type2', 22)"
    )
    await until(lambda: heard == ["CP-A", "CP-B"])
    # what the server writes as chargers report is not an operator's change
    await db.execute("UPDATE stations SET last_heartbeat_at = now(), is_online = true")
    await db.execute("UPDATE connectors SET status = 'Charging' WHERE station_id = 'CP-A'")
    await db.execute("UPDATE stations SET accept_unknown_tags = true WHERE id = 'CP-B'")
    await until(lambda: len(heard) == 3)  # notifications come in commit order
    assert heard == ["CP-A", "CP-B", "CP-B"]


async def test_tariffs_are_kept_until_a_change_is_notified(
    db: Database, nursery: trio.Nursery
) -> None:
    registry, _heard = await stations(db, nursery, ["CP-A"])
    await prov.add_tariff(db, prov.TariffIn(id="T1", name="DC", price_per_kwh=D("15.00")))
    await db.execute("UPDATE stations SET tariff_id = 'T1'")
    tariffs = StationTariffs(db)

    async def price() -> tuple[Decimal, int] | None:
        tariff = await tariffs.get("CP-A")
        return None if tariff is None else (tariff.price_per_kwh, len(tariff.rates))

    async def until_price(wanted: tuple[Decimal, int] | None) -> None:
        with trio.fail_after(10):
            while await price() != wanted:  # noqa: ASYNC110 - polls the database
                await trio.sleep(0.01)

    # not listening: nothing is kept, every read sees the database
    assert await price() == (D("15.00"), 0)
    await db.execute("UPDATE tariffs SET price_per_kwh = 16")
    assert await price() == (D("16.00"), 0)

    assert await tariffs.get("CP-A") is not await tariffs.get("CP-A")
    await nursery.start(run_config_watch, db, registry, tariffs)
    assert tariffs.live and await price() == (D("16.00"), 0)
    assert await tariffs.get("CP-A") is await tariffs.get("CP-A")  # kept while listening
    await db.execute("UPDATE tariffs SET price_per_kwh = 17")
    await until_price((D("17.00"), 0))
    await db.execute("UPDATE stations SET tariff_id = NULL")
    await until_price(None)
    await prov.add_location(db, prov.LocationIn(id="L1", name="Yard", tariff_id="T1"))
    await db.execute("UPDATE stations SET location_id = 'L1'")
    await until_price((D("17.00"), 0))  # the location's tariff
    await db.execute(
        "INSERT INTO tariff_rates (tariff_id, starts_at, ends_at, price_per_kwh) "
        "VALUES ('T1', '00:00', '06:00', 9)"
    )
    await until_price((D("17.00"), 1))
    await db.execute("UPDATE locations SET tariff_id = NULL")
    await until_price(None)


class CountingReads:
    """A database whose reads are counted."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    async def fetch(self, *args: Any) -> Any:
        self.reads += 1
        return await self.db.fetch(*args)


async def test_every_stations_tariff_is_read_at_once_while_listening(
    db: Database, nursery: trio.Nursery
) -> None:
    registry, _heard = await stations(db, nursery, ["OWN", "AT-LOC", "NONE"])
    await prov.add_tariff(db, prov.TariffIn(id="T1", name="DC", price_per_kwh=D("15.00")))
    await prov.add_tariff(db, prov.TariffIn(id="T2", name="AC", price_per_kwh=D("9.00")))
    await prov.add_location(db, prov.LocationIn(id="L1", name="Yard", tariff_id="T2"))
    await db.execute("UPDATE stations SET tariff_id = 'T1' WHERE id = 'OWN'")
    await db.execute("UPDATE stations SET location_id = 'L1' WHERE id = 'AT-LOC'")
    await db.execute(
        "INSERT INTO tariff_rates (tariff_id, starts_at, ends_at, price_per_kwh) "
        "VALUES ('T2', '00:00', '06:00', 5)"
    )
    counting = CountingReads(db)
    tariffs = StationTariffs(cast(Database, counting))
    await nursery.start(run_config_watch, db, registry, tariffs)
    read_at_start = counting.reads

    async def prices() -> list[tuple[Decimal, int] | None]:
        found = [await tariffs.get(name) for name in ("OWN", "AT-LOC", "NONE")]
        return [None if t is None else (t.price_per_kwh, len(t.rates)) for t in found]

    assert await prices() == [(D("15.00"), 0), (D("9.00"), 1), None]
    assert counting.reads == read_at_start  # nothing read for them: all were read at start

    # a tariff changed: all are read again, and then answered from memory
    await db.execute("UPDATE tariffs SET price_per_kwh = 10 WHERE id = 'T2'")
    with trio.fail_after(10):
        while True:
            before = counting.reads
            # (the prices are asked for before the reads are compared)
            if await prices() == [(D("15.00"), 0), (D("10.00"), 1), None] and (
                counting.reads == before
            ):
                break
            await trio.sleep(0.01)

    await provision(db, "LATER")  # a station added since is read alone
    await db.execute("UPDATE stations SET tariff_id = 'T2' WHERE id = 'LATER'")
    later = await tariffs.get("LATER")
    assert later is not None and later.price_per_kwh == D("10.00")


async def test_after_a_lost_connection_every_station_reads_its_record_again(
    db: Database, nursery: trio.Nursery
) -> None:
    registry, heard = await stations(db, nursery, ["CP-A", "CP-B"])
    await prov.add_tariff(db, prov.TariffIn(id="T1", name="DC", price_per_kwh=D("15.00")))
    await db.execute("UPDATE stations SET tariff_id = 'T1'")
    tariffs = StationTariffs(db)
    await nursery.start(partial(run_config_watch, retry=0.05), db, registry, tariffs)
    assert (await tariffs.get("CP-A")) is not None

    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
    )
    await until(lambda: sorted(heard) == ["CP-A", "CP-B"])
    await until(lambda: tariffs.live)
    await db.execute("UPDATE stations SET admin_status = 'inactive' WHERE id = 'CP-B'")
    await until(lambda: sorted(heard) == ["CP-A", "CP-B", "CP-B"])  # listening again
