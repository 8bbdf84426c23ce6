"""One charger's OCPP-J 1.6 connection as a state machine without I/O, in the manner of
hypercorn's ``protocol/h11.py``: text in, typed events and text out.

The endpoint screens each message (rate, size), parses it into a frame, checks a CALL against
its action's schema, and correlates a CALLRESULT or CALLERROR with the one CALL of ours that is
outstanding (OCPP-J allows one each way), with that CALL's deadline. Whoever drives it (the
ChargePointActor) reads and writes the socket, keeps the clock, and acts on the events:

* :class:`CallReceived`: a valid CALL from the charger, to be answered with :meth:`answer`
  or :meth:`refuse`; :class:`CallRefused`: a CALL to be refused with the CALLERROR it carries;
* :class:`Answered` / :class:`Failed`: what became of our outstanding CALL (its result,
  schema-checked; or a CALLERROR, an invalid answer, no answer by the deadline, the connection
  gone); :class:`Stray`: an answer to nothing of ours;
* :class:`Reply`: text to send back at once (a CALLERROR for a message turned away unread);
* :class:`Close`: end the connection with this code (a sustained flood).

Treatment of abuse: a frame over ``max_frame`` bytes (UTF-8, as on the wire) gets CALLERROR
FormationViolation; more than ``rate`` frames/s sustained (bucket of ``burst``) get CALLERROR
GenericError for the excess, and a sustained flood (refusals piling up to ten times the rate,
see :class:`RateBucket`) closes the connection with 1008. The first answer after each CALL of
ours is let through whatever the rate: the server asked for it, and one CALL is outstanding at a
time, so answers can't flood.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from cpms.ocpp import schemas
from cpms.ocpp.frames import (
    Call,
    CallError,
    CallResult,
    ErrorCode,
    OcppError,
    parse_frame,
    unique_id_hint,
)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    max_frame: int = 65536
    rate: float = 20.0
    burst: int = 100


@dataclass(frozen=True, slots=True)
class CallReceived:
    """A CALL from the charger whose payload fits its action's schema. ``text`` is the frame
    as it came (kept for the message log)."""

    call: Call
    text: str | None


@dataclass(frozen=True, slots=True)
class CallRefused:
    """A CALL from the charger refused as it stands (an action not handled here, a payload that
    breaks the schema): send ``error``."""

    call: Call
    error: CallError
    text: str | None


@dataclass(frozen=True, slots=True)
class Answered:
    """The charger answered our ``call`` with a result that fits the response schema."""

    call: Call
    result: CallResult
    text: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """Our ``call`` got no usable answer: ``reason`` is ``"error"`` (a CALLERROR, or an answer
    that breaks the schema: ``frame``), ``"timeout"`` or ``"disconnected"``."""

    call: Call
    reason: str
    description: str
    frame: CallResult | CallError | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Stray:
    """An answer to no CALL of ours: a CALLRESULT gets ``reply`` (ProtocolError), a CALLERROR
    nothing."""

    frame: CallResult | CallError
    text: str | None
    reply: CallError | None


@dataclass(frozen=True, slots=True)
class Reply:
    """A message turned away before it was read as a frame: send ``text`` (its CALLERROR)."""

    text: str
    why: str


@dataclass(frozen=True, slots=True)
class Close:
    """End the connection with this WebSocket close code."""

    code: int
    reason: str


Event = CallReceived | CallRefused | Answered | Failed | Stray | Reply | Close
#: the events that come of a frame read from the charger (it was seen: its station is online)
FRAME_EVENTS = (CallReceived, CallRefused, Answered, Failed, Stray)


class RateBucket:
    """A token bucket (``rate`` per second, up to ``burst``), and ``excess``: the frames it
    refused, draining at the rate. A charger that keeps sending more than twice the rate piles
    refusals up to ten times the rate and is disconnected (at 1,000 frames/s against 20, in a
    fifth of a second); one that runs over now and then is only refused the excess."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = now
        self.excess = 0.0
        self.excess_stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        drained = (now - self.excess_stamp) * self.rate
        self.excess = max(0.0, self.excess - drained) + 1
        self.excess_stamp = now
        return False


_ANSWER = re.compile(r"\s*\[\s*[34]\s*,")


def wire_size(text: str | bytes, limit: int) -> int:
    """The frame's size in bytes on the wire (a character is up to 4 of them); encoded only when
    its length in characters leaves the answer open."""
    if isinstance(text, bytes) or len(text) * 4 <= limit or len(text) > limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class OcppEndpoint:
    """The central system's side of one charger connection."""

    def __init__(self, config: EndpointConfig, now: float) -> None:
        self.config = config
        self.bucket = RateBucket(config.rate, config.burst, now)
        #: our CALL awaiting its answer, and when we stop waiting
        self.outstanding: Call | None = None
        self.outstanding_until = math.inf
        #: a CALL of ours was sent and no answer-looking frame has come since
        self._asked = False

    # -- from the charger ----------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> Event:
        """What one WebSocket message from the charger means."""
        answer = self._asked and _ANSWER.match(text[:16] if isinstance(text, str) else "")
        if answer:
            self._asked = False
        elif not self.bucket.take(now):
            if self.bucket.excess > self.config.rate * 10:
                return Close(1008, "message rate exceeded")
            hint = unique_id_hint(text if isinstance(text, str) else "")
            return Reply(CallError(hint, "GenericError", "message rate exceeded").encode(), "rate")
        if wire_size(text, self.config.max_frame) > self.config.max_frame:
            hint = unique_id_hint(text[:200] if isinstance(text, str) else "")
            reply = CallError(hint, "FormationViolation", "frame too large")
            return Reply(reply.encode(), "frame too large")
        try:
            frame = parse_frame(text)
        except OcppError as error:
            return Reply(error.frame().encode(), error.description)
        raw = text if isinstance(text, str) else None
        if isinstance(frame, Call):
            return self._call(frame, raw)
        return self._answer(frame, raw)

    def _call(self, call: Call, text: str | None) -> Event:
        if call.action not in schemas.FROM_CHARGER:
            code: ErrorCode = (
                "NotSupported" if call.action in schemas.TO_CHARGER else "NotImplemented"
            )
            error = OcppError(code, f"{call.action} is not handled here", call.unique_id)
            return CallRefused(call, error.frame(), text)
        try:
            schemas.validate(call.action, call.payload, call.unique_id)
        except OcppError as error:
            return CallRefused(call, error.frame(), text)
        return CallReceived(call, text)

    def _answer(self, frame: CallResult | CallError, text: str | None) -> Event:
        call = self.outstanding
        if call is None or call.unique_id != frame.unique_id:
            if isinstance(frame, CallError):  # a CALLERROR is never answered
                return Stray(frame, text, None)
            reply = CallError(frame.unique_id, "ProtocolError", "no outstanding CALL with this id")
            return Stray(frame, text, reply)
        self._settle()
        if isinstance(frame, CallError):
            why = f"{call.action}: {frame.code} {frame.description}".strip()
            return Failed(call, "error", why, frame, text)
        try:
            schemas.validate(f"{call.action}Response", frame.payload, frame.unique_id)
        except OcppError as error:
            why = f"{call.action}: invalid answer: {error.description}"
            return Failed(call, "error", why, frame, text)
        return Answered(call, frame, text)

    # -- to the charger ------------------------------------------------------------------------

    def call(
        self, unique_id: str, action: str, payload: dict[str, Any], now: float, timeout: float
    ) -> Call:
        """Our next CALL (send ``call.encode()``); one at a time. ``unique_id`` is the caller's
        (unique across the station's connections).

        Raises:
            RuntimeError: a CALL is still outstanding.
        """
        if self.outstanding is not None:
            raise RuntimeError("a CALL is still outstanding")
        call = Call(unique_id, action, payload)
        self.outstanding, self.outstanding_until = call, now + timeout
        self._asked = True
        return call

    @staticmethod
    def answer(call: Call, payload: dict[str, Any]) -> tuple[CallResult | CallError, str | None]:
        """Our answer to ``call``, and None; or, when ``payload`` breaks the response schema (our
        bug), the InternalError the charger gets instead and what broke."""
        try:
            schemas.validate(f"{call.action}Response", payload, call.unique_id)
        except OcppError as error:
            refusal = CallError(
                call.unique_id, "InternalError", "the central system could not answer"
            )
            return refusal, error.description
        return CallResult(call.unique_id, payload), None

    @staticmethod
    def refuse(call: Call, error: OcppError) -> CallError:
        """A CALLERROR answering ``call``."""
        return CallError(call.unique_id, error.code, error.description[:255], error.details)

    # -- time and the connection ---------------------------------------------------------------

    def deadline(self) -> float:
        """When :meth:`expire` has something to do (math.inf: never)."""
        return self.outstanding_until

    def expire(self, now: float) -> Failed | None:
        """Our outstanding CALL, failed when its deadline has passed."""
        call = self.outstanding
        if call is None or now < self.outstanding_until:
            return None
        self._settle()
        return Failed(call, "timeout", f"{call.action}: no answer from the charger")

    def lost(self, why: str) -> Failed | None:
        """The connection is gone (or replaced): the outstanding CALL fails."""
        call = self.outstanding
        if call is None:
            return None
        self._settle()
        return Failed(call, "disconnected", f"{call.action}: {why}")

    def _settle(self) -> None:
        self.outstanding, self.outstanding_until = None, math.inf
