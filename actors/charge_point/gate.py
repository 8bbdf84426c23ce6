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

import errno
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio

from actors.charge_point.admission import Admission
from cpms.ocpp.upgrade import Upgrade
from cpms.ocpp.websocket import ServerWebSocket

#: how long a client may take to send its upgrade request
HANDSHAKE_TIMEOUT = 60.0
#: connections taken from the kernel's queue at once before the others get a turn...
ACCEPT_BATCH = 64
#: ...unless their turn took longer than this: then one at a time (each handshake started adds
#: to everyone's next turn, and chargers already online wait through them)
BUSY_TURN_S = 0.01
#: accept(2)'s errors when the process or the system is out of something: wait, and try again
_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: accept(2)'s errors about one connection (reset, refused by a firewall) that the next one
#: won't have
_ONE_CONNECTION = {
    errno.EPERM,
    errno.ECONNABORTED,
    errno.ECONNRESET,
    errno.EPROTO,
    errno.ETIMEDOUT,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ENOPROTOOPT,
    errno.EOPNOTSUPP,
}
log = structlog.stdlib.get_logger("cpms.ocpp")


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
        # Always a yield, even with a slot free: a turn's handshake then runs whole in one step
        # (its reads and writes wait only if the socket must), so no more than the turnstile's
        # limit of them run between two turns of everyone else.
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
    handler: Callable[[ServerWebSocket, Upgrade, Turn], Awaitable[bool]],
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
    its turn begun, and ends the turn once the connection is accepted or refused. When
    ``handler`` returns True it has handed the connection on (to a station's actor), whose it
    is to close; otherwise it is closed here, and the connection's task ends either way."""

    async def connection(stream: trio.abc.Stream) -> None:
        turn = Turn(gate)
        ws = ServerWebSocket(stream, max_message=max_message_size)
        handed_on = False
        try:
            request = None
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                request = await ws.upgrade_request()
            if request is not None:
                await turn.begin()
                handed_on = await handler(ws, request, turn)
        finally:
            turn.end()
            if not handed_on:
                ws.drop()

    async with trio.open_nursery() as nursery:

        def serve(stream: trio.abc.Stream) -> None:
            nursery.start_soon(connection, stream)

        for listener in listeners:
            if isinstance(listener, trio.SocketListener):
                nursery.start_soon(_accept, listener, serve)
            else:
                nursery.start_soon(_accept_tls, listener, serve)
        task_status.started(list(listeners))


async def _accept(listener: trio.SocketListener, serve: Callable[[trio.abc.Stream], None]) -> None:
    """Hand each connection ``listener`` accepts to ``serve``, until cancelled (then the
    listener is closed). The queue is taken straight from the kernel while it has connections
    waiting (trio's ``accept`` yields to the scheduler for each one, and its ``serve_listeners``
    closes each stream again behind our handler with a scope and a yield): the others get a
    turn after :data:`ACCEPT_BATCH` of them, or after each one while the others' turns are
    long."""
    # a second descriptor of the listening socket, to call accept(2) on directly
    with listener.socket, socket.socket(fileno=os.dup(listener.socket.fileno())) as sock:
        sock.setblocking(False)
        batch = taken = 0
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                taken = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as error:
                await _accept_failed(error)
                continue
            serve(trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
            taken += 1
            if taken >= batch:
                taken, began = 0, trio.current_time()
                await trio.lowlevel.checkpoint()
                # a long turn of the others: each connection taken in adds to the next one
                batch = ACCEPT_BATCH if trio.current_time() - began < BUSY_TURN_S else 1


async def _accept_tls(
    listener: trio.abc.Listener[trio.abc.Stream], serve: Callable[[trio.abc.Stream], None]
) -> None:
    """As :func:`_accept`, through the listener (TLS: the stream does its handshake)."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                await _accept_failed(error)
            else:
                serve(stream)


async def _accept_failed(error: OSError) -> None:
    if error.errno in _CAPACITY:
        log.error("accept failed: waiting", why=os.strerror(error.errno))
        await trio.sleep(0.1)
    elif error.errno not in _ONE_CONNECTION:
        raise error
