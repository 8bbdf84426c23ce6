"""The OCPP-J transport (OCPP 1.6J §3): the central system's end of a charger's WebSocket, wsproto
parsing what the charger sends straight off a trio stream.

Why not trio-websocket: it gives every connection a reader task and a channel between it and the
reader of the messages, and a lock around each send, so every frame the charger sends wakes two
tasks. With thousands of chargers those hops were most of the trio thread's work per message, and
a good part of each handshake's. Here the station's actor reads the stream itself
(:meth:`ServerWebSocket.receive`, safe to cancel: what was read waits in wsproto), writes each
message as one whole frame (:meth:`ServerWebSocket.send`), and the charger's pings and close are
answered as they are read.

Bounds and refusals: an upgrade request of at most 16 KB (a request that is not a WebSocket
upgrade is answered 400 by wsproto's rules); a message of at most ``max_message`` characters
(closed with 1009 beyond); a text frame that is not UTF-8 is closed with 1007 and a frame that
breaks RFC 6455 with 1002 (§7.4.1), the code sent before TCP is dropped (§7.1.7).
"""

from __future__ import annotations

import collections
import contextlib
import struct

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

MAX_HEAD = 16 * 1024
RECEIVE = 65536
#: how long writing a pong or a close frame may take (a charger that doesn't read is cut off)
CONTROL_S = 5.0

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A whole, final frame as a server sends it (RFC 6455 §5.2: unmasked); text by default."""
    size, first = len(payload), 0x80 | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def peer_address(stream: trio.abc.Stream) -> str:
    """The client's IP address ("" when the stream is not over a socket)."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):
        return ""
    try:
        return str(transport.socket.getpeername()[0])
    except OSError:  # already gone
        return ""


class ServerWebSocket:
    """One client's WebSocket, from its upgrade request to its close."""

    def __init__(self, stream: trio.abc.Stream, *, max_message: int) -> None:
        self.stream = stream
        self.max_message = max_message
        self.remote = peer_address(stream)
        self._ws = WSConnection(ConnectionType.SERVER)
        self._events: collections.deque[Event] = collections.deque()
        self._parts: list[str] = []
        self._bytes: list[bytes] = []
        self._size = 0
        self._ended = False  # the client's side is done: EOF, its close, or a close of ours

    @property
    def open(self) -> bool:
        """Whether messages can still be sent (no close frame either way, no EOF)."""
        return self._ws.state is ConnectionState.OPEN and not self._ended

    async def upgrade_request(self) -> Request | None:
        """The client's upgrade request, or None: the stream ended or carried too much first,
        or it was not a WebSocket upgrade (answered with wsproto's 400 or 426)."""
        head = 0
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE)
            except _GONE:
                return None
            head += len(data)
            if not data or head > MAX_HEAD:
                return None
            try:
                self._ws.receive_data(bytes(data))
            except RemoteProtocolError as bad:
                hint = bad.event_hint
                if isinstance(hint, RejectConnection):
                    with contextlib.suppress(LocalProtocolError):
                        await self._write(self._ws.send(hint))
                return None
            for event in self._ws.events():
                if isinstance(event, Request):
                    return event

    async def accept(self, subprotocol: str | None) -> None:
        await self._write(self._ws.send(AcceptConnection(subprotocol=subprotocol)))

    async def reject(
        self, status: int, *, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer the upgrade with ``status`` instead (the caller closes the stream)."""
        fields = [*(headers or []), (b"content-length", str(len(body)).encode())]
        data = self._ws.send(RejectConnection(status_code=status, headers=fields, has_body=True))
        data += self._ws.send(RejectData(data=body))
        await self._write(data)

    async def receive(self) -> str | bytes | None:
        """The next whole message, or None once the connection has ended (EOF, the client's
        close answered, or a close of ours for a message too big or malformed). Safe to
        cancel: bytes read are kept by wsproto until asked for again."""
        while True:
            while self._events:
                message = await self._take(self._events.popleft())
                if message is not None:
                    return message
            if self._ended:
                return None
            try:
                data = await self.stream.receive_some(RECEIVE)
            except _GONE:
                data = b""
            if not data:
                self._ended = True
                return None
            self._ws.receive_data(bytes(data))
            self._events.extend(self._ws.events())

    async def send(self, text: str) -> None:
        """``text`` as one text frame.

        Raises:
            trio.BrokenResourceError: the connection is closing or gone.
        """
        if not self.open:
            raise trio.BrokenResourceError("the WebSocket is closing")
        try:
            await self.stream.send_all(server_frame(text.encode()))
        except trio.ClosedResourceError as closed:
            raise trio.BrokenResourceError("the WebSocket is closed") from closed

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """The closing handshake (our close frame unless one was sent, then the client's,
        however long the caller lets it take), then the stream is closed."""
        try:
            if self._ws.state is ConnectionState.OPEN and not self._ended:
                await self.stream.send_all(self._ws.send(CloseConnection(code, reason)))
            while self._ws.state is ConnectionState.LOCAL_CLOSING and not self._ended:
                data = await self.stream.receive_some(RECEIVE)
                if not data:
                    break
                self._ws.receive_data(bytes(data))
                self._events.extend(self._ws.events())
        except (*_GONE, trio.BusyResourceError):
            pass  # gone already, or still read by a task being cancelled: just drop it
        finally:
            self._ended = True
            await trio.aclose_forcefully(self.stream)

    async def _take(self, event: Event) -> str | bytes | None:
        """A message once its last frame is in (None meanwhile); answers control frames."""
        if isinstance(event, TextMessage):
            self._parts.append(event.data)
        elif isinstance(event, BytesMessage):
            self._bytes.append(bytes(event.data))
        elif isinstance(event, Ping):
            await self._control(self._ws.send(event.response()))
            return None
        elif isinstance(event, CloseConnection):
            # the client's close (answered in kind), or wsproto's own for a frame it could not
            # parse (1007, 1002), still OPEN: sent to the client as it stands
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._control(self._ws.send(CloseConnection(event.code, event.reason)))
            self._ended = True
            self._events.clear()
            return None
        else:
            return None
        self._size += len(event.data)
        if self._size > self.max_message:
            reason = f"a message is at most {self.max_message} bytes"
            await self._control(self._ws.send(CloseConnection(1009, reason)))
            self._ended = True
            self._events.clear()
            return None
        if not event.message_finished:
            return None
        self._size = 0
        if self._bytes:
            data, self._bytes = b"".join(self._bytes), []
            return data
        text, self._parts = "".join(self._parts), []
        return text

    async def _control(self, data: bytes) -> None:
        """A control frame, written whole even if the reader is cancelled meanwhile (half a
        frame would break the stream), within :data:`CONTROL_S`."""
        with trio.CancelScope(shield=True), trio.move_on_after(CONTROL_S) as timer:
            try:
                await self.stream.send_all(data)
            except _GONE:
                self._ended = True
        if timer.cancelled_caught:
            self._ended = True

    async def _write(self, data: bytes) -> None:
        with trio.move_on_after(CONTROL_S), contextlib.suppress(*_GONE):
            await self.stream.send_all(data)
