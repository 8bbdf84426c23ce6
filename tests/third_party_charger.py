"""A charge point built on the third-party ``ocpp`` package, run in its own process by the tests.

Its ``ChargePoint`` class checks every message both ways against the OCPP 1.6 JSON schemas:
our answers to its CALLs, and our CALLs and its answers to them. The package is asyncio-based,
so this runs under anyio's asyncio backend, in a separate process, never inside cpms.

Usage: third_party_charger.py WS_BASE_URL STATION PASSWORD
It prints one JSON object per line: the answers to its own CALLs, then "ready", then each command
the central system sent it. It exits when standard input closes.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from typing import Any

import anyio
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result

NOW = datetime.now(UTC).isoformat()


def emit(kind: str, **data: Any) -> None:
    print(json.dumps({"kind": kind, **data}, default=str), flush=True)


def accepted(action: str, result: Any) -> Any:
    emit("command", action=action)
    return result


class Charger(ChargePoint):  # type: ignore[misc]
    @on("RemoteStartTransaction")
    def remote_start(self, **kw: Any) -> Any:
        return accepted("RemoteStartTransaction", call_result.RemoteStartTransaction("Accepted"))

    @on("RemoteStopTransaction")
    def remote_stop(self, **kw: Any) -> Any:
        return accepted("RemoteStopTransaction", call_result.RemoteStopTransaction("Accepted"))

    @on("ChangeAvailability")
    def change_availability(self, **kw: Any) -> Any:
        return accepted("ChangeAvailability", call_result.ChangeAvailability("Accepted"))

    @on("Reset")
    def reset(self, **kw: Any) -> Any:
        return accepted("Reset", call_result.Reset("Accepted"))

    @on("UnlockConnector")
    def unlock(self, **kw: Any) -> Any:
        return accepted("UnlockConnector", call_result.UnlockConnector("Unlocked"))

    @on("GetConfiguration")
    def get_configuration(self, **kw: Any) -> Any:
        keys = [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
        return accepted("GetConfiguration", call_result.GetConfiguration(keys, []))

    @on("ChangeConfiguration")
    def change_configuration(self, **kw: Any) -> Any:
        return accepted("ChangeConfiguration", call_result.ChangeConfiguration("Accepted"))

    @on("ClearCache")
    def clear_cache(self, **kw: Any) -> Any:
        return accepted("ClearCache", call_result.ClearCache("Accepted"))

    @on("TriggerMessage")
    def trigger(self, **kw: Any) -> Any:
        return accepted("TriggerMessage", call_result.TriggerMessage("Accepted"))

    @on("ReserveNow")
    def reserve(self, **kw: Any) -> Any:
        return accepted("ReserveNow", call_result.ReserveNow("Accepted"))

    @on("CancelReservation")
    def cancel_reservation(self, **kw: Any) -> Any:
        return accepted("CancelReservation", call_result.CancelReservation("Accepted"))

    @on("SetChargingProfile")
    def set_profile(self, **kw: Any) -> Any:
        return accepted("SetChargingProfile", call_result.SetChargingProfile("Accepted"))

    @on("ClearChargingProfile")
    def clear_profile(self, **kw: Any) -> Any:
        return accepted("ClearChargingProfile", call_result.ClearChargingProfile("Accepted"))

    @on("GetCompositeSchedule")
    def composite(self, **kw: Any) -> Any:
        return accepted("GetCompositeSchedule", call_result.GetCompositeSchedule("Rejected"))

    @on("GetDiagnostics")
    def diagnostics(self, **kw: Any) -> Any:
        return accepted("GetDiagnostics", call_result.GetDiagnostics("diag.zip"))

    @on("UpdateFirmware")
    def firmware(self, **kw: Any) -> Any:
        return accepted("UpdateFirmware", call_result.UpdateFirmware())

    @on("SendLocalList")
    def local_list(self, **kw: Any) -> Any:
        return accepted("SendLocalList", call_result.SendLocalList("Accepted"))

    @on("GetLocalListVersion")
    def local_list_version(self, **kw: Any) -> Any:
        return accepted("GetLocalListVersion", call_result.GetLocalListVersion(1))

    @on("DataTransfer")
    def data_transfer(self, **kw: Any) -> Any:
        return accepted("DataTransfer", call_result.DataTransfer("Accepted", "pong"))


async def charge(cp: Charger) -> None:
    answers: dict[str, Any] = {}
    boot = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    answers["BootNotification"] = boot.status
    answers["Heartbeat"] = bool((await cp.call(call.Heartbeat())).current_time)
    status = call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
    answers["StatusNotification"] = await cp.call(status) is not None
    answers["Authorize"] = (await cp.call(call.Authorize(id_tag="TAG-1"))).id_tag_info["status"]
    started = await cp.call(
        call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=0, timestamp=NOW)
    )
    tx = started.transaction_id
    answers["StartTransaction"] = tx
    meter = [
        {
            "timestamp": NOW,
            "sampledValue": [
                {"value": "1200", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                {"value": "55", "measurand": "SoC", "unit": "Percent"},
            ],
        }
    ]
    answers["MeterValues"] = (
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=meter))
        is not None
    )
    stopped = await cp.call(
        call.StopTransaction(meter_stop=2400, timestamp=NOW, transaction_id=tx, id_tag="TAG-1")
    )
    answers["StopTransaction"] = stopped.id_tag_info["status"]
    answers["DataTransfer"] = (await cp.call(call.DataTransfer(vendor_id="nobody"))).status
    answers["DiagnosticsStatusNotification"] = (
        await cp.call(call.DiagnosticsStatusNotification(status="Idle")) is not None
    )
    answers["FirmwareStatusNotification"] = (
        await cp.call(call.FirmwareStatusNotification(status="Installed")) is not None
    )
    emit("answers", answers=answers)


async def main(base: str, station: str, password: str) -> None:
    token = base64.b64encode(f"{station}:{password}".encode()).decode()
    async with websockets.connect(
        f"{base}/{station}",
        subprotocols=["ocpp1.6"],
        additional_headers={"Authorization": f"Basic {token}"},
    ) as ws:
        cp = Charger(station, ws)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cp.start)
            await charge(cp)
            emit("ready")
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin
            tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4], backend="asyncio")
