"""The provider's webhooks on a port of their own (``CPMS_PAYMENT_WEBHOOK_PORT``): HTTP/1.1
spoken with h11 straight on trio's sockets, answered by the same
:class:`~api.webhook_door.WebhookIntake` as on the REST port.

Why a port of its own: a provider confirms payments in bursts, and on two cores hypercorn's own
work per request (a task, an ASGI scope, its timers; about a millisecond here) held even an
empty answer to some 850 a second, below the 1,000 webhooks a second cpms must take. h11 alone
answers about 5,000. The port also lets an operator put the providers' door behind its own
firewall rule.

What it serves: ``POST /api/v1/payment/webhook`` and ``/payment/webhook``; another method is 405,
another path 404, each in the app's error shape. Bounds (:class:`Limits`): a head of 16 KB (431
beyond), a body of 64 KB (413, and the connection closed), a request whole within ``read_s``
(else the connection is closed: a slow sender holds nothing long), a kept-alive connection
closed after ``idle_s`` silent, at most ``max_connections`` at once (the next answered 503). A
request that is not HTTP gets 400 and the connection is closed. On shutdown it stops accepting,
closes idle connections and lets answers in progress finish (up to ``graceful_timeout``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus

import h11
import structlog
import trio

from api.errors import error_body
from api.webhook_door import (
    MAX_BODY,
    PATHS,
    Answer,
    WebhookIntake,
    encoded,
    method_not_allowed,
    too_large,
)

log = structlog.stdlib.get_logger("api.webhook_listener")

MAX_HEAD = 16 * 1024
LINGER_S = 1.0
MAX_LINGER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    read_s: float = 10.0  # a request arrives whole within this
    idle_s: float = 30.0  # a kept-alive connection silent this long is closed
    max_connections: int = 1000  # at once; the next one is answered 503


class _Closing(Exception):
    """The connection ends here (its peer left, was too slow, or sent what can't be answered
    on it any more)."""


class _Connection:
    """One kept-alive connection: requests read and answered one after the other."""

    def __init__(self, stream: trio.SocketStream, intake: WebhookIntake, limits: Limits) -> None:
        self.stream, self.intake, self.limits = stream, intake, limits
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.idle = trio.CancelScope()  # cancelled on shutdown while waiting for a request
        self.closing = False
        try:
            self.remote: str | None = stream.socket.getpeername()[0]
        except OSError:
            self.remote = None

    async def run(self) -> None:
        """Requests answered until one side says close, the peer leaves or is too slow."""
        try:
            while not self.closing:
                await self._exchange()
                if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
                    return  # one of us said close
                self.http.start_next_cycle()
        except (_Closing, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def close(self) -> None:
        """Closed the way that lets a refused client read its answer: our side first, then
        what it was still sending read and dropped for a moment (closed with unread data,
        the socket is reset, and the reset can overtake the answer)."""
        with trio.move_on_after(LINGER_S):
            try:
                await self.stream.send_eof()
                size = 0
                while size < MAX_LINGER and (data := await self.stream.receive_some(65536)):
                    size += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(self.stream)

    def close_when_idle(self) -> None:
        self.closing = True
        self.idle.cancel()

    async def _exchange(self) -> None:
        try:
            self.idle = trio.CancelScope(deadline=trio.current_time() + self.limits.idle_s)
            with self.idle:
                request = await self._next()
            if self.idle.cancelled_caught:
                raise _Closing
            assert isinstance(request, h11.Request)
            if (
                len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
                > MAX_HEAD
            ):
                raise h11.RemoteProtocolError("the request's head is too large", 431)
            if self.http.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            answer = await self._answer(request)
        except h11.RemoteProtocolError as error:
            answer = _malformed(error)
        if self.closing:
            answer[2]["Connection"] = "close"
        status, fields, payload = encoded(answer)
        reason = HTTPStatus(status).phrase.encode()
        response = h11.Response(status_code=status, headers=fields, reason=reason)
        await self._send(response, h11.Data(data=payload), h11.EndOfMessage())  # one write

    async def _answer(self, request: h11.Request) -> Answer:
        with trio.move_on_after(self.limits.read_s) as reading:
            raw = await self._body()
        if reading.cancelled_caught:
            raise _Closing
        if raw is None:
            return too_large()
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        if path not in PATHS:
            return 404, error_body("not_found", f"nothing at {path} on this port"), {}
        if request.method != b"POST":
            return method_not_allowed()
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers
        }
        return await self.intake.answer(headers, self.remote, raw)

    async def _body(self) -> bytes | None:
        """The request's body; None when it is over :data:`MAX_BODY` (the rest unread)."""
        chunks, size = [], 0
        while not isinstance(event := await self._next(), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            size += len(event.data)
            if size > MAX_BODY:
                return None
            chunks.append(event.data)
        return b"".join(chunks)

    async def _next(self) -> h11.Event:
        """The next event of the request (the caller bounds the wait).

        Raises:
            h11.RemoteProtocolError: not HTTP, or a head too large.
            _Closing: the peer left.
        """
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.stream.receive_some(65536))
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise _Closing
            return event  # type: ignore[return-value]

    async def _send(self, *events: h11.Event) -> None:
        data = b"".join(self.http.send(event) or b"" for event in events)
        if data:
            await self.stream.send_all(data)


def _malformed(error: h11.RemoteProtocolError) -> Answer:
    status = error.error_status_hint
    code = "header_too_large" if status == 431 else "bad_request"
    return (
        status,
        error_body(code, f"not an HTTP request this port can read: {error}"),
        {"Connection": "close"},
    )


def _busy() -> bytes:
    """The whole answer to a connection over the limit (read before anything else is)."""
    body = error_body("service_unavailable", "too many connections; retry")
    _, fields, payload = encoded((503, body, {"Retry-After": "1", "Connection": "close"}))
    head = [b"HTTP/1.1 503 Service Unavailable", *(b"%s: %s" % field for field in fields)]
    return b"\r\n".join([*head, b"", payload])


BUSY = _busy()


class WebhookListener:
    def __init__(self, intake: WebhookIntake, limits: Limits) -> None:
        self.intake, self.limits = intake, limits
        self.open: set[_Connection] = set()

    async def handle(self, stream: trio.SocketStream) -> None:
        if len(self.open) >= self.limits.max_connections:
            with trio.move_on_after(1):
                await stream.send_all(BUSY)
            await trio.aclose_forcefully(stream)
            return
        connection = _Connection(stream, self.intake, self.limits)
        self.open.add(connection)
        try:
            await connection.run()
        finally:
            self.open.discard(connection)  # before the peer sees it closed
            await connection.close()


async def serve_webhooks(
    intake: WebhookIntake,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    graceful_timeout: float = 5.0,
    limits: Limits = Limits(),
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer webhooks on ``host:port`` until ``shutdown_trigger`` returns; reports the base
    URL (``http://host:port``, the port resolved if 0) with ``task_status.started``."""
    listener = WebhookListener(intake, limits)
    sockets = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    url = f"http://{host}:{sockets[0].socket.getsockname()[1]}"
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            serving = partial(trio.serve_listeners, handler_nursery=connections)
            await accepting.start(serving, listener.handle, sockets)
            log.info("webhooks listening", url=url)
            task_status.started(url)
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        for connection in list(listener.open):
            connection.close_when_idle()
        connections.cancel_scope.deadline = trio.current_time() + graceful_timeout
