"""What the central system answers to each CALL a charge point sends (OCPP 1.6).

Each handler gets the station's context and an already schema-validated payload, does its
storage work, and returns the response payload; a semantic problem is an ``OcppError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cpms.ocpp.frames import Frame, OcppError
from cpms.ocpp.meter import parse_samples, summarize
from cpms.ocpp.telemetry import Telemetry
from storage import Database, Row
from storage import stations as store
from storage import transactions as tx

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
        by_station: dict[str, list[Row]] = {}
        for c in await db.fetch("SELECT * FROM connectors ORDER BY station_id, connector_id"):
            by_station.setdefault(c["station_id"], []).append(c)
        return {
            row["id"]: cls._from_rows(db, row, by_station.get(row["id"], []), telemetry)
            for row in await db.fetch("SELECT * FROM stations ORDER BY id")
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
        self.changed = True

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
    info = await store.id_tag_info(ctx.db, p["idTag"], accept_unknown=ctx.accept_unknown_tags)
    return {"idTagInfo": info}


async def start_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    ctx.check_connector(p["connectorId"], uid, allow_zero=False)
    info = await store.id_tag_info(ctx.db, p["idTag"], accept_unknown=ctx.accept_unknown_tags)
    client = await store.tag_client(ctx.db, p["idTag"])
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
    if transaction_id is not None:
        ctx.telemetry.reading(ctx.station_id, transaction_id, summarize(samples))
    return {}


async def stop_transaction(ctx: StationContext, p: dict[str, Any], uid: str) -> dict[str, Any]:
    transaction_id = p["transactionId"]
    row = await tx.transaction(ctx.db, ctx.station_id, transaction_id)
    if row is not None and p.get("transactionData"):
        samples = parse_samples(p["transactionData"], uid)
        if row["status"] == "charging":  # a replayed stop must not add its samples again
            ctx.telemetry.samples(ctx.station_id, row["connector_id"], transaction_id, samples)
    await tx.stop_transaction(
        ctx.db, ctx.station_id, transaction_id, p["meterStop"], p["timestamp"], p.get("reason")
    )
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
