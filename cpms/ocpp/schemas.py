"""OCPP 1.6 JSON-schema validation, compiled once with fastjsonschema (see bench/ocpp_door.py).

The schemas are the ones shipped in the ``ocpp`` package (``ocpp/v16/schemas``). Validation
errors become the CALLERROR codes of OCPP-J 1.6 §4.2.3, the same way the ``ocpp`` package maps
them. ``multipleOf`` (0.1 steps on charging-profile limits) is left out: a binary float such as
21.4 fails it spuriously, and those limits are produced by us, not taken from chargers. Every
integer is bounded (``_prepare``) and every timestamp must be a storable point in time, so
what passes can be written to the database as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

from cpms.kernel.timeutil import parse_time
from cpms.ocpp.frames import ErrorCode, OcppError

Validator = Callable[[Any], Any]

#: Actions a charge point may send to the central system (OCPP 1.6 core + firmware + diagnostics).
FROM_CHARGER = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)

#: Actions the central system may send to a charge point.
TO_CHARGER = frozenset(
    {
        "CancelReservation",
        "ChangeAvailability",
        "ChangeConfiguration",
        "ClearCache",
        "ClearChargingProfile",
        "DataTransfer",
        "GetCompositeSchedule",
        "GetConfiguration",
        "GetDiagnostics",
        "GetLocalListVersion",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ReserveNow",
        "Reset",
        "SendLocalList",
        "SetChargingProfile",
        "TriggerMessage",
        "UnlockConnector",
        "UpdateFirmware",
    }
)

_CODES: dict[str, ErrorCode] = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "ProtocolError",
    "additionalProperties": "FormationViolation",
    "enum": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "format": "PropertyConstraintViolation",
    "minItems": "OccurenceConstraintViolation",
    "maxItems": "OccurenceConstraintViolation",
}


#: OCPP 1.6's ``integer`` is 32 bits (§ data types); a meter register is kept to what its
#: database column (bigint) holds, since a real register can pass 2^31 Wh and refusing a
#: charger's StopTransaction would leave its session unsettled (implausible values are
#: flagged by the session, never billed).
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_WIDE = {"meterStart", "meterStop"}


def _prepare(node: Any, name: str | None = None) -> Any:
    """The schema as we check it: ``multipleOf`` left out, every integer bounded."""
    if isinstance(node, list):
        return [_prepare(v, name) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "multipleOf":
            continue
        if key == "properties":
            out[key] = {prop: _prepare(sub, prop) for prop, sub in value.items()}
        else:
            out[key] = _prepare(value, name)
    kind = node.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        low, high = INT64 if name in _WIDE else INT32
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    return out


def _date_time(value: str) -> bool:
    """An ISO 8601 timestamp that is a point in time we can store (a local time near the ends
    of the calendar can fall outside it once in UTC)."""
    return parse_time(value) is not None


@cache
def validator(name: str) -> Validator:
    """The compiled validator for schema ``name`` (``"MeterValues"``, ``"ResetResponse"``).

    Raises:
        KeyError: no such schema in OCPP 1.6.
    """
    path = resources.files("ocpp").joinpath("v16", "schemas", f"{name}.json")
    if not path.is_file():
        raise KeyError(name)
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema.pop("$schema", None)
    formats = {"date-time": _date_time}
    compiled: Validator = fastjsonschema.compile(_prepare(schema), formats=formats)
    return compiled


def validate(name: str, payload: dict[str, Any], unique_id: str) -> None:
    """Check ``payload`` against schema ``name``.

    Raises:
        OcppError: with the CALLERROR code for the first violation found.
    """
    try:
        validator(name)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _CODES.get(exc.rule or "", "FormationViolation")
        where = (exc.name or "payload").removeprefix("data").lstrip(".") or "payload"
        raise OcppError(
            code, f"{where}: {exc.message.removeprefix(exc.name or '').strip()}", unique_id
        ) from None


def warm_up() -> None:
    """Compile every validator now (at start), not on a charger's first message."""
    for action in FROM_CHARGER:
        validator(action)
        validator(f"{action}Response")
    for action in TO_CHARGER:
        validator(action)
        validator(f"{action}Response")
