"""A SessionActor's life under its supervisor: begun new, or rebuilt from its row after a
restart and resumed where the row says it stands; it ends once its session has."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from functools import partial
from typing import Any

import structlog
import trio

from actors.runtime import Address, ChildSpec, Envelope, Mailbox, Restart
from actors.session import machine as sm
from actors.session.actor import SessionActor
from actors.session.deps import SessionDeps
from actors.session.machine import OPEN, Phase, SettledBy
from actors.session.messages import SESSION, Begin, BeginRfid, SessionMsg
from actors.session.record import SessionRecord
from actors.session.starting import begin, begin_rfid, station_snapshot
from cpms.kernel.charging import Tariff
from cpms.kernel.errors import CpmsError
from storage import sessions as sessions_store

log = structlog.stdlib.get_logger("actors.session.actor")


async def run_session(
    mailbox: Mailbox[SessionMsg],
    *,
    session_id: uuid.UUID,
    deps: SessionDeps,
    new: list[bool] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as tasks:
        actor = SessionActor(deps, tasks, mailbox)
        # a new session has no row to look for, on its first start; a restart reads it
        row = None if new and new.pop() else await sessions_store.get(deps.db, session_id)
        if row is not None:  # a restart: rebuild from the row
            if Phase(row["status"]) not in OPEN and not _stop_to_settle_again(row):
                task_status.started()
                tasks.cancel_scope.cancel()
                return
            tariff = await deps.tariffs.get(row["station_id"])
            if tariff is None:
                tariff = Tariff(
                    row["tariff_id"], row["rate_per_kwh"] or Decimal("0"), row["session_fee"]
                )
            bounds = deps.plausibility(
                await station_snapshot(deps, row["station_id"]), row["connector_id"]
            )
            actor.s = SessionRecord.from_row(row, tariff, bounds)
            await _resume(actor)
        task_status.started()
        while actor.s is None or actor.s.phase in OPEN:
            envelope: Envelope[SessionMsg] | None = None
            deadline = actor.next_timer() if actor.s is not None else float("inf")
            with trio.move_on_at(deadline):
                try:
                    envelope = await mailbox.receive()
                except trio.EndOfChannel:
                    break
            with trio.CancelScope(shield=True):  # work is never cut by a timer
                if envelope is None:
                    await actor.on_timer()
                elif isinstance(envelope.message, Begin | BeginRfid) and actor.s is None:
                    message = envelope.message
                    try:
                        if isinstance(message, Begin):
                            envelope.respond(await begin(actor, session_id, message.request))
                        else:
                            envelope.respond(await begin_rfid(actor, session_id, message.start))
                    except CpmsError as error:
                        envelope.fail(error)
                        break
                else:
                    await actor.handle(envelope)
        tasks.cancel_scope.cancel()


def _stop_to_settle_again(row: dict[str, Any]) -> bool:
    """A session settled on its last reading whose StopTransaction has come since."""
    return (
        row["status"] == Phase.SETTLED
        and row["settled_by"] == SettledBy.LAST_READING
        and row["meter_stop_wh"] is not None
    )


async def _resume(actor: SessionActor) -> None:
    """After a restart: drive the session from where its row says it stands. The machine's
    deadlines are in the row, so a look at the charger now does the rest (a reserved or
    starting session asks the charger once it is back; a stopping one looks again when due)."""
    s = actor.s
    assert s is not None
    if s.phase is Phase.RESERVED:  # the charger was never asked
        assert s.hold_id is not None
        hold = await sessions_store.hold_status(actor.deps.db, s.hold_id)
        if hold is None:  # a row from before rows and holds were written together
            log.warning("session without a hold dropped on resume", session=str(s.id))
            await sessions_store.forget(actor.deps.db, s.id)
            s.m = dataclasses.replace(s.m, phase=Phase.CANCELLED)
            return
        if hold != "held":  # given back before "cancelled" was written: the release replays
            await actor.apply(sm.StopRequested())
            return
    if s.meter_stop is not None and (
        s.phase in (Phase.CHARGING, Phase.STOPPING) or s.m.settled_by is SettledBy.LAST_READING
    ):
        await actor.apply(sm.ChargerStopped())  # the charger's stop was recorded; settle
        return
    await actor.on_timer()


def session_spec(
    session_id: uuid.UUID, deps: SessionDeps, *, new: bool = False
) -> ChildSpec[SessionMsg]:
    """``new``: a session being begun now (its first start skips looking for a row)."""
    return ChildSpec(
        Address(SESSION, str(session_id)),
        partial(run_session, session_id=session_id, deps=deps, new=[True] if new else None),
        Restart.TRANSIENT,
        inbox=64,
    )
