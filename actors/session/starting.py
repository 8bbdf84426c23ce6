"""How a session begins: the station checked against what its actor shows, the reservation held
together with the session's row (refused, neither exists), and the machine begun. An app's start
answers what the app shows; a card's answers the charger's transaction id."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from actors.charge_point.messages import STATION, GetSnapshot, Snapshot, shown_snapshot
from actors.runtime import ActorError
from actors.session import machine as sm
from actors.session.deps import SessionDeps
from actors.session.machine import Phase, State
from actors.session.messages import RfidStart, StartRequest, hold_for
from actors.session.record import SessionRecord
from cpms.kernel.charging import Limit, reservation
from cpms.kernel.errors import Conflict, NotFound, Unavailable
from cpms.kernel.status import BUSY
from storage import sessions as sessions_store
from storage.stations import get_station

if TYPE_CHECKING:
    from actors.session.actor import SessionActor


async def begin(
    actor: SessionActor, session_id: uuid.UUID, request: StartRequest
) -> dict[str, Any]:
    """An app's start: the station checked, the reservation held with the session's row, the
    machine begun (the charger is asked); answers what the app is shown."""
    # A start's latency is its trips to the database and through the scheduler, so it makes
    # one of the first, the reservation, and few of the second. The station is checked
    # against the state its actor shows and the tariff kept in memory (both follow
    # operators' changes, see actors.charge_point.config); the client (found, active, funded) is
    # checked by the ledger as it reserves, on the row it writes.
    snapshot = await station_snapshot(actor.deps, request.station_id)
    await check_station(actor.deps, request, snapshot)
    tariff = await actor.deps.tariffs.get(request.station_id)
    if tariff is None:
        raise Unavailable(f"station {request.station_id} has no tariff", code="station_unavailable")
    now = actor.deps.clock()
    hold = reservation(request.limit, tariff, now)
    t = actor.deps.timings
    s = SessionRecord(
        session_id,
        request.client_id,
        request.station_id,
        request.connector_id,
        request.limit,
        tariff,
        tariff.rate_at(now),
        actor.deps.plausibility(snapshot, request.connector_id),
        State(
            Phase.RESERVED,
            start_deadline=now + timedelta(seconds=t.start_timeout),
            max_deadline=now + timedelta(seconds=t.max_duration),
        ),
    )
    s.reserved, s.hold_id = hold.amount, hold_for(s.id)
    actor.s = s
    await reserve(actor, hold.minimum, claim(s, "app"))
    await actor.apply(sm.Begin())
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


async def begin_rfid(actor: SessionActor, session_id: uuid.UUID, start: RfidStart) -> int:
    """A card's transaction is running: hold the no-limit reservation for its client and
    give the charger a transaction id. Refusals (blocked, short of money) are raised."""
    tariff = await actor.deps.tariffs.get(start.station_id)
    if tariff is None:
        raise Unavailable(f"station {start.station_id} has no tariff", code="station_unavailable")
    limit = Limit("none")
    hold = reservation(limit, tariff, start.at)
    now = actor.deps.clock()
    s = SessionRecord(
        session_id,
        start.client_id,
        start.station_id,
        start.connector_id,
        limit,
        tariff,
        tariff.rate_at(start.at),
        actor.deps.plausibility(
            shown_snapshot(actor.deps.registry, start.station_id), start.connector_id
        ),
        State(
            Phase.RESERVED,
            start_deadline=now,
            max_deadline=now + timedelta(seconds=actor.deps.timings.max_duration),
        ),
        reserved=hold.amount,
        hold_id=hold_for(session_id),
        card=start.id_tag,
    )
    actor.s = s
    await reserve(actor, hold.minimum, claim(s, "rfid"))
    attached = await sessions_store.attach_transaction(
        actor.deps.db, s.id, start.meter_start, start.at
    )
    assert attached is not None  # the row was made just now and is open
    s.transaction_id = attached
    s.started_at = start.at
    s.start_meter(start.meter_start, start.at)
    await actor.apply(sm.ChargerStarted())
    return s.transaction_id


def claim(s: SessionRecord, origin: str) -> sessions_store.SessionClaim:
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


async def reserve(
    actor: SessionActor, minimum: Decimal | None, row: sessions_store.SessionClaim
) -> None:
    """Hold the reservation (``s.reserved``; with a ``minimum``, as much of it as the balance
    covers), with the new session's ``row`` in the same transaction: refused,
    neither exists. ``s.reserved`` becomes what was held."""
    s = actor.s
    assert s is not None and s.hold_id is not None
    result = await actor.deps.ledger.reserve(
        s.client_id,
        s.reserved,
        key=f"session:{s.id}:reserve",
        hold_id=s.hold_id,
        session_id=s.id,
        claim=row,
        minimum=minimum,
    )
    s.reserved = result.held


async def station_snapshot(deps: SessionDeps, station_id: str) -> Snapshot | None:
    """The station's state as its actor shows it (no message), else by asking the actor
    (it is restarting); None when none runs or it doesn't answer."""
    shown = shown_snapshot(deps.registry, station_id)
    if shown is not None:
        return shown
    ref = deps.registry.lookup(STATION, station_id)
    if ref is None:
        return None
    try:
        snapshot: Snapshot = await ref.ask(GetSnapshot(), timeout=5)
    except ActorError:
        return None
    return snapshot


async def check_station(
    deps: SessionDeps, request: StartRequest, snapshot: Snapshot | None
) -> None:
    """Refuse a start the station can't take now (unknown, offline, maintenance, the connector
    missing, faulted, unavailable or busy)."""
    if snapshot is None:  # every known station has an actor once it has connected
        if await get_station(deps.db, request.station_id) is None:
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
    if status in BUSY:
        raise Conflict(f"connector {request.connector_id} is occupied", code="connector_occupied")
