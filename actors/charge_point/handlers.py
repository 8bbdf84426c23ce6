"""What the central system answers to each CALL a charge point sends (OCPP 1.6).

Each handler gets the station's context and an already schema-validated payload, reads what it
needs to decide, and returns :class:`Handled`: the answer's payload, the records the actor makes
before it answers (a boot and a status go to the batched writer, :mod:`telemetry
<actors.charge_point.telemetry>`; a firmware or diagnostics notice is written), and the events it
performs once the charger has its answer (the station's shown state changed, a report for a
session's actor). A semantic problem is an ``OcppError``. Only a transaction's start and stop
write as they decide (a transaction id to give, a stop recorded before the charger hears back).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from actors.charge_point.context import StationContext
from actors.runtime import ActorError
from actors.session.messages import (
    SESSION,
    ChargerStarted,
    ChargerStopped,
    MeterReading,
    RfidStart,
    SessionMsg,
    Superseded,
)
from cpms.kernel.charging import NO_LIMIT_MINIMUM
from cpms.kernel.errors import CpmsError
from cpms.kernel.timeutil import parse_time
from cpms.ocpp.connector_state import ConnectorState
from cpms.ocpp.meter import parse_samples, summarize
from storage import clients
from storage import sessions as sessions_store
from storage import stations as store
from storage import transactions as tx

log = structlog.stdlib.get_logger("actors.charge_point")

HEARTBEAT_INTERVAL = 60
RETRY_INTERVAL = 30


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The station's shown state changed: publish it."""


@dataclass(frozen=True, slots=True)
class ToSession:
    """Pass ``message`` to the session's actor; with ``wake``, start one when none runs (it
    reads what was recorded)."""

    session_id: uuid.UUID
    message: SessionMsg
    wake: bool = False


StationEvent = StateChanged | ToSession
CHANGED = (StateChanged(),)


@dataclass(frozen=True, slots=True)
class RecordBoot:
    """A BootNotification: the charger's identity and firmware, and that it was seen."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordStatus:
    """A StatusNotification (connector 0: the charge point itself)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordField:
    """A firmware or diagnostics progress notice."""

    column: Literal["diagnostics_status", "firmware_status"]
    value: str


Record = RecordBoot | RecordStatus | RecordField


@dataclass(frozen=True, slots=True)
class Handled:
    """A CALL's answer payload, what the actor records before sending it, and what it performs
    once it has."""

    answer: dict[str, Any]
    events: tuple[StationEvent, ...] = ()
    records: tuple[Record, ...] = ()


Handler = Callable[[StationContext, dict[str, Any], str], Awaitable[Handled]]


async def boot_notification(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    # The registration an operator set, even from another process: the config watcher has the
    # actor read its record as each change commits (actors.charge_point.config), so a boot
    # costs no database round trip (reconnect storms: thousands a second).
    if ctx.registration == "Accepted" and ctx.admission is not None:
        wait = ctx.admission.interval(ctx.station_id, in_transaction=ctx.in_transaction())
        if wait is not None:  # a reconnect storm: come back in a while (nothing recorded)
            return Handled({"status": "Pending", "currentTime": now_iso(), "interval": wait})
    interval = HEARTBEAT_INTERVAL if ctx.registration == "Accepted" else RETRY_INTERVAL
    answer = {"status": ctx.registration, "currentTime": now_iso(), "interval": interval}
    return Handled(answer, CHANGED, (RecordBoot(p),))


async def heartbeat(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    ctx.telemetry.heartbeat(ctx.station_id)
    return Handled({"currentTime": now_iso()})


async def status_notification(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    connector = p["connectorId"]
    ctx.check_connector(connector, uid, allow_zero=True)
    if connector > 0:
        ctx.connectors[connector] = ctx.connectors.get(connector, ConnectorState()).reported(p)
    return Handled({}, CHANGED, (RecordStatus(p),))


async def authorize(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    if await sessions_store.open_by_tag(ctx.db, ctx.station_id, p["idTag"]) is not None:
        return Handled({"idTagInfo": {"status": "Accepted"}})  # an app session's own tag
    client = await store.tag_client(ctx.db, p["idTag"])
    billed = client is not None and await _billed(ctx)
    return Handled({"idTagInfo": await _card_info(ctx, p["idTag"], client, billed)})


async def _billed(ctx: StationContext) -> bool:
    """Whether card transactions here are billed: a station with no tariff charges nothing."""
    return ctx.sessions is not None and await ctx.sessions.billed(ctx.station_id)


async def _card_info(
    ctx: StationContext, tag: str, client: uuid.UUID | None, billed: bool
) -> dict[str, Any]:
    """``idTagInfo`` for a card: where charging is billed, a client's card also needs an active
    client who can afford the smallest reservation (10 som), or it is Blocked."""
    info = await store.id_tag_info(ctx.db, tag, accept_unknown=ctx.accept_unknown_tags)
    if client is None or info["status"] != "Accepted" or not billed:
        return info
    row = await clients.standing(ctx.db, client)
    if row is None or row["status"] != "active" or row["balance"] < NO_LIMIT_MINIMUM:
        return {**info, "status": "Blocked"}
    return info


async def start_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    ctx.check_connector(p["connectorId"], uid, allow_zero=False)
    connector, tag = p["connectorId"], p["idTag"]
    session = await sessions_store.awaiting_start(ctx.db, ctx.station_id, connector, tag)
    if session is not None:  # the app session that asked for this start
        started_at = parse_time(p["timestamp"]) or datetime.now(UTC)
        attached = await sessions_store.attach_transaction(
            ctx.db, session["id"], p["meterStart"], started_at
        )
        if attached is not None:
            ctx.transactions[attached] = session["id"]
            return Handled(
                {"transactionId": attached, "idTagInfo": {"status": "Accepted"}},
                (ToSession(session["id"], ChargerStarted(attached, p["meterStart"], started_at)),),
            )
        # the session ended a moment ago (stopped, timed out): the charger must not charge
        transaction_id, _new = await tx.start_transaction(
            ctx.db, ctx.station_id, connector, tag, p["meterStart"], p["timestamp"], None
        )
        return Handled({"transactionId": transaction_id, "idTagInfo": {"status": "Invalid"}})
    started_at = parse_time(p["timestamp"]) or datetime.now(UTC)
    replayed = await tx.replayed(
        ctx.db, ctx.station_id, connector, tag, p["meterStart"], started_at
    )
    if replayed is not None:  # a charger replaying its queue gets the same answer
        info = await store.id_tag_info(ctx.db, tag, accept_unknown=ctx.accept_unknown_tags)
        return Handled({"transactionId": replayed, "idTagInfo": info})
    other = await sessions_store.open_billed_session_on(ctx.db, ctx.station_id, connector)
    if other is not None and ctx.registry is not None:
        ref = ctx.registry.lookup(SESSION, str(other["id"]))
        if ref is not None:
            try:
                await ref.ask(Superseded(), timeout=10)
            except ActorError as error:
                log.warning(
                    "superseded session did not answer", session=str(other["id"]), error=str(error)
                )
    client = await store.tag_client(ctx.db, tag)
    billed = client is not None and await _billed(ctx)
    info = await _card_info(ctx, tag, client, billed)
    if client is not None and info["status"] == "Accepted" and billed:
        assert ctx.sessions is not None
        start = RfidStart(client, ctx.station_id, connector, tag, p["meterStart"], started_at)
        try:
            transaction_id = await ctx.sessions.start_rfid(start)
        except CpmsError as refusal:  # the client can't pay after all: the charger must stop
            log.info("card session refused", station=ctx.station_id, why=refusal.code)
            info = {**info, "status": "Blocked"}
        else:
            return Handled({"transactionId": transaction_id, "idTagInfo": info})
    transaction_id, _new = await tx.start_transaction(
        ctx.db,
        ctx.station_id,
        p["connectorId"],
        p["idTag"],
        p["meterStart"],
        p["timestamp"],
        client,
    )
    return Handled({"transactionId": transaction_id, "idTagInfo": info})


async def meter_values(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    ctx.check_connector(p["connectorId"], uid, allow_zero=True)
    samples = parse_samples(p["meterValue"], uid)
    transaction_id = p.get("transactionId")
    ctx.telemetry.samples(ctx.station_id, p["connectorId"], transaction_id, samples)
    if transaction_id is None:
        return Handled({})
    reading = summarize(samples)
    session_id = await ctx.app_session(transaction_id)
    if session_id is None:
        ctx.telemetry.reading(ctx.station_id, transaction_id, reading)
        return Handled({})
    at = max((s.sampled_at for s in samples), default=None) or datetime.now(UTC)
    energy = None if reading.energy_wh is None else int(reading.energy_wh)
    report = MeterReading(energy, reading.power_kw, reading.soc_percent, at)
    return Handled({}, (ToSession(session_id, report),))


async def stop_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    transaction_id = p["transactionId"]
    row = await tx.transaction(ctx.db, ctx.station_id, transaction_id)
    events: tuple[StationEvent, ...] = ()
    if row is not None and p.get("transactionData"):
        samples = parse_samples(p["transactionData"], uid)
        if row["status"] == "charging":  # a replayed stop must not add its samples again
            ctx.telemetry.samples(ctx.station_id, row["connector_id"], transaction_id, samples)
    if row is not None and row["hold_id"] is not None:
        # Recorded before the charger is answered, so a restart settles it; then the session's
        # actor settles now. A replayed stop changes nothing (the session has ended).
        stopped_at = parse_time(p["timestamp"]) or datetime.now(UTC)
        reason = p.get("reason") or "Local"
        stop = ChargerStopped(p["meterStop"], stopped_at, reason)
        recorded = await sessions_store.record_stop(
            ctx.db, row["id"], p["meterStop"], stopped_at, reason
        ) or await sessions_store.record_late_stop(ctx.db, row["id"], p["meterStop"], stopped_at)
        # its actor settles on it now; with none running (ended, retired) one is started to
        if recorded:
            events = (ToSession(row["id"], stop, wake=True),)
    else:
        await tx.stop_transaction(
            ctx.db, ctx.station_id, transaction_id, p["meterStop"], p["timestamp"], p.get("reason")
        )
    ctx.transactions.pop(transaction_id, None)
    if "idTag" not in p:
        return Handled({}, events)
    info = await store.id_tag_info(ctx.db, p["idTag"], accept_unknown=ctx.accept_unknown_tags)
    return Handled({"idTagInfo": info}, events)


async def data_transfer(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    vendor = ctx.vendors.get(p["vendorId"])
    if vendor is None:
        return Handled({"status": "UnknownVendorId"})
    return Handled(await vendor(ctx, p))


async def diagnostics_status(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    return Handled({}, records=(RecordField("diagnostics_status", p["status"]),))


async def firmware_status(ctx: StationContext, p: dict[str, Any], uid: str) -> Handled:
    return Handled({}, records=(RecordField("firmware_status", p["status"]),))


HANDLERS: dict[str, Handler] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "StartTransaction": start_transaction,
    "MeterValues": meter_values,
    "StopTransaction": stop_transaction,
    "DataTransfer": data_transfer,
    "DiagnosticsStatusNotification": diagnostics_status,
    "FirmwareStatusNotification": firmware_status,
}
