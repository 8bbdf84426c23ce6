"""What the central system answers to each CALL a charge point sends (OCPP 1.6).

Each handler gets the station's context and an already schema-validated payload, does its
storage work, and returns the response payload; a semantic problem is an ``OcppError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from actors.charge_point.telemetry import Telemetry
from actors.runtime._registry import Registry
from actors.runtime.errors import ActorError, ActorUnavailable
from actors.session.messages import (
    SESSION,
    ChargerStarted,
    ChargerStopped,
    MeterReading,
    RfidSessions,
    RfidStart,
    SessionMsg,
    Superseded,
)
from cpms.kernel.charging import NO_LIMIT_MINIMUM
from cpms.kernel.errors import CpmsError
from cpms.kernel.timeutil import parse_time
from cpms.ocpp.frames import Frame, OcppError
from cpms.ocpp.meter import parse_samples, summarize
from storage import Database, Row, clients
from storage import sessions as sessions_store
from storage import stations as store
from storage import transactions as tx

log = structlog.stdlib.get_logger("actors.charge_point.actor")

HEARTBEAT_INTERVAL = 60
RETRY_INTERVAL = 30


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StationContext:
    """What the handlers of one station share: its settings, connectors and storage."""

    db: Database
    station_id: str
    location_id: str | None
    registration: str
    admin_status: str
    accept_unknown_tags: bool
    connectors_count: int
    connectors: dict[int, dict[str, Any]]
    telemetry: Telemetry
    changed: bool = False
    #: where the app's sessions are found; None in a central system without them (tests)
    registry: Registry | None = None
    #: bills card transactions to their clients; None in a central system without sessions
    sessions: RfidSessions | None = None
    #: transaction id → its billed session's id, or None for an unbilled one (MeterValues come
    #: every few seconds: the database is asked once per transaction)
    transactions: dict[int, uuid.UUID | None] = field(default_factory=dict)
    vendors: dict[str, Callable[[StationContext, dict[str, Any]], Awaitable[dict[str, Any]]]] = (
        field(default_factory=dict)
    )

    @classmethod
    async def load(cls, db: Database, station_id: str, telemetry: Telemetry) -> StationContext:
        row = await store.get_station(db, station_id)
        if row is None:
            raise LookupError(f"station {station_id} is not provisioned")
        return cls._from_rows(db, row, await store.connectors(db, station_id), telemetry)

    @classmethod
    async def load_all(cls, db: Database, telemetry: Telemetry) -> dict[str, StationContext]:
        """Every station's context in two queries (start-up with thousands of stations)."""
        return {
            row["id"]: cls._from_rows(db, row, connectors, telemetry)
            for row, connectors in await store.all_with_connectors(db)
        }

    @classmethod
    def _from_rows(
        cls, db: Database, row: Row, connector_rows: list[Row], telemetry: Telemetry
    ) -> StationContext:
        connectors = {
            c["connector_id"]: {
                "status": c["status"],
                "error_code": c["error_code"],
                "connector_type": c["connector_type"],
                "power_kw": c["power_kw"],
                "configured": True,
            }
            for c in connector_rows
        }
        return cls(
            db,
            row["id"],
            row["location_id"],
            row["registration_status"],
            row["admin_status"],
            row["accept_unknown_tags"],
            row["connectors_count"],
            connectors,
            telemetry,
        )

    async def refresh(self) -> None:
        """Take up what an operator changed: registration, admin status, connectors."""
        fresh = await StationContext.load(self.db, self.station_id, self.telemetry)
        for name in (
            "location_id",
            "registration",
            "admin_status",
            "accept_unknown_tags",
            "connectors_count",
        ):
            setattr(self, name, getattr(fresh, name))
        for number, connector in fresh.connectors.items():
            known = self.connectors.setdefault(number, connector)
            known.update(
                configured=True,
                connector_type=connector["connector_type"],
                power_kw=connector["power_kw"],
            )
        for number, known in self.connectors.items():
            if number not in fresh.connectors:  # removed by an operator
                known["configured"] = False
        self.changed = True

    async def tell_session(self, session_id: uuid.UUID, message: SessionMsg) -> bool:
        """Pass a charger's report to its session; False when the session has no actor (it has
        ended, or is being restarted and will read what was recorded)."""
        ref = None if self.registry is None else self.registry.lookup(SESSION, str(session_id))
        if ref is None:
            return False
        try:
            await ref.tell(message)
        except ActorUnavailable:  # it ended between the lookup and the tell
            return False
        return True

    async def app_session(self, transaction_id: int) -> uuid.UUID | None:
        """The billed session (app or card) behind one of this station's transactions."""
        if transaction_id in self.transactions:
            return self.transactions[transaction_id]
        row = await tx.transaction(self.db, self.station_id, transaction_id)
        session_id: uuid.UUID | None = None
        if row is not None and row["hold_id"] is not None:  # billed: it has an actor
            session_id = row["id"]
        self.transactions[transaction_id] = session_id
        return session_id

    def log_message(
        self, direction: str, frame: Frame, action: str | None = None, text: str | None = None
    ) -> None:
        self.telemetry.frame(self.station_id, direction, frame, action, text)

    def check_connector(self, connector_id: int, unique_id: str, *, allow_zero: bool) -> None:
        low = 0 if allow_zero else 1
        if not low <= connector_id <= self.connectors_count:
            raise OcppError(
                "PropertyConstraintViolation",
                f"connectorId {connector_id} is outside {low}..{self.connectors_count}",
                unique_id,
            )


Handler = Callable[[StationContext, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def boot_notification(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    # A (re)booting charger gets the registration an operator set, even from another process.
    await ctx.refresh()
    await store.record_boot(ctx.db, ctx.station_id, p)
    await store.record_seen(ctx.db, ctx.station_id, online=True, heartbeat=True)
    interval = HEARTBEAT_INTERVAL if ctx.registration == "Accepted" else RETRY_INTERVAL
    return {"status": ctx.registration, "currentTime": now_iso(), "interval": interval}


async def heartbeat(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    ctx.telemetry.heartbeat(ctx.station_id)
    return {"currentTime": now_iso()}


async def status_notification(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    connector = p["connectorId"]
    ctx.check_connector(connector, uid, allow_zero=True)
    if connector > 0:
        state = ctx.connectors.setdefault(connector, {"configured": False})
        state.update(
            status=p["status"],
            error_code=p["errorCode"],
            info=p.get("info"),
            vendor_error_code=p.get("vendorErrorCode"),
        )
    await store.record_status(ctx.db, ctx.station_id, p)
    ctx.changed = True
    return {}


async def authorize(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    if await sessions_store.open_by_tag(ctx.db, ctx.station_id, p["idTag"]) is not None:
        return {"idTagInfo": {"status": "Accepted"}}  # an app session's own tag
    client = await store.tag_client(ctx.db, p["idTag"])
    billed = client is not None and await _billed(ctx)
    return {"idTagInfo": await _card_info(ctx, p["idTag"], client, billed)}


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


async def start_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
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
            await ctx.tell_session(
                session["id"], ChargerStarted(attached, p["meterStart"], started_at)
            )
            return {"transactionId": attached, "idTagInfo": {"status": "Accepted"}}
        # the session ended a moment ago (stopped, timed out): the charger must not charge
        transaction_id, _new = await tx.start_transaction(
            ctx.db, ctx.station_id, connector, tag, p["meterStart"], p["timestamp"], None
        )
        return {"transactionId": transaction_id, "idTagInfo": {"status": "Invalid"}}
    started_at = parse_time(p["timestamp"]) or datetime.now(UTC)
    replayed = await tx.replayed(
        ctx.db, ctx.station_id, connector, tag, p["meterStart"], started_at
    )
    if replayed is not None:  # a charger replaying its queue gets the same answer
        info = await store.id_tag_info(ctx.db, tag, accept_unknown=ctx.accept_unknown_tags)
        return {"transactionId": replayed, "idTagInfo": info}
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
            return {"transactionId": transaction_id, "idTagInfo": info}
    transaction_id, _new = await tx.start_transaction(
        ctx.db,
        ctx.station_id,
        p["connectorId"],
        p["idTag"],
        p["meterStart"],
        p["timestamp"],
        client,
    )
    return {"transactionId": transaction_id, "idTagInfo": info}


async def meter_values(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    ctx.check_connector(p["connectorId"], uid, allow_zero=True)
    samples = parse_samples(p["meterValue"], uid)
    transaction_id = p.get("transactionId")
    ctx.telemetry.samples(ctx.station_id, p["connectorId"], transaction_id, samples)
    if transaction_id is None:
        return {}
    reading = summarize(samples)
    session_id = await ctx.app_session(transaction_id)
    if session_id is None:
        ctx.telemetry.reading(ctx.station_id, transaction_id, reading)
        return {}
    at = max((s.sampled_at for s in samples), default=None) or datetime.now(UTC)
    await ctx.tell_session(
        session_id,
        MeterReading(
            None if reading.energy_wh is None else int(reading.energy_wh),
            reading.power_kw,
            reading.soc_percent,
            at,
        ),
    )
    return {}


async def stop_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    transaction_id = p["transactionId"]
    row = await tx.transaction(ctx.db, ctx.station_id, transaction_id)
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
        if recorded and not await ctx.tell_session(row["id"], stop) and ctx.sessions is not None:
            await ctx.sessions.wake(row["id"])
    else:
        await tx.stop_transaction(
            ctx.db, ctx.station_id, transaction_id, p["meterStop"], p["timestamp"], p.get("reason")
        )
    ctx.transactions.pop(transaction_id, None)
    if "idTag" not in p:
        return {}
    info = await store.id_tag_info(ctx.db, p["idTag"], accept_unknown=ctx.accept_unknown_tags)
    return {"idTagInfo": info}


async def data_transfer(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    vendor = ctx.vendors.get(p["vendorId"])
    if vendor is None:
        return {"status": "UnknownVendorId"}
    return await vendor(ctx, p)


async def diagnostics_status(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    await store.record_field(ctx.db, ctx.station_id, "diagnostics_status", p["status"])
    return {}


async def firmware_status(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    await store.record_field(ctx.db, ctx.station_id, "firmware_status", p["status"])
    return {}


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
