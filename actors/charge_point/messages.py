"""What a ChargePointActor is sent, and what it shows: its inbox's messages, the connection it
reads, and the snapshot of the station's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

from actors.runtime import Registry
from cpms.kernel.errors import Unavailable
from cpms.kernel.messages import Request
from cpms.ocpp.connector_state import ConnectorState

STATION = "station"


class ChargerLink(Protocol):
    """The charger's WebSocket as the actor sees it: bytes in and out, nothing more."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection has ended. Safe to cancel."""
        ...

    async def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Let the link go and have its connection closed with ``code`` (not by the actor:
        waiting for the charger's closing handshake is no actor's business)."""
        ...

    def release(self) -> None:
        """The actor no longer reads this link (detached, replaced, or the actor stopped): its
        connection is closed."""
        ...


@dataclass(frozen=True, slots=True)
class Attach:
    """A charger connected; replaces any previous connection. The actor reads it from now on
    and calls its ``release()`` when it stops."""

    link: ChargerLink


@dataclass(frozen=True, slots=True)
class Command(Request[dict[str, Any]]):
    """Send ``action`` to the charger and answer with its (validated) reply payload."""

    action: str
    payload: dict[str, Any]
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    station_id: str
    connected: bool
    online: bool
    registration: str
    admin_status: str
    status: str
    connectors: dict[int, ConnectorState]

    @property
    def configured(self) -> frozenset[int]:
        """The connectors an operator set up (a charger may report others)."""
        return frozenset(n for n, c in self.connectors.items() if c.configured)


@dataclass(frozen=True, slots=True)
class GetSnapshot(Request[Snapshot]):
    pass


@dataclass(frozen=True, slots=True)
class Reload(Request[None]):
    """The station's record changed (admin status, password, connectors): read it again.
    Operators' changes made elsewhere (the CLI) come as database notifications
    (:mod:`actors.charge_point.config`)."""


StationMsg = Attach | Command | GetSnapshot | Reload


class ChargerError(Unavailable):
    """The charger answered a command with a CALLERROR."""

    code = "ocpp_communication_error"


#: the address kind under which a station's actor shows its :class:`Door`
DOOR = "station-door"


@dataclass(frozen=True, slots=True)
class Door:
    """What the OCPP door needs of a known station, shown by its running actor: a reconnect
    storm asks no database round trip per charger."""

    password_hash: str | None
    #: the verifier of the password last accepted (actors.charge_point.passwords), if any
    verifier: str | None = None


def shown_door(registry: Registry, station_id: str) -> Door | None:
    """The station's door as its actor shows it; None when none runs or its record is gone
    (then the database decides)."""
    view = registry.view(DOOR, station_id)
    return None if view is None else cast(Door | None, view())


def shown_snapshot(registry: Registry, station_id: str) -> Snapshot | None:
    """The station's state as its running ChargePointActor shows it now, read without asking;
    None when no actor shows it (none runs, or one is between a crash and its restart)."""
    view = registry.view(STATION, station_id)
    return None if view is None else cast(Snapshot, view())
