"""The per-station OCPP message log: every frame in and out, written in batches off the hot path.

``record`` never blocks a charge point: frames go into a bounded queue that a writer task drains
into ``ocpp_messages`` every ``flush_every`` seconds (or sooner when a batch is full); when the
queue is full the frame is counted in ``dropped`` instead. Rows older than ``retention`` are
deleted by the same task, so the log stays bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
import trio

from cpms.ocpp.frames import Call, CallError, CallResult, Frame
from storage import Database

log = structlog.stdlib.get_logger("cpms.ocpp.log")
_Row = tuple[str, str, int, str, str | None, object, datetime]


class MessageLog:
    def __init__(self, capacity: int = 50_000) -> None:
        self._send, self._receive = trio.open_memory_channel[_Row](capacity)
        self.dropped = 0
        self.written = 0

    def record(
        self, station_id: str, direction: str, frame: Frame, action: str | None = None
    ) -> None:
        if isinstance(frame, Call):
            row: _Row = (
                station_id,
                direction,
                2,
                frame.unique_id,
                frame.action,
                frame.payload,
                datetime.now(UTC),
            )
        elif isinstance(frame, CallResult):
            row = (
                station_id,
                direction,
                3,
                frame.unique_id,
                action,
                frame.payload,
                datetime.now(UTC),
            )
        else:
            assert isinstance(frame, CallError)
            row = (
                station_id,
                direction,
                4,
                frame.unique_id,
                action,
                {
                    "errorCode": frame.code,
                    "errorDescription": frame.description,
                    "errorDetails": frame.details,
                },
                datetime.now(UTC),
            )
        try:
            self._send.send_nowait(row)
        except trio.WouldBlock:
            self.dropped += 1

    async def run(
        self,
        db: Database,
        *,
        flush_every: float = 0.2,
        batch: int = 2000,
        retention: timedelta = timedelta(days=7),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write queued frames until cancelled (what is queued then is written first)."""
        task_status.started()
        next_prune = trio.current_time()
        try:
            while True:
                rows = [await self._receive.receive()]
                await trio.sleep(flush_every)
                while len(rows) < batch:
                    try:
                        rows.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._write(db, rows)
                if trio.current_time() >= next_prune:
                    await db.execute(
                        "DELETE FROM ocpp_messages WHERE created_at < $1",
                        datetime.now(UTC) - retention,
                    )
                    next_prune = trio.current_time() + 3600
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                rest = []
                while True:
                    try:
                        rest.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                if rest:
                    await self._write(db, rest)

    async def _write(self, db: Database, rows: list[_Row]) -> None:
        await db.execute(
            """INSERT INTO ocpp_messages (station_id, direction, message_type, unique_id, action,
                      payload, created_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[],
                      $5::text[], $6::jsonb[], $7::timestamptz[])""",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
            [r[6] for r in rows],
        )
        self.written += len(rows)
