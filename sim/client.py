"""A charger's OCPP-J client side: the connection, the boot, the heartbeat and the outbox.

Everything a charger sends goes through one outbox, in order, one CALL at a time (OCPP-J allows
a single outstanding CALL). Durable items (transaction messages) wait in the outbox while the
connection is down and go out after the next boot; the others fail at once with
:class:`~sim.parts.Offline`.
"""

from __future__ import annotations

import abc
import base64
import collections
import itertools
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Self

import trio
from trio_websocket import open_websocket_url

from sim.parts import TRANSIENT, CallFailed, Offline, Outgoing, Payload
from sim.stats import Stats


class OcppClient(abc.ABC):
    """The connection of a charger to its central system: connect (HTTP Basic when it has a
    password), boot, heartbeat, and an outbox sent in order, one CALL at a time; reconnect after
    every loss. What a charger does with it is its subclass's (:class:`VirtualChargePoint`):
    the statuses it reports after a boot, and its answers to the central system's CALLs."""

    def __init__(
        self,
        station_id: str,
        url: str,
        *,
        password: str | None,
        rng: random.Random,
        stats: Stats,
        reconnect_delay: tuple[float, float],
        call_timeout: float,
        vendor: str,
        model: str,
    ) -> None:
        self.station_id = station_id
        self.url = url.rstrip("/") + "/" + station_id
        self.password = password
        self.rng = rng
        self.stats = stats
        self.reconnect_delay = reconnect_delay
        self.call_timeout = call_timeout
        self.vendor, self.model = vendor, model
        self.firmware = "1.0.0"
        self.config: dict[str, str] = {"HeartbeatInterval": "60"}
        self.boot_status: str | None = None
        self.booted_at = -math.inf  # when the last boot was accepted (trio clock)
        self.draining = False
        self.booted = trio.Event()
        self._ws: Any = None
        self._outbox: collections.deque[Outgoing] = collections.deque()
        self._outbox_changed = trio.Event()
        self._waiting: tuple[str, trio.Event, list[Any]] | None = None
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._connection: trio.CancelScope | None = None
        self._allowed = trio.Event()
        self._allowed.set()
        self._reboot_after: float | None = None
        self._last_sent = -math.inf  # when the last CALL went out (trio clock)
        self._closing = False
        self._connected_at: float | None = None
        self.connections = 0

    def boot_statuses(self) -> list[Outgoing]:
        """The StatusNotifications to send first after each boot, in order."""
        return []

    @abc.abstractmethod
    async def _serve_call(self, ws: Any, unique_id: str, action: str, payload: Payload) -> None:
        """Answer one CALL of the central system."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._cm = self._running()
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.run)
            try:
                yield
            finally:
                self._closing = True
                nursery.cancel_scope.cancel()

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until cancelled."""
        while True:
            await self._allowed.wait()
            try:
                await self._connect_once()
            except TRANSIENT as exc:
                self.stats.error(f"connect:{type(exc).__name__}")
            delay = self._reboot_after
            self._reboot_after = None
            if delay is None:
                delay = self.rng.uniform(*self.reconnect_delay)
            await trio.sleep(delay)

    async def wait_booted(self, timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            await self.booted.wait()

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.booted.is_set()

    async def _connect_once(self) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if self.password is not None:
            token = base64.b64encode(f"{self.station_id}:{self.password}".encode()).decode()
            headers.append((b"Authorization", f"Basic {token}".encode()))
        async with open_websocket_url(
            self.url, subprotocols=["ocpp1.6"], extra_headers=headers, connect_timeout=30
        ) as ws:
            if ws.subprotocol != "ocpp1.6":
                self.stats.error("connect:no-subprotocol")
                return
            self.connections += 1
            try:
                async with trio.open_nursery() as connection:
                    self._ws, self._connection = ws, connection.cancel_scope
                    connection.start_soon(self._reader, ws, connection)
                    try:
                        await self._boot()
                    except CallFailed:  # counted; a real charger reconnects and boots again
                        connection.cancel_scope.cancel()
                        return
                    connection.start_soon(self._sender)
                    connection.start_soon(self._heartbeat)
            finally:
                self._lost()

    def _lost(self) -> None:
        if self.booted.is_set():
            self.stats.connected -= 1
        self._ws = None
        self._connection = None
        self.booted = trio.Event()
        if self._waiting is not None:
            self._waiting[2].append(Offline("connection lost"))
            self._waiting[1].set()
        kept = collections.deque(item for item in self._outbox if item.durable)
        for item in self._outbox:
            if not item.durable:
                item.resolve(None, Offline("connection lost"))
        self._outbox = kept

    async def _boot(self) -> None:
        while True:
            result = await self._call(
                "BootNotification",
                {
                    "chargePointVendor": self.vendor,
                    "chargePointModel": self.model,
                    "chargePointSerialNumber": f"SN-{self.station_id}"[:25],
                    "firmwareVersion": self.firmware,
                },
            )
            self.boot_status = result["status"]
            if result["status"] == "Accepted":
                self.config["HeartbeatInterval"] = str(result["interval"])
                break
            await trio.sleep(max(1, result.get("interval") or 10))
        self.stats.connected += 1
        self.stats.ever_connected += 1
        self.booted_at = trio.current_time()
        self._connected_at = trio.current_time()
        # statuses first, then whatever waited for the connection, in order
        self._outbox.extendleft(reversed(self.boot_statuses()))
        self._outbox_changed.set()
        self.booted.set()

    # -- frames ----------------------------------------------------------------------------------

    async def _reader(self, ws: Any, connection: trio.Nursery) -> None:
        try:
            while True:
                text = await ws.get_message()
                try:
                    frame = json.loads(text)
                    kind, unique_id = frame[0], frame[1]
                except (ValueError, IndexError, KeyError, TypeError):
                    self.stats.error("frame:unreadable")
                    continue
                if kind == 2:
                    self.stats.received[frame[2]] += 1
                    connection.start_soon(self._serve_call, ws, unique_id, frame[2], frame[3])
                elif self._waiting is not None and self._waiting[0] == unique_id:
                    self._waiting[2].append(frame)
                    self._waiting[1].set()
                else:
                    self.stats.events[f"unmatched:{kind}"] += 1
        except TRANSIENT:
            pass
        connection.cancel_scope.cancel()

    async def _call(self, action: str, payload: Payload) -> Payload:
        ws = self._ws
        if ws is None:
            raise Offline("not connected")
        unique_id = str(next(self._ids))
        answered = trio.Event()
        slot: list[Any] = []
        self._waiting = (unique_id, answered, slot)
        began = time.perf_counter()
        try:
            await ws.send_message(json.dumps([2, unique_id, action, payload]))
            self._last_sent = trio.current_time()
            self.stats.sent[action] += 1
            with trio.move_on_after(self.call_timeout):
                await answered.wait()
        except TRANSIENT as exc:
            raise Offline("connection lost") from exc
        finally:
            self._waiting = None
        if not slot:
            self.stats.error(f"timeout:{action}")
            raise CallFailed(action, "Timeout", f"no answer in {self.call_timeout:g} s")
        answer = slot[0]
        if isinstance(answer, Exception):
            raise answer
        self.stats.answered(action, time.perf_counter() - began)
        if answer[0] == 4:
            self.stats.error(f"callerror:{action}:{answer[2]}")
            raise CallFailed(action, answer[2], answer[3])
        return dict(answer[2])

    async def _sender(self) -> None:
        """Send the outbox in order, one CALL at a time."""
        while True:
            while not self._outbox:
                self._outbox_changed = trio.Event()
                await self._outbox_changed.wait()
            item = self._outbox[0]
            item.tries += 1
            try:
                result = await self._call(item.action, item.build())
            except Offline:
                return  # the connection is going; durable items wait for the next one
            except CallFailed as failure:
                if item.durable and item.tries < 3:
                    await trio.sleep(1)
                    continue
                self._outbox.popleft()
                item.resolve(None, failure)
                continue
            self._outbox.popleft()
            item.resolve(result)

    def enqueue(
        self,
        action: str,
        build: Callable[[], Payload],
        *,
        durable: bool = False,
        done: Callable[[Payload], None] | None = None,
    ) -> Outgoing:
        item = Outgoing(action, build, durable, done)
        if not durable and not self.connected:
            item.resolve(None, Offline("not connected"))
            return item
        self._outbox.append(item)
        self._outbox_changed.set()
        return item

    async def request(self, action: str, payload: Payload) -> Payload:
        """Send a CALL through the outbox and wait for its answer."""
        item = self.enqueue(action, lambda: payload)
        await item.event.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    async def _heartbeat(self) -> None:
        """A Heartbeat when nothing else was sent for the interval (OCPP 1.6 §4.6 lets a
        charger skip it then), never one queued behind another. The interval is wall-clock: the
        time scale speeds up charging, not the protocol's timers (at 300× a charger queued five
        Heartbeats a second, and its StopTransaction waited behind hundreds of them)."""
        while True:
            interval = int(self.config["HeartbeatInterval"])
            await trio.sleep_until(max(self._last_sent + interval, trio.current_time() + 0.1))
            if trio.current_time() - self._last_sent < interval or self.draining:
                continue
            if not any(item.action == "Heartbeat" for item in self._outbox):
                self.enqueue("Heartbeat", dict)
                self._last_sent = trio.current_time()  # queued: the next one counts from here
