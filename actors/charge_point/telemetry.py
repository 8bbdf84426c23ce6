"""Batched, non-blocking writes of what chargers report all the time.

The message log (every frame in and out), meter samples, heartbeat times, the live reading of
open transactions and what chargers report of their stations (boots, online or offline,
connector statuses: each station's actor holds them, the database's copy is for reading) are
written in the background: a charge point records them and answers its
charger at once, and a writer task writes what was recorded every ``flush_every`` seconds, in
one transaction that doesn't wait for the disk (``storage.telemetry``). The message log and
the meter samples, a row per frame and per sampled value, are the bulk of it: each row becomes
its line of ``COPY`` text as it is recorded, so a flush hands the database one buffer per table.
The storage loop holds the GIL while it encodes parameters value by value, and the event loop
waits for it (array parameters multiplied the round-trip p99 several times under load; see
``bench/README.md``). Money never goes this way:
balances move only through the StorageActor, and a session is billed from StopTransaction's
meter, not from these samples.

When a buffer is full, what comes is counted in ``dropped`` rather than blocking a charger.
While the database is away, what was recorded waits (up to the buffer's capacity per table,
the oldest given up first) and the writer tries again, backing off to every 5 s; a row the
database refuses is written alone and costs only itself.
Message log rows older than ``retention`` are deleted by the same task, so the log stays bounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
import trio

from cpms.kernel.timeutil import iso_now
from cpms.ocpp.frames import Call, CallError, CallResult, Frame, dumps, payload_text
from cpms.ocpp.meter import Reading, Sample
from storage import Database
from storage.errors import StorageUnavailable
from storage.telemetry import StationRows, prune_messages, store_telemetry

log = structlog.stdlib.get_logger("actors.charge_point.telemetry")


_NULL = "\\N"


def _copy_field(value: str | None) -> str:
    """``value`` in PostgreSQL's COPY text format."""
    if value is None:
        return _NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


@dataclass(slots=True)
class _Batch:
    """What one flush writes."""

    #: ocpp_messages rows as COPY text lines, in storage.telemetry.MESSAGE_COLUMNS order
    messages: list[str] = field(default_factory=list)
    #: meter_samples rows as COPY text lines, in storage.telemetry.SAMPLE_COLUMNS order
    samples: list[str] = field(default_factory=list)
    heartbeats: dict[str, datetime] = field(default_factory=dict)  # station → latest
    readings: dict[tuple[str, int], Reading] = field(default_factory=dict)  # transaction → latest
    boots: dict[str, tuple[dict[str, Any], datetime]] = field(default_factory=dict)  # latest
    online: dict[str, bool] = field(default_factory=dict)  # station → latest
    #: (station, connector: 0 the charge point) → its latest StatusNotification, and when
    statuses: dict[tuple[str, int], tuple[dict[str, Any], datetime]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(getattr(self, name)) for name in _KINDS)

    def put_back(self, newer: _Batch, capacity: int) -> int:
        """Add ``newer`` (recorded after this batch) to it, the oldest lines given up beyond
        ``capacity`` per table; returns how many were given up."""
        lost = 0
        for name in ("messages", "samples"):
            lines = getattr(self, name) + getattr(newer, name)
            lost += max(0, len(lines) - capacity)
            setattr(self, name, lines[-capacity:])
        for name in _LATEST:
            getattr(self, name).update(getattr(newer, name))
        return lost

    def rows(self) -> Iterator[tuple[str, _Batch]]:
        """Each row as a batch of its own, with its kind (to write one by one)."""
        for name in ("messages", "samples"):
            for line in getattr(self, name):
                row = _Batch()
                setattr(row, name, [line])
                yield name, row
        for name in _LATEST:
            for key, value in getattr(self, name).items():
                row = _Batch()
                getattr(row, name)[key] = value
                yield name, row


#: what a batch holds: lines of COPY text, then the latest of each thing by key
_LATEST = ("heartbeats", "readings", "boots", "online", "statuses")
_KINDS = ("messages", "samples", *_LATEST)


class Telemetry:
    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._batch = _Batch()
        self._queued = trio.Event()  # set when something waits to be written
        self.dropped = 0
        self.written = 0

    def frame(
        self,
        station_id: str,
        direction: str,
        frame: Frame,
        action: str | None,
        text: str | None = None,
    ) -> None:
        """Log a frame; ``text`` is how it went over the wire, to cut its payload from."""
        lines = self._batch.messages
        if len(lines) >= self._capacity:
            self.dropped += 1
            return
        if isinstance(frame, Call):
            kind, action, payload = "2", frame.action, payload_text(frame, text)
        elif isinstance(frame, CallResult):
            kind, payload = "3", payload_text(frame, text)
        else:
            assert isinstance(frame, CallError)
            kind = "4"
            payload = dumps(
                {
                    "errorCode": frame.code,
                    "errorDescription": frame.description,
                    "errorDetails": frame.details,
                }
            )
        lines.append(
            f"{_copy_field(station_id)}\t{direction}\t{kind}\t{_copy_field(frame.unique_id)}\t"
            f"{_copy_field(action)}\t{_copy_field(payload)}\t{iso_now()}\n"
        )
        self._wake()

    def samples(
        self, station_id: str, connector_id: int, transaction_id: int | None, samples: list[Sample]
    ) -> None:
        lines = self._batch.samples
        if len(lines) + len(samples) > self._capacity:
            self.dropped += len(samples)
            return
        tx = _NULL if transaction_id is None else transaction_id
        head = f"{_copy_field(station_id)}\t{connector_id}\t{tx}"
        for s in samples:
            lines.append(
                f"{head}\t{s.sampled_at.isoformat()}\t{_copy_field(s.measurand)}\t"
                f"{_copy_field(s.phase)}\t{_copy_field(s.unit)}\t{_copy_field(s.context)}\t"
                f"{_copy_field(s.location)}\t{s.value}\n"
            )
        if samples:
            self._wake()

    def heartbeat(self, station_id: str) -> None:
        self._batch.heartbeats[station_id] = datetime.now(UTC)
        self._wake()

    def reading(self, station_id: str, transaction_id: int, reading: Reading) -> None:
        self._batch.readings[station_id, transaction_id] = reading
        self._wake()

    def boot(self, station_id: str, payload: dict[str, Any]) -> None:
        """A BootNotification: the charger's identity, and that it was seen online."""
        now = datetime.now(UTC)
        self._batch.boots[station_id] = (payload, now)
        self._batch.heartbeats[station_id] = now
        self._batch.online[station_id] = True
        self._wake()

    def online(self, station_id: str, online: bool) -> None:
        self._batch.online[station_id] = online
        self._wake()

    def status(self, station_id: str, payload: dict[str, Any]) -> None:
        """A StatusNotification (connector 0: the charge point itself)."""
        self._batch.statuses[station_id, payload["connectorId"]] = (payload, datetime.now(UTC))
        self._wake()

    def _wake(self) -> None:
        """Something waits to be written: the writer's next round begins."""
        if not self._queued.is_set():
            self._queued.set()

    async def run(
        self,
        db: Database,
        *,
        flush_every: float = 0.2,
        retention: timedelta = timedelta(days=7),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write what is recorded until cancelled; what is recorded then is written before
        exiting."""
        task_status.started()
        next_prune = trio.current_time()
        try:
            away = flush_every
            while True:
                await self._queued.wait()
                await trio.sleep(flush_every)
                self._queued = trio.Event()  # what comes after the take wakes the next round
                batch = self._take()
                try:
                    await self._write_safely(db, batch)
                except StorageUnavailable:
                    # the database is away: keep what was recorded (bounded) and try again
                    self._put_back(batch)
                    await trio.sleep(away)
                    away = min(away * 2, 5.0)
                    continue
                away = flush_every
                if trio.current_time() >= next_prune:
                    with contextlib.suppress(StorageUnavailable):  # pruned on a later round
                        await prune_messages(db, datetime.now(UTC) - retention)
                        next_prune = trio.current_time() + 3600
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                rest = self._take()
                if rest:
                    try:
                        await self._write_safely(db, rest)
                    except StorageUnavailable:
                        self.dropped += len(rest)
                        log.error("telemetry lost at exit: the database is away", rows=len(rest))

    def _put_back(self, batch: _Batch) -> None:
        lost = batch.put_back(self._batch, self._capacity)
        self._batch = batch
        self.dropped += lost
        self._wake()

    def _take(self) -> _Batch:
        batch, self._batch = self._batch, _Batch()
        return batch

    async def _write_safely(self, db: Database, batch: _Batch) -> None:
        """Write a batch; when the database refuses it, write row by row so one bad row costs
        only itself, never another station's.

        Raises:
            StorageUnavailable: the database is away; what is left of ``batch`` is in it.
        """
        try:
            await self._write(db, batch)
            return
        except StorageUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - whatever it was, the log must go on
            log.warning("telemetry batch refused, writing rows one by one", error=repr(error))
        rows = list(batch.rows())
        for number, (kind, row) in enumerate(rows):
            try:
                await self._write(db, row)
            except StorageUnavailable:
                rest = _Batch()
                for _, later in rows[number:]:
                    rest.put_back(later, self._capacity)
                for name in _KINDS:
                    setattr(batch, name, getattr(rest, name))
                raise
            except Exception as error:  # noqa: BLE001
                self.dropped += 1
                log.error("telemetry row dropped", kind=kind, error=repr(error))

    async def _write(self, db: Database, batch: _Batch) -> None:
        readings = list(batch.readings.items())
        await db.run_with_connection(
            store_telemetry,
            "".join(batch.messages).encode(),
            "".join(batch.samples).encode(),
            (list(batch.heartbeats), list(batch.heartbeats.values())),
            (
                [station for (station, _), _ in readings],
                [tx for (_, tx), _ in readings],
                [None if r.energy_wh is None else int(r.energy_wh) for _, r in readings],
                [r.power_kw for _, r in readings],
                [r.soc_percent for _, r in readings],
            ),
            StationRows.of(batch.boots, batch.online, batch.statuses),
        )
        self.written += len(batch)
