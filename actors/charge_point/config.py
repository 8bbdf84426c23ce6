"""Operators' changes reaching the running server: each station's tariff kept in memory, and the
watcher that turns the database's notifications (migration 0006) into station actors reading
their record again and cached tariffs dropped.

However a station's settings or a tariff change (the admin API, the CLI in another process,
plain SQL), the commit notifies, and the watcher hands it on within milliseconds. While the
watcher is not listening (before it starts, or with its connection lost) no tariff is cached, so
none can be stale; when it listens again after a loss, every station actor reads its record
again, since what changed meanwhile was not heard.
"""

from __future__ import annotations

import contextlib

import structlog
import trio

from actors.charge_point.messages import STATION, Reload
from actors.runtime import ActorError, Registry
from cpms.kernel.charging import Tariff
from storage import Database
from storage.errors import StorageUnavailable
from storage.network import station_tariffs, tariff_for_station

log = structlog.stdlib.get_logger("actors.charge_point.config")

CHANNELS = ("cpms_station", "cpms_tariffs")


class StationTariffs:
    """Each station's tariff (its own or its location's, None when neither has one), kept while
    :func:`run_config_watch` listens: all of them read at once when it begins to listen and
    after a tariff changes, a station changed since read alone when it is next asked for."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[str, Tariff | None] = {}
        self._generation = 0
        #: set by the watcher while it listens: only then is a tariff kept
        self.live = False

    async def get(self, station_id: str) -> Tariff | None:
        if station_id in self._known:
            return self._known[station_id]
        generation = self._generation
        tariff = await tariff_for_station(self._db, station_id)
        if self.live and generation == self._generation:  # nothing changed while reading
            self._known[station_id] = tariff
        return tariff

    async def load(self) -> None:
        """Read every station's tariff (kept only while listening, and only when nothing was
        notified meanwhile)."""
        generation = self._generation
        known = await station_tariffs(self._db)
        if self.live and generation == self._generation:
            self._known = known

    def forget(self, station_id: str) -> None:
        self._generation += 1
        self._known.pop(station_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._known.clear()


async def run_config_watch(
    db: Database,
    registry: Registry,
    tariffs: StationTariffs,
    *,
    retry: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for operators' changes for as long as the server runs; reports started once the
    first attempt to listen has been made (listening or not)."""
    heard_before = False
    reported = False
    while True:
        try:
            async with db.notifications(*CHANNELS) as notes:
                tariffs.clear()
                tariffs.live = True
                await tariffs.load()
                if not reported:
                    task_status.started()
                    reported = True
                if heard_before:
                    log.info("config notifications back: every station reads its record")
                    for station_id in registry.ids(STATION):
                        await _reload(registry, station_id)
                heard_before = True
                async for note in notes:
                    await _handle(registry, tariffs, notes, note)
            log.warning("config notifications lost: reconnecting")
        except StorageUnavailable as error:
            log.warning("config notifications unavailable", error=str(error))
        finally:
            tariffs.live = False
            tariffs.clear()
        if not reported:
            task_status.started()
            reported = True
        await trio.sleep(retry)


async def _handle(
    registry: Registry,
    tariffs: StationTariffs,
    notes: trio.MemoryReceiveChannel[tuple[str, str]],
    note: tuple[str, str],
) -> None:
    """Hand on ``note`` and whatever else has been notified by now; the tariffs, if one
    changed, are read again once for all of it (a script may change many in a row)."""
    changed_tariffs = False
    while True:
        channel, payload = note
        if channel == "cpms_tariffs":
            tariffs.clear()
            changed_tariffs = True
        else:
            tariffs.forget(payload)
            await _reload(registry, payload)
        try:
            note = notes.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    if changed_tariffs:
        await tariffs.load()


async def _reload(registry: Registry, station_id: str) -> None:
    """Ask the station's actor, if it runs, to read its record (a station without one reads it
    when it starts)."""
    ref = registry.lookup(STATION, station_id)
    if ref is None:
        return
    with contextlib.suppress(ActorError):  # stopped meanwhile: a new one reads the record
        await ref.tell(Reload())
