"""The ChargePointActor: one per known station, alive whether or not the charger is connected.

The WebSocket is a resource the actor attaches and detaches. While one is attached the actor
reads it in its own task, together with its mailbox (no task in between hands frames over: that
hop was one of the seven task steps of a message); the link screens each frame (size, rate,
syntax) and the actor answers what passes. The actor answers the charger's CALLs
(in order, one at a time, as OCPP-J requires of the charger anyway), sends the central system's
CALLs one outstanding at a time with a timeout, and keeps the station's state: registration,
online/offline (offline exactly when no frame arrived for ``offline_after`` seconds, by its own
timer), firmware, and per-connector status. Every change of status is published on the event bus.
"""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, cast

import structlog
import trio

from actors.charge_point.handlers import HANDLERS, StationContext
from actors.charge_point.link_state import (
    Effect,
    FrameArrived,
    Link,
    LinkState,
    SilenceElapsed,
    transition,
)
from actors.charge_point.telemetry import Telemetry
from actors.runtime import Address, ChildSpec, Envelope, Mailbox, Registry, Request, Restart
from actors.session.messages import RfidSessions
from cpms.kernel.errors import Unavailable
from cpms.kernel.events import EventBus
from cpms.kernel.status import station_status
from cpms.ocpp import schemas
from cpms.ocpp.frames import Call, CallError, CallResult, ErrorCode, Frame, OcppError
from storage import Database
from storage import stations as store

STATION = "station"
log = structlog.stdlib.get_logger("actors.charge_point.actor")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A frame the link turned away before parsing it into a :class:`Frame`: ``reply`` (a
    CALLERROR) goes back to the charger, or ``close`` (code, reason) ends the connection."""

    reply: str | None = None
    close: tuple[int, str] | None = None


class ChargerLink(Protocol):
    """The charger's WebSocket as the actor sees it."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection has ended. Safe to cancel."""
        ...

    def screen(self, text: str | bytes) -> Frame | Refusal:
        """``text`` parsed, or why it is turned away (too large, too many, not OCPP-J)."""
        ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def release(self) -> None:
        """The actor no longer reads this link (detached, replaced, or the actor stopped)."""
        ...


@dataclass(frozen=True, slots=True)
class Attach:
    """A charger connected; replaces any previous connection. The actor reads it from now on
    and calls its ``release()`` when it stops."""

    link: ChargerLink


@dataclass(frozen=True, slots=True)
class Detach:
    link: ChargerLink


@dataclass(frozen=True, slots=True)
class Command(Request[dict[str, Any]]):
    """Send ``action`` to the charger and answer with its (validated) reply payload."""

    action: str
    payload: dict[str, Any]
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    station_id: str
    connected: bool
    online: bool
    registration: str
    admin_status: str
    status: str
    connectors: dict[int, dict[str, Any]]

    @property
    def configured(self) -> frozenset[int]:
        """The connectors an operator set up (a charger may report others)."""
        return frozenset(n for n, c in self.connectors.items() if c.get("configured"))


@dataclass(frozen=True, slots=True)
class GetSnapshot(Request[Snapshot]):
    pass


def shown_snapshot(registry: Registry, station_id: str) -> Snapshot | None:
    """The station's state as its running ChargePointActor shows it now, read without asking;
    None when no actor shows it (none runs, or one is between a crash and its restart)."""
    view = registry.view(STATION, station_id)
    return None if view is None else cast(Snapshot, view())


@dataclass(frozen=True, slots=True)
class Reload(Request[None]):
    """The station's record changed (admin status, password, connectors): read it again.
    Operators' changes made elsewhere (the CLI) come as database notifications
    (:mod:`actors.charge_point.config`)."""


StationMsg = Attach | Detach | Command | GetSnapshot | Reload


class ChargerError(Unavailable):
    """The charger answered a command with a CALLERROR."""

    code = "ocpp_communication_error"


@dataclass
class _Pending:
    call: Call
    envelope: Envelope[StationMsg]
    deadline: float


@dataclass
class _StationActor:
    ctx: StationContext
    bus: EventBus
    offline_after: float
    link: ChargerLink | None = None
    state: LinkState = field(default_factory=LinkState)
    pending: _Pending | None = None
    waiting: collections.deque[Envelope[StationMsg]] = field(default_factory=collections.deque)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def station_id(self) -> str:
        return self.ctx.station_id

    @property
    def online(self) -> bool:
        return self.state.link is Link.ONLINE

    def deadline(self) -> float:
        silence = self.state.deadline(self.offline_after)
        return min(silence, self.pending.deadline if self.pending else math.inf)

    async def _apply(self, event: FrameArrived | SilenceElapsed) -> None:
        step = transition(self.state, event, self.offline_after)
        self.state = step.state
        for effect in step.effects:
            if effect is Effect.PERSIST_ONLINE:
                await store.set_online(self.ctx.db, self.station_id, True)
            elif effect is Effect.PERSIST_OFFLINE:
                log.info("station offline", station=self.station_id, silent_s=self.offline_after)
                await store.set_online(self.ctx.db, self.station_id, False)
            else:
                self.publish()

    # -- connection ---------------------------------------------------------------------------

    async def attach(self, link: ChargerLink) -> None:
        old, self.link = self.link, link
        if old is not None:
            log.info("connection replaced", station=self.station_id)
            old.release()
            await old.close(1000, "replaced by a new connection")
            self._fail_pending("the connection was replaced")

    def detach(self, link: ChargerLink) -> None:
        if self.link is link:
            self.link = None
            link.release()
            self._fail_pending("the charger disconnected")

    # -- frames from the charger --------------------------------------------------------------

    async def arrived(self, link: ChargerLink, text: str | bytes | None) -> None:
        """What reading ``link`` gave: a message, or None when the connection ended."""
        if text is None:
            self.detach(link)
            return
        screened = link.screen(text)
        if isinstance(screened, Refusal):
            if screened.close is not None:
                await link.close(*screened.close)
                self.detach(link)
            elif screened.reply is not None:
                await self._send_raw(screened.reply)
            return
        await self.received(screened, text if isinstance(text, str) else None)

    async def received(self, frame: Frame, text: str | None = None) -> None:
        await self._apply(FrameArrived(trio.current_time()))
        action = (
            frame.action
            if isinstance(frame, Call)
            else (self.pending.call.action if self.pending else None)
        )
        self.ctx.log_message("in", frame, action, text)
        if isinstance(frame, Call):
            await self._answer(frame)
        else:
            await self._complete(frame)

    async def _answer(self, call: Call) -> None:
        handler = HANDLERS.get(call.action)
        try:
            if handler is None:
                code: ErrorCode = (
                    "NotSupported" if call.action in schemas.TO_CHARGER else "NotImplemented"
                )
                raise OcppError(code, f"{call.action} is not handled here", call.unique_id)
            schemas.validate(call.action, call.payload, call.unique_id)
            try:
                payload = await handler(self.ctx, call.payload, call.unique_id)
            except OcppError:
                raise
            except Exception:
                # Our fault (a database error, a bug): the charger is told, and retries what
                # the spec says it must; the actor and its state go on.
                log.exception("handler failed", station=self.station_id, action=call.action)
                raise OcppError(
                    "InternalError", "the central system could not handle this", call.unique_id
                ) from None
            self._check_own_answer(call, payload)
        except OcppError as error:
            await self._send(error.frame(), call.action)
        else:
            await self._send(CallResult(call.unique_id, payload), call.action)
        if self.ctx.changed:
            self.ctx.changed = False
            self.publish()

    def _check_own_answer(self, call: Call, payload: dict[str, Any]) -> None:
        """An answer of ours that breaks the schema is our bug: the charger gets InternalError."""
        try:
            schemas.validate(f"{call.action}Response", payload, call.unique_id)
        except OcppError as error:
            log.error(
                "answer breaks the OCPP schema",
                station=self.station_id,
                action=call.action,
                problem=error.description,
            )
            raise OcppError(
                "InternalError", "the central system could not answer", call.unique_id
            ) from None

    async def _complete(self, frame: CallResult | CallError) -> None:
        pending = self.pending
        if pending is None or pending.call.unique_id != frame.unique_id:
            if isinstance(frame, CallResult):  # a CALLERROR is never answered
                await self._send(
                    CallError(frame.unique_id, "ProtocolError", "no outstanding CALL with this id")
                )
            return
        self.pending = None
        if isinstance(frame, CallError):
            pending.envelope.fail(
                ChargerError(f"{pending.call.action}: {frame.code} {frame.description}".strip())
            )
        else:
            try:
                schemas.validate(f"{pending.call.action}Response", frame.payload, frame.unique_id)
            except OcppError as error:
                pending.envelope.fail(
                    ChargerError(f"{pending.call.action}: invalid answer: {error.description}")
                )
            else:
                pending.envelope.respond(frame.payload)
        await self._next_command()

    # -- commands to the charger --------------------------------------------------------------

    async def command(self, envelope: Envelope[StationMsg]) -> None:
        self.waiting.append(envelope)
        if self.pending is None:
            await self._next_command()

    async def _next_command(self) -> None:
        while self.pending is None and self.waiting:
            envelope = self.waiting.popleft()
            message = envelope.message
            assert isinstance(message, Command)
            if self.link is None:
                envelope.fail(
                    Unavailable(
                        f"station {self.station_id} is not connected", code="station_offline"
                    )
                )
                continue
            call = Call(f"cs-{next(self.ids)}", message.action, message.payload)
            self.pending = _Pending(call, envelope, trio.current_time() + message.timeout)
            await self._send(call)

    def _fail_pending(self, why: str) -> None:
        if self.pending is not None:
            self.pending.envelope.fail(
                Unavailable(f"{self.pending.call.action}: {why}", code="station_offline")
            )
            self.pending = None

    async def timer(self) -> None:
        now = trio.current_time()
        if self.pending is not None and now >= self.pending.deadline:
            self.pending.envelope.fail(
                Unavailable(
                    f"{self.pending.call.action}: no answer from the charger", code="timeout"
                )
            )
            self.pending = None
            await self._next_command()
        if now >= self.state.deadline(self.offline_after):
            await self._apply(SilenceElapsed(now))

    # -- output -------------------------------------------------------------------------------

    async def _send(self, frame: Frame, action: str | None = None) -> None:
        if self.link is None:
            return
        text = frame.encode()
        self.ctx.log_message("out", frame, action, text)
        await self._send_raw(text)

    async def _send_raw(self, text: str) -> None:
        link = self.link
        if link is None:
            return
        try:
            await link.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.detach(link)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.station_id,
            self.link is not None,
            self.online,
            self.ctx.registration,
            self.ctx.admin_status,
            self.status(),
            {k: dict(v) for k, v in self.ctx.connectors.items()},
        )

    def status(self) -> str:
        configured = [c["status"] for c in self.ctx.connectors.values() if c.get("configured")]
        return station_status(self.online, self.ctx.admin_status, configured)

    def publish(self) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.bus.publish(
            {
                "type": "station_status_update",
                "data": {
                    "station_id": self.station_id,
                    "location_id": self.ctx.location_id,
                    "status": self.status(),
                    "connectors": [
                        {"connector_id": n, "status": c["status"], "power_kw": c.get("power_kw")}
                        for n, c in sorted(self.ctx.connectors.items())
                        if c.get("configured")
                    ],
                    "timestamp": now,
                },
            }
        )


async def run_charge_point(
    mailbox: Mailbox[StationMsg],
    *,
    station_id: str,
    db: Database,
    bus: EventBus,
    offline_after: float,
    telemetry: Telemetry,
    registry: Registry | None = None,
    sessions: RfidSessions | None = None,
    preloaded: list[StationContext] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if preloaded:  # the first start of many at once; a restart reads the station afresh
        ctx = preloaded.pop()
    else:
        ctx = await StationContext.load(db, station_id, telemetry)
    ctx.registry, ctx.sessions = registry, sessions
    actor = _StationActor(ctx, bus, offline_after)
    address, view = Address(STATION, station_id), actor.snapshot
    if registry is not None:
        registry.show(address, view)
    task_status.started()
    try:
        while True:
            # The timer is lazy: every frame pushes the silence deadline later, but the scope's
            # deadline only moves when it fires (timer() then finds nothing due and the loop sets
            # the real one) or when a handler sets an earlier one (an outstanding command).
            # Moving a trio deadline on every message costs more than the message's own work.
            with trio.CancelScope(deadline=actor.deadline()) as waiting:
                while True:
                    link = actor.link
                    if link is not None:
                        with mailbox.until_mail():
                            while actor.link is link:
                                text = await link.receive()
                                with trio.CancelScope(shield=True):  # bound the wait, not work
                                    await actor.arrived(link, text)
                                waiting.deadline = min(waiting.deadline, actor.deadline())
                        try:  # mail came, or the link went (a late wake-up brings no mail)
                            envelope = mailbox.receive_nowait()
                        except trio.WouldBlock:
                            continue
                        except trio.EndOfChannel:
                            return
                    else:
                        try:
                            envelope = await mailbox.receive()
                        except trio.EndOfChannel:
                            return
                    with trio.CancelScope(shield=True):
                        await _handle(actor, envelope)
                    waiting.deadline = min(waiting.deadline, actor.deadline())
            await actor.timer()
    finally:
        if registry is not None:
            registry.hide(address, view)
        if actor.link is not None:  # stopped or crashed: the connection's handler closes it
            actor.link.release()


async def _handle(actor: _StationActor, envelope: Envelope[StationMsg]) -> None:
    match envelope.message:
        case Attach(link):
            await actor.attach(link)
        case Detach(link):
            actor.detach(link)
        case Command():
            await actor.command(envelope)
        case GetSnapshot():
            envelope.respond(actor.snapshot())
        case Reload():
            try:
                await actor.ctx.refresh()
            except LookupError:  # deleted: nothing to take up (its actor goes with the server)
                log.warning("station record gone", station=actor.station_id)
            else:
                actor.ctx.changed = False
                actor.publish()
            envelope.respond(None)


def charge_point_spec(
    station_id: str,
    *,
    db: Database,
    bus: EventBus,
    offline_after: float = 300.0,
    telemetry: Telemetry,
    context: StationContext | None = None,
    registry: Registry | None = None,
    sessions: RfidSessions | None = None,
) -> ChildSpec[StationMsg]:
    """``context``: the station as already read (start-up), used for the first start only."""
    return ChildSpec(
        Address(STATION, station_id),
        partial(
            run_charge_point,
            station_id=station_id,
            db=db,
            bus=bus,
            offline_after=offline_after,
            telemetry=telemetry,
            registry=registry,
            sessions=sessions,
            preloaded=None if context is None else [context],
        ),
        Restart.PERMANENT,
        inbox=64,
    )
