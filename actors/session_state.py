"""A charging session's life as a pure table: ``transition(phase, event) -> (phase, effects)``.

    reserved ─begin─▶ starting ─charger_started─▶ charging ─limit/stop/12 h─▶ stopping
        │                │ refused / 10 min / stop                 │ charger_stopped │
        ▼                ▼                                         ▼                 ▼
    cancelled      rejected / cancelled                          settled ◀───────────┘

The money effects are ``RELEASE`` (the whole hold back) and ``CAPTURE`` (the actual cost kept,
the rest back, an overrun charged from the free balance and a debt where it runs short). A pair
not in the table changes nothing (a duplicate or late message).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    RESERVED = "reserved"
    STARTING = "starting"
    CHARGING = "charging"
    STOPPING = "stopping"
    SETTLED = "settled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


OPEN = frozenset({Phase.RESERVED, Phase.STARTING, Phase.CHARGING, Phase.STOPPING})


class Event(StrEnum):
    BEGIN = "begin"  # the hold is committed: ask the charger to start
    START_REFUSED = "start_refused"  # RemoteStartTransaction rejected, failed or unanswered
    CHARGER_STARTED = "charger_started"  # StartTransaction for this session
    SUPERSEDED = "superseded"  # the charger started someone else's transaction here
    START_TIMEOUT = "start_timeout"  # no StartTransaction in time
    LIMIT_REACHED = "limit_reached"
    STOP_REQUESTED = "stop_requested"  # by its owner
    MAX_DURATION = "max_duration"
    CHARGER_STOPPED = "charger_stopped"  # StopTransaction
    OFFLINE_GRACE = "offline_grace"  # the charger is gone and the grace is over


class Effect(StrEnum):
    REMOTE_START = "remote_start"
    REMOTE_STOP = "remote_stop"
    RELEASE = "release"
    CAPTURE = "capture"
    PERSIST = "persist"
    PUBLISH = "publish"


P, E, X = Phase, Event, Effect
_GIVE_BACK = (X.RELEASE, X.PERSIST, X.PUBLISH)
_SETTLE = (X.CAPTURE, X.PERSIST, X.PUBLISH)
_STOP = (X.PERSIST, X.REMOTE_STOP, X.PUBLISH)

TABLE: dict[tuple[Phase, Event], tuple[Phase, tuple[Effect, ...]]] = {
    # the charger is asked while "starting" is written (the hold is already committed); after a
    # crash in between, the row still says "reserved" and the resumed actor asks again
    (P.RESERVED, E.BEGIN): (P.STARTING, (X.REMOTE_START, X.PERSIST, X.PUBLISH)),
    (P.RESERVED, E.STOP_REQUESTED): (P.CANCELLED, _GIVE_BACK),
    (P.RESERVED, E.START_TIMEOUT): (P.CANCELLED, _GIVE_BACK),
    # a session begun at the charger (RFID): the transaction is running when the hold is made
    (P.RESERVED, E.CHARGER_STARTED): (P.CHARGING, (X.PERSIST, X.PUBLISH)),
    (P.STARTING, E.START_REFUSED): (P.REJECTED, _GIVE_BACK),
    (P.STARTING, E.SUPERSEDED): (P.CANCELLED, _GIVE_BACK),
    (P.STARTING, E.START_TIMEOUT): (P.CANCELLED, _GIVE_BACK),
    (P.STARTING, E.STOP_REQUESTED): (P.CANCELLED, _GIVE_BACK),
    (P.STARTING, E.CHARGER_STARTED): (P.CHARGING, (X.PERSIST, X.PUBLISH)),
    (P.CHARGING, E.LIMIT_REACHED): (P.STOPPING, _STOP),
    (P.CHARGING, E.STOP_REQUESTED): (P.STOPPING, _STOP),
    (P.CHARGING, E.MAX_DURATION): (P.STOPPING, _STOP),
    (P.CHARGING, E.CHARGER_STOPPED): (P.SETTLED, _SETTLE),
    (P.CHARGING, E.OFFLINE_GRACE): (P.SETTLED, _SETTLE),
    (P.CHARGING, E.SUPERSEDED): (P.SETTLED, _SETTLE),  # moved on without a stop: bill the meter
    (P.STOPPING, E.STOP_REQUESTED): (P.STOPPING, (X.REMOTE_STOP,)),  # ask again
    (P.STOPPING, E.MAX_DURATION): (P.STOPPING, (X.REMOTE_STOP,)),
    (P.STOPPING, E.CHARGER_STOPPED): (P.SETTLED, _SETTLE),
    (P.STOPPING, E.OFFLINE_GRACE): (P.SETTLED, _SETTLE),
    (P.STOPPING, E.SUPERSEDED): (P.SETTLED, _SETTLE),
}


def transition(phase: Phase, event: Event) -> tuple[Phase, tuple[Effect, ...]]:
    return TABLE.get((phase, event), (phase, ()))
