"""The OCPP-J transport (OCPP 1.6J §3): the central system's end of a charger's WebSocket,
read and written straight on a trio stream.

Why not trio-websocket: it gives every connection a reader task and a channel between it and the
reader of the messages, and a lock around each send, so every frame the charger sends wakes two
tasks. With thousands of chargers those hops were most of the trio thread's work per message, and
a good part of each handshake's. Here the station's actor reads the stream itself
(:meth:`ServerWebSocket.receive`, safe to cancel: what was read is kept), writes each message as
one whole frame (:meth:`ServerWebSocket.send`), and the charger's pings and close are answered as
they are read.

Both parsers are cpms's own and strict: the upgrade request's (:mod:`cpms.ocpp.upgrade`; h11
took about 110 µs a handshake, a tenth of a charger's whole connect in a reconnect storm, this
about 10) and the frames' (:mod:`cpms.ocpp.wsframes`; wsproto's took about 17 µs a frame, that
about 3).

Bounds and refusals: an upgrade request of at most 16 KB and 64 header lines; one that is not a
WebSocket upgrade is answered 400 (426 for another WebSocket version) with what is wrong, and
one with a body is refused (a GET upgrade has none); a message of at most ``max_message`` bytes
(closed with 1009 beyond); a text frame that is not UTF-8 is closed with 1007 and a frame that
breaks RFC 6455 with 1002 (§7.4.1), the code sent before TCP is dropped (§7.1.7).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import struct

import trio

from cpms.ocpp.upgrade import BadUpgrade, Upgrade, accept_token, http_response, parse_upgrade
from cpms.ocpp.wsframes import Breach, ClientFrames, Close, Event, Message, Ping

MAX_HEAD = 16 * 1024
RECEIVE = 65536
#: messages a reader is given in a row without waiting before it yields to the others
BURST = 4
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


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and as much of ``reason`` as fits (RFC 6455 §5.5: 125 bytes)."""
    said = reason.encode()[:123].decode(errors="ignore").encode()
    return server_frame(code.to_bytes(2) + said, 0x8)


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
        #: the socket, read and written directly over plain TCP (None: TLS, through the stream)
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._turn = 0  # messages given since the reader last waited or yielded
        self.request: Upgrade | None = None
        self._frames = ClientFrames(max_message)  # the client's, once upgraded
        self._pending = b""  # what came after the upgrade request's head
        self._upgraded = False
        self._events: collections.deque[Event] = collections.deque()
        self._close_sent = False
        self._ended = False  # the client's side is done: EOF, its close, or a close of ours

    @functools.cached_property
    def remote(self) -> str:
        """The client's IP address, asked of the socket when first wanted (a system call that
        most connections, logged at INFO or not, never need)."""
        return peer_address(self.stream)

    @property
    def open(self) -> bool:
        """Whether messages can still be sent (upgraded, no close frame either way, no EOF)."""
        return self._upgraded and not self._close_sent and not self._ended

    async def upgrade_request(self) -> Upgrade | None:
        """The client's upgrade request, or None: the stream ended or its head grew over
        :data:`MAX_HEAD` first (dropped), or it was not a WebSocket upgrade (answered with the
        status :class:`BadUpgrade` gives and what is wrong)."""
        head = bytearray()
        end = -1
        while end < 0:  # a head sent a byte at a time is searched and kept in linear time
            if len(head) > MAX_HEAD:
                return None
            data = await self._read()  # a fresh connection's request is usually there already
            if not data:
                return None
            searched = max(0, len(head) - 3)
            head += data
            end = head.find(b"\r\n\r\n", searched)
        if end > MAX_HEAD:
            return None
        self._pending = bytes(head[end + 4 :])
        try:
            self.request = parse_upgrade(bytes(head[:end]))
        except BadUpgrade as bad:
            extra = [(b"Sec-WebSocket-Version", b"13")] if bad.status == 426 else []
            await self._write(http_response(bad.status, extra, str(bad).encode()))
            return None
        return self.request

    async def accept(self, subprotocol: str | None) -> None:
        """Switch protocols (``subprotocol``: one the client offered, or None)."""
        assert self.request is not None, "accept() answers an upgrade request"
        if subprotocol is not None and subprotocol not in self.request.subprotocols:
            raise ValueError(f"the client did not offer {subprotocol}")
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept_token(self.request.key),
        ]
        if subprotocol is not None:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
        self._upgraded = True
        if self._pending:  # frames sent before the answer came: they are the first read
            self._feed(self._pending)
        try:  # a fresh socket's buffer takes a short answer at once
            await self._send_all(b"\r\n".join(lines) + b"\r\n\r\n")
        except _GONE:
            self._ended = True

    async def reject(
        self, status: int, *, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer the upgrade with ``status`` instead (the caller closes the stream)."""
        await self._write(http_response(status, headers, body))

    async def receive(self) -> str | bytes | None:
        """The next whole message, or None once the connection has ended (EOF, the client's
        close answered, or a close of ours for a message too big or malformed). Safe to
        cancel: bytes read are kept until asked for again. Messages that did not have to be
        waited for (a burst, or a charger answering while its actor worked) are given at most
        :data:`BURST` in a row: then a checkpoint lets the others have their turn, and the
        reader's mail interrupt it."""
        while True:
            if self._events:
                if self._turn >= BURST:
                    await trio.lowlevel.checkpoint()
                    self._turn = 0
                self._turn += 1
                message = await self._take(self._events.popleft())
                if message is not None:
                    return message
                continue
            if self._ended:
                return None
            data = await self._read()
            if not data:
                self._ended = True
                return None
            self._feed(data)

    async def send(self, text: str) -> None:
        """``text`` as one text frame.

        Raises:
            trio.BrokenResourceError: the connection is closing or gone.
        """
        if not self.open:
            raise trio.BrokenResourceError("the WebSocket is closing")
        await self._send_all(server_frame(text.encode()))

    async def _send_all(self, data: bytes) -> None:
        """``data`` written at once when the socket takes it whole (plain TCP: trio's
        ``send_all`` yields to the scheduler even then), the rest waiting for room."""
        sock = self._sock
        if sock is not None:
            if sock.fileno() == -1:  # closed: its number may be another connection's by now
                raise trio.BrokenResourceError("the WebSocket is closed")
            try:
                sent = os.write(sock.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as gone:
                raise trio.BrokenResourceError("the WebSocket is gone") from gone
            if sent == len(data):
                return
            data = data[sent:]
        try:
            await self.stream.send_all(data)
        except trio.ClosedResourceError as closed:
            raise trio.BrokenResourceError("the WebSocket is closed") from closed

    async def _read(self) -> bytes:
        """What the client sent next; b"" at its end. Over plain TCP the socket is read at
        once and only waited on when it has nothing (trio's ``receive_some`` yields to the
        scheduler either way: a task switch per frame)."""
        sock = self._sock
        if sock is None:  # TLS: through the stream
            self._turn = 0
            try:
                return bytes(await self.stream.receive_some(RECEIVE))
            except _GONE:
                return b""
        while True:
            if sock.fileno() == -1:
                return b""
            try:
                return os.read(sock.fileno(), RECEIVE)
            except BlockingIOError:  # nothing yet: wait for it
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return b""
                self._turn = 0
            except OSError:  # reset by the client
                return b""

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """The closing handshake (our close frame unless one was sent, then the client's,
        however long the caller lets it take), then the stream is closed."""
        try:
            if self.open:
                self._close_sent = True
                await self.stream.send_all(close_frame(code, reason or ""))
            while self._close_sent and not self._ended:
                data = await self.stream.receive_some(RECEIVE)
                if not data:
                    break
                events = self._frames.feed(bytes(data))
                self._ended = any(isinstance(event, Close | Breach) for event in events)
        except (*_GONE, trio.BusyResourceError):
            pass  # gone already, or still read by a task being cancelled: just drop it
        finally:
            self._ended = True
            await trio.aclose_forcefully(self.stream)

    def drop(self) -> None:
        """Close the connection on the spot, without a closing handshake (the client has gone,
        or has no more time). trio's ``aclose_forcefully`` opens and cancels a scope and yields
        first: with 10,000 connections dropped at once that was a good part of the loop's stall.
        """
        self._ended = True
        stream: object = self.stream
        while isinstance(stream, trio.SSLStream):  # no close_notify: no time to wait for it
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()

    def _feed(self, data: bytes) -> None:
        """The client's frames in ``data``, kept as events."""
        self._events.extend(self._frames.feed(data))

    async def _take(self, event: Event) -> str | bytes | None:
        """A message's data (None for control frames, which are answered here)."""
        if isinstance(event, Message):
            return event.data
        if isinstance(event, Ping):
            await self._control(server_frame(event.payload, 0xA))
            return None
        if isinstance(event, Breach):  # answered with its code: the conversation ends
            await self._close(event.code, event.reason)
        else:  # the client's close, answered in kind
            await self._close(1000 if event.code is None else event.code, event.reason)
        self._ended = True
        self._events.clear()
        return None

    async def _close(self, code: int, reason: str) -> None:
        """Our close frame, once."""
        if not self._close_sent:
            self._close_sent = True
            await self._control(close_frame(code, reason))

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
