"""A deliberately plain OCPP-J client for tests: raw frames over trio-websocket."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from trio_websocket import WebSocketConnection, open_websocket_url


class CallFailed(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code


class RawCharger:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send_raw(self, text: str) -> None:
        await self.ws.send_message(text)

    async def receive(self) -> list[Any]:
        return list(json.loads(await self.ws.get_message()))

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = f"c{next(self._ids)}"
        await self.send_raw(json.dumps([2, unique_id, action, payload]))
        reply = await self.receive()
        assert reply[1] == unique_id, reply
        if reply[0] == 4:
            raise CallFailed(reply[2], reply[3])
        assert reply[0] == 3, reply
        return dict(reply[2])

    async def answer(
        self, respond: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        """Wait for one CALL from the central system and answer it."""
        message = await self.receive()
        assert message[0] == 2, message
        _, unique_id, action, payload = message
        result = respond(action, payload)
        if not isinstance(result, dict):
            result = await result
        await self.send_raw(json.dumps([3, unique_id, result]))
        return action, payload


@asynccontextmanager
async def connect(
    base_url: str, station: str, password: str | None = None, subprotocol: bool = True
) -> AsyncIterator[RawCharger]:
    headers = []
    if password is not None:
        token = base64.b64encode(f"{station}:{password}".encode())
        headers.append((b"Authorization", b"Basic " + token))
    async with open_websocket_url(
        f"{base_url}/{station}",
        subprotocols=["ocpp1.6"] if subprotocol else None,
        extra_headers=headers,
    ) as ws:
        yield RawCharger(ws)
