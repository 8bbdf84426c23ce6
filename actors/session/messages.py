"""Messages to a SessionActor, apart from the actor so the ChargePointActor can send them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from cpms.kernel.charging import Limit
from cpms.kernel.messages import Request

SESSION = "session"


@dataclass(frozen=True, slots=True)
class StartRequest:
    client_id: uuid.UUID
    station_id: str
    connector_id: int
    limit: Limit


@dataclass(frozen=True, slots=True)
class Begin(Request[dict[str, Any]]):
    """The first message: check, reserve, ask the charger to start. Answers the app's reply."""

    request: StartRequest


@dataclass(frozen=True, slots=True)
class ChargerStarted:
    transaction_id: int
    meter_start: int
    at: datetime


@dataclass(frozen=True, slots=True)
class MeterReading:
    energy_wh: int | None
    power_kw: Decimal | None
    soc_percent: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ChargerStopped:
    meter_stop: int
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Superseded(Request[None]):
    """The charger started another transaction on this session's connector: give the connector
    (and the money) back before that transaction is recorded."""


@dataclass(frozen=True, slots=True)
class StopSession(Request[dict[str, Any]]):
    """The owner's stop; answered once the session has ended (or with where it stands)."""

    client_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The charger did not take the RemoteStartTransaction (rejected, failed, unanswered)."""

    why: str


@dataclass(frozen=True, slots=True)
class StopAnswer:
    """What became of a RemoteStopTransaction: accepted, or not (``why``)."""

    accepted: bool
    why: str | None = None


def session_tag(session_id: uuid.UUID) -> str:
    """The idTag the charger gets for an app session (OCPP allows 20 characters)."""
    return "A" + session_id.hex[:19].upper()


def hold_for(session_id: uuid.UUID) -> uuid.UUID:
    """The session's hold id, derived so that a reservation repeated after a crash is the same."""
    return uuid.uuid5(session_id, "hold")


@dataclass(frozen=True, slots=True)
class RfidStart:
    """A transaction a driver began at the charger with a card that belongs to a client."""

    client_id: uuid.UUID
    station_id: str
    connector_id: int
    id_tag: str
    meter_start: int
    at: datetime


@dataclass(frozen=True, slots=True)
class BeginRfid(Request[int]):
    """The first message of a charger-begun session: hold money, answer the transaction id."""

    start: RfidStart


class RfidSessions(Protocol):
    """What a ChargePointActor needs to bill a card's transaction to its client."""

    async def start_rfid(self, start: RfidStart) -> int: ...

    async def wake(self, session_id: uuid.UUID) -> None:
        """Start the session's actor if none runs (it reads what its row says and goes on)."""
        ...

    async def billed(self, station_id: str) -> bool:
        """Whether card transactions at the station are billed (it, or its location, has a
        tariff)."""
        ...


SessionMsg = (
    Begin
    | BeginRfid
    | ChargerStarted
    | MeterReading
    | ChargerStopped
    | Superseded
    | StopSession
    | StartFailed
    | StopAnswer
)
