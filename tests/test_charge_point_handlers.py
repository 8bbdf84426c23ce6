"""The charge point's handlers decide without I/O where a CALL needs no lookup: they return the
answer, the records the actor writes before answering, and the events it performs after."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from actors.charge_point.context import StationContext
from actors.charge_point.handlers import (
    HANDLERS,
    RecordField,
    RecordStatus,
    StateChanged,
)
from actors.charge_point.telemetry import Telemetry
from cpms.ocpp.connector_state import ConnectorState
from cpms.ocpp.frames import OcppError


class NoDatabase:
    """A database any use of which fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the handler used the database ({name})")


def context() -> StationContext:
    configured = ConnectorState("Available", "NoError", "CCS2", Decimal(120), configured=True)
    return StationContext(
        NoDatabase(),  # type: ignore[arg-type]
        "CP-1",
        "LOC-1",
        "Accepted",
        "active",
        False,
        2,
        {1: configured},
        Telemetry(),
    )


async def test_a_status_notification_updates_the_connector_and_asks_to_record_and_publish() -> None:
    ctx = context()
    payload = {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
    handled = await HANDLERS["StatusNotification"](ctx, payload, "1")
    assert handled.answer == {}
    assert handled.records == (RecordStatus(payload),)
    assert handled.events == (StateChanged(),)
    assert ctx.connectors[1].status == "Charging" and ctx.connectors[1].configured
    reported = {"connectorId": 2, "errorCode": "GroundFailure", "status": "Faulted"}
    await HANDLERS["StatusNotification"](ctx, reported, "2")  # a connector nobody set up
    assert ctx.connectors[2] == ConnectorState("Faulted", "GroundFailure")


async def test_a_connector_beyond_the_station_is_refused_and_nothing_changes() -> None:
    ctx = context()
    payload = {"connectorId": 3, "errorCode": "NoError", "status": "Available"}
    with pytest.raises(OcppError) as refused:
        await HANDLERS["StatusNotification"](ctx, payload, "1")
    assert refused.value.code == "PropertyConstraintViolation"
    assert set(ctx.connectors) == {1}


@pytest.mark.parametrize(
    ("action", "column"),
    [
        ("DiagnosticsStatusNotification", "diagnostics_status"),
        ("FirmwareStatusNotification", "firmware_status"),
    ],
)
async def test_progress_notices_are_records_for_the_actor(action: str, column: str) -> None:
    handled = await HANDLERS[action](context(), {"status": "Uploading"}, "1")
    assert handled.answer == {} and handled.events == ()
    assert handled.records == (RecordField(column, "Uploading"),)  # type: ignore[arg-type]


async def test_a_heartbeat_answers_the_time_and_records_nothing_itself() -> None:
    handled = await HANDLERS["Heartbeat"](context(), {}, "1")
    assert set(handled.answer) == {"currentTime"}
    assert handled.records == () and handled.events == ()
