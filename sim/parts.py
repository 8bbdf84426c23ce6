"""The simulator's parts: a charger's connectors and transactions, its outbox's items, the
failures of a call, and the configuration keys a charger knows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from sim.curve import Vehicle, electrical

Payload = dict[str, Any]
#: What to do once a command's answer has gone out (start the transaction it asked for, ...).
After = Callable[[], Any] | None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Offline(Exception):
    """The charger is not connected (or lost the connection before an answer came)."""


#: Reasons a connection attempt or a connection failed, as counted in the report.
TRANSIENT = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, Offline)


class CallFailed(Exception):
    """The central system answered a CALL with a CALLERROR, or not in time."""

    def __init__(self, action: str, code: str, description: str = "") -> None:
        super().__init__(f"{action}: {code} {description}".strip())
        self.code = code


@dataclass(eq=False)
class Outgoing:
    action: str
    build: Callable[[], Payload]
    durable: bool
    done: Callable[[Payload], None] | None = None
    event: trio.Event = field(default_factory=trio.Event)
    result: Payload | None = None
    error: Exception | None = None
    tries: int = 0

    def resolve(self, result: Payload | None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        if error is None and self.done is not None and result is not None:
            self.done(result)
        self.event.set()


@dataclass(eq=False)
class Transaction:
    connector_id: int
    id_tag: str
    meter_start: int
    vehicle: Vehicle
    started_at: str
    transaction_id: int | None = None
    stop_reason: str | None = None
    stop: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()


@dataclass(eq=False)
class Connector:
    connector_id: int
    power_kw: float
    dc: bool
    status: str = "Available"
    error_code: str = "NoError"
    energy: float = 0.0  # Wh, the meter register (monotonic)
    power: float = 0.0  # kW now
    tx: Transaction | None = None
    reservation_id: int | None = None
    limit_kw: float | None = None  # from a charging profile
    inoperative: bool = False
    scheduled_availability: str | None = None
    history: list[str] = field(default_factory=list)

    @property
    def register(self) -> int:
        return int(self.energy)

    def offered_kw(self) -> float:
        return self.power_kw if self.limit_kw is None else min(self.power_kw, self.limit_kw)


READ_ONLY = {"NumberOfConnectors", "SupportedFeatureProfiles", "ChargeProfileMaxStackLevel"}
INTEGER_KEYS = {
    "HeartbeatInterval",
    "MeterValueSampleInterval",
    "ConnectionTimeOut",
    "ResetRetries",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "ClockAlignedDataInterval",
}
BOOLEAN_KEYS = {
    "AuthorizeRemoteTxRequests",
    "LocalAuthListEnabled",
    "StopTransactionOnEVSideDisconnect",
    "UnlockConnectorOnEVSideDisconnect",
}
TRIGGERABLE = {
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
}


def sampled_values(connector: Connector, tx: Transaction | None, context: str) -> list[Payload]:
    """A MeterValues sample of the connector now: energy register, power, current, voltage, and
    the vehicle's state of charge during a transaction."""
    current, voltage = electrical(connector.power, dc=connector.dc)
    sampled = [
        {
            "value": str(connector.register),
            "context": context,
            "measurand": "Energy.Active.Import.Register",
            "unit": "Wh",
        },
        {
            "value": f"{connector.power * 1000:.0f}",
            "context": context,
            "measurand": "Power.Active.Import",
            "unit": "W",
        },
        {
            "value": f"{current:.1f}",
            "context": context,
            "measurand": "Current.Import",
            "unit": "A",
        },
        {"value": f"{voltage:.0f}", "context": context, "measurand": "Voltage", "unit": "V"},
    ]
    if tx is not None:
        sampled.append(
            {
                "value": f"{tx.vehicle.soc:.0f}",
                "context": context,
                "measurand": "SoC",
                "unit": "Percent",
                "location": "EV",
            }
        )
    return sampled
