"""The status model: a connector's OCPP status → its station's → its location's, with the
counts the app shows (available / occupied / out of order). Pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

StationStatus = Literal["available", "occupied", "offline", "maintenance"]
LocationStatus = Literal["available", "occupied", "offline", "maintenance", "partial"]

#: The nine OCPP 1.6 ChargePointStatus values.
CONNECTOR_STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)
IN_USE = frozenset(
    {"Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing", "Reserved"}
)
#: a connector in one of these is taken: no new session can start on it
BUSY = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved"})
#: a connector in one of these has a transaction running; in one of ``IDLE``, it has none
IN_TRANSACTION = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})
IDLE = frozenset({"Available", "Preparing", "Finishing", "Unavailable"})


def station_status(online: bool, admin_status: str, connectors: Iterable[str]) -> StationStatus:
    """``offline`` without a frame for the timeout; ``maintenance`` when an operator says so or
    nothing is usable; ``available`` when a connector is free; ``occupied`` when all are busy."""
    if not online:
        return "offline"
    if admin_status != "active":
        return "maintenance"
    statuses = list(connectors)
    if any(s == "Available" for s in statuses):
        return "available"
    if any(s in IN_USE for s in statuses):
        return "occupied"
    return "maintenance"


def location_status(stations: Iterable[StationStatus]) -> LocationStatus:
    """Priority: offline > maintenance > occupied (all) > available (all) > partial."""
    statuses = list(stations)
    if not statuses or "offline" in statuses:
        return "offline"
    if "maintenance" in statuses:
        return "maintenance"
    if all(s == "occupied" for s in statuses):
        return "occupied"
    if all(s == "available" for s in statuses):
        return "available"
    return "partial"
