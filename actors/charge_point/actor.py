"""The ChargePointActor: one per known station, alive whether or not the charger is connected.

The WebSocket is a resource the actor attaches and detaches. While one is attached the actor
reads it in its own task, together with its mailbox (no task in between hands frames over: that
hop was one of the seven task steps of a message). The actor is a thin loop: it feeds each
message to the connection's sans-IO :class:`~cpms.ocpp.endpoint.OcppEndpoint` (screening,
framing, validation, CALL correlation) and performs what comes out: it answers the charger's
CALLs with the :mod:`handlers <actors.charge_point.handlers>` (in order, one at a time, as OCPP-J
requires of the charger anyway) and performs their events, sends the central system's CALLs one
outstanding at a time with a timeout, and keeps the station's state: registration,
online/offline (offline exactly when no frame arrived for ``offline_after`` seconds, by its own
timer, :mod:`cpms.ocpp.link_state`), and per-connector status. Every change of status is
published on the event bus.
"""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass, field
from functools import partial

import structlog
import trio

from actors.charge_point.context import StationContext
from actors.charge_point.handlers import HANDLERS, Handled, StateChanged, ToSession
from actors.charge_point.messages import (
    STATION,
    Attach,
    ChargerError,
    ChargerLink,
    Command,
    Detach,
    GetSnapshot,
    Reload,
    Snapshot,
    StationMsg,
)
from actors.charge_point.telemetry import Telemetry
from actors.runtime import (
    ActorUnavailable,
    Address,
    ChildSpec,
    Envelope,
    Mailbox,
    Registry,
    Restart,
)
from actors.session.messages import SESSION, RfidSessions
from cpms.kernel.errors import Unavailable
from cpms.kernel.events import ConnectorShown, EventBus, StationStatusChanged
from cpms.kernel.status import StationStatus, station_status
from cpms.kernel.timeutil import iso_now
from cpms.ocpp.endpoint import (
    FRAME_EVENTS,
    Answered,
    CallReceived,
    CallRefused,
    Close,
    EndpointConfig,
    Failed,
    OcppEndpoint,
    Reply,
    Stray,
)
from cpms.ocpp.frames import Call, Frame, OcppError
from cpms.ocpp.link_state import (
    Effect,
    FrameArrived,
    Link,
    LinkState,
    SilenceElapsed,
    transition,
)
from storage import Database
from storage import stations as store

log = structlog.stdlib.get_logger("actors.charge_point")


@dataclass
class _StationActor:
    ctx: StationContext
    bus: EventBus
    offline_after: float
    config: EndpointConfig
    link: ChargerLink | None = None
    endpoint: OcppEndpoint | None = None
    state: LinkState = field(default_factory=LinkState)
    #: the command whose CALL is outstanding, and those waiting their turn
    pending: Envelope[StationMsg] | None = None
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
        return min(silence, self.endpoint.deadline() if self.endpoint else math.inf)

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
        self._lost("the connection was replaced")
        self.endpoint = OcppEndpoint(self.config, trio.current_time())
        if old is not None:
            log.info("connection replaced", station=self.station_id)
            old.release()
            await old.close(1000, "replaced by a new connection")

    def detach(self, link: ChargerLink) -> None:
        if self.link is link:
            self.link = None
            link.release()
            self._lost("the charger disconnected")
            self.endpoint = None

    def _lost(self, why: str) -> None:
        if self.endpoint is not None and (failed := self.endpoint.lost(why)) is not None:
            self._failed(failed)

    # -- frames from the charger --------------------------------------------------------------

    async def arrived(self, link: ChargerLink, text: str | bytes | None) -> None:
        """What reading ``link`` gave: a message, or None when the connection ended."""
        endpoint = self.endpoint
        if text is None or endpoint is None:
            self.detach(link)
            return
        now = trio.current_time()
        event = endpoint.receive(text, now)
        if isinstance(event, FRAME_EVENTS):
            await self._apply(FrameArrived(now))
        match event:
            case CallReceived(call, raw):
                self.ctx.log_message("in", call, call.action, raw)
                await self._answer(call)
            case CallRefused(call, error, raw):
                self.ctx.log_message("in", call, call.action, raw)
                log.info(
                    "bad frame", station=self.station_id, code=error.code, why=error.description
                )
                await self._send(error, call.action)
            case Answered(call, result, raw):
                self.ctx.log_message("in", result, call.action, raw)
                if self.pending is not None:
                    self.pending.respond(result.payload)
                    self.pending = None
                await self._next_command()
            case Failed(call, _, _, frame, raw):
                if frame is not None:
                    self.ctx.log_message("in", frame, call.action, raw)
                self._failed(event)
                await self._next_command()
            case Stray(frame, raw, reply):
                self.ctx.log_message("in", frame, None, raw)
                if reply is not None:
                    await self._send(reply)
            case Reply(answer, why):
                log.info("frame turned away", station=self.station_id, why=why)
                await self._send_raw(answer)
            case Close(code, reason):
                log.warning("closing the connection", station=self.station_id, why=reason)
                await link.close(code, reason)
                self.detach(link)

    async def _answer(self, call: Call) -> None:
        handler = HANDLERS[call.action]  # the endpoint passes on only the actions handled here
        try:
            handled: Handled = await handler(self.ctx, call.payload, call.unique_id)
        except OcppError as error:
            await self._send(OcppEndpoint.refuse(call, error), call.action)
            return
        except Exception:
            # Our fault (a database error, a bug): the charger is told, and retries what the
            # spec says it must; the actor and its state go on.
            log.exception("handler failed", station=self.station_id, action=call.action)
            ours = OcppError("InternalError", "the central system could not handle this")
            await self._send(OcppEndpoint.refuse(call, ours), call.action)
            return
        answer, problem = OcppEndpoint.answer(call, handled.answer)
        if problem is not None:
            log.error(
                "answer breaks the OCPP schema",
                station=self.station_id,
                action=call.action,
                problem=problem,
            )
        await self._send(answer, call.action)
        for event in handled.events:  # what it recorded is stored: the charger needn't wait
            await self._perform(event)

    async def _perform(self, event: StateChanged | ToSession) -> None:
        match event:
            case StateChanged():
                self.publish()
            case ToSession(session_id, message, wake):
                registry, sessions = self.ctx.registry, self.ctx.sessions
                ref = None if registry is None else registry.lookup(SESSION, str(session_id))
                if ref is not None:
                    try:
                        await ref.tell(message)
                        return
                    except ActorUnavailable:  # it ended between the lookup and the tell
                        pass
                # no actor: ended, or being restarted (it will read what was recorded)
                if wake and sessions is not None:
                    await sessions.wake(session_id)

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
            if self.endpoint is None:
                envelope.fail(
                    Unavailable(
                        f"station {self.station_id} is not connected", code="station_offline"
                    )
                )
                continue
            call = self.endpoint.call(
                f"cs-{next(self.ids)}",
                message.action,
                message.payload,
                trio.current_time(),
                message.timeout,
            )
            self.pending = envelope
            await self._send(call)

    def _failed(self, failed: Failed) -> None:
        envelope, self.pending = self.pending, None
        if envelope is None:
            return
        if failed.reason == "error":
            envelope.fail(ChargerError(failed.description))
        elif failed.reason == "timeout":
            envelope.fail(Unavailable(failed.description, code="timeout"))
        else:
            envelope.fail(Unavailable(failed.description, code="station_offline"))

    async def timer(self) -> None:
        now = trio.current_time()
        if self.endpoint is not None and (failed := self.endpoint.expire(now)) is not None:
            self._failed(failed)
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
            dict(self.ctx.connectors),
        )

    def status(self) -> StationStatus:
        configured = [c.status for c in self.ctx.connectors.values() if c.configured]
        return station_status(self.online, self.ctx.admin_status, configured)

    def publish(self) -> None:
        shown = tuple(
            ConnectorShown(n, c.status, c.power_kw)
            for n, c in sorted(self.ctx.connectors.items())
            if c.configured
        )
        self.bus.publish(
            StationStatusChanged(
                self.station_id, self.ctx.location_id, self.status(), shown, iso_now()
            )
        )


async def run_charge_point(
    mailbox: Mailbox[StationMsg],
    *,
    station_id: str,
    db: Database,
    bus: EventBus,
    offline_after: float,
    telemetry: Telemetry,
    endpoint: EndpointConfig,
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
    actor = _StationActor(ctx, bus, offline_after, endpoint)
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
                actor.publish()
            envelope.respond(None)


def charge_point_spec(
    station_id: str,
    *,
    db: Database,
    bus: EventBus,
    offline_after: float = 300.0,
    telemetry: Telemetry,
    endpoint: EndpointConfig | None = None,
    context: StationContext | None = None,
    registry: Registry | None = None,
    sessions: RfidSessions | None = None,
) -> ChildSpec[StationMsg]:
    """``context``: the station as already read (start-up), used for the first start only;
    ``endpoint``: the bounds on what the charger sends (size, rate)."""
    return ChildSpec(
        Address(STATION, station_id),
        partial(
            run_charge_point,
            station_id=station_id,
            db=db,
            bus=bus,
            offline_after=offline_after,
            telemetry=telemetry,
            endpoint=endpoint or EndpointConfig(),
            registry=registry,
            sessions=sessions,
            preloaded=None if context is None else [context],
        ),
        Restart.PERMANENT,
        inbox=64,
    )
