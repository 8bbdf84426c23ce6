"""A ChargePointActor's state and behaviour: one station's connection (through its sans-IO OCPP
endpoint), its link state, its connectors, and its commands to the charger, one outstanding at
a time. :mod:`actors.charge_point.actor` runs it."""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass, field

import structlog
import trio

from actors.charge_point.context import StationContext
from actors.charge_point.handlers import (
    HANDLERS,
    Handled,
    Record,
    RecordBoot,
    RecordField,
    RecordStatus,
    StateChanged,
    ToSession,
)
from actors.charge_point.messages import (
    ChargerError,
    ChargerLink,
    Command,
    Door,
    Snapshot,
    StationMsg,
)
from actors.runtime import (
    ActorUnavailable,
    Envelope,
)
from actors.session.messages import SESSION
from cpms.kernel.errors import Unavailable
from cpms.kernel.events import ConnectorShown, EventBus, StationStatusChanged
from cpms.kernel.status import StationStatus, station_status
from cpms.kernel.timeutil import iso_now
from cpms.metrics import count_ocpp
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
from cpms.ocpp.schemas import FROM_CHARGER
from storage import stations as store

log = structlog.stdlib.get_logger("actors.charge_point")


@dataclass
class StationActor:
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
    #: the station's status changed: published once the frame (or the timer) is handled, so a
    #: boot that brings the station online and changes it is one event, not two
    changed: bool = False

    @property
    def station_id(self) -> str:
        return self.ctx.station_id

    @property
    def online(self) -> bool:
        return self.state.link is Link.ONLINE

    def deadline(self) -> float:
        silence = self.state.deadline(self.offline_after)
        return min(silence, self.endpoint.deadline() if self.endpoint else math.inf)

    def _apply(self, event: FrameArrived | SilenceElapsed) -> None:
        step = transition(self.state, event, self.offline_after)
        self.state = step.state
        for effect in step.effects:
            if effect is Effect.PERSIST_ONLINE:
                self.ctx.telemetry.online(self.station_id, True)
            elif effect is Effect.PERSIST_OFFLINE:
                log.info("station offline", station=self.station_id, silent_s=self.offline_after)
                self.ctx.telemetry.online(self.station_id, False)
            else:
                self.changed = True

    # -- connection ---------------------------------------------------------------------------

    def attach(self, link: ChargerLink) -> None:
        old, self.link = self.link, link
        self._lost("the connection was replaced")
        self.endpoint = OcppEndpoint(self.config, trio.current_time())
        if old is not None:
            log.info("connection replaced", station=self.station_id)
            old.close(1000, "replaced by a new connection")

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

    def ended(self, link: ChargerLink) -> None:
        """``link``'s connection ended (the charger's EOF or close): no await, see the loop in
        :mod:`.actor`."""
        self.detach(link)
        self.publish_changes()

    async def arrived(self, link: ChargerLink, text: str | bytes) -> None:
        """A message read from ``link``."""
        try:
            await self._arrived(link, text)
        finally:
            self.publish_changes()

    async def _arrived(self, link: ChargerLink, text: str | bytes) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            self.detach(link)
            return
        now = trio.current_time()
        event = endpoint.receive(text, now)
        if isinstance(event, FRAME_EVENTS):
            self._apply(FrameArrived(now))
        match event:
            case CallReceived(call, raw):
                count_ocpp(call.action, "in")
                self.ctx.log_message("in", call, call.action, raw)
                await self._answer(call)
            case CallRefused(call, error, raw):
                action = call.action if call.action in FROM_CHARGER else "unknown"
                count_ocpp(action, "in")  # a label per name sent would be unbounded
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
                link.close(code, reason)
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
        for record in handled.records:  # stored before the charger hears back
            await self._record(record)
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

    async def _record(self, record: Record) -> None:
        db, station = self.ctx.db, self.station_id
        match record:
            case RecordBoot(payload):
                self.ctx.telemetry.boot(station, payload)
            case RecordStatus(payload):
                self.ctx.telemetry.status(station, payload)
            case RecordField(column, value):
                await store.record_field(db, station, column, value)

    async def _perform(self, event: StateChanged | ToSession) -> None:
        match event:
            case StateChanged():
                self.changed = True
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
            count_ocpp(message.action, "out")
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
            self._apply(SilenceElapsed(now))
            self.publish_changes()

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

    def door(self) -> Door | None:
        return (
            None if self.ctx.deleted else Door(self.ctx.password_hash, self.ctx.password_verifier)
        )

    def status(self) -> StationStatus:
        configured = [c.status for c in self.ctx.connectors.values() if c.configured]
        return station_status(self.online, self.ctx.admin_status, configured)

    def publish_changes(self) -> None:
        if self.changed:
            self.changed = False
            self.publish()

    def publish(self) -> None:
        shown = tuple(
            ConnectorShown(n, c.status, c.power_kw, c.connector_type)
            for n, c in sorted(self.ctx.connectors.items())
            if c.configured
        )
        self.bus.publish(
            StationStatusChanged(
                self.station_id, self.ctx.location_id, self.status(), shown, iso_now()
            )
        )
