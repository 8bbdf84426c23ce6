"""Location status: aggregates station events into location events.

Listens to every :class:`StationStatusChanged` on the event bus, keeps each location's stations and
connectors, and publishes the location's status and counts whenever one of them changes.
Stations that have not reported since start count as offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from cpms.kernel.events import (
    EventBus,
    LocationCounts,
    LocationStatusChanged,
    StationStatusChanged,
    in_batches,
)
from cpms.kernel.status import StationStatus, location_status
from cpms.kernel.timeutil import iso_now
from storage import Database, network


@dataclass
class _Station:
    location_id: str | None
    status: StationStatus = "offline"
    connectors: list[str] = field(default_factory=list)


def summary(location_id: str, stations: list[_Station]) -> LocationCounts:
    """A location's status and counts, from its ``stations``."""
    statuses = [s.status for s in stations]
    connectors = [c for s in stations if s.status != "offline" for c in s.connectors]
    return LocationCounts(
        location_id=location_id,
        status=location_status(statuses),
        available_connectors=sum(1 for c in connectors if c == "Available"),
        total_connectors=sum(len(s.connectors) for s in stations),
        stations_count=len(stations),
        available_stations=statuses.count("available"),
        occupied_stations=statuses.count("occupied"),
    )


async def run_location_status(
    db: Database, bus: EventBus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Publish location updates until cancelled; ready once subscribed."""
    stations: dict[str, _Station] = {}
    #: each location's stations (a location is summed from its own, never from all of them)
    at: dict[str | None, dict[str, _Station]] = {}
    for row in await network.connector_statuses(db):
        station = _Station(row["location_id"], "offline", list(row["connectors"]))
        stations[row["id"]] = station
        at.setdefault(station.location_id, {})[row["id"]] = station
    last: dict[str, LocationCounts] = {}

    def take(event: StationStatusChanged) -> None:
        station = stations.setdefault(event.station_id, _Station(event.location_id))
        moved_from = station.location_id  # a station moved: its old location changes too
        at.get(moved_from, {}).pop(event.station_id, None)
        station.location_id = event.location_id
        at.setdefault(station.location_id, {})[event.station_id] = station
        station.status = event.status
        station.connectors = [c.status for c in event.connectors]
        for location in dict.fromkeys((moved_from, station.location_id)):
            if location is None:
                continue
            current = summary(location, list(at.get(location, {}).values()))
            if last.get(location) != current:
                last[location] = current
                bus.publish(LocationStatusChanged(current, iso_now()))

    with bus.subscribe(capacity=10_000) as events:
        task_status.started()
        async for batch in in_batches(events):
            for event in batch:
                if isinstance(event, StationStatusChanged):
                    take(event)
