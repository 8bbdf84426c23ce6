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

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import structlog
import trio

from actors.charge_point.config import StationTariffs
from actors.charge_point.messages import STATION, Command, GetSnapshot, Snapshot, shown_snapshot
from actors.ledger import Ledger
from actors.runtime._address import Address
from actors.runtime._mailbox import Envelope, Mailbox, Reply
from actors.runtime._registry import Registry
from actors.runtime._supervisor import ChildSpec, Restart
from actors.runtime.errors import ActorError
from actors.session import machine as sm
from actors.session.machine import OPEN, Effect, Phase, SettledBy, State, Timings
from actors.session.messages import (
    SESSION,
    Begin,
    BeginRfid,
    ChargerStarted,
    ChargerStopped,
    MeterReading,
    RfidStart,
    SessionMsg,
    StartFailed,
    StartRequest,
    StopAnswer,
    StopSession,
    Superseded,
    hold_for,
)
from actors.session.record import SessionRecord, open_report, state_from_row
from actors.session.view import session_view, stop_outcome
from cpms.kernel.charging import Limit, Plausibility, Tariff, Verdict, reservation
from cpms.kernel.errors import Conflict, CpmsError, Forbidden, NotFound, Unavailable
from cpms.kernel.events import EventBus, SessionChanged
from cpms.kernel.money import MAX_AMOUNT
from storage import Database
from storage import sessions as sessions_store
from storage.stations import get_station

log = structlog.stdlib.get_logger("actors.session.actor")

BUSY_STATUSES = {"Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved"}
#: a connector in one of these has a transaction running; in one of ``IDLE``, it has none
IN_TRANSACTION = {"Charging", "SuspendedEV", "SuspendedEVSE"}
IDLE = {"Available", "Preparing", "Finishing", "Unavailable"}

#: what an ended-before-start session's ``error`` says, by the machine's reason
_WHY = {
    "start_timeout": "the charger did not start within the time allowed",
    "superseded": "the charger started another transaction on the connector",
}

__all__ = [
    "MeterBounds",
    "SessionDeps",
    "Timings",
    "open_report",
    "run_session",
    "session_spec",
    "state_from_row",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MeterBounds:
    """How a session judges its meter readings (:class:`cpms.kernel.charging.Plausibility`): at most
    the connector's rated power × ``margin``, plus ``slack_wh``; a connector with no rated
    power configured is taken to deliver at most ``unknown_power_kw``."""

    margin: Decimal = Decimal("1.25")
    slack_wh: int = 1000
    unknown_power_kw: Decimal = Decimal("350")


@dataclass(frozen=True)
class SessionDeps:
    db: Database
    ledger: Ledger
    registry: Registry
    bus: EventBus
    tariffs: StationTariffs
    timings: Timings = field(default_factory=Timings)
    meter_bounds: MeterBounds = MeterBounds()
    #: the session machine's clock (a test's can run ahead)
    clock: Callable[[], datetime] = utc_now

    def plausibility(self, snapshot: Snapshot | None, connector_id: int) -> Plausibility:
        """What the connector's meter can plausibly count, by its rated power as its station
        shows it (its record when no actor shows it: read at the session's next restart)."""
        bounds, t = self.meter_bounds, self.timings
        connector = None if snapshot is None else snapshot.connectors.get(connector_id)
        power = (connector and connector.power_kw) or bounds.unknown_power_kw
        # the longest a transaction is counted: to the cap, the grace for an offline charger,
        # and an hour for the charger to answer the stop
        hours = Decimal(int(t.max_duration + t.offline_grace)) / 3600 + 1
        return Plausibility(Decimal(power), bounds.margin, bounds.slack_wh, hours)


# -- the actor ------------------------------------------------------------------------------------


class _SessionActor:
    def __init__(
        self, deps: SessionDeps, tasks: trio.Nursery, mailbox: Mailbox[SessionMsg]
    ) -> None:
        self.deps = deps
        self.tasks = tasks
        self.mailbox = mailbox
        self.s: SessionRecord | None = None
        self.stop_waiters: list[Envelope[SessionMsg]] = []

    # -- begin ------------------------------------------------------------------------------

    async def begin(self, session_id: uuid.UUID, request: StartRequest) -> dict[str, Any]:
        # A start's latency is its trips to the database and through the scheduler, so it makes
        # one of the first, the reservation, and few of the second. The station is checked
        # against the state its actor shows and the tariff kept in memory (both follow
        # operators' changes, see actors.charge_point.config); the client (found, active, funded) is
        # checked by the ledger as it reserves, on the row it writes.
        snapshot = await self._snapshot(request.station_id)
        await self._check_station(request, snapshot)
        tariff = await self.deps.tariffs.get(request.station_id)
        if tariff is None:
            raise Unavailable(
                f"station {request.station_id} has no tariff", code="station_unavailable"
            )
        now = self.deps.clock()
        hold = reservation(request.limit, tariff, now)
        t = self.deps.timings
        s = SessionRecord(
            session_id,
            request.client_id,
            request.station_id,
            request.connector_id,
            request.limit,
            tariff,
            tariff.rate_at(now),
            self.deps.plausibility(snapshot, request.connector_id),
            State(
                Phase.RESERVED,
                start_deadline=now + timedelta(seconds=t.start_timeout),
                max_deadline=now + timedelta(seconds=t.max_duration),
            ),
        )
        s.reserved, s.hold_id = hold.amount, hold_for(s.id)
        self.s = s
        await self.reserve(hold.minimum, claim=self._claim(s, "app"))
        await self.apply(sm.Begin())
        answer: dict[str, Any] = {
            "session_id": str(s.id),
            "reserved_amount": s.reserved,
            "limit_type": s.limit.kind,
            "limit_value": s.limit.value,
            "rate_per_kwh": s.rate,
            "session_fee": tariff.session_fee,
        }
        if s.limit.kind == "amount" and s.rate > 0:
            assert s.limit.value is not None
            energy = (s.limit.value - tariff.session_fee) / s.rate
            answer["estimated_energy"] = max(Decimal("0"), energy).quantize(Decimal("0.1"))
        return answer

    async def begin_rfid(self, session_id: uuid.UUID, start: RfidStart) -> int:
        """A card's transaction is running: hold the no-limit reservation for its client and
        give the charger a transaction id. Refusals (blocked, short of money) are raised."""
        tariff = await self.deps.tariffs.get(start.station_id)
        if tariff is None:
            raise Unavailable(
                f"station {start.station_id} has no tariff", code="station_unavailable"
            )
        limit = Limit("none")
        hold = reservation(limit, tariff, start.at)
        now = self.deps.clock()
        s = SessionRecord(
            session_id,
            start.client_id,
            start.station_id,
            start.connector_id,
            limit,
            tariff,
            tariff.rate_at(start.at),
            self.deps.plausibility(
                shown_snapshot(self.deps.registry, start.station_id), start.connector_id
            ),
            State(
                Phase.RESERVED,
                start_deadline=now,
                max_deadline=now + timedelta(seconds=self.deps.timings.max_duration),
            ),
            reserved=hold.amount,
            hold_id=hold_for(session_id),
            card=start.id_tag,
        )
        self.s = s
        await self.reserve(hold.minimum, claim=self._claim(s, "rfid"))
        attached = await sessions_store.attach_transaction(
            self.deps.db, s.id, start.meter_start, start.at
        )
        assert attached is not None  # the row was made just now and is open
        s.transaction_id = attached
        s.started_at = start.at
        s.start_meter(start.meter_start, start.at)
        await self.apply(sm.ChargerStarted())
        return s.transaction_id

    @staticmethod
    def _claim(s: SessionRecord, origin: str) -> sessions_store.SessionClaim:
        """The session's row, written with its reservation: it takes the connector
        (``connector_occupied`` when an open session has it)."""
        assert s.hold_id is not None
        return sessions_store.SessionClaim(
            session_id=s.id,
            client_id=s.client_id,
            station_id=s.station_id,
            connector_id=s.connector_id,
            id_tag=s.id_tag,
            origin=origin,
            limit=s.limit,
            tariff_id=s.tariff.id,
            rate=s.rate,
            session_fee=s.tariff.session_fee,
            start_deadline=s.m.start_deadline,
            max_deadline=s.m.max_deadline,
            reserved=s.reserved,
            hold_id=s.hold_id,
        )

    async def reserve(self, minimum: Decimal | None, claim: sessions_store.SessionClaim) -> None:
        """Hold the reservation (``s.reserved``; with a ``minimum``, as much of it as the balance
        covers), with the new session's row (``claim``) in the same transaction: refused,
        neither exists. ``s.reserved`` becomes what was held."""
        s = self.s
        assert s is not None and s.hold_id is not None
        result = await self.deps.ledger.reserve(
            s.client_id,
            s.reserved,
            key=f"session:{s.id}:reserve",
            hold_id=s.hold_id,
            session_id=s.id,
            claim=claim,
            minimum=minimum,
        )
        s.reserved = result.held

    async def _snapshot(self, station_id: str) -> Snapshot | None:
        """The station's state as its actor shows it (no message), else by asking the actor
        (it is restarting); None when none runs or it doesn't answer."""
        shown = shown_snapshot(self.deps.registry, station_id)
        if shown is not None:
            return shown
        ref = self.deps.registry.lookup(STATION, station_id)
        if ref is None:
            return None
        try:
            snapshot: Snapshot = await ref.ask(GetSnapshot(), timeout=5)
        except ActorError:
            return None
        return snapshot

    async def _check_station(self, request: StartRequest, snapshot: Snapshot | None) -> None:
        if snapshot is None:  # every known station has an actor once it has connected
            if await get_station(self.deps.db, request.station_id) is None:
                raise NotFound(f"station {request.station_id} not found", code="station_not_found")
            raise Unavailable(f"station {request.station_id} is offline", code="station_offline")
        if snapshot.admin_status == "maintenance":
            raise Unavailable(
                f"station {request.station_id} is under maintenance", code="station_maintenance"
            )
        if snapshot.admin_status != "active" or snapshot.registration != "Accepted":
            raise Unavailable(
                f"station {request.station_id} is not available", code="station_unavailable"
            )
        if request.connector_id not in snapshot.configured:
            raise NotFound(
                f"connector {request.connector_id} of {request.station_id} not found",
                code="connector_not_found",
            )
        if not snapshot.online or not snapshot.connected:
            raise Unavailable(f"station {request.station_id} is offline", code="station_offline")
        connector = snapshot.connectors.get(request.connector_id)
        status = "Unavailable" if connector is None else connector.status
        if status == "Faulted":
            raise Conflict(f"connector {request.connector_id} is faulted", code="connector_faulted")
        if status == "Unavailable":
            raise Unavailable(
                f"connector {request.connector_id} is unavailable", code="station_unavailable"
            )
        if status in BUSY_STATUSES:
            raise Conflict(
                f"connector {request.connector_id} is occupied", code="connector_occupied"
            )

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
        if step.state.phase is not s.phase:
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
            self.deps.bus.publish(SessionChanged(str(s.client_id), self.view()))

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
        s = self.s
        assert s is not None
        return session_view(
            {
                "id": s.id,
                "client_id": s.client_id,
                "station_id": s.station_id,
                "connector_id": s.connector_id,
                "status": s.phase.value,
                "limit_type": s.limit.kind,
                "limit_value": s.limit.value,
                "rate_per_kwh": s.rate,
                "session_fee": s.tariff.session_fee,
                "reserved_amount": s.reserved,
                "energy_kwh": Decimal("0") if s.meter is None else s.meter.energy_kwh,
                "current_cost": s.current_cost(),
                "final_cost": s.final_cost,
                "refunded_amount": s.refunded,
                "debt_amount": s.debt,
                "power_kw": s.power_kw,
                "soc_percent": s.soc,
                "started_at": s.started_at,
                "stopped_at": s.stopped_at,
                "stop_reason": s.stop_reason,
                "error": s.error,
                "transaction_id": s.transaction_id,
            }
        )


async def run_session(
    mailbox: Mailbox[SessionMsg],
    *,
    session_id: uuid.UUID,
    deps: SessionDeps,
    new: list[bool] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as tasks:
        actor = _SessionActor(deps, tasks, mailbox)
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
                await actor._snapshot(row["station_id"]), row["connector_id"]
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
                            envelope.respond(await actor.begin(session_id, message.request))
                        else:
                            envelope.respond(await actor.begin_rfid(session_id, message.start))
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


async def _resume(actor: _SessionActor) -> None:
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
