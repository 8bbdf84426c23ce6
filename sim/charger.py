"""A virtual OCPP 1.6J charge point: real frames over trio-websocket, behaving like a charger.

    async with VirtualChargePoint("CP-1", "ws://127.0.0.1:9000/ws", password="pw") as cp:
        await cp.wait_booted()
        await cp.plug_in(1, id_tag="TAG-1")          # a driver arrives and starts charging
        ...

It boots, heartbeats at the interval the server returns (on the wall clock, and only when
nothing else was sent meanwhile), walks its connectors through the status
sequences a charger does (Available → Preparing → Charging → SuspendedEV → Finishing → Available,
and Faulted / Unavailable / Reserved), charges vehicles along :mod:`sim.curve`, and sends
MeterValues every ``meter_interval`` seconds. It answers every central-system command the way a
conforming charger would. Everything it sends goes through one outbox, in order, one CALL at a
time (OCPP-J allows a single outstanding CALL). Transaction messages (StartTransaction, their
MeterValues, StopTransaction) are durable: while disconnected they wait in the outbox and are
replayed in order after the next boot, with the transaction id filled in once the server has
given it. Faults on demand: :meth:`fault`, :meth:`disconnect`, :attr:`response_delay`,
:attr:`drop_responses`, :meth:`send_malformed`.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from sim.curve import Vehicle, electrical, random_vehicle
from sim.stats import Stats

Payload = dict[str, Any]
#: What to do once a command's answer has gone out (start the transaction it asked for, ...).
After = Callable[[], Any] | None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Offline(Exception):
    """The charger is not connected (or lost the connection before an answer came)."""


#: Reasons a connection attempt or a connection failed, as counted in the report.
TRANSIENT = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, Offline)


class CallFailed(Exception):
    """The central system answered a CALL with a CALLERROR, or not in time."""

    def __init__(self, action: str, code: str, description: str = "") -> None:
        super().__init__(f"{action}: {code} {description}".strip())
        self.code = code


@dataclass(eq=False)
class _Outgoing:
    action: str
    build: Callable[[], Payload]
    durable: bool
    done: Callable[[Payload], None] | None = None
    event: trio.Event = field(default_factory=trio.Event)
    result: Payload | None = None
    error: Exception | None = None
    tries: int = 0

    def resolve(self, result: Payload | None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        if error is None and self.done is not None and result is not None:
            self.done(result)
        self.event.set()


@dataclass(eq=False)
class Transaction:
    connector_id: int
    id_tag: str
    meter_start: int
    vehicle: Vehicle
    started_at: str
    transaction_id: int | None = None
    stop_reason: str | None = None
    stop: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()


@dataclass(eq=False)
class Connector:
    connector_id: int
    power_kw: float
    dc: bool
    status: str = "Available"
    error_code: str = "NoError"
    energy: float = 0.0  # Wh, the meter register (monotonic)
    power: float = 0.0  # kW now
    tx: Transaction | None = None
    reservation_id: int | None = None
    limit_kw: float | None = None  # from a charging profile
    inoperative: bool = False
    scheduled_availability: str | None = None
    history: list[str] = field(default_factory=list)

    @property
    def register(self) -> int:
        return int(self.energy)

    def offered_kw(self) -> float:
        return self.power_kw if self.limit_kw is None else min(self.power_kw, self.limit_kw)


READ_ONLY = {"NumberOfConnectors", "SupportedFeatureProfiles", "ChargeProfileMaxStackLevel"}
INTEGER_KEYS = {
    "HeartbeatInterval",
    "MeterValueSampleInterval",
    "ConnectionTimeOut",
    "ResetRetries",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "ClockAlignedDataInterval",
}
BOOLEAN_KEYS = {
    "AuthorizeRemoteTxRequests",
    "LocalAuthListEnabled",
    "StopTransactionOnEVSideDisconnect",
    "UnlockConnectorOnEVSideDisconnect",
}
TRIGGERABLE = {
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
}


class VirtualChargePoint:
    def __init__(
        self,
        station_id: str,
        url: str,
        *,
        password: str | None = None,
        connectors: int | Sequence[tuple[float, bool]] = 2,
        power_kw: float = 22.0,
        dc: bool = False,
        meter_interval: float = 15.0,
        seed: int = 0,
        stats: Stats | None = None,
        time_scale: float = 1.0,
        reconnect_delay: tuple[float, float] = (1.0, 5.0),
        call_timeout: float = 30.0,
        vendor: str = "cpms-sim",
        model: str = "VCP-1",
    ) -> None:
        self.station_id = station_id
        self.url = url.rstrip("/") + "/" + station_id
        self.password = password
        self.meter_interval = meter_interval
        self.rng = random.Random(f"{seed}:{station_id}")
        self.stats = stats if stats is not None else Stats()
        self.time_scale = time_scale
        self._clock_origin: tuple[float, datetime] | None = None
        self.reconnect_delay = reconnect_delay
        self.call_timeout = call_timeout
        self.vendor, self.model = vendor, model
        self.firmware = "1.0.0"
        # ``connectors``: how many, all ``power_kw`` and ``dc``; or (power kW, DC?) per connector
        specs = [(power_kw, dc)] * connectors if isinstance(connectors, int) else connectors
        self.connectors = {
            n: Connector(n, power, is_dc) for n, (power, is_dc) in enumerate(specs, start=1)
        }
        self.config: dict[str, str] = {
            "HeartbeatInterval": "60",
            "MeterValueSampleInterval": str(int(meter_interval)),
            "ConnectionTimeOut": "60",
            "NumberOfConnectors": str(len(self.connectors)),
            "MeterValuesSampledData": (
                "Energy.Active.Import.Register,Power.Active.Import,SoC,Current.Import,Voltage"
            ),
            "AuthorizeRemoteTxRequests": "false",
            "LocalAuthListEnabled": "true",
            "StopTransactionOnEVSideDisconnect": "true",
            "UnlockConnectorOnEVSideDisconnect": "true",
            "ResetRetries": "3",
            "TransactionMessageAttempts": "3",
            "TransactionMessageRetryInterval": "10",
            "ClockAlignedDataInterval": "0",
            "ChargeProfileMaxStackLevel": "8",
            "SupportedFeatureProfiles": (
                "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,"
                "RemoteTrigger"
            ),
        }
        self.local_list_version = 0
        #: every transaction started here, in order
        self.transactions: list[Transaction] = []
        #: Fault injection: seconds before answering a server CALL, and whether to answer at all.
        self.response_delay = 0.0
        self.drop_responses = False
        self.boot_status: str | None = None
        self.booted_at = -math.inf  # when the last boot was accepted (trio clock)
        self.draining = False
        self.booted = trio.Event()
        self._ws: Any = None
        self._outbox: collections.deque[_Outgoing] = collections.deque()
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

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> VirtualChargePoint:
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
        for connector in [None, *reversed(self.connectors.values())]:
            self._outbox.appendleft(self._status_item(connector))
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

    def _enqueue(
        self,
        action: str,
        build: Callable[[], Payload],
        *,
        durable: bool = False,
        done: Callable[[Payload], None] | None = None,
    ) -> _Outgoing:
        item = _Outgoing(action, build, durable, done)
        if not durable and not self.connected:
            item.resolve(None, Offline("not connected"))
            return item
        self._outbox.append(item)
        self._outbox_changed.set()
        return item

    async def request(self, action: str, payload: Payload) -> Payload:
        """Send a CALL through the outbox and wait for its answer."""
        item = self._enqueue(action, lambda: payload)
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
                self._enqueue("Heartbeat", dict)
                self._last_sent = trio.current_time()  # queued: the next one counts from here

    async def drain(self, timeout: float = 10.0) -> bool:
        """Stop starting anything (heartbeats, sessions), end running transactions, and wait until
        everything queued has been sent and answered. False if that took over ``timeout``."""
        self.draining = True
        with trio.move_on_after(timeout):
            for connector in self.connectors.values():
                if connector.tx is not None:
                    await self.unplug(connector.connector_id)
            while self._outbox or self._waiting is not None:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.05)
            return True
        return False

    # -- statuses --------------------------------------------------------------------------------

    def _status_item(self, connector: Connector | None) -> _Outgoing:
        if connector is None:
            payload = {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
        else:
            payload = {
                "connectorId": connector.connector_id,
                "errorCode": connector.error_code,
                "status": connector.status,
            }
        payload["timestamp"] = self.now_iso()
        return _Outgoing("StatusNotification", lambda: payload, False)

    def now_iso(self) -> str:
        """The charger's clock: it runs ``time_scale`` times as fast as the wall clock from the
        first time it is read, so what the charger reports is consistent with the energy it
        delivers in compressed time (the central system checks readings against rated power ×
        the time the charger's own timestamps say has passed)."""
        if self.time_scale == 1:
            return now_iso()
        if self._clock_origin is None:
            self._clock_origin = (trio.current_time(), datetime.now(UTC))
        origin, wall = self._clock_origin
        at = wall + timedelta(seconds=(trio.current_time() - origin) * self.time_scale)
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def set_status(self, connector: Connector, status: str, error_code: str | None = None) -> None:
        if error_code is None:
            error_code = connector.error_code if status == "Faulted" else "NoError"
        if connector.status == status and connector.error_code == error_code:
            return
        connector.status, connector.error_code = status, error_code
        connector.history.append(status)
        if self.connected:
            self._outbox.append(self._status_item(connector))
            self._outbox_changed.set()

    def _idle_status(self, connector: Connector) -> str:
        if connector.error_code != "NoError":
            return "Faulted"
        if connector.inoperative:
            return "Unavailable"
        if connector.reservation_id is not None:
            return "Reserved"
        return "Available"

    # -- driving ---------------------------------------------------------------------------------

    async def plug_in(
        self,
        connector_id: int,
        id_tag: str,
        *,
        vehicle: Vehicle | None = None,
        authorize: bool = True,
        stop_after: float | None = None,
    ) -> Transaction | None:
        """A driver plugs in and presents ``id_tag``: Authorize, then a transaction that runs in
        the background until :meth:`unplug`, a remote stop, a fault, a full battery held for
        ``stop_after`` seconds... Returns None when the tag is refused or the connector busy."""
        connector = self.connectors[connector_id]
        if self.draining or connector.tx is not None:
            return None
        if connector.status not in ("Available", "Reserved"):
            return None
        self.set_status(connector, "Preparing")
        if authorize:
            try:
                info = (await self.request("Authorize", {"idTag": id_tag}))["idTagInfo"]
            except (Offline, CallFailed):
                info = {"status": "Invalid"}
            if info["status"] != "Accepted":
                self.stats.events["authorize_refused"] += 1
                self.set_status(connector, self._idle_status(connector))
                return None
        return self._start(connector, id_tag, vehicle, stop_after)

    def _start(
        self,
        connector: Connector,
        id_tag: str,
        vehicle: Vehicle | None,
        stop_after: float | None,
    ) -> Transaction:
        vehicle = vehicle or random_vehicle(self.rng, dc=connector.dc)
        tx = Transaction(
            connector.connector_id, id_tag, connector.register, vehicle, self.now_iso()
        )
        connector.tx = tx
        self.transactions.append(tx)
        payload: Payload = {
            "connectorId": connector.connector_id,
            "idTag": id_tag,
            "meterStart": tx.meter_start,
            "timestamp": tx.started_at,
        }
        if connector.reservation_id is not None:
            payload["reservationId"] = connector.reservation_id
            connector.reservation_id = None

        def started(result: Payload) -> None:
            tx.transaction_id = int(result["transactionId"])
            if result["idTagInfo"]["status"] != "Accepted":
                tx.request_stop("DeAuthorized")

        self._enqueue("StartTransaction", lambda: payload, durable=True, done=started)
        self.stats.sessions_started += 1
        self.stats.active_sessions += 1
        self.set_status(connector, "Charging")
        assert self._nursery is not None
        self._nursery.start_soon(self._charge, connector, tx, stop_after)
        return tx

    async def _charge(
        self, connector: Connector, tx: Transaction, stop_after: float | None
    ) -> None:
        tick = min(1.0, self.meter_interval)
        last = trio.current_time()
        next_meter = last + self.meter_interval
        full_since: float | None = None
        try:
            while not tx.stop.is_set():
                with trio.move_on_after(tick):
                    await tx.stop.wait()
                now = trio.current_time()
                energy, power = tx.vehicle.charge(
                    connector.offered_kw(), (now - last) * self.time_scale
                )
                last = now
                before = connector.register
                connector.energy += energy * 1000
                connector.power = power
                self.stats.energy_wh += connector.register - before
                if tx.vehicle.full and connector.status == "Charging":
                    self.set_status(connector, "SuspendedEV")
                    full_since = now
                if now >= next_meter:
                    self._meter_values(connector, tx, "Sample.Periodic")
                    next_meter = now + self.meter_interval
                if full_since is not None and stop_after is not None:
                    held = now - full_since
                    if held >= stop_after:
                        tx.request_stop("EVDisconnected")
        finally:
            self._finish(connector, tx)

    def _finish(self, connector: Connector, tx: Transaction) -> None:
        connector.power = 0.0
        reason = tx.stop_reason or "Local"
        meter_stop, stopped_at = connector.register, self.now_iso()
        self._meter_values(connector, tx, "Transaction.End")

        def build() -> Payload:
            payload: Payload = {
                "transactionId": tx.transaction_id if tx.transaction_id is not None else -1,
                "meterStop": meter_stop,
                "timestamp": stopped_at,
                "reason": reason,
                "idTag": tx.id_tag,
            }
            return payload

        self._enqueue("StopTransaction", build, durable=True)
        connector.tx = None
        self.stats.active_sessions -= 1
        self.stats.sessions_completed += 1
        if connector.error_code != "NoError":
            self.set_status(connector, "Faulted", connector.error_code)
        else:
            self.set_status(connector, "Finishing")
            if connector.scheduled_availability == "Inoperative":
                connector.inoperative = True
            connector.scheduled_availability = None
            self.set_status(connector, self._idle_status(connector))
        tx.ended.set()

    def _meter_values(self, connector: Connector, tx: Transaction | None, context: str) -> None:
        current, voltage = electrical(connector.power, dc=connector.dc)
        sampled = [
            {
                "value": str(connector.register),
                "context": context,
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
            },
            {
                "value": f"{connector.power * 1000:.0f}",
                "context": context,
                "measurand": "Power.Active.Import",
                "unit": "W",
            },
            {
                "value": f"{current:.1f}",
                "context": context,
                "measurand": "Current.Import",
                "unit": "A",
            },
            {"value": f"{voltage:.0f}", "context": context, "measurand": "Voltage", "unit": "V"},
        ]
        if tx is not None:
            sampled.append(
                {
                    "value": f"{tx.vehicle.soc:.0f}",
                    "context": context,
                    "measurand": "SoC",
                    "unit": "Percent",
                    "location": "EV",
                }
            )
        stamp = self.now_iso()

        def build() -> Payload:
            payload: Payload = {
                "connectorId": connector.connector_id,
                "meterValue": [{"timestamp": stamp, "sampledValue": sampled}],
            }
            if tx is not None and tx.transaction_id is not None:
                payload["transactionId"] = tx.transaction_id
            return payload

        self._enqueue("MeterValues", build, durable=tx is not None)

    async def unplug(self, connector_id: int, reason: str = "Local") -> None:
        """The driver stops at the charger (or unplugs): the transaction ends."""
        tx = self.connectors[connector_id].tx
        if tx is not None:
            tx.request_stop(reason)
            await tx.ended.wait()

    # -- faults ----------------------------------------------------------------------------------

    async def fault(self, connector_id: int, error_code: str = "GroundFailure") -> None:
        """A connector fails: its transaction stops (reason Other) and it reports Faulted."""
        connector = self.connectors[connector_id]
        connector.error_code = error_code
        if connector.tx is not None:
            await self.unplug(connector_id, "Other")  # finishing reports Faulted
        else:
            self.set_status(connector, "Faulted", error_code)

    def clear_fault(self, connector_id: int) -> None:
        connector = self.connectors[connector_id]
        connector.error_code = "NoError"
        self.set_status(connector, self._idle_status(connector))

    def disconnect(self, *, reconnect_after: float | None = None) -> None:
        """Drop the connection; reconnect after ``reconnect_after`` s (or the usual delay)."""
        self._reboot_after = reconnect_after
        if self._connection is not None:
            self._connection.cancel()

    def go_offline(self) -> None:
        """Drop the connection and stay away until :meth:`go_online`."""
        self._allowed = trio.Event()
        self.disconnect(reconnect_after=0)

    def go_online(self) -> None:
        self._allowed.set()

    async def send_malformed(self, text: str = '[2,"broken",') -> None:
        """Send a frame that is not OCPP-J; the central system answers with a CALLERROR."""
        if self._ws is not None:
            await self._ws.send_message(text)

    # -- answering the central system ------------------------------------------------------------

    async def _serve_call(self, ws: Any, unique_id: str, action: str, payload: Payload) -> None:
        if self.response_delay:
            await trio.sleep(self.response_delay)
        if self.drop_responses:
            self.stats.events[f"dropped:{action}"] += 1
            return
        handler = self._ANSWERS.get(action)
        if handler is None:
            answer = [4, unique_id, "NotImplemented", f"{action} is not supported", {}]
            after = None
        else:
            result, after = handler(self, payload)
            answer = [3, unique_id, result]
        try:
            await ws.send_message(json.dumps(answer))
        except TRANSIENT:
            return
        if after is not None:
            assert self._nursery is not None
            self._nursery.start_soon(after)

    def _on_RemoteStartTransaction(self, p: Payload) -> tuple[Payload, After]:
        connector_id = p.get("connectorId")
        candidates = (
            [self.connectors.get(connector_id)] if connector_id else list(self.connectors.values())
        )
        connector = next(
            (
                c
                for c in candidates
                if c is not None and c.tx is None and not c.inoperative and c.status == "Available"
            ),
            None,
        )
        if connector is None:
            return {"status": "Rejected"}, None
        limit = _profile_limit(p.get("chargingProfile"), dc=connector.dc)
        if limit is not None:
            connector.limit_kw = limit

        async def start() -> None:
            self.set_status(connector, "Preparing")
            self._start(connector, p["idTag"], None, None)

        return {"status": "Accepted"}, start

    def _on_RemoteStopTransaction(self, p: Payload) -> tuple[Payload, After]:
        for connector in self.connectors.values():
            tx = connector.tx
            if tx is not None and tx.transaction_id == p["transactionId"]:
                tx.request_stop("Remote")
                return {"status": "Accepted"}, None
        return {"status": "Rejected"}, None

    def _on_Reset(self, p: Payload) -> tuple[Payload, After]:
        async def reboot() -> None:
            for connector in self.connectors.values():
                if connector.tx is not None:
                    await self.unplug(connector.connector_id, f"{p['type']}Reset")
            await trio.sleep(0.1)  # let the StopTransactions go out if they can
            self.disconnect(reconnect_after=1.0)

        return {"status": "Accepted"}, reboot

    def _on_ChangeAvailability(self, p: Payload) -> tuple[Payload, After]:
        number, kind = p["connectorId"], p["type"]
        if number == 0:
            targets = list(self.connectors.values())
        elif number in self.connectors:
            targets = [self.connectors[number]]
        else:
            return {"status": "Rejected"}, None
        status = "Accepted"
        for connector in targets:
            if connector.tx is not None:
                connector.scheduled_availability = kind
                status = "Scheduled"
                continue
            connector.inoperative = kind == "Inoperative"
            self.set_status(connector, self._idle_status(connector))
        return {"status": status}, None

    def _on_UnlockConnector(self, p: Payload) -> tuple[Payload, After]:
        connector = self.connectors.get(p["connectorId"])
        if connector is None:
            return {"status": "NotSupported"}, None
        if connector.tx is not None:
            connector.tx.request_stop("UnlockCommand")
        return {"status": "Unlocked"}, None

    def _on_GetConfiguration(self, p: Payload) -> tuple[Payload, After]:
        keys = p.get("key") or list(self.config)
        known = [
            {"key": k, "readonly": k in READ_ONLY, "value": self.config[k]}
            for k in keys
            if k in self.config
        ]
        result: Payload = {"configurationKey": known}
        unknown = [k for k in keys if k not in self.config]
        if unknown:
            result["unknownKey"] = unknown
        return result, None

    def _on_ChangeConfiguration(self, p: Payload) -> tuple[Payload, After]:
        key, value = p["key"], p["value"]
        if key not in self.config:
            return {"status": "NotSupported"}, None
        if key in READ_ONLY:
            return {"status": "Rejected"}, None
        if key in INTEGER_KEYS and not ((value.isdigit() and int(value) > 0) or value == "0"):
            return {"status": "Rejected"}, None
        if key in BOOLEAN_KEYS and value.lower() not in ("true", "false"):
            return {"status": "Rejected"}, None
        self.config[key] = value
        if key == "MeterValueSampleInterval" and int(value) > 0:
            self.meter_interval = float(value)
        return {"status": "Accepted"}, None

    def _on_ClearCache(self, p: Payload) -> tuple[Payload, After]:
        return {"status": "Accepted"}, None

    def _on_TriggerMessage(self, p: Payload) -> tuple[Payload, After]:
        requested = p["requestedMessage"]
        connector_id = p.get("connectorId")
        if requested not in TRIGGERABLE:
            return {"status": "NotImplemented"}, None
        if connector_id is not None and connector_id not in self.connectors and connector_id != 0:
            return {"status": "Rejected"}, None

        async def send() -> None:
            if requested == "BootNotification":
                payload = {"chargePointVendor": self.vendor, "chargePointModel": self.model}
                self._enqueue("BootNotification", lambda: payload)
            elif requested == "Heartbeat":
                self._enqueue("Heartbeat", dict)
            elif requested == "StatusNotification":
                targets = (
                    [self.connectors[connector_id]]
                    if connector_id
                    else [None, *self.connectors.values()]
                )
                for connector in targets:
                    item = self._status_item(connector)
                    self._enqueue(item.action, item.build)
            elif requested == "MeterValues":
                for connector in self.connectors.values():
                    if not connector_id or connector.connector_id == connector_id:
                        self._meter_values(connector, None, "Trigger")
            elif requested == "DiagnosticsStatusNotification":
                self._enqueue("DiagnosticsStatusNotification", lambda: {"status": "Idle"})
            else:
                self._enqueue("FirmwareStatusNotification", lambda: {"status": "Idle"})

        return {"status": "Accepted"}, send

    def _on_ReserveNow(self, p: Payload) -> tuple[Payload, After]:
        connector = self.connectors.get(p["connectorId"])
        if connector is None:
            return {"status": "Rejected"}, None
        if connector.status == "Faulted":
            return {"status": "Faulted"}, None
        if connector.status == "Unavailable":
            return {"status": "Unavailable"}, None
        if connector.tx is not None or connector.status != "Available":
            return {"status": "Occupied"}, None
        connector.reservation_id = p["reservationId"]
        self.set_status(connector, "Reserved")
        return {"status": "Accepted"}, None

    def _on_CancelReservation(self, p: Payload) -> tuple[Payload, After]:
        for connector in self.connectors.values():
            if connector.reservation_id == p["reservationId"]:
                connector.reservation_id = None
                self.set_status(connector, self._idle_status(connector))
                return {"status": "Accepted"}, None
        return {"status": "Rejected"}, None

    def _on_SetChargingProfile(self, p: Payload) -> tuple[Payload, After]:
        number = p["connectorId"]
        targets = list(self.connectors.values()) if number == 0 else [self.connectors.get(number)]
        if any(c is None for c in targets):
            return {"status": "Rejected"}, None
        for connector in targets:
            assert connector is not None
            connector.limit_kw = _profile_limit(p["csChargingProfiles"], dc=connector.dc)
        return {"status": "Accepted"}, None

    def _on_ClearChargingProfile(self, p: Payload) -> tuple[Payload, After]:
        number = p.get("connectorId")
        cleared = False
        for connector in self.connectors.values():
            if (not number or connector.connector_id == number) and connector.limit_kw is not None:
                connector.limit_kw = None
                cleared = True
        return {"status": "Accepted" if cleared else "Unknown"}, None

    def _on_GetCompositeSchedule(self, p: Payload) -> tuple[Payload, After]:
        connector = self.connectors.get(p["connectorId"])
        if connector is None or connector.limit_kw is None:
            return {"status": "Rejected"}, None
        unit = p.get("chargingRateUnit", "W")
        limit = connector.limit_kw * 1000
        if unit == "A":
            limit = electrical(connector.limit_kw, dc=connector.dc)[0]
        schedule = {
            "duration": p["duration"],
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit, 1)}],
        }
        return {
            "status": "Accepted",
            "connectorId": connector.connector_id,
            "scheduleStart": self.now_iso(),
            "chargingSchedule": schedule,
        }, None

    def _progress(self, action: str, status: str) -> None:
        """A diagnostics or firmware progress notice; kept across a reboot, as a charger
        reports an update's progress after it."""
        payload: Payload = {"status": status}
        self._enqueue(action, lambda: payload, durable=True)

    def _on_GetDiagnostics(self, p: Payload) -> tuple[Payload, After]:
        name = f"diagnostics-{self.station_id}.log"

        async def upload() -> None:
            for status in ("Uploading", "Uploaded"):
                self._progress("DiagnosticsStatusNotification", status)
                await trio.sleep(0.2)

        return {"fileName": name}, upload

    def _on_UpdateFirmware(self, p: Payload) -> tuple[Payload, After]:
        async def update() -> None:
            for status in ("Downloading", "Downloaded", "Installing", "Installed"):
                self._progress("FirmwareStatusNotification", status)
                await trio.sleep(0.2)
            self.firmware = "1.0.1"

        return {}, update

    def _on_SendLocalList(self, p: Payload) -> tuple[Payload, After]:
        self.local_list_version = p["listVersion"]
        return {"status": "Accepted"}, None

    def _on_GetLocalListVersion(self, p: Payload) -> tuple[Payload, After]:
        return {"listVersion": self.local_list_version}, None

    def _on_DataTransfer(self, p: Payload) -> tuple[Payload, After]:
        return {"status": "UnknownVendorId"}, None

    #: The central system's commands this charger answers, by action (others: NotImplemented).
    _ANSWERS: ClassVar[
        dict[str, Callable[[VirtualChargePoint, Payload], tuple[Payload, After]]]
    ] = {
        "RemoteStartTransaction": _on_RemoteStartTransaction,
        "RemoteStopTransaction": _on_RemoteStopTransaction,
        "Reset": _on_Reset,
        "ChangeAvailability": _on_ChangeAvailability,
        "UnlockConnector": _on_UnlockConnector,
        "GetConfiguration": _on_GetConfiguration,
        "ChangeConfiguration": _on_ChangeConfiguration,
        "ClearCache": _on_ClearCache,
        "TriggerMessage": _on_TriggerMessage,
        "ReserveNow": _on_ReserveNow,
        "CancelReservation": _on_CancelReservation,
        "SetChargingProfile": _on_SetChargingProfile,
        "ClearChargingProfile": _on_ClearChargingProfile,
        "GetCompositeSchedule": _on_GetCompositeSchedule,
        "GetDiagnostics": _on_GetDiagnostics,
        "UpdateFirmware": _on_UpdateFirmware,
        "SendLocalList": _on_SendLocalList,
        "GetLocalListVersion": _on_GetLocalListVersion,
        "DataTransfer": _on_DataTransfer,
    }


def _profile_limit(profile: Payload | None, *, dc: bool) -> float | None:
    """The first period's limit of a charging profile, in kW."""
    if not profile:
        return None
    schedule = profile.get("chargingSchedule") or {}
    periods = schedule.get("chargingSchedulePeriod") or []
    if not periods:
        return None
    limit = float(periods[0]["limit"])
    if schedule.get("chargingRateUnit") == "A":
        voltage = electrical(1.0, dc=dc)[1]
        phases = 1 if dc else int(periods[0].get("numberPhases", 3))
        return limit * voltage * phases / 1000
    return limit / 1000 if not math.isnan(limit) else None
