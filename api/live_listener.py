"""The app's live socket on a port of its own (``CPMS_APP_WS_PORT``): the same conversation as
on the REST port (:func:`api.live_socket.converse`, the same hub), spoken with wsproto straight
on trio's sockets.

Why a port of its own: most of the socket's work is sending small updates to many phones. Through
hypercorn each message is an ASGI event, a locked and shielded ``send_all`` and one system call;
here the messages queued for a socket are framed and written in one ``send``, and nothing but
the conversation sits between the hub and the socket. A reverse proxy can route
``/api/v1/ws/locations`` here while the REST port keeps answering the same path for apps that
connect to it directly.

What it serves: a WebSocket upgrade of ``GET /api/v1/ws/locations``; any other request is 404
(a path) or 400 (not an upgrade) in the app's error shape. Bounds: a handshake of 16 KB within
10 s, a message of 16 KB (1009 beyond), ``TCP_USER_TIMEOUT`` (``CPMS_HTTP_STALL_TIMEOUT``) for a
phone that stops reading; no compression is offered. Pings from the app's WebSocket layer are
answered; its close is answered and ends the conversation.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import structlog
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from api.auth import TokenVerifier
from api.errors import error_body
from api.jsonio import dumps
from api.live_hub import LiveHub
from api.live_socket import CLOSE_WAIT_S, MAX_MESSAGE, SocketClosed, converse

log = structlog.stdlib.get_logger("api.live_listener")

PATH = "/api/v1/ws/locations"
MAX_HEAD = 16 * 1024
HANDSHAKE_S = 10.0
RECEIVE = 65536
#: how long an offered update may wait for others to the same socket
COALESCE_S = 0.002


def text_frame(payload: bytes) -> bytes:
    """A whole text frame as a server sends it (RFC 6455 §5.2: unmasked)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Coalescer:
    """Sockets with updates offered in the last ``window`` seconds: each is written once, all
    its updates together (a station's update and its location's, say: one system call, not two;
    on two cores the calls were most of the work)."""

    def __init__(self, window: float = COALESCE_S) -> None:
        self.window = window
        self.dirty: dict[WsprotoSocket, None] = {}
        self._wake = trio.Event()
        self._last: tuple[str, bytes] = ("", text_frame(b""))

    def framed(self, text: str) -> bytes:
        """``text`` as a frame; the hub offers one update to many sockets: it is framed once."""
        if text is not self._last[0]:
            self._last = (text, text_frame(text.encode()))
        return self._last[1]

    def mark(self, app: WsprotoSocket) -> None:
        self.dirty[app] = None
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self.window)
            dirty, self.dirty = self.dirty, {}
            for app in dirty:
                app.write_offered()


class WsprotoSocket:
    """One app socket on a trio stream, wsproto reading the app's frames.

    An update the hub offers (:meth:`offer`) is framed (once for all its sockets) and written
    within :data:`COALESCE_S` with whatever else was offered meanwhile, by one non-blocking
    system call (no task woken per socket) unless earlier ones still wait; what the kernel does
    not take at once waits in order and :meth:`flush` writes all that waits in one go. At
    ``limit`` messages waiting the app is too slow: the offer is refused (the hub drops it)."""

    def __init__(
        self, stream: trio.SocketStream, ws: WSConnection, limit: int, coalescer: Coalescer
    ) -> None:
        self.stream, self.ws, self.limit, self.coalescer = stream, ws, limit, coalescer
        self.fd = stream.socket.fileno()
        self.direct = self.offer
        self._offered: list[bytes] = []
        self._queue: collections.deque[bytes] = collections.deque()
        self._writing = False
        self._wake = trio.Event()
        self._idle = trio.Event()  # nothing waits and nothing is being written
        self._idle.set()
        self._events: list[Event] = []
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self._size = 0
        self.closing = False  # a close frame is on its way: nothing more after it
        self.closed = False  # the stream can't be written to any more

    def offer(self, text: str) -> bool:
        if self.closing or self.closed:
            return True  # going away: it would not be read
        if len(self._offered) + len(self._queue) >= self.limit:
            return False
        if not self._offered:
            self.coalescer.mark(self)
        self._offered.append(self.coalescer.framed(text))
        return True

    def write_offered(self) -> None:
        if self._offered and not self.closed and not self.closing:
            data = b"".join(self._offered)
            self._offered.clear()
            self._push(data, always=True)  # counted when offered

    def finish(self) -> None:
        """The stream is about to be closed: nothing is written from here on. (Its descriptor's
        number is soon another connection's: a late write would go to another phone.)"""
        self.closed = True
        self._offered.clear()
        self._queue.clear()

    def _push(self, data: bytes, *, always: bool = False) -> bool:
        if self.closed:
            return True
        if self._queue or self._writing:
            if len(self._queue) >= self.limit and not always:
                return False
            self._wait(data)
            return True
        try:
            sent = os.write(self.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the app went away
            self.closed = True
            return True
        if sent < len(data):
            self._wait(data[sent:])
        return True

    def _wait(self, data: bytes) -> None:
        self._queue.append(data)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    async def flush(self) -> None:
        """Write what waits, all of it at once, for as long as the socket lives."""
        while not self.closed:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._queue and not self.closed:
                data = b"".join(self._queue)
                self._queue.clear()
                self._writing = True
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.closed = True
                finally:
                    self._writing = False
            self._idle.set()

    async def send(self, texts: list[str]) -> None:
        for text in texts:
            self.offer(text)

    async def close(self, code: int, reason: str) -> None:
        """The close frame after everything offered before it; back once it is written."""
        if self.closing or self.closed:
            return
        self.write_offered()
        with contextlib.suppress(LocalProtocolError):  # the app's close came first
            self._push(self.ws.send(CloseConnection(code=code, reason=reason)), always=True)
        self.closing = True
        await self._idle.wait()

    async def receive(self) -> str | bytes:
        while True:
            while self._events:
                message = await self._take(self._events.pop(0))
                if message is not None:
                    return message
            if self.closing or self.closed:
                raise SocketClosed
            try:
                data = await self.stream.receive_some(RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closing = True
                raise SocketClosed
            try:
                self.ws.receive_data(data)
                self._events.extend(self.ws.events())
            except RemoteProtocolError:
                await self.close(1002, "not the WebSocket protocol")
                raise SocketClosed from None

    async def _take(self, event: Event) -> str | bytes | None:
        """The app's whole message once its last frame is in; None meanwhile."""
        if isinstance(event, TextMessage | BytesMessage):
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                await self.close(1009, f"a message is at most {MAX_MESSAGE} bytes")
                raise SocketClosed
            if isinstance(event, TextMessage):
                self._text.append(event.data)
            else:
                self._bytes.append(bytes(event.data))
            if not event.message_finished:
                return None
            self._size = 0
            if isinstance(event, TextMessage):
                text, self._text = "".join(self._text), []
                return text
            data, self._bytes = b"".join(self._bytes), []
            return data
        if isinstance(event, Ping):
            self._push(self.ws.send(event.response()), always=True)
        elif isinstance(event, CloseConnection):
            if not self.closing and not self.closed:
                self._push(self.ws.send(event.response()), always=True)
                self.closing = True
            raise SocketClosed
        return None


async def _handshake(stream: trio.SocketStream, ws: WSConnection) -> Request | None:
    """The app's upgrade request, or None (refused here, or it never came whole)."""
    head = 0
    with trio.move_on_after(HANDSHAKE_S):
        while True:
            data = await stream.receive_some(RECEIVE)
            head += len(data)
            if not data or head > MAX_HEAD:
                return None
            try:
                ws.receive_data(data)
            except RemoteProtocolError as bad:
                await _answer(stream, 400, "bad_request", f"not a WebSocket upgrade: {bad}")
                return None
            for event in ws.events():
                if isinstance(event, Request):
                    return event
    return None


async def _answer(stream: trio.SocketStream, status: int, code: str, message: str) -> None:
    """A plain HTTP answer in the app's error shape, instead of a WebSocket."""
    body = dumps(error_body(code, message)).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    with trio.move_on_after(1):
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)


class LiveListener:
    def __init__(self, hub: LiveHub, verifier: TokenVerifier, stall_timeout: float) -> None:
        self.hub, self.verifier, self.stall_timeout = hub, verifier, stall_timeout
        self.coalescer = Coalescer()

    async def handle(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        milliseconds = int(self.stall_timeout * 1000)
        stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
        ws = WSConnection(ConnectionType.SERVER)
        try:
            request = await _handshake(stream, ws)
            if request is None:
                return
            target = urlsplit(request.target)
            if target.path != PATH:
                await _answer(stream, 404, "not_found", f"only {PATH} is served here")
                return
            await stream.send_all(ws.send(AcceptConnection()))
            query = parse_qs(target.query, keep_blank_values=True)
            client_id = query.get("client_id", [""])[0] or None
            token = query["token"][0] if "token" in query else None
            app = WsprotoSocket(stream, ws, self.hub.timings.outbox, self.coalescer)
            try:
                async with trio.open_nursery() as writing:
                    writing.start_soon(app.flush)
                    await converse(self.hub, self.verifier, app, client_id, token)
                    writing.cancel_scope.cancel()
            finally:
                app.finish()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the app went away
        finally:
            await trio.aclose_forcefully(stream)


async def serve_live_sockets(
    hub: LiveHub,
    verifier: TokenVerifier,
    host: str,
    port: int,
    *,
    stall_timeout: float,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve app sockets on ``host:port`` until ``shutdown_trigger`` returns (each socket is
    then closed with 1001 by the hub); reports ``ws://host:port/api/v1/ws/locations``."""
    listener = LiveListener(hub, verifier, stall_timeout)
    sockets = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    url = f"ws://{host}:{sockets[0].socket.getsockname()[1]}{PATH}"
    async with trio.open_nursery() as coalescing:
        coalescing.start_soon(listener.coalescer.run)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                serving = partial(trio.serve_listeners, handler_nursery=connections)
                await accepting.start(serving, listener.handle, sockets)
                log.info("app sockets listening", url=url)
                task_status.started(url)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            # the hub tells each socket to close (1001); what has not closed by then is cut
            connections.cancel_scope.deadline = trio.current_time() + CLOSE_WAIT_S
        coalescing.cancel_scope.cancel()
