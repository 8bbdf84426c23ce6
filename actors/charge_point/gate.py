"""The door's turnstile: WebSocket handshakes a bounded number at a time.

In a reconnect storm thousands of connections arrive within a second. Served all at once, each
one's handshake (HTTP parsing, authentication, the upgrade) is a task in trio's run queue, and so
is every step of every charger already online: a Heartbeat then waits behind thousands of
handshake steps (2–3 s measured with 2,000 at once). Through the turnstile at most ``limit``
handshakes run; the others are accepted from the kernel and wait, parked and costing no CPU, in
order of arrival. A turn is taken once the client's upgrade request has arrived (a client that
opens a connection and sends nothing holds no turn, so it can't shut the door on the others)
and ends as soon as the connection is attached to its station's actor (or refused): the
turnstile bounds the handshakes in flight, not the connections.

From its arrival until its turn ends a connection counts as ``connecting`` for admission
control (:mod:`actors.charge_point.admission`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from actors.charge_point.admission import Admission
from cpms.ocpp.websocket import ServerWebSocket, Upgrade

#: how long a client may take to send its upgrade request
HANDSHAKE_TIMEOUT = 60.0


class Turn:
    """One connection's way through the turnstile: counted as connecting from its arrival;
    :meth:`begin` waits for a turn, :meth:`end` lets the next one in."""

    def __init__(self, gate: Gate) -> None:
        self._gate: Gate | None = gate
        self._holding = False
        gate.admission.connecting += 1

    async def begin(self) -> None:
        if self._gate is None or self._holding:
            raise RuntimeError("a turn begins once, before it ends")
        await self._gate.slots.acquire()
        self._holding = True

    def end(self) -> None:
        if self._gate is not None:
            self._gate.admission.connecting -= 1
            if self._holding:
                self._gate.slots.release()
            self._gate = None


class Gate:
    def __init__(self, admission: Admission, limit: int) -> None:
        self.admission = admission
        self.slots = trio.Semaphore(limit)


async def serve_gated(
    handler: Callable[[ServerWebSocket, Upgrade, Turn], Awaitable[None]],
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    gate: Gate,
    *,
    max_message_size: int,
    task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Serve WebSocket handshakes from ``listeners`` through ``gate``: once a client's upgrade
    request has arrived (a client that sends nothing holds no turn), ``handler`` gets it with
    its turn begun, and ends the turn once the connection is accepted or refused. The stream
    is closed when ``handler`` returns."""

    async def connection(stream: trio.abc.Stream) -> None:
        turn = Turn(gate)
        ws = ServerWebSocket(stream, max_message=max_message_size)
        try:
            request = None
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                request = await ws.upgrade_request()
            if request is not None:
                await turn.begin()
                await handler(ws, request, turn)
        finally:
            turn.end()
            await close_now(stream)

    await trio.serve_listeners(connection, list(listeners), task_status=task_status)


async def close_now(stream: trio.abc.Stream) -> None:
    """Close ``stream`` without more ado. A plain TCP stream is closed on the spot (trio's
    ``aclose_forcefully`` opens and cancels a scope and yields first: with 10,000 connections
    dropped at once that was a good part of the loop's stall)."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)
