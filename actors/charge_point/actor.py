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

from functools import partial

import structlog
import trio

from actors.charge_point.admission import Admission
from actors.charge_point.context import StationContext
from actors.charge_point.messages import (
    DOOR,
    STATION,
    Attach,
    Command,
    GetSnapshot,
    Reload,
    StationMsg,
)
from actors.charge_point.station import StationActor
from actors.charge_point.telemetry import Telemetry
from actors.runtime import (
    Address,
    ChildSpec,
    Envelope,
    Mailbox,
    Registry,
    Restart,
)
from actors.session.messages import RfidSessions
from cpms.kernel.events import EventBus
from cpms.ocpp.endpoint import (
    EndpointConfig,
)
from storage import Database

log = structlog.stdlib.get_logger("actors.charge_point")


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
    admission: Admission | None = None,
    preloaded: list[StationContext] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if preloaded:  # the first start of many at once; a restart reads the station afresh
        ctx = preloaded.pop()
    else:
        ctx = await StationContext.load(db, station_id, telemetry)
    ctx.registry, ctx.sessions, ctx.admission = registry, sessions, admission
    actor = StationActor(ctx, bus, offline_after, endpoint)
    address, view = Address(STATION, station_id), actor.snapshot
    door_address = Address(DOOR, station_id)
    if registry is not None:
        registry.show(address, view)
        registry.show(door_address, actor.door)
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
                            while (text := await link.receive()) is not None:
                                with trio.CancelScope(shield=True):  # bound the wait, not work
                                    await actor.arrived(link, text)
                                if actor.link is not link:
                                    break
                                if (due := actor.deadline()) < waiting.deadline:  # rarely
                                    waiting.deadline = due
                            else:
                                # It ended: taken without an await, and the actor waits for
                                # its mail still in this scope rather than leave it for the
                                # mailbox's own wait. 10,000 chargers dropped at once end in
                                # one turn of the loop; the shielded call, leaving the scope
                                # and parking on a channel were half of each one's share
                                # there (bench/drop.py). Leaving it is paid at the next Attach.
                                actor.ended(link)
                                await mailbox.idle()
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
                    if (due := actor.deadline()) < waiting.deadline:
                        waiting.deadline = due
            await actor.timer()
    finally:
        if registry is not None:
            registry.hide(address, view)
            registry.hide(door_address, actor.door)
        if actor.link is not None:  # stopped or crashed: the link closes its connection
            actor.link.release()


async def _handle(actor: StationActor, envelope: Envelope[StationMsg]) -> None:
    match envelope.message:
        case Attach(link):
            actor.attach(link)
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
    admission: Admission | None = None,
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
            admission=admission,
            preloaded=None if context is None else [context],
        ),
        Restart.PERMANENT,
        inbox=64,
    )
