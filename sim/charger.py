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
conforming charger would (:mod:`sim.commands`). Everything it sends goes through one outbox, in
order, one CALL at a time (:mod:`sim.client`). Transaction messages (StartTransaction, their
MeterValues, StopTransaction) are durable: while disconnected they wait in the outbox and are
replayed in order after the next boot, with the transaction id filled in once the server has
given it. Faults on demand: :meth:`fault`, :meth:`disconnect`, :attr:`response_delay`,
:attr:`drop_responses`, :meth:`send_malformed`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from sim.client import OcppClient
from sim.commands import ANSWERS
from sim.curve import Vehicle, random_vehicle
from sim.parts import (
    TRANSIENT,
    CallFailed,
    Connector,
    Offline,
    Outgoing,
    Payload,
    Transaction,
    now_iso,
    sampled_values,
)
from sim.stats import Stats


class VirtualChargePoint(OcppClient):
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
        super().__init__(
            station_id,
            url,
            password=password,
            rng=random.Random(f"{seed}:{station_id}"),
            stats=stats if stats is not None else Stats(),
            reconnect_delay=reconnect_delay,
            call_timeout=call_timeout,
            vendor=vendor,
            model=model,
        )
        self.meter_interval = meter_interval
        self.time_scale = time_scale
        self._clock_origin: tuple[float, datetime] | None = None
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

    def boot_statuses(self) -> list[Outgoing]:
        """Each connector's status, then the charge point's (connector 0), after a boot."""
        return [*(self.status_item(c) for c in self.connectors.values()), self.status_item(None)]

    def status_item(self, connector: Connector | None) -> Outgoing:
        if connector is None:
            payload = {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
        else:
            payload = {
                "connectorId": connector.connector_id,
                "errorCode": connector.error_code,
                "status": connector.status,
            }
        payload["timestamp"] = self.now_iso()
        return Outgoing("StatusNotification", lambda: payload, False)

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
            self._outbox.append(self.status_item(connector))
            self._outbox_changed.set()

    def idle_status(self, connector: Connector) -> str:
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
                self.set_status(connector, self.idle_status(connector))
                return None
        return self.begin_transaction(connector, id_tag, vehicle, stop_after)

    def begin_transaction(
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

        self.enqueue("StartTransaction", lambda: payload, durable=True, done=started)
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
                    self.queue_meter_values(connector, tx, "Sample.Periodic")
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
        self.queue_meter_values(connector, tx, "Transaction.End")

        def build() -> Payload:
            payload: Payload = {
                "transactionId": tx.transaction_id if tx.transaction_id is not None else -1,
                "meterStop": meter_stop,
                "timestamp": stopped_at,
                "reason": reason,
                "idTag": tx.id_tag,
            }
            return payload

        self.enqueue("StopTransaction", build, durable=True)
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
            self.set_status(connector, self.idle_status(connector))
        tx.ended.set()

    def queue_meter_values(
        self, connector: Connector, tx: Transaction | None, context: str
    ) -> None:
        sampled = sampled_values(connector, tx, context)
        stamp = self.now_iso()

        def build() -> Payload:
            payload: Payload = {
                "connectorId": connector.connector_id,
                "meterValue": [{"timestamp": stamp, "sampledValue": sampled}],
            }
            if tx is not None and tx.transaction_id is not None:
                payload["transactionId"] = tx.transaction_id
            return payload

        self.enqueue("MeterValues", build, durable=tx is not None)

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
        self.set_status(connector, self.idle_status(connector))

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
        handler = ANSWERS.get(action)
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
