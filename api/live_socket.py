"""``/api/v1/ws/locations?client_id=…``: the app's live socket, message for message as seed 001
§1 and seed 000 describe it (the hub behind it: :mod:`api.live_hub`).

From the server: ``connection`` (the greeting; the client is subscribed to ``all``),
``subscription`` (``subscribed`` / ``unsubscribed`` and the channel), ``pong``,
``location_status_update``, ``station_status_update``, ``stations_update`` (every station the
client's channels cover: 2 s after connecting, then every 60 s), ``ping`` every 30 s (both
``CPMS_WS_*`` settings), and
``error`` (bad JSON, an unknown action, a bad channel; the connection stays open).

From the app: ``{"action": "subscribe" | "unsubscribe", "channel": "all" | "location:ID" |
"location_stations:ID"}``, ``{"action": "ping"}``, ``{"type": "pong"}`` (the answer to the
server's ping), and ``{"action": "auth", "token": "<JWT>"}`` (or ``?token=`` on the URL): a token
whose subject is the ``client_id`` turns on that client's own ``balance_update`` (with its
wallet at once) and ``charging_update`` messages until the token expires (then
``{"type": "auth", "status": "expired"}``; another ``auth`` renews it).

Closed with 1000 after 90 s without a word from the app (``CPMS_WS_IDLE_TIMEOUT``), 1001 when
the server stops, 1008 for a ``client_id`` that is no client id, 1009 (by hypercorn) for a
message over 16 KB, and 1013 for a client too slow to take its updates (:mod:`api.live_hub`) or
one over ``CPMS_WS_MAX_CLIENTS`` at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

import simplejson
import trio
from hypercorn.utils import UnexpectedMessageError
from quart import Blueprint, websocket

from api.auth import TokenVerifier
from api.jsonio import dumps
from api.live_hub import CHANNEL, LiveClient, LiveHub
from cpms.kernel.errors import Forbidden, NotFound, Unauthorized
from cpms.kernel.timeutil import iso_now
from storage.errors import StorageUnavailable

MAX_CHANNELS = 64
#: most queued messages written to a socket at once
WRITE_BATCH = 64
MAX_MESSAGE = 16 * 1024
CLOSE_WAIT_S = 5.0


def error(code: str, message: str) -> str:
    return dumps({"type": "error", "error": code, "message": message})


class SocketClosed(Exception):
    """The app's side of the socket is gone."""


class Transport(Protocol):
    """One accepted WebSocket, as the conversation uses it: hypercorn's (:class:`QuartSocket`,
    on the REST port) or cpms's own (:mod:`api.live_listener`, on ``CPMS_APP_WS_PORT``).
    ``direct``: how the hub hands it a message at once, when it can (else through the outbox
    and :meth:`send`)."""

    @property
    def direct(self) -> Callable[[str], bool] | None: ...

    async def receive(self) -> str | bytes:
        """The app's next message; :class:`SocketClosed` once it is gone."""
        ...

    async def send(self, texts: list[str]) -> None:
        """Send these messages, in order (a transport may write them at once)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class QuartSocket:
    """The socket of the REST port's route (hypercorn, through Quart)."""

    direct = None

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, texts: list[str]) -> None:
        with contextlib.suppress(UnexpectedMessageError):  # closed under us: the app went away
            for text in texts:
                await websocket.send(text)

    async def close(self, code: int, reason: str) -> None:
        await websocket.close(code, reason)


class LiveSocket:
    """One connection's conversation."""

    def __init__(
        self, hub: LiveHub, verifier: TokenVerifier, client: LiveClient, transport: Transport
    ) -> None:
        self.hub, self.verifier, self.client = hub, verifier, client
        self.transport = transport

    def say(self, message: dict[str, Any] | str) -> None:
        self.client.offer(message if isinstance(message, str) else dumps(message))

    async def authenticate(self, token: object) -> None:
        client = self.client
        if not isinstance(token, str) or not token:
            self.say(error("invalid_message", "auth needs a token (a JWT string)"))
            return
        try:
            owner, expires_at = await self.verifier.proven(token)
        except (Unauthorized, Forbidden) as refused:
            self.say(error(refused.code, refused.message))
            return
        if client.client_id is not None and str(owner) != client.client_id:
            self.say(error("forbidden", "the token is another client's than client_id"))
            return
        self.hub.authenticate(client, owner, expires_at)
        self.say({"type": "auth", "status": "authenticated", "client_id": str(owner)})
        # no wallet yet (or no database now): its first entry will be sent
        with contextlib.suppress(NotFound, StorageUnavailable):
            self.say(await self.hub.balance_message(str(owner)))

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = simplejson.loads(raw)
        except ValueError:
            self.say(error("invalid_json", "the message is not JSON"))
            return
        if not isinstance(message, dict):
            self.say(error("invalid_message", "a message is a JSON object"))
            return
        action = message.get("action")
        if action is None and message.get("type") == "pong":
            return  # the answer to our ping: the app is there
        if action == "ping":
            self.say({"type": "pong", "timestamp": time.time()})
        elif action in ("subscribe", "unsubscribe"):
            self.subscription(action, message.get("channel"))
        elif action == "auth":
            await self.authenticate(message.get("token"))
        else:
            self.say(
                error(
                    "unknown_action",
                    f"unknown action {str(action)[:40]!r}: subscribe, unsubscribe, ping or auth",
                )
            )

    def subscription(self, action: str, channel: object) -> None:
        client = self.client
        if not isinstance(channel, str) or not CHANNEL.match(channel):
            self.say(
                error(
                    "invalid_channel",
                    "channel is all, location:<id> or location_stations:<id>",
                )
            )
            return
        if action == "subscribe":
            if channel not in client.channels and len(client.channels) >= MAX_CHANNELS:
                self.say(error("too_many_channels", f"at most {MAX_CHANNELS} channels"))
                return
            self.hub.subscribe(client, channel)
            status = "subscribed"
        else:
            self.hub.unsubscribe(client, channel)
            status = "unsubscribed"
        self.say({"type": "subscription", "status": status, "channel": channel})

    async def read(self) -> None:
        """The app's messages, until it is silent for the idle timeout (or gone)."""
        idle = self.hub.timings.idle
        while True:
            with trio.move_on_after(idle):
                try:
                    raw = await self.transport.receive()
                except SocketClosed:
                    return
                await self.handle(raw)
                continue
            await self.transport.close(1000, f"nothing heard for {idle:g} s")
            return

    async def write(self, outbox: trio.MemoryReceiveChannel[str]) -> None:
        """The outbox to the socket (what has queued up, at once); the server's pings and full
        pictures at their times."""
        timings, send = self.hub.timings, self.transport.send
        now = trio.current_time()
        next_ping, next_refresh = now + timings.ping_every, now + timings.first_refresh
        while True:
            with trio.move_on_at(min(next_ping, next_refresh)):
                async for text in outbox:
                    queued = [text]
                    with contextlib.suppress(trio.WouldBlock):
                        while len(queued) < WRITE_BATCH:
                            queued.append(outbox.receive_nowait())
                    await send(queued)
                return  # the hub let the client go
            now = trio.current_time()
            if now >= next_refresh:
                next_refresh = now + timings.refresh_every
                full = self.hub.stations_update(self.client)
                if full is not None:
                    await send([full])
            if now >= next_ping:
                next_ping = now + timings.ping_every
                await send([dumps({"type": "ping", "timestamp": iso_now()})])
            if self.client.owner is not None and time.time() >= self.client.expires_at:
                self.hub.sign_off(self.client)
                await send([dumps({"type": "auth", "status": "expired"})])


async def converse(
    hub: LiveHub,
    verifier: TokenVerifier,
    transport: Transport,
    client_id: str | None,
    token: str | None,
) -> None:
    """An accepted socket's whole life: the greeting, the app's messages and the updates, until
    either side ends it (or the server stops)."""
    if client_id is not None:
        try:
            client_id = str(UUID(client_id))
        except ValueError:
            await transport.send([error("invalid_client_id", "client_id is a client's UUID")])
            await transport.close(1008, "client_id is not a client id")
            return
    if len(hub.clients) >= hub.timings.max_clients:
        await transport.send([error("server_full", "too many app sockets now; retry later")])
        await transport.close(1013, "too many app sockets")
        return
    client, outbox = hub.connect(client_id)
    client.direct = transport.direct
    talk = LiveSocket(hub, verifier, client, transport)
    try:
        talk.say(
            {
                "type": "connection",
                "status": "connected",
                "client_id": client_id,
                "message": "Connected to location updates",
            }
        )
        if token is not None:
            await talk.authenticate(token)
        async with trio.open_nursery() as nursery:
            done = nursery.cancel_scope
            nursery.start_soon(talk.write, outbox)
            slow = "too slow: updates dropped"
            nursery.start_soon(_close_when, transport, client.dropped, 1013, slow, done)
            stopping = "the server is stopping"
            nursery.start_soon(_close_when, transport, hub.closing, 1001, stopping, done)
            await talk.read()
            done.cancel()
    finally:
        hub.disconnect(client)


def live_blueprint(hub: LiveHub, verifier: TokenVerifier) -> Blueprint:
    bp = Blueprint("live", __name__)

    @bp.websocket("/api/v1/ws/locations")
    async def locations() -> None:
        await websocket.accept()
        args = websocket.args
        await converse(
            hub, verifier, QuartSocket(), args.get("client_id") or None, args.get("token")
        )

    return bp


async def _close_when(
    transport: Transport, event: trio.Event, code: int, reason: str, done: trio.CancelScope
) -> None:
    await event.wait()
    done.cancel()  # the reader and the writer stop here
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT_S):
        await transport.close(code, reason)
