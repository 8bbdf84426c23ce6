"""An SMS gateway for tests: a real HTTP server on a socket (h11 on trio) that keeps every
request it is sent and answers 200, or 500 while ``failing``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11
import trio


@dataclass
class Sent:
    method: str
    query: dict[str, list[str]]
    body: bytes
    authorization: str | None


@dataclass
class SmsStub:
    sent: list[Sent] = field(default_factory=list)
    failing: bool = False
    arrived: trio.Event = field(default_factory=trio.Event)
    url: str = ""

    def code_for(self, phone: str) -> str:
        """The code in the last message to ``phone``."""
        for message in reversed(self.sent):
            if message.query.get("to") == [phone]:
                found = re.search(r"\b([0-9]{6})\b", message.query["text"][0])
                assert found is not None, message
                return found.group(1)
        raise AssertionError(f"no SMS to {phone}")

    async def serve(self, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.url)

    async def _connection(self, stream: trio.SocketStream) -> None:
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
                continue
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                url = urlsplit(request.target.decode())
                self.sent.append(
                    Sent(
                        request.method.decode(),
                        parse_qs(url.query),
                        body,
                        headers.get("authorization"),
                    )
                )
                self.arrived.set()
                self.arrived = trio.Event()
                status = 500 if self.failing else 200
                reply = b'{"ok": true}'
                await stream.send_all(
                    http.send(
                        h11.Response(
                            status_code=status,
                            headers=[("content-length", str(len(reply))), ("connection", "close")],
                        )
                    )
                    + http.send(h11.Data(data=reply))
                    + http.send(h11.EndOfMessage())
                )
                return
            else:
                return
