"""Say why a connection is failed: the close frame trio-websocket leaves out.

When wsproto can't parse what the peer sent (invalid UTF-8 in a text frame, 1007; a protocol
error, 1002), it makes a ``CloseConnection`` event of its own while the connection is still
``OPEN``. trio-websocket (0.12) handles that event as if the peer had closed: it closes its
side and drops TCP without sending anything, so the charger sees a reset instead of the code
RFC 6455 §7.1.7 asks for. :func:`install` sends the close frame first. The event is told apart
from a peer's close by the state: a peer's close frame has already moved wsproto to
``REMOTE_CLOSING``. ``tests/test_ocpp_central.py`` checks the 1007 end to end, so a library
upgrade that changes this shows there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

_Handler = Callable[[WebSocketConnection, CloseConnection], Awaitable[None]]


def install() -> None:
    """Patch :class:`WebSocketConnection` once; later calls do nothing."""
    original: _Handler = WebSocketConnection._handle_close_connection_event
    if getattr(original, "_says_why", False):
        return

    async def handle_close(self: WebSocketConnection, event: CloseConnection) -> None:
        if self._wsproto.state == ConnectionState.OPEN:  # wsproto's own: the peer's data failed
            with contextlib.suppress(ConnectionClosed):
                await self._send(event)
        await original(self, event)

    handle_close._says_why = True  # type: ignore[attr-defined]
    WebSocketConnection._handle_close_connection_event = handle_close  # type: ignore[method-assign]
