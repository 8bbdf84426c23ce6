"""A charger's WebSocket as its actor holds it, and how it is let go.

The connection's own task ends once the station's actor has the link (:mod:`.listener`): the
actor reads and writes the socket itself, with no task in between, and when it lets the link go
(the charger's EOF or close, a close of its own with a code, a new connection in its place, or
the actor stopping) the link is closed by the door's :class:`Closer`, a batch of links per turn
of the event loop. 10,000 chargers dropped at once wake their 10,000 actors in one turn: had each
closed its socket there and then (a round in the kernel each, and a log line), the chargers
still online would have waited out all of it; now they wait out the EOFs and 64 closes.
"""

from __future__ import annotations

import collections
import logging

import structlog
import trio

from cpms.metrics import STATIONS_CONNECTED
from cpms.ocpp.websocket import ServerWebSocket

#: links closed per turn of the event loop
CLOSE_BATCH = 64
#: how long a closing handshake (our close frame, then the charger's) may take
CLOSING_S = 1.0
log = structlog.stdlib.get_logger("cpms.ocpp")
#: asked first: a structlog call at a level that is filtered out still costs 6 µs, and every
#: charger that connects makes two
_INFO = logging.getLogger("cpms.ocpp")


class WebSocketLink:
    """A station actor's ChargerLink over a :class:`ServerWebSocket`: counted as connected
    from its making until it is closed."""

    def __init__(self, ws: ServerWebSocket, station: str, closer: Closer) -> None:
        self.receive = ws.receive
        self.send = ws.send
        self.ws, self.station, self._closer = ws, station, closer
        self.closing: tuple[int, str | None] = (1000, None)
        self.released = False
        if _INFO.isEnabledFor(logging.INFO):
            log.info("charger connected", station=station, remote=ws.remote)
        STATIONS_CONNECTED.inc()

    def close(self, code: int, reason: str) -> None:
        self.closing = (code, reason)
        self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._closer.put(self)


class Closer:
    """Closes the links let go, :data:`CLOSE_BATCH` per turn of the loop while :meth:`run`
    runs, and at once otherwise (before it starts, and once it has stopped: the server is
    stopping). A link whose WebSocket is still open (its actor closed it with a code) gets its
    closing handshake on a task of ``run``'s nursery, for :data:`CLOSING_S` at most; one whose
    charger has gone is closed on the spot."""

    def __init__(self) -> None:
        self._links: collections.deque[WebSocketLink] = collections.deque()
        self._more = trio.Event()
        self._nursery: trio.Nursery | None = None

    def put(self, link: WebSocketLink) -> None:
        if self._nursery is None:
            _finish(link, None)
        else:
            self._links.append(link)
            self._more.set()

    async def run(
        self,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Close links until cancelled; ``nursery`` runs the closing handshakes."""
        self._nursery = nursery
        task_status.started()
        try:
            while True:
                await self._more.wait()
                self._more = trio.Event()
                while self._links:
                    for _ in range(min(CLOSE_BATCH, len(self._links))):
                        _finish(self._links.popleft(), nursery)
                    await trio.lowlevel.checkpoint()
        finally:
            self._nursery = None
            while self._links:
                _finish(self._links.popleft(), None)


def _finish(link: WebSocketLink, nursery: trio.Nursery | None) -> None:
    STATIONS_CONNECTED.dec()
    if _INFO.isEnabledFor(logging.INFO):
        log.info("charger disconnected", station=link.station)
    if link.ws.open and nursery is not None:  # run's nursery: open while run runs in it
        nursery.start_soon(_close_politely, link.ws, link.closing)
    else:
        link.ws.drop()


async def _close_politely(ws: ServerWebSocket, closing: tuple[int, str | None]) -> None:
    """Our close frame, then the charger's, for :data:`CLOSING_S` at most; closed either way."""
    with trio.move_on_after(CLOSING_S):
        await ws.aclose(*closing)
    ws.drop()
