"""What every SessionActor is given: storage, the ledger, the registry, the bus, the stations'
tariffs, the machine's timings, how meter readings are judged, and the machine's clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from actors.charge_point.config import StationTariffs
from actors.charge_point.messages import Snapshot
from actors.ledger import Ledger
from actors.runtime import Registry
from actors.session.machine import Timings
from cpms.kernel.charging import Plausibility
from cpms.kernel.events import EventBus
from storage import Database


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MeterBounds:
    """How a session judges its meter readings (:class:`cpms.kernel.charging.Plausibility`): at most
    the connector's rated power × ``margin``, plus ``slack_wh``; a connector with no rated
    power configured is taken to deliver at most ``unknown_power_kw``."""

    margin: Decimal = Decimal("1.25")
    slack_wh: int = 1000
    unknown_power_kw: Decimal = Decimal("350")


@dataclass(frozen=True)
class SessionDeps:
    db: Database
    ledger: Ledger
    registry: Registry
    bus: EventBus
    tariffs: StationTariffs
    timings: Timings = field(default_factory=Timings)
    meter_bounds: MeterBounds = MeterBounds()
    #: the session machine's clock (a test's can run ahead)
    clock: Callable[[], datetime] = utc_now

    def plausibility(self, snapshot: Snapshot | None, connector_id: int) -> Plausibility:
        """What the connector's meter can plausibly count, by its rated power as its station
        shows it (its record when no actor shows it: read at the session's next restart)."""
        bounds, t = self.meter_bounds, self.timings
        connector = None if snapshot is None else snapshot.connectors.get(connector_id)
        power = (connector and connector.power_kw) or bounds.unknown_power_kw
        # the longest a transaction is counted: to the cap, the grace for an offline charger,
        # and an hour for the charger to answer the stop
        hours = Decimal(int(t.max_duration + t.offline_grace)) / 3600 + 1
        return Plausibility(Decimal(power), bounds.margin, bounds.slack_wh, hours)
