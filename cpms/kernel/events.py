"""The in-process event bus and the events it carries: typed, frozen, and each able to say
itself as the app's WebSocket message (``{"type": ..., "data": {...}}``).

Publishing never blocks: a subscriber that falls behind its bounded queue loses events (counted
in ``dropped``) rather than slowing a charger down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import trio

from cpms.kernel.status import LocationStatus, StationStatus


@dataclass(frozen=True, slots=True)
class ConnectorShown:
    """A configured connector as a station's status update shows it."""

    connector_id: int
    status: str
    power_kw: Decimal | None
    connector_type: str | None = None

    def shown(self) -> dict[str, Any]:
        return {
            "connector_id": self.connector_id,
            "type": self.connector_type,
            "status": self.status,
            "power_kw": self.power_kw,
        }


@dataclass(frozen=True, slots=True)
class StationStatusChanged:
    """A station's status or one of its connectors' changed (or was read again)."""

    station_id: str
    location_id: str | None
    status: StationStatus
    connectors: tuple[ConnectorShown, ...]
    timestamp: str

    def message(self) -> dict[str, Any]:
        return {
            "type": "station_status_update",
            "data": {
                "station_id": self.station_id,
                "location_id": self.location_id,
                "status": self.status,
                "connectors": [c.shown() for c in self.connectors],
                "timestamp": self.timestamp,
            },
        }


@dataclass(frozen=True, slots=True)
class LocationCounts:
    """A location's status and counts, as the app's station list shows them."""

    location_id: str
    status: LocationStatus
    available_connectors: int
    total_connectors: int
    stations_count: int
    available_stations: int
    occupied_stations: int


@dataclass(frozen=True, slots=True)
class LocationStatusChanged:
    counts: LocationCounts
    timestamp: str

    def message(self) -> dict[str, Any]:
        c = self.counts
        return {
            "type": "location_status_update",
            "data": {
                "location_id": c.location_id,
                "status": c.status,
                "available_connectors": c.available_connectors,
                "total_connectors": c.total_connectors,
                "stations_count": c.stations_count,
                "available_stations": c.available_stations,
                "occupied_stations": c.occupied_stations,
                "timestamp": self.timestamp,
            },
        }


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A charging session's view (as ``GET /charging/status`` shows it) after a change: its
    start, each meter reading while it charges, its stop and its settlement."""

    client_id: str
    view: dict[str, Any]

    def message(self) -> dict[str, Any]:
        return {"type": "charging_update", "data": {"session_id": self.view["id"], **self.view}}


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    """A ledger entry of this client was committed (its balance or holds moved)."""

    client_id: str


@dataclass(frozen=True, slots=True)
class SessionMilestone:
    """A charging session entered a new phase (once per phase: a restarted actor resumes in
    the phase it had). ``view`` is the session as ``GET /charging/status`` shows it after the
    phase's work (a settlement's final cost and refund included)."""

    client_id: str
    view: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PaymentConfirmed:
    """A top-up was credited to the client's wallet (once per payment)."""

    client_id: str
    invoice_id: str
    amount: Decimal
    balance: Decimal | None


Event = (
    StationStatusChanged
    | LocationStatusChanged
    | SessionChanged
    | BalanceChanged
    | SessionMilestone
    | PaymentConfirmed
)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()
        self.dropped = 0
        self.published = 0

    def publish(self, event: Event) -> None:
        self.published += 1
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._subscribers.discard(channel)

    @contextmanager
    def subscribe(self, capacity: int = 1000) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """Receive events published from now on, until the ``with`` block ends."""
        send, receive = trio.open_memory_channel[Event](capacity)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()


async def in_batches(
    events: trio.MemoryReceiveChannel[Event], limit: int = 256
) -> AsyncIterator[list[Event]]:
    """A subscription's events as they come, with whatever else is queued behind each (up to
    ``limit``): one task switch a batch. (trio's ``receive`` yields to the scheduler even when
    an event is waiting: in a reconnect storm every subscriber was switched to once per event.)
    """
    async for first in events:
        batch = [first]
        with suppress(trio.WouldBlock):  # nothing more queued
            while len(batch) < limit:
                batch.append(events.receive_nowait())
        yield batch
