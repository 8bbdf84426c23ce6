"""A real HTTP server for tests' stand-ins of outside services: h11 on trio, on a free port of
127.0.0.1, one request per connection, each answered by the stub's handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Answer = tuple[int, bytes]
Handler = Callable[[Received], Awaitable[Answer]]


async def serve_http(
    handler: Handler, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; reports the base URL (``http://127.0.0.1:PORT``)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def connection(stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                http.receive_data(data)
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                received = Received(request.method.decode(), request.target.decode(), headers, body)
                status, reply = await handler(received)
                head = [("content-length", str(len(reply))), ("connection", "close")]
                await stream.send_all(
                    http.send(h11.Response(status_code=status, headers=head))
                    + http.send(h11.Data(data=reply))
                    + http.send(h11.EndOfMessage())
                )
                return
            else:
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        task_status.started(f"http://127.0.0.1:{port}")
