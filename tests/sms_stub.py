"""An SMS gateway for tests: a real HTTP server on a socket (:mod:`tests.http_stub`) that keeps
every request it is sent and answers 200, or 500 while ``failing``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio

from tests.http_stub import Answer, Received, serve_http


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
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_http, self._answer)
            task_status.started(self.url)

    async def _answer(self, request: Received) -> Answer:
        query = parse_qs(urlsplit(request.target).query)
        self.sent.append(
            Sent(request.method, query, request.body, request.headers.get("authorization"))
        )
        self.arrived.set()
        self.arrived = trio.Event()
        return (500 if self.failing else 200), b'{"ok": true}'
