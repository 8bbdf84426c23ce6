"""Which events on the bus become push notifications, and for whom.

For the driver: charging started; charging completed (energy, cost, refund), or stopped by the
charger (an emergency stop, a reset, a power loss, the charger gone offline: the same figures,
another title); a session that failed to start (its refund); a balance below
``CPMS_PUSH_LOW_BALANCE`` after a session settles; a top-up credited.

For the station's owner (the station's own, else its location's): a new session, a completed
session (energy and revenue), and the station going offline (once it has been silent for its
heartbeat timeout, as the station actor decides; at most once an hour per station).

A session's notices come from its phase changes (:class:`~cpms.kernel.events.SessionMilestone`),
published once per phase, so a session resumed after a restart does not announce its start
again. Nothing here waits on anything: notices are queued with the sender and dropped if it is
full.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import trio

from actors.push.sender import Push, PushSender
from cpms.kernel.events import (
    Event,
    EventBus,
    PaymentConfirmed,
    SessionMilestone,
    StationStatusChanged,
    in_batches,
)

#: stop reasons that mean the charger ended the session, not the driver, a limit or the app
CHARGER_ENDED = frozenset(
    {
        "EmergencyStop",
        "HardReset",
        "SoftReset",
        "PowerLoss",
        "Reboot",
        "Other",
        "DeAuthorized",
        "UnlockCommand",
        "charger_ended",
        "charger_offline",
        "superseded",
    }
)
FAILED = frozenset({"rejected", "failed", "cancelled"})
OFFLINE_REPEAT_S = 3600.0


@dataclass(frozen=True)
class NoticeSettings:
    low_balance: Decimal = Decimal("100.00")


class Notices:
    def __init__(self, sender: PushSender, settings: NoticeSettings) -> None:
        self.sender = sender
        self.settings = settings
        self._status: dict[str, str] = {}  # station → the last status it published
        self._offline_told: dict[str, float] = {}  # station → when its owner was told

    def on(self, event: Event) -> None:
        if isinstance(event, SessionMilestone):
            self._session(UUID(event.client_id), event.view)
        elif isinstance(event, PaymentConfirmed):
            paid = {"invoice_id": event.invoice_id, "amount": event.amount}
            data = {**paid, "balance": event.balance}
            self.sender.notify(Push("payment_confirmed", data, user_id=UUID(event.client_id)))
        elif isinstance(event, StationStatusChanged):
            self._station(event)

    def _session(self, client: UUID, view: dict[str, Any]) -> None:
        status, station = view["status"], view["station_id"]
        tag = f"session:{view['id']}"
        where = {"session_id": view["id"], "station_id": station}
        if status == "charging":
            started = {**where, "connector_id": view["connector_id"]}
            self.sender.notify(Push("charging_started", started, user_id=client, tag=tag))
            self.sender.notify(
                Push("owner_session_started", started, "owner", station_id=station, tag=tag)
            )
        elif status == "settled":
            energy = view["energy_consumed"]
            figures = {
                **where,
                "energy_kwh": energy,
                "cost": view["final_cost"],
                "refund": view["refunded_amount"],
                "reason": view["stop_reason"],
            }
            by_charger = view["stop_reason"] in CHARGER_ENDED
            kind = "charging_stopped" if by_charger else "charging_completed"
            self.sender.notify(Push(kind, figures, user_id=client, tag=tag))
            revenue = {**where, "energy_kwh": energy, "revenue": view["final_cost"]}
            self.sender.notify(
                Push("owner_session_completed", revenue, "owner", station_id=station, tag=tag)
            )
            low = self.settings.low_balance
            self.sender.notify(Push("low_balance", {}, user_id=client, below=low))
        elif status in FAILED and view["stop_reason"] != "user":  # a driver's own cancel: no
            failed = {
                **where,
                "refund": view["refunded_amount"],
                "reason": view["error"] or view["stop_reason"] or status,
            }
            self.sender.notify(Push("charging_failed", failed, user_id=client, tag=tag))

    def _station(self, event: StationStatusChanged) -> None:
        before = self._status.get(event.station_id)
        self._status[event.station_id] = event.status
        if event.status != "offline" or before is None or before == "offline":
            return
        now = trio.current_time()
        told = self._offline_told.get(event.station_id)
        if told is not None and now - told < OFFLINE_REPEAT_S:
            return
        self._offline_told[event.station_id] = now
        data = {"station_id": event.station_id, "location_id": event.location_id}
        self.sender.notify(Push("station_offline", data, "owner", station_id=event.station_id))


async def follow_events(
    bus: EventBus,
    sender: PushSender,
    settings: NoticeSettings,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Turn the bus's events into notifications until ``shutdown``."""
    notices = Notices(sender, settings)
    with bus.subscribe(capacity=10_000) as events:
        async with trio.open_nursery() as nursery:

            async def until_shutdown() -> None:
                await shutdown.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_shutdown)
            task_status.started()
            async for batch in in_batches(events):
                for event in batch:
                    notices.on(event)
