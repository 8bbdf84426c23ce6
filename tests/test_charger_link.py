"""A charger's link as its actor holds it (issue 21): let go, it is closed by the door's closer, a
batch per turn of the event loop, so 10,000 chargers dropped at once don't hold up those still
online for 10,000 closes; closed with a code, it gets its closing handshake; each link once."""

from __future__ import annotations

from collections import Counter

import trio

from actors.charge_point.link import CLOSE_BATCH, Closer, WebSocketLink
from cpms.metrics import STATIONS_CONNECTED


class Turns(trio.abc.Instrument):
    """Counts the turns of the event loop (each begins with a wait for I/O)."""

    def __init__(self) -> None:
        self.count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


class FakeSocket:
    """What a link asks of its WebSocket, and in which turn it was closed."""

    remote = "127.0.0.1"

    def __init__(self, turns: Turns, *, open_: bool = False) -> None:
        self.open, self.turns = open_, turns
        self.dropped: list[int] = []
        self.closed_with: tuple[int, str | None] | None = None

    async def receive(self) -> None:
        return None

    async def send(self, text: str) -> None:
        raise AssertionError("nothing is sent")

    async def aclose(self, code: int, reason: str | None) -> None:
        self.closed_with = (code, reason)
        self.open = False

    def drop(self) -> None:
        self.dropped.append(self.turns.count)


def link(ws: FakeSocket, station: str, closer: Closer) -> WebSocketLink:
    return WebSocketLink(ws, station, closer)  # type: ignore[arg-type]


async def test_links_let_go_at_once_are_closed_a_batch_per_turn(nursery: trio.Nursery) -> None:
    closer, turns = Closer(), Turns()
    connected = STATIONS_CONNECTED._value.get()
    trio.lowlevel.add_instrument(turns)
    await nursery.start(closer.run, nursery)
    sockets = [FakeSocket(turns) for _ in range(3 * CLOSE_BATCH + 5)]
    links = [link(ws, f"CP-{n}", closer) for n, ws in enumerate(sockets)]
    assert STATIONS_CONNECTED._value.get() == connected + len(links)
    for each in links:  # a drop: every actor lets its link go in one turn
        each.release()
        each.release()  # once is enough
    assert all(not ws.dropped for ws in sockets)  # not in the actors' turn
    with trio.fail_after(10):
        while any(not ws.dropped for ws in sockets):
            await trio.lowlevel.checkpoint()
    assert all(len(ws.dropped) == 1 for ws in sockets)
    per_turn = Counter(ws.dropped[0] for ws in sockets)
    assert max(per_turn.values()) <= CLOSE_BATCH and len(per_turn) >= 4, per_turn
    assert STATIONS_CONNECTED._value.get() == connected
    trio.lowlevel.remove_instrument(turns)


async def test_a_link_closed_with_a_code_gets_its_handshake_and_none_waits_for_the_closer(
    nursery: trio.Nursery,
) -> None:
    turns = Turns()
    idle = Closer()  # not running (the server not yet up, or stopping): closed at once
    gone = FakeSocket(turns)
    link(gone, "CP-1", idle).release()
    assert gone.dropped == [0]
    closer = Closer()
    await nursery.start(closer.run, nursery)
    flooding = FakeSocket(turns, open_=True)
    link(flooding, "CP-2", closer).close(1008, "too many frames")
    with trio.fail_after(10):
        while not flooding.dropped:
            await trio.lowlevel.checkpoint()
    assert flooding.closed_with == (1008, "too many frames")
