"""The live hub on its own (no sockets): who gets which event, and the backpressure rule (a
client whose outbox is full is dropped at once; the others and the publisher never wait)."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import trio

from api.live_hub import LiveHub, LiveTimings
from cpms.kernel.events import (
    ConnectorShown,
    LocationCounts,
    LocationStatusChanged,
    SessionChanged,
    StationStatusChanged,
)


def hub(outbox: int = 4) -> LiveHub:
    return LiveHub(None, LiveTimings(outbox=outbox))  # type: ignore[arg-type]  # no database


def station(name: str, location: str | None = "L1", status: str = "available") -> Any:
    shown = (ConnectorShown(1, "Available", Decimal("22.0"), "Type2"),)
    return StationStatusChanged(name, location, status, shown, "2026-12-03T00:00:00Z")  # type: ignore[arg-type]


def drained(box: trio.MemoryReceiveChannel[str]) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(json.loads(box.receive_nowait()))
        except trio.WouldBlock:
            return out


async def test_a_full_outbox_drops_its_client_and_nobody_waits() -> None:
    live = hub(outbox=4)
    fast, fast_box = live.connect(None)
    slow, slow_box = live.connect(None)
    for n in range(50):
        live.dispatch(station(f"CP-{n}"))  # never awaits: a full outbox can't hold it up
        assert [m["data"]["station_id"] for m in drained(fast_box)] == [f"CP-{n}"]
    assert slow.dropped.is_set() and slow.forgotten and live.dropped_slow == 1
    assert slow not in live.channels["all"] and fast in live.channels["all"]
    assert [m["data"]["station_id"] for m in drained(slow_box)] == ["CP-0", "CP-1", "CP-2", "CP-3"]
    live.dispatch(station("CP-late"))
    assert drained(slow_box) == []  # nothing more is queued for a dropped client
    live.disconnect(slow)
    live.disconnect(fast)
    assert not live.clients and not live.channels


async def test_events_reach_the_channels_they_concern() -> None:
    live = hub(outbox=100)
    _everything, all_box = live.connect(None)
    places, places_box = live.connect(None)
    live.unsubscribe(places, "all")
    live.subscribe(places, "location:L2")
    live.subscribe(places, "location_stations:L1")
    live.dispatch(station("CP-1", "L1"))
    live.dispatch(station("CP-9", "L9"))
    live.dispatch(station("CP-0", None))  # a station at no location: `all` hears it
    counts = LocationCounts("L2", "available", 2, 2, 1, 1, 0)
    live.dispatch(LocationStatusChanged(counts, "2026-12-03T00:00:00Z"))
    assert [m.get("data", {}).get("station_id") or m["type"] for m in drained(all_box)] == [
        "CP-1",
        "CP-9",
        "CP-0",
        "location_status_update",
    ]
    got = drained(places_box)
    assert [m["type"] for m in got] == ["station_status_update", "location_status_update"]
    assert got[0]["data"]["station_id"] == "CP-1" and got[1]["data"]["location_id"] == "L2"

    full = live.stations_update(places)
    assert full is not None
    assert [s["station_id"] for s in json.loads(full)["stations"]] == ["CP-1"]
    live.dispatch(station("CP-1", "L2"))  # moved to another location: shown there from now on
    shown = json.loads(live.stations_update(places) or "{}")["stations"]
    assert [s["station_id"] for s in shown] == ["CP-1"] and shown[0]["location_id"] == "L2"
    live.unsubscribe(places, "location:L2")
    live.unsubscribe(places, "location_stations:L1")
    assert live.stations_update(places) is None  # no channel: no picture
    for client in list(live.clients):
        live.disconnect(client)


async def test_personal_events_reach_their_owner_while_the_proof_lasts() -> None:
    live = hub(outbox=100)
    owner = uuid.uuid4()
    mine, my_box = live.connect(str(owner))
    stranger, stranger_box = live.connect(None)
    live.authenticate(stranger, uuid.uuid4(), time.time() + 600)
    view = {"id": "s-1", "status": "charging", "energy_consumed": Decimal("1.5")}
    live.dispatch(SessionChanged(str(owner), view))
    assert drained(my_box) == []  # not proven yet
    live.authenticate(mine, owner, time.time() + 600)
    live.dispatch(SessionChanged(str(owner), view))
    update = drained(my_box)
    assert update[0]["type"] == "charging_update" and update[0]["data"]["session_id"] == "s-1"
    assert update[0]["data"]["energy_consumed"] == 1.5
    assert drained(stranger_box) == []
    live.authenticate(mine, owner, time.time() - 1)  # the token has expired
    live.dispatch(SessionChanged(str(owner), view))
    assert drained(my_box) == []
    live.sign_off(mine)
    assert str(owner) not in live.owners
    for client in list(live.clients):
        live.disconnect(client)
    assert not live.owners
