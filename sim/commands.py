"""How a virtual charger answers the central system's CALLs: one function per action, each
returning the answer's payload and what to do once it has gone out (:data:`~sim.parts.After`),
found through the typed table :data:`ANSWERS`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from sim.curve import electrical
from sim.parts import BOOLEAN_KEYS, INTEGER_KEYS, READ_ONLY, TRIGGERABLE, After, Payload

if TYPE_CHECKING:
    from sim.charger import VirtualChargePoint


def remote_start_transaction(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    connector_id = p.get("connectorId")
    candidates = [cp.connectors.get(connector_id)] if connector_id else list(cp.connectors.values())
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
    limit = profile_limit(p.get("chargingProfile"), dc=connector.dc)
    if limit is not None:
        connector.limit_kw = limit

    async def start() -> None:
        cp.set_status(connector, "Preparing")
        cp.begin_transaction(connector, p["idTag"], None, None)

    return {"status": "Accepted"}, start


def remote_stop_transaction(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    for connector in cp.connectors.values():
        tx = connector.tx
        if tx is not None and tx.transaction_id == p["transactionId"]:
            tx.request_stop("Remote")
            return {"status": "Accepted"}, None
    return {"status": "Rejected"}, None


def reset(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    async def reboot() -> None:
        for connector in cp.connectors.values():
            if connector.tx is not None:
                await cp.unplug(connector.connector_id, f"{p['type']}Reset")
        await trio.sleep(0.1)  # let the StopTransactions go out if they can
        cp.disconnect(reconnect_after=1.0)

    return {"status": "Accepted"}, reboot


def change_availability(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    number, kind = p["connectorId"], p["type"]
    if number == 0:
        targets = list(cp.connectors.values())
    elif number in cp.connectors:
        targets = [cp.connectors[number]]
    else:
        return {"status": "Rejected"}, None
    status = "Accepted"
    for connector in targets:
        if connector.tx is not None:
            connector.scheduled_availability = kind
            status = "Scheduled"
            continue
        connector.inoperative = kind == "Inoperative"
        cp.set_status(connector, cp.idle_status(connector))
    return {"status": status}, None


def unlock_connector(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    connector = cp.connectors.get(p["connectorId"])
    if connector is None:
        return {"status": "NotSupported"}, None
    if connector.tx is not None:
        connector.tx.request_stop("UnlockCommand")
    return {"status": "Unlocked"}, None


def get_configuration(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    keys = p.get("key") or list(cp.config)
    known = [
        {"key": k, "readonly": k in READ_ONLY, "value": cp.config[k]}
        for k in keys
        if k in cp.config
    ]
    result: Payload = {"configurationKey": known}
    unknown = [k for k in keys if k not in cp.config]
    if unknown:
        result["unknownKey"] = unknown
    return result, None


def change_configuration(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    key, value = p["key"], p["value"]
    if key not in cp.config:
        return {"status": "NotSupported"}, None
    if key in READ_ONLY:
        return {"status": "Rejected"}, None
    if key in INTEGER_KEYS and not ((value.isdigit() and int(value) > 0) or value == "0"):
        return {"status": "Rejected"}, None
    if key in BOOLEAN_KEYS and value.lower() not in ("true", "false"):
        return {"status": "Rejected"}, None
    cp.config[key] = value
    if key == "MeterValueSampleInterval" and int(value) > 0:
        cp.meter_interval = float(value)
    return {"status": "Accepted"}, None


def clear_cache(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    return {"status": "Accepted"}, None


def trigger_message(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    requested = p["requestedMessage"]
    connector_id = p.get("connectorId")
    if requested not in TRIGGERABLE:
        return {"status": "NotImplemented"}, None
    if connector_id is not None and connector_id not in cp.connectors and connector_id != 0:
        return {"status": "Rejected"}, None

    async def send() -> None:
        if requested == "BootNotification":
            payload = {"chargePointVendor": cp.vendor, "chargePointModel": cp.model}
            cp.enqueue("BootNotification", lambda: payload)
        elif requested == "Heartbeat":
            cp.enqueue("Heartbeat", dict)
        elif requested == "StatusNotification":
            targets = (
                [cp.connectors[connector_id]] if connector_id else [None, *cp.connectors.values()]
            )
            for connector in targets:
                item = cp.status_item(connector)
                cp.enqueue(item.action, item.build)
        elif requested == "MeterValues":
            for connector in cp.connectors.values():
                if not connector_id or connector.connector_id == connector_id:
                    cp.queue_meter_values(connector, None, "Trigger")
        elif requested == "DiagnosticsStatusNotification":
            cp.enqueue("DiagnosticsStatusNotification", lambda: {"status": "Idle"})
        else:
            cp.enqueue("FirmwareStatusNotification", lambda: {"status": "Idle"})

    return {"status": "Accepted"}, send


def reserve_now(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    connector = cp.connectors.get(p["connectorId"])
    if connector is None:
        return {"status": "Rejected"}, None
    if connector.status == "Faulted":
        return {"status": "Faulted"}, None
    if connector.status == "Unavailable":
        return {"status": "Unavailable"}, None
    if connector.tx is not None or connector.status != "Available":
        return {"status": "Occupied"}, None
    connector.reservation_id = p["reservationId"]
    cp.set_status(connector, "Reserved")
    return {"status": "Accepted"}, None


def cancel_reservation(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    for connector in cp.connectors.values():
        if connector.reservation_id == p["reservationId"]:
            connector.reservation_id = None
            cp.set_status(connector, cp.idle_status(connector))
            return {"status": "Accepted"}, None
    return {"status": "Rejected"}, None


def set_charging_profile(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    number = p["connectorId"]
    targets = list(cp.connectors.values()) if number == 0 else [cp.connectors.get(number)]
    if any(c is None for c in targets):
        return {"status": "Rejected"}, None
    for connector in targets:
        assert connector is not None
        connector.limit_kw = profile_limit(p["csChargingProfiles"], dc=connector.dc)
    return {"status": "Accepted"}, None


def clear_charging_profile(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    number = p.get("connectorId")
    cleared = False
    for connector in cp.connectors.values():
        if (not number or connector.connector_id == number) and connector.limit_kw is not None:
            connector.limit_kw = None
            cleared = True
    return {"status": "Accepted" if cleared else "Unknown"}, None


def get_composite_schedule(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    connector = cp.connectors.get(p["connectorId"])
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
        "scheduleStart": cp.now_iso(),
        "chargingSchedule": schedule,
    }, None


def _progress(cp: VirtualChargePoint, action: str, status: str) -> None:
    """A diagnostics or firmware progress notice; kept across a reboot, as a charger
    reports an update's progress after it."""
    payload: Payload = {"status": status}
    cp.enqueue(action, lambda: payload, durable=True)


def get_diagnostics(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    name = f"diagnostics-{cp.station_id}.log"

    async def upload() -> None:
        for status in ("Uploading", "Uploaded"):
            _progress(cp, "DiagnosticsStatusNotification", status)
            await trio.sleep(0.2)

    return {"fileName": name}, upload


def update_firmware(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    async def update() -> None:
        for status in ("Downloading", "Downloaded", "Installing", "Installed"):
            _progress(cp, "FirmwareStatusNotification", status)
            await trio.sleep(0.2)
        cp.firmware = "1.0.1"

    return {}, update


def send_local_list(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    cp.local_list_version = p["listVersion"]
    return {"status": "Accepted"}, None


def get_local_list_version(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    return {"listVersion": cp.local_list_version}, None


def data_transfer(cp: VirtualChargePoint, p: Payload) -> tuple[Payload, After]:
    return {"status": "UnknownVendorId"}, None


#: The central system's commands this charger answers, by action (others: NotImplemented).


ANSWERS: dict[str, Callable[[VirtualChargePoint, Payload], tuple[Payload, After]]] = {
    "RemoteStartTransaction": remote_start_transaction,
    "RemoteStopTransaction": remote_stop_transaction,
    "Reset": reset,
    "ChangeAvailability": change_availability,
    "UnlockConnector": unlock_connector,
    "GetConfiguration": get_configuration,
    "ChangeConfiguration": change_configuration,
    "ClearCache": clear_cache,
    "TriggerMessage": trigger_message,
    "ReserveNow": reserve_now,
    "CancelReservation": cancel_reservation,
    "SetChargingProfile": set_charging_profile,
    "ClearChargingProfile": clear_charging_profile,
    "GetCompositeSchedule": get_composite_schedule,
    "GetDiagnostics": get_diagnostics,
    "UpdateFirmware": update_firmware,
    "SendLocalList": send_local_list,
    "GetLocalListVersion": get_local_list_version,
    "DataTransfer": data_transfer,
}


def profile_limit(profile: Payload | None, *, dc: bool) -> float | None:
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
