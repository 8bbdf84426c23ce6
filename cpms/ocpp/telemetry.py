"""Batched, non-blocking writes of what chargers report all the time.

The message log (every frame in and out), meter samples, heartbeat times and the live reading of
open transactions are written in the background: a charge point queues them and answers its
charger at once, and a writer task drains the queue every ``flush_every`` seconds in at most four
statements. The message log, a row per frame, is the bulk of it: each frame becomes its line of
``COPY`` text as it is logged, so a flush hands the database one buffer, with nothing to encode
value by value on the storage loop and no INSERT executor work per row. Money never goes this
way: balances move only through the StorageActor, and a session is billed from
StopTransaction's meter, not from these samples.

When the queue is full, items are counted in ``dropped`` rather than blocking a charger. Message
log rows older than ``retention`` are deleted by the same task, so the log stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
import trio

from cpms.ocpp.frames import Call, CallError, CallResult, Frame, dumps, payload_text
from cpms.ocpp.meter import Reading, Sample
from storage import Database

log = structlog.stdlib.get_logger("cpms.ocpp.telemetry")


_LOG_COLUMNS = [
    "station_id",
    "direction",
    "message_type",
    "unique_id",
    "action",
    "payload",
    "created_at",
]
_NULL = "\\N"


def _copy_field(value: str) -> str:
    """``value`` in PostgreSQL's COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


@dataclass(frozen=True, slots=True)
class _Samples:
    station_id: str
    connector_id: int
    transaction_id: int | None
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class _Heartbeat:
    station_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class _Reading:
    station_id: str
    transaction_id: int
    reading: Reading


_Item = _Samples | _Heartbeat | _Reading
_Unit = _Item | str  # a str is a message log line


class Telemetry:
    def __init__(self, capacity: int = 100_000) -> None:
        self._send, self._receive = trio.open_memory_channel[_Item](capacity)
        self._capacity = capacity
        self._log: list[str] = []  # message log rows as COPY text lines
        self._queued = trio.Event()  # set when something waits to be written
        self.dropped = 0
        self.written = 0

    def _put(self, item: _Item) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            return
        self._wake()

    def frame(
        self,
        station_id: str,
        direction: str,
        frame: Frame,
        action: str | None,
        text: str | None = None,
    ) -> None:
        """Log a frame; ``text`` is how it went over the wire, to cut its payload from."""
        if len(self._log) >= self._capacity:
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
        named = _NULL if action is None else _copy_field(action)
        self._log.append(
            f"{_copy_field(station_id)}\t{direction}\t{kind}\t{_copy_field(frame.unique_id)}\t"
            f"{named}\t{_copy_field(payload)}\t{datetime.now(UTC).isoformat()}\n"
        )
        self._wake()

    def _wake(self) -> None:
        """Something waits to be written: the writer's next round begins."""
        if not self._queued.is_set():
            self._queued.set()

    def samples(
        self, station_id: str, connector_id: int, transaction_id: int | None, samples: list[Sample]
    ) -> None:
        if samples:
            self._put(_Samples(station_id, connector_id, transaction_id, samples))

    def heartbeat(self, station_id: str) -> None:
        self._put(_Heartbeat(station_id, datetime.now(UTC)))

    def reading(self, station_id: str, transaction_id: int, reading: Reading) -> None:
        self._put(_Reading(station_id, transaction_id, reading))

    async def run(
        self,
        db: Database,
        *,
        flush_every: float = 0.2,
        batch: int = 5000,
        retention: timedelta = timedelta(days=7),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write queued items until cancelled; what is queued then is written before exiting."""
        task_status.started()
        next_prune = trio.current_time()
        try:
            while True:
                await self._queued.wait()
                await trio.sleep(flush_every)
                self._queued = trio.Event()  # what comes after the take wakes the next round
                units = self._take(batch)
                if self._receive.statistics().current_buffer_used:
                    self._queued.set()  # more than a batch was waiting
                if units:
                    await self._write_safely(db, units)
                if trio.current_time() >= next_prune:
                    await db.execute(
                        "DELETE FROM ocpp_messages WHERE created_at < $1",
                        datetime.now(UTC) - retention,
                    )
                    next_prune = trio.current_time() + 3600
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                rest = self._take(10**9)
                if rest:
                    await self._write_safely(db, rest)

    def _take(self, limit: int) -> list[_Unit]:
        """Up to ``limit`` queued items, and every message log line."""
        lines, self._log = self._log, []
        return [*self._drain(limit), *lines]

    def _drain(self, limit: int) -> list[_Item]:
        items: list[_Item] = []
        while len(items) < limit:
            try:
                items.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return items

    async def _write_safely(self, db: Database, items: list[_Unit]) -> None:
        """Write a batch; when the database refuses it, write item by item so one bad row costs
        only itself (after ten failures in a row the database is taken to be away and the rest
        of the batch is dropped)."""
        try:
            await self._write(db, items)
            return
        except Exception as error:  # noqa: BLE001 - whatever it was, the log must go on
            log.warning("telemetry batch refused, writing items one by one", error=repr(error))
        failures = 0
        for number, item in enumerate(items):
            try:
                await self._write(db, [item])
                failures = 0
            except Exception as error:  # noqa: BLE001
                self.dropped += 1
                failures += 1
                kind = "message" if isinstance(item, str) else type(item).__name__
                log.error("telemetry item dropped", kind=kind, error=repr(error))
                if failures >= 10:
                    self.dropped += len(items) - number - 1
                    log.error("telemetry batch dropped", items=len(items) - number - 1)
                    return

    async def _write(self, db: Database, items: list[_Unit]) -> None:
        lines = [i for i in items if isinstance(i, str)]
        samples = [(i, s) for i in items if isinstance(i, _Samples) for s in i.samples]
        heartbeats = {i.station_id: i.at for i in items if isinstance(i, _Heartbeat)}
        readings = {
            (i.station_id, i.transaction_id): i.reading for i in items if isinstance(i, _Reading)
        }
        if lines:
            await db.copy_text("ocpp_messages", _LOG_COLUMNS, "".join(lines).encode())
        if samples:
            await db.execute(
                """INSERT INTO meter_samples (station_id, connector_id, transaction_id,
                          session_id, sampled_at, measurand, phase, unit, context, location,
                          value)
                   SELECT s.station_id, s.connector_id, s.tx,
                          (SELECT id FROM charging_sessions c WHERE c.transaction_id = s.tx),
                          s.at, s.measurand, s.phase, s.unit, s.context, s.location, s.value
                   FROM unnest($1::text[], $2::smallint[], $3::int[], $4::timestamptz[],
                               $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                               $10::numeric[])
                        AS s(station_id, connector_id, tx, at, measurand, phase, unit, context,
                             location, value)""",
                [i.station_id for i, _ in samples],
                [i.connector_id for i, _ in samples],
                [i.transaction_id for i, _ in samples],
                [s.sampled_at for _, s in samples],
                [s.measurand for _, s in samples],
                [s.phase for _, s in samples],
                [s.unit for _, s in samples],
                [s.context for _, s in samples],
                [s.location for _, s in samples],
                [s.value for _, s in samples],
            )
        if heartbeats:
            await db.execute(
                """UPDATE stations SET last_heartbeat_at = h.at, last_seen_at = h.at
                   FROM unnest($1::text[], $2::timestamptz[]) AS h(id, at)
                   WHERE stations.id = h.id""",
                list(heartbeats),
                list(heartbeats.values()),
            )
        if readings:
            keys = list(readings)
            values = list(readings.values())
            await db.execute(
                """UPDATE charging_sessions c
                   SET meter_last_wh = coalesce(r.wh, c.meter_last_wh),
                       energy_kwh = CASE WHEN r.wh IS NULL THEN c.energy_kwh
                                    ELSE greatest(r.wh - c.meter_start_wh, 0) / 1000.0 END,
                       power_kw = coalesce(r.kw, c.power_kw),
                       soc_percent = coalesce(r.soc, c.soc_percent), updated_at = now()
                   FROM unnest($1::text[], $2::int[], $3::bigint[], $4::numeric[],
                               $5::smallint[]) AS r(station_id, tx, wh, kw, soc)
                   WHERE c.station_id = r.station_id AND c.transaction_id = r.tx
                     AND c.status = 'charging'""",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [None if v.energy_wh is None else int(v.energy_wh) for v in values],
                [v.power_kw for v in values],
                [v.soc_percent for v in values],
            )
        self.written += len(items)
