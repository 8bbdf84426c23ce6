"""The door to charging sessions for the REST facade: start one (a new SessionActor, asked to
``Begin``), stop one, and bring back every open session's actor when the server starts."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from actors.runtime import ActorUnavailable, AskTimeout, ChildRetired, Supervisor
from actors.session.deps import SessionDeps
from actors.session.lifecycle import session_spec
from actors.session.machine import Timings
from actors.session.messages import (
    SESSION,
    Begin,
    BeginRfid,
    RfidStart,
    StartRequest,
    StopSession,
)
from actors.session.record import open_report
from actors.session.view import session_view, stop_outcome
from cpms.kernel.errors import Forbidden, NotFound
from storage import Database
from storage import sessions as sessions_store
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("actors.session.service")

#: How long ``stop`` waits for the charger's StopTransaction before answering with where the
#: session stands (it settles anyway when the charger reports).
STOP_WAIT = 15.0


@dataclass(frozen=True)
class Sessions:
    supervisor: Supervisor
    deps: SessionDeps

    async def start(self, request: StartRequest) -> dict[str, Any]:
        session_id = uuid.uuid4()
        ref = self.supervisor.start_child_soon(session_spec(session_id, self.deps, new=True))
        return await ref.ask(Begin(request), timeout=60)

    async def start_rfid(self, start: RfidStart) -> int:
        """Bill a card's transaction to its client; answers the transaction id."""
        session_id = uuid.uuid4()
        ref = self.supervisor.start_child_soon(session_spec(session_id, self.deps, new=True))
        return await ref.ask(BeginRfid(start), timeout=30)

    async def wake(self, session_id: uuid.UUID) -> None:
        if self.deps.registry.lookup(SESSION, str(session_id)) is None:
            with contextlib.suppress(ChildRetired, ValueError):  # retired, or started meanwhile
                self.supervisor.start_child_soon(session_spec(session_id, self.deps))

    async def billed(self, station_id: str) -> bool:
        return await self.deps.tariffs.get(station_id) is not None

    async def status(self, session_id: uuid.UUID, client_id: uuid.UUID) -> dict[str, Any]:
        row = await self._owned(session_id, client_id)
        return session_view(row)

    async def stop(self, session_id: uuid.UUID, client_id: uuid.UUID) -> dict[str, Any]:
        """An open session's actor checks the owner and stops it; an ended one is answered
        from its row."""
        ref = self.deps.registry.lookup(SESSION, str(session_id))
        if ref is not None:
            with contextlib.suppress(AskTimeout, ActorUnavailable):  # stopping, or just ended
                return await ref.ask(StopSession(client_id), timeout=STOP_WAIT)
        row = await self._owned(session_id, client_id)
        return stop_outcome(session_view(row))

    async def _owned(self, session_id: uuid.UUID, client_id: uuid.UUID) -> dict[str, Any]:
        row = await sessions_store.get(self.deps.db, session_id)
        if row is None:
            raise NotFound(f"session {session_id} not found", code="session_not_found")
        if row["client_id"] != client_id:
            raise Forbidden("this session belongs to another client")
        return row

    async def sweep(self) -> int:
        """Start an actor for every open session that has none (one retired after repeated
        crashes, once its cooldown is over); returns how many were started."""
        started = 0
        for row in await sessions_store.open_sessions(self.deps.db):
            if self.deps.registry.lookup(SESSION, str(row["id"])) is not None:
                continue
            with contextlib.suppress(ChildRetired, ValueError):  # cooling down, or just started
                self.supervisor.start_child_soon(session_spec(row["id"], self.deps))
                started += 1
        if started:
            log.warning("sessions without an actor resumed", sessions=started)
        return started

    async def run_sweeper(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sweep every ``sweep_every`` seconds, so no open session is left without an actor."""
        task_status.started()
        while True:
            await trio.sleep(self.deps.timings.sweep_every)
            with contextlib.suppress(StorageUnavailable):  # the next sweep tries again
                await self.sweep()

    async def recover(self) -> int:
        """Start an actor for every open session (after a restart); returns how many. They
        resume on their own: one whose row can't be resumed is logged by the supervisor and
        left for an operator, and never keeps the server from starting."""
        rows = await sessions_store.open_sessions(self.deps.db)
        for row in rows:
            self.supervisor.start_child_soon(session_spec(row["id"], self.deps))
        if rows:
            log.info("sessions recovered", sessions=len(rows))
        return len(rows)


async def open_sessions_report(
    db: Database, timings: Timings, limit: int = 1000
) -> list[dict[str, Any]]:
    """Every session not ended yet, oldest first, with its age and next deadline (``overdue``
    when that has passed: the session is stuck, or its actor is not running)."""
    now = datetime.now(UTC)
    return [open_report(row, timings, now) for row in await sessions_store.list_open(db, limit)]
