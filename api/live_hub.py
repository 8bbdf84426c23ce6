"""The app's live updates: who listens to what on ``/api/v1/ws/locations``
(:mod:`api.live_socket`), and what each event of the bus becomes for whom.

One task reads the event bus and hands each event, encoded once, to the clients it concerns:

* a :class:`StationStatusChanged` (``station_status_update``) to the channels ``all`` and
  ``location_stations:<its location>``;
* a :class:`LocationStatusChanged` (``location_status_update``) to ``all`` and
  ``location:<id>``;
* a :class:`SessionChanged` (``charging_update``) and a :class:`BalanceChanged`
  (``balance_update``: balance, reserved, total, read after the entry's commit) only to the
  sockets whose token proved that client.

A client's messages wait in its own bounded outbox (:data:`OUTBOX` messages); the hub never
waits for a socket. A client whose outbox is full is dropped: it is taken out of every channel
at once (nothing more is queued for it) and its socket closes with 1013 (try again later), so a
slow or stalled phone costs the others and the station actors nothing.

The hub keeps the last status of every station (those not heard from since start are
``offline``) for the full ``stations_update`` each client gets every 60 s.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
import trio

from actors.core import Core
from api.jsonio import dumps
from cpms.kernel.errors import NotFound
from cpms.kernel.events import (
    BalanceChanged,
    ConnectorShown,
    Event,
    LocationStatusChanged,
    SessionChanged,
    StationStatusChanged,
)
from cpms.kernel.timeutil import iso_now
from cpms.metrics import WS_CLIENTS, WS_DROPPED, WS_SENT
from storage import network, wallets
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("api.live")

OUTBOX = 512  # messages waiting for one client; one more and it is dropped as too slow
BUS_CAPACITY = 100_000  # events waiting for the hub (a burst of a whole network's statuses)
IDENT = r"[A-Za-z0-9._:-]{1,64}"
CHANNEL = re.compile(rf"^(all|location:{IDENT}|location_stations:{IDENT})$")
DEFAULT_CHANNELS = frozenset({"all"})  # seed 001: every client hears every location at first


#: most bus events dispatched before the hub lets the other tasks run
DISPATCH_BATCH = 256


@dataclass(frozen=True)
class LiveTimings:
    """The app socket's clock (settings ``CPMS_WS_*``)."""

    ping_every: float = 30.0
    refresh_every: float = 60.0
    first_refresh: float = 2.0  # time to narrow the channels before the first full picture
    idle: float = 90.0  # nothing heard from the app for this long: closed
    outbox: int = OUTBOX
    max_clients: int = 20_000  # more at once are turned away (each costs about 55 KB)


@dataclass(eq=False)
class LiveClient:
    """One app socket as the hub sees it."""

    client_id: str | None  # as the app says (``?client_id=``)
    outbox: trio.MemorySendChannel[str]
    channels: set[str] = field(default_factory=set)
    owner: str | None = None  # the client a token proved: its personal updates come here
    expires_at: float = 0.0  # when that proof ends (Unix time)
    dropped: trio.Event = field(default_factory=trio.Event)  # set when too slow
    forgotten: bool = False  # taken out of every channel
    #: the socket's own way to take a message at once (cpms's own port), instead of the outbox;
    #: False when too much waits for the app already
    direct: Callable[[str], bool] | None = None

    def offer(self, text: str) -> bool:
        """Queue ``text``; False (and the client marked dropped) when its outbox is full."""
        if self.dropped.is_set():
            return False
        if self.direct is not None:
            if self.direct(text):
                return True
            self.dropped.set()
            return False
        try:
            self.outbox.send_nowait(text)
        except trio.WouldBlock:
            self.dropped.set()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


class LiveHub:
    def __init__(self, core: Core, timings: LiveTimings | None = None) -> None:
        self.core = core
        self.timings = timings or LiveTimings()
        self.clients: set[LiveClient] = set()
        self.channels: defaultdict[str, set[LiveClient]] = defaultdict(set)
        self.owners: defaultdict[str, set[LiveClient]] = defaultdict(set)
        #: the last shown status of every station, and each location's stations
        self.stations: dict[str, StationStatusChanged] = {}
        self.at_location: defaultdict[str, dict[str, None]] = defaultdict(dict)
        self._balances_due: set[str] = set()
        self._balance_wake = trio.Event()
        self.closing = trio.Event()
        self.dropped_slow = 0

    # -- clients ----------------------------------------------------------------------------------

    def connect(self, client_id: str | None) -> tuple[LiveClient, trio.MemoryReceiveChannel[str]]:
        send, receive = trio.open_memory_channel[str](self.timings.outbox)
        client = LiveClient(client_id, send)
        self.clients.add(client)
        WS_CLIENTS.inc()
        for channel in DEFAULT_CHANNELS:
            self.subscribe(client, channel)
        return client, receive

    def disconnect(self, client: LiveClient) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        WS_CLIENTS.dec()
        self._forget(client)
        client.outbox.close()

    def _forget(self, client: LiveClient) -> None:
        client.forgotten = True
        for channel in client.channels:
            members = self.channels.get(channel)
            if members is not None:
                members.discard(client)
                if not members:
                    del self.channels[channel]
        client.channels = set()
        self.sign_off(client)

    def subscribe(self, client: LiveClient, channel: str) -> None:
        client.channels.add(channel)
        self.channels[channel].add(client)

    def unsubscribe(self, client: LiveClient, channel: str) -> None:
        client.channels.discard(channel)
        members = self.channels.get(channel)
        if members is not None:
            members.discard(client)
            if not members:
                del self.channels[channel]

    def authenticate(self, client: LiveClient, owner: UUID, expires_at: float) -> None:
        self.sign_off(client)
        client.owner, client.expires_at = str(owner), expires_at
        self.owners[client.owner].add(client)

    def sign_off(self, client: LiveClient) -> None:
        """No more personal updates for ``client`` (its token expired)."""
        if client.owner is not None:
            mine = self.owners.get(client.owner)
            if mine is not None:
                mine.discard(client)
                if not mine:
                    del self.owners[client.owner]
        client.owner = None

    def _personal(self, client_id: str) -> set[LiveClient]:
        """The sockets proven to be ``client_id``'s, their tokens still valid."""
        mine = self.owners.get(client_id)
        if not mine:
            return set()
        now = time.time()
        return {c for c in mine if c.expires_at > now}

    def _deliver(self, clients: set[LiveClient], text: str) -> None:
        sent = 0
        for client in list(clients):
            if client.offer(text):
                sent += 1
            elif client.dropped.is_set() and not client.forgotten:
                self.dropped_slow += 1
                WS_DROPPED.inc()
                log.info("app socket dropped: too slow", client=client.client_id)
                self._forget(client)
        WS_SENT.inc(sent)

    # -- the bus ----------------------------------------------------------------------------------

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the bus until ``shutdown`` (then every socket is told to close)."""
        with contextlib.suppress(StorageUnavailable):  # stations then show as they report
            for row in await network.station_board(self.core.db):
                self._keep(_offline(row))
        with self.core.bus.subscribe(capacity=BUS_CAPACITY) as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_balances)
                task_status.started()
                nursery.start_soon(self._follow, events)
                await shutdown.wait()
                self.closing.set()
                nursery.cancel_scope.cancel()

    async def _follow(self, events: trio.MemoryReceiveChannel[Event]) -> None:
        """Everything the bus holds is dispatched before the sockets' writers run, so a station's
        update and its location's go out to a socket together."""
        async for event in events:
            self.dispatch(event)
            with contextlib.suppress(trio.WouldBlock):
                for _ in range(DISPATCH_BATCH):  # then the others' turn
                    self.dispatch(events.receive_nowait())

    def dispatch(self, event: Event) -> None:
        if isinstance(event, StationStatusChanged):
            self._keep(event)
            audience = self.channels.get("all", set())
            if event.location_id is not None:
                audience = audience | self.channels.get(
                    f"location_stations:{event.location_id}", set()
                )
            if audience:
                self._deliver(audience, dumps(event.message()))
        elif isinstance(event, LocationStatusChanged):
            audience = self.channels.get("all", set()) | self.channels.get(
                f"location:{event.counts.location_id}", set()
            )
            if audience:
                self._deliver(audience, dumps(event.message()))
        elif isinstance(event, SessionChanged):
            mine = self._personal(event.client_id)
            if mine:
                self._deliver(mine, dumps(event.message()))
        elif isinstance(event, BalanceChanged) and event.client_id in self.owners:
            self._balances_due.add(event.client_id)
            self._balance_wake.set()

    def _keep(self, event: StationStatusChanged) -> None:
        before = self.stations.get(event.station_id)
        if before is not None and before.location_id != event.location_id:
            self.at_location[before.location_id or ""].pop(event.station_id, None)
        self.stations[event.station_id] = event
        self.at_location[event.location_id or ""][event.station_id] = None

    # -- balances ---------------------------------------------------------------------------------

    async def _send_balances(self) -> None:
        """Each client whose ledger moved gets its wallet as it is now (read after the commit;
        a burst of entries is one read)."""
        while True:
            await self._balance_wake.wait()
            self._balance_wake = trio.Event()
            due, self._balances_due = self._balances_due, set()
            for client_id in due:
                mine = self._personal(client_id)
                if not mine:
                    continue
                with contextlib.suppress(StorageUnavailable, NotFound):
                    self._deliver(mine, await self.balance_message(client_id))

    async def balance_message(self, client_id: str) -> str:
        """``balance_update`` for ``client_id`` as its wallet is now (seed 003 §6)."""
        balance, reserved = await wallets.wallet(self.core.db, UUID(client_id))
        return dumps(
            {
                "type": "balance_update",
                "client_id": client_id,
                "balance": balance,
                "reserved": reserved,
                "total": balance + reserved,
                "currency": "KGS",
                "timestamp": iso_now(),
            }
        )

    # -- the full picture -------------------------------------------------------------------------

    def stations_update(self, client: LiveClient) -> str | None:
        """Seed 000's ``stations_update``: every station the client's channels cover, as it is
        now; None when they cover none."""
        if "all" in client.channels:
            shown: list[StationStatusChanged] = list(self.stations.values())
        else:
            places = {c.split(":", 1)[1] for c in client.channels if c.startswith("location")}
            shown = [self.stations[s] for p in sorted(places) for s in self.at_location.get(p, {})]
        if not shown:
            return None
        stations = [
            {
                "station_id": s.station_id,
                "location_id": s.location_id,
                "status": s.status,
                "connectors": [c.shown() for c in s.connectors],
            }
            for s in shown
        ]
        return dumps({"type": "stations_update", "timestamp": iso_now(), "stations": stations})


def _offline(row: dict[str, Any]) -> StationStatusChanged:
    connectors = tuple(
        ConnectorShown(number, status, power, kind)
        for number, status, power, kind in zip(
            row["connector_ids"], row["statuses"], row["powers"], row["types"], strict=True
        )
    )
    return StationStatusChanged(row["id"], row["location_id"], "offline", connectors, iso_now())
