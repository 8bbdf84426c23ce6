"""SessionActor: one supervised actor per charging session (``session:<uuid>``).

It owns the session from the app's request to the last cent. ``Begin`` checks the client, the
station and the connector, holds the reservation through the StorageActor (committed before the
charger hears anything), then asks the station's ChargePointActor for RemoteStartTransaction.
The ChargePointActor tells it what the charger reports (``ChargerStarted``, ``MeterReading``,
``ChargerStopped``); meter readings move energy, cost and progress, and reaching the limit asks
the charger to stop. Settlement captures the actual cost (the rest back; an overrun from the
free balance, a debt where that runs short) or releases everything.

Its state machine is :mod:`actors.session.machine`, pure: this actor receives, feeds each
message and each wake-up to ``decide`` as an event, and performs the effects it returns (the
charger's commands, the ledger, the row, the bus). What it must remember is persisted in the
session's row after every step, with its deadlines, so after a restart of the actor or of the
whole server it is rebuilt from the row and goes on (money operations carry idempotency keys
derived from the session id, so repeating one after a crash applies it once). Every open phase
has a deadline (see the machine): no session waits for a charger forever.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
import trio

from actors.charge_point.messages import STATION, Command, shown_snapshot
from actors.runtime._mailbox import Envelope, Mailbox, Reply
from actors.runtime.errors import ActorError
from actors.session import machine as sm
from actors.session.deps import SessionDeps
from actors.session.machine import OPEN, Effect, Phase, SettledBy
from actors.session.messages import (
    Begin,
    BeginRfid,
    ChargerStarted,
    ChargerStopped,
    MeterReading,
    SessionMsg,
    StartFailed,
    StopAnswer,
    StopSession,
    Superseded,
)
from actors.session.record import SessionRecord, record_view
from actors.session.view import stop_outcome
from cpms.kernel.charging import Verdict
from cpms.kernel.errors import Conflict, CpmsError, Forbidden, NotFound
from cpms.kernel.events import SessionChanged, SessionMilestone
from cpms.kernel.money import MAX_AMOUNT
from cpms.kernel.status import IDLE, IN_TRANSACTION
from storage import sessions as sessions_store

log = structlog.stdlib.get_logger("actors.session.actor")

#: what an ended-before-start session's ``error`` says, by the machine's reason
_WHY = {
    "start_timeout": "the charger did not start within the time allowed",
    "superseded": "the charger started another transaction on the connector",
}

# -- the actor ------------------------------------------------------------------------------------


class SessionActor:
    def __init__(
        self, deps: SessionDeps, tasks: trio.Nursery, mailbox: Mailbox[SessionMsg]
    ) -> None:
        self.deps = deps
        self.tasks = tasks
        self.mailbox = mailbox
        self.s: SessionRecord | None = None
        self.stop_waiters: list[Envelope[SessionMsg]] = []

    # -- events ------------------------------------------------------------------------------

    async def apply(self, event: sm.SessionEvent) -> None:
        """Feed ``event`` to the machine and perform what it decides. An event that would end a
        session the charger has not started yet first closes its row, so a StartTransaction
        racing in can no longer attach to it; if one already has, the session goes on as
        started and gets the event as such."""
        s = self.s
        assert s is not None
        step = sm.decide(s.m, event, self.deps.clock(), self.deps.timings)
        unstarted = s.phase in (Phase.RESERVED, Phase.STARTING)
        ending = unstarted and step.state.phase not in OPEN and s.hold_id is not None
        if ending and not await sessions_store.close_unstarted(self.deps.db, s.id):
            await self._started_from_row()
            await self.apply(event)
            return
        await self._take(step, event)

    async def _started_from_row(self) -> bool:
        """The charger's StartTransaction is attached to the row but its ``ChargerStarted`` has
        not reached this actor (it raced an ending, or was lost with an earlier life): start the
        session as the row says. False when the row holds no transaction."""
        s = self.s
        assert s is not None
        row = await sessions_store.get(self.deps.db, s.id)
        if row is None or row["transaction_id"] is None:
            return False
        s.transaction_id, s.started_at = row["transaction_id"], row["started_at"]
        s.start_meter(row["meter_start_wh"], row["started_at"])
        await self.apply(sm.ChargerStarted())
        return True

    async def _take(self, step: sm.Step, event: sm.SessionEvent) -> None:
        s = self.s
        assert s is not None
        moved = step.state.phase is not s.phase
        if moved:
            log.info(
                "session step",
                session=str(s.id),
                on=type(event).__name__,
                phase=step.state.phase.value,
                why=step.reason,
            )
        if step.reason in _WHY:
            s.error = s.error or _WHY[step.reason]
        elif step.reason is not None:
            s.stop_reason = s.stop_reason or step.reason
        s.m = step.state
        for effect in step.effects:
            await self._perform(effect)
        if moved:  # after the phase's work: a settlement's cost and refund are known
            self.deps.bus.publish(SessionMilestone(str(s.client_id), self.view()))
        if s.phase not in OPEN:
            for waiter in self.stop_waiters:
                waiter.respond(self.outcome())
            self.stop_waiters.clear()

    async def _perform(self, effect: Effect) -> None:
        s = self.s
        assert s is not None
        if effect is Effect.REMOTE_START:
            payload = {"connectorId": s.connector_id, "idTag": s.id_tag}
            self._command("RemoteStartTransaction", payload)
        elif effect is Effect.REMOTE_STOP:
            if s.transaction_id is not None:
                self._command("RemoteStopTransaction", {"transactionId": s.transaction_id})
        elif effect is Effect.LOOK:
            payload = {"requestedMessage": "StatusNotification", "connectorId": s.connector_id}
            self._command("TriggerMessage", payload)
        elif effect is Effect.RELEASE:
            if s.hold_id is not None:
                result = await self.deps.ledger.release(s.hold_id, key=f"session:{s.id}:release")
                s.refunded, s.final_cost = result.refunded, Decimal("0.00")
        elif effect is Effect.CAPTURE:
            await self._capture()
        elif effect is Effect.CORRECT:
            await self._correct()
        elif effect is Effect.PERSIST:
            await self.persist()
        else:
            self.publish()

    def _billed_cost(self) -> Decimal:
        """The cost on the meter's last counted reading (the stop's, once judged)."""
        s = self.s
        assert s is not None
        if s.meter is not None and s.meter_stop is not None and s.stopped_at is not None:
            self._judge(s.meter.reading(s.meter_stop, s.stopped_at), "meterStop")
        cost = s.current_cost()
        if not Decimal("0") <= cost <= MAX_AMOUNT:
            # No reading can get here (they are bounded by the connector's power); a tariff can
            # (an operator's absurd price): the driver pays what was reserved, an operator looks.
            s.flag = f"cost {cost} could not be billed; the reservation {s.reserved} was"
            log.error("session cost capped", session=str(s.id), cost=str(cost))
            cost = s.reserved
        return cost

    async def _capture(self) -> None:
        s = self.s
        assert s is not None and s.hold_id is not None
        if s.m.settled_by is SettledBy.LAST_READING and s.meter is not None:
            s.stopped_at = s.stopped_at or s.meter.last_at
        cost = self._billed_cost()
        result = await self.deps.ledger.capture(s.hold_id, cost, key=f"session:{s.id}:capture")
        s.final_cost, s.refunded, s.debt = cost, result.refunded, result.debt
        if s.stopped_at is None:
            s.stopped_at = datetime.now(UTC)

    async def _correct(self) -> None:
        """Settle again on the late StopTransaction: the difference to what the last reading
        billed, charged or refunded once."""
        s = self.s
        assert s is not None and s.final_cost is not None
        cost = self._billed_cost()
        difference = cost - s.final_cost
        result = await self.deps.ledger.recharge(
            s.client_id, s.id, difference, key=f"session:{s.id}:recharge"
        )
        log.info("session settled again on its stop", session=str(s.id), by=str(difference))
        s.final_cost = cost
        for entry in result.entries:
            if entry.type == "charge_refund":
                s.refunded = (s.refunded or Decimal("0")) + entry.amount
            elif entry.type == "charge_debt":
                s.debt = (s.debt or Decimal("0")) - entry.amount

    def _command(self, action: str, payload: dict[str, Any]) -> None:
        """Send ``action`` to the station's actor now; its answer is seen to in a task (a task
        that began by sending would send a pass of the scheduler later: a start's frame goes
        out this way)."""
        s = self.s
        assert s is not None
        reply: Reply[dict[str, Any]] | None = None
        why = "the station has no actor"
        ref = self.deps.registry.lookup(STATION, s.station_id)
        if ref is not None:
            try:
                reply = ref.request(
                    Command(action, payload, timeout=self.deps.timings.command_timeout)
                )
            except ActorError as error:
                why = f"{action}: {error}"
        self.tasks.start_soon(self._answered, action, reply, why)

    async def _answered(
        self, action: str, reply: Reply[dict[str, Any]] | None, why: str | None
    ) -> None:
        """The command's outcome goes back to the session as a message: a start not taken
        ends it, a stop not taken makes it look at the charger."""
        s = self.s
        assert s is not None
        if reply is not None:
            limit = self.deps.timings.command_timeout + 5
            why = f"{action}: no answer within {limit:g} s"
            with trio.move_on_after(limit):
                try:
                    answer = await reply.receive()
                except (CpmsError, ActorError) as error:
                    why = f"{action}: {error}"
                else:
                    status = answer.get("status")
                    why = None if status == "Accepted" else f"{action} {status}"
        if why is not None:
            log.warning("charger command failed", session=str(s.id), why=why)
        if action == "RemoteStartTransaction" and why is not None:
            await self.mailbox.deliver(Envelope(StartFailed(why)))
        elif action == "RemoteStopTransaction":
            await self.mailbox.deliver(Envelope(StopAnswer(why is None, why)))

    def _judge(self, verdict: Verdict, what: str) -> None:
        """A reading the meter did not count flags the session."""
        s = self.s
        assert s is not None and s.meter is not None
        if verdict is not Verdict.COUNTED:
            s.flag = s.meter.anomaly
            log.warning(
                "meter reading not billed",
                session=str(s.id),
                reading=what,
                verdict=verdict.value,
                why=s.meter.anomaly,
            )

    async def persist(self) -> None:
        s = self.s
        assert s is not None
        meter = s.meter
        stop: dict[str, Any] = {}
        if s.meter_stop is not None:  # recorded by the station as it arrived; never unset
            stop = {"meter_stop_wh": s.meter_stop}
        if s.stopped_at is not None:
            stop["stopped_at"] = s.stopped_at
        await sessions_store.save(
            self.deps.db,
            s.id,
            **stop,
            status=s.phase.value,
            energy_kwh=Decimal("0") if meter is None else meter.energy_kwh,
            meter_last_wh=None if meter is None else meter.last_wh,
            current_cost=min(s.current_cost(), MAX_AMOUNT),
            power_kw=s.power_kw,
            soc_percent=s.soc,
            final_cost=s.final_cost,
            refunded_amount=s.refunded,
            debt_amount=s.debt,
            stop_reason=s.stop_reason,
            error=s.error,
            meter_anomalies=0 if meter is None else meter.anomalies,
            meter_flag=s.flag,
            offline_since=s.m.offline_since,
            check_at=s.m.check_at,
            stop_asks=s.m.stop_asks,
            settled_by=None if s.m.settled_by is None else s.m.settled_by.value,
            settled_at=datetime.now(UTC) if s.phase not in OPEN else None,
        )

    async def handle(self, envelope: Envelope[SessionMsg]) -> None:
        s = self.s
        message = envelope.message
        if s is None:  # only Begin comes before the session exists
            envelope.fail(NotFound("session not found", code="session_not_found"))
            return
        match message:
            case ChargerStarted(transaction_id, meter_start, at):
                if s.phase is Phase.STARTING:
                    s.transaction_id, s.started_at = transaction_id, at
                    s.start_meter(meter_start, at)
                await self.apply(sm.ChargerStarted())
            case MeterReading(wh, power, soc, at):
                if s.meter is None or s.phase not in (Phase.CHARGING, Phase.STOPPING):
                    return  # a reading before the start is known, or after the end
                if wh is not None:
                    self._judge(s.meter.reading(wh, at), "MeterValues")
                s.power_kw = power if power is not None else s.power_kw
                s.soc = soc if soc is not None else s.soc
                await self.apply(sm.Reading())
                if s.meter.limit_reached(s.limit, s.reserved):
                    await self.apply(sm.LimitReached())
                if s.phase is Phase.CHARGING:
                    await self.persist()
                    self.publish()  # energy, cost, power and progress moved
            case ChargerStopped(meter_stop, at, reason):
                if s.phase in (Phase.RESERVED, Phase.STARTING) and not (
                    await self._started_from_row()
                ):
                    log.warning("a stop for a session never started", session=str(s.id))
                    return
                if s.phase in (Phase.CHARGING, Phase.STOPPING) or s.m.settled_by is (
                    SettledBy.LAST_READING
                ):
                    s.meter_stop, s.stopped_at = meter_stop, at
                    s.stop_reason = s.stop_reason or reason
                await self.apply(sm.ChargerStopped())
            case Superseded():
                s.error = "the charger started another transaction on the connector"
                await self.apply(sm.Superseded())
                envelope.respond(None)
            case StopSession(client_id):
                if client_id != s.client_id:
                    envelope.fail(Forbidden("only the session's owner can stop it"))
                    return
                if s.phase in OPEN:
                    await self.apply(sm.StopRequested())
                if s.phase in OPEN:
                    self.stop_waiters.append(envelope)
                else:
                    envelope.respond(self.outcome())
            case StartFailed(why):
                if s.phase is Phase.STARTING:
                    s.error = why
                await self.apply(sm.StartRefused())
            case StopAnswer(accepted):
                await self.apply(sm.StopAnswered(accepted))
            case Begin() | BeginRfid():
                envelope.fail(Conflict("the session has begun already", code="session_exists"))

    def look(self) -> sm.Tick:
        """The station as its actor shows it: online, and whether the session's connector
        shows a transaction (None when its status says neither)."""
        s = self.s
        assert s is not None
        snapshot = shown_snapshot(self.deps.registry, s.station_id)
        if snapshot is None or not (snapshot.online and snapshot.connected):
            return sm.Tick(online=False, in_transaction=None)
        connector = snapshot.connectors.get(s.connector_id)
        status = None if connector is None else connector.status
        in_transaction = True if status in IN_TRANSACTION else False if status in IDLE else None
        return sm.Tick(online=True, in_transaction=in_transaction)

    async def on_timer(self) -> None:
        await self.apply(self.look())

    def next_timer(self) -> float:
        """When to wake without a message (trio clock)."""
        s = self.s
        assert s is not None
        now = self.deps.clock()
        wake = sm.next_wake(s.m, now, self.deps.timings)
        if wake is None:
            return trio.current_time()
        return trio.current_time() + max(0.0, (wake - now).total_seconds())

    def outcome(self) -> dict[str, Any]:
        return stop_outcome(self.view())

    def view(self) -> dict[str, Any]:
        assert self.s is not None
        return record_view(self.s)

    def publish(self) -> None:
        """The session's view on the event bus (its owner's app sees it live)."""
        assert self.s is not None
        self.deps.bus.publish(SessionChanged(str(self.s.client_id), self.view()))
