"""OCPP-J 1.6 framing, without I/O: text ↔ CALL / CALLRESULT / CALLERROR.

    CALL        [2, "<uniqueId>", "<Action>", {payload}]
    CALLRESULT  [3, "<uniqueId>", {payload}]
    CALLERROR   [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {errorDetails}]

:func:`parse_frame` either returns a frame or raises :class:`OcppError` carrying the CALLERROR
code the peer should get (and the unique id, when one could be read).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import simplejson

from cpms.kernel import jsontext

CALL, CALLRESULT, CALLERROR = 2, 3, 4
MAX_UNIQUE_ID = 36

ErrorCode = Literal[
    "NotImplemented",
    "NotSupported",
    "InternalError",
    "ProtocolError",
    "SecurityError",
    "FormationViolation",
    "PropertyConstraintViolation",
    "OccurenceConstraintViolation",
    "TypeConstraintViolation",
    "GenericError",
]

#: A unique id we can't read (the frame wasn't JSON, or had none).
UNKNOWN_ID = "-1"
_LEADING_ID = re.compile(r'^\s*\[\s*\d\s*,\s*"([^"\\]{1,36})"')


class OcppError(Exception):
    """A frame or payload the peer must be told about with a CALLERROR."""

    def __init__(
        self,
        code: ErrorCode,
        description: str,
        unique_id: str = UNKNOWN_ID,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {description}")
        self.code: ErrorCode = code
        self.description = description
        self.unique_id = unique_id
        self.details = details or {}

    def frame(self) -> CallError:
        return CallError(self.unique_id, self.code, self.description[:255], self.details)


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return dumps([CALL, self.unique_id, self.action, self.payload])


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return dumps([CALLRESULT, self.unique_id, self.payload])


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return dumps([CALLERROR, self.unique_id, self.code, self.description, self.details])


Frame = Call | CallResult | CallError


#: printable ASCII but the quote and the backslash: a JSON string's text as it stands
_PLAIN = re.compile(r"[ !#-\[\]-~]*")
_JSON_SPACE = " \t\n\r"
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_CALL_HEAD = re.compile(
    rf"\[[{_JSON_SPACE}]*2[{_JSON_SPACE}]*(?:,[{_JSON_SPACE}]*{_JSON_STRING}[{_JSON_SPACE}]*){{2}},"
)
_RESULT_HEAD = re.compile(
    rf"\[[{_JSON_SPACE}]*3[{_JSON_SPACE}]*,[{_JSON_SPACE}]*{_JSON_STRING}[{_JSON_SPACE}]*,"
)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: object) -> str:
    """Compact JSON. Decimals (money, energy, charging limits parsed exactly) are written as JSON
    numbers: the standard library's C encoder cannot, so a value holding one goes to simplejson."""
    try:
        return _ENCODER.encode(value)
    except TypeError:
        return str(
            simplejson.dumps(value, separators=(",", ":"), ensure_ascii=False, use_decimal=True)
        )


def _string(value: str) -> str:
    """``value`` as a JSON string (most ids and actions need no escape: no encoder then)."""
    return f'"{value}"' if _PLAIN.fullmatch(value) else dumps(value)


def payload_text(frame: Call | CallResult, text: str | None) -> str:
    """The payload of ``frame`` as JSON text, cut from the frame's ``text``: at once when that
    is in the compact form (ours always is; most chargers' too), else past a head with any
    whitespace (Python's default separators, say); otherwise (no text, or whitespace before
    its opening bracket) encoded again."""
    if text is not None:
        if text.endswith("]"):
            if isinstance(frame, Call):
                head = f"[2,{_string(frame.unique_id)},{_string(frame.action)},"
            else:
                head = f"[3,{_string(frame.unique_id)},"
            if text.startswith(head):
                # The text parsed as this frame and its head matched exactly, so what lies
                # between the head and the closing bracket is the payload (and maybe whitespace).
                return text[len(head) : -1]
        layout = _CALL_HEAD if isinstance(frame, Call) else _RESULT_HEAD
        if (head_match := layout.match(text)) is not None:
            # The same: the text parsed as this frame, so its head is the frame's first
            # elements, however spaced or escaped, and the payload is what follows.
            return text[head_match.end() : text.rindex("]")].strip(_JSON_SPACE)
    return dumps(frame.payload)


def unique_id_hint(text: str) -> str:
    """The unique id of a frame we could not parse, if its start is readable."""
    match = _LEADING_ID.match(text)
    return match[1] if match else UNKNOWN_ID


def parse_frame(text: str | bytes) -> Frame:
    """Parse one WebSocket message: JSON within :mod:`cpms.kernel.jsontext`'s bounds, with strings
    that UTF-8 text can hold, in the shape of an OCPP-J frame.

    Raises:
        OcppError: not JSON or not an OCPP-J frame (FormationViolation, ProtocolError,
            PropertyConstraintViolation, TypeConstraintViolation).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise OcppError("FormationViolation", "frame is not UTF-8 text") from None
    try:
        message = jsontext.loads(text)
    except ValueError as error:
        raise OcppError(
            "FormationViolation", f"frame is not valid JSON: {error}", unique_id_hint(text)
        ) from None
    if not isinstance(message, list) or not message:
        raise OcppError("FormationViolation", "frame must be a JSON array")
    if "\\u" in text and not jsontext.representable(message):
        raise OcppError(
            "FormationViolation",
            jsontext.UNSTORABLE,
            unique_id_hint(text),
        )
    type_id = message[0]
    unique_id = message[1] if len(message) > 1 and isinstance(message[1], str) else UNKNOWN_ID
    if not isinstance(type_id, int) or isinstance(type_id, bool):
        raise OcppError("TypeConstraintViolation", "MessageTypeId must be an integer", unique_id)
    if type_id not in (CALL, CALLRESULT, CALLERROR):
        raise OcppError(
            "PropertyConstraintViolation", f"MessageTypeId {type_id} is not 2, 3 or 4", unique_id
        )
    if len(message) < 2 or not isinstance(message[1], str):
        raise OcppError("ProtocolError", "frame has no UniqueId string", unique_id)
    if not 1 <= len(unique_id) <= MAX_UNIQUE_ID:
        raise OcppError("PropertyConstraintViolation", "UniqueId must be 1..36 characters")
    expected = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}[type_id]
    if len(message) != expected:
        raise OcppError(
            "ProtocolError", f"frame of type {type_id} must have {expected} elements", unique_id
        )
    if type_id == CALL:
        _, _, action, payload = message
        if not isinstance(action, str) or not action:
            raise OcppError("TypeConstraintViolation", "Action must be a string", unique_id)
        if not isinstance(payload, dict):
            raise OcppError("TypeConstraintViolation", "payload must be an object", unique_id)
        return Call(unique_id, action, payload)
    if type_id == CALLRESULT:
        payload = message[2]
        if not isinstance(payload, dict):
            raise OcppError("TypeConstraintViolation", "payload must be an object", unique_id)
        return CallResult(unique_id, payload)
    _, _, code, description, details = message
    if (
        not isinstance(code, str)
        or not isinstance(description, str)
        or not isinstance(details, dict)
    ):
        raise OcppError("TypeConstraintViolation", "malformed CALLERROR", unique_id)
    return CallError(unique_id, code, description, details)
