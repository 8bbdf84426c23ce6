"""Batched, non-blocking writes of what chargers report all the time.

The message log (every frame in and out), meter samples, heartbeat times and the live reading of
open transactions are written in the background: a charge point queues them and answers its
charger at once, and a writer task drains the queue every ``flush_every`` seconds (or when a
batch is full) in at most four statements. Money never goes this way: balances move only through
the StorageActor, and a session is billed from StopTransaction's meter, not from these samples.

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


@dataclass(frozen=True, slots=True)
class _Message:
    station_id: str
    direction: str
    message_type: int
    unique_id: str
    action: str | None
    payload: str  # JSON text
    at: datetime


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


_Item = _Message | _Samples | _Heartbeat | _Reading


class Telemetry:
    def __init__(self, capacity: int = 100_000) -> None:
        self._send, self._receive = trio.open_memory_channel[_Item](capacity)
        self.dropped = 0
        self.written = 0

    def _put(self, item: _Item) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1

    def frame(
        self,
        station_id: str,
        direction: str,
        frame: Frame,
        action: str | None,
        text: str | None = None,
    ) -> None:
        """Log a frame; ``text`` is how it went over the wire, to cut its payload from."""
        now = datetime.now(UTC)
        if isinstance(frame, Call):
            payload = payload_text(frame, text)
            self._put(
                _Message(station_id, direction, 2, frame.unique_id, frame.action, payload, now)
            )
        elif isinstance(frame, CallResult):
            payload = payload_text(frame, text)
            self._put(_Message(station_id, direction, 3, frame.unique_id, action, payload, now))
        else:
            assert isinstance(frame, CallError)
            details = dumps(
                {
                    "errorCode": frame.code,
                    "errorDescription": frame.description,
                    "errorDetails": frame.details,
                }
            )
            self._put(_Message(station_id, direction, 4, frame.unique_id, action, details, now))

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
                items = [await self._receive.receive()]
                await trio.sleep(flush_every)
                items += self._drain(batch)
                await self._write_safely(db, items)
                if trio.current_time() >= next_prune:
                    await db.execute(
                        "DELETE FROM ocpp_messages WHERE created_at < $1",
                        datetime.now(UTC) - retention,
                    )
                    next_prune = trio.current_time() + 3600
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                rest = self._drain(10**9)
                if rest:
                    await self._write_safely(db, rest)

    def _drain(self, limit: int) -> list[_Item]:
        items: list[_Item] = []
        while len(items) < limit:
            try:
                items.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return items

    async def _write_safely(self, db: Database, items: list[_Item]) -> None:
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
                log.error("telemetry item dropped", kind=type(item).__name__, error=repr(error))
                if failures >= 10:
                    self.dropped += len(items) - number - 1
                    log.error("telemetry batch dropped", items=len(items) - number - 1)
                    return

    async def _write(self, db: Database, items: list[_Item]) -> None:
        messages = [i for i in items if isinstance(i, _Message)]
        samples = [(i, s) for i in items if isinstance(i, _Samples) for s in i.samples]
        heartbeats = {i.station_id: i.at for i in items if isinstance(i, _Heartbeat)}
        readings = {
            (i.station_id, i.transaction_id): i.reading for i in items if isinstance(i, _Reading)
        }
        if messages:
            await db.execute(
                """INSERT INTO ocpp_messages (station_id, direction, message_type, unique_id,
                          action, payload, created_at)
                   SELECT s, d, t, u, a, p::jsonb, c
                   FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[], $5::text[],
                               $6::text[], $7::timestamptz[]) AS m(s, d, t, u, a, p, c)""",
                [m.station_id for m in messages],
                [m.direction for m in messages],
                [m.message_type for m in messages],
                [m.unique_id for m in messages],
                [m.action for m in messages],
                [m.payload for m in messages],
                [m.at for m in messages],
            )
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
