"""The session machine's terms: its state, the events it takes, the effects it asks for, its
timings and its step (:mod:`actors.session.machine` decides)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cpms.kernel.session_status import OPEN as OPEN
from cpms.kernel.session_status import SessionStatus

#: the machine's phases are the session's stored statuses
Phase = SessionStatus


class Effect(StrEnum):
    REMOTE_START = "remote_start"
    REMOTE_STOP = "remote_stop"
    LOOK = "look"  # TriggerMessage StatusNotification for the session's connector
    RELEASE = "release"  # the whole hold back
    CAPTURE = "capture"  # the cost on the meter's last (or stop) reading kept, the rest back
    CORRECT = "correct"  # settle again on a late StopTransaction: the difference, once
    PERSIST = "persist"
    PUBLISH = "publish"


class SettledBy(StrEnum):
    CHARGER = "charger"  # its StopTransaction
    LAST_READING = "last_reading"  # the charger went away, or ended without telling


@dataclass(frozen=True, slots=True)
class Timings:
    start_timeout: float = 600.0
    max_duration: float = 12 * 3600.0
    offline_grace: float = 600.0
    offline_check: float = 30.0
    command_timeout: float = 30.0
    #: after an accepted RemoteStop, how long to wait for the StopTransaction before looking
    stop_check: float = 60.0
    #: between the two looks that must both show no transaction
    settle_wait: float = 15.0
    #: the longest wait between RemoteStops while the charger keeps charging
    stop_backoff_max: float = 600.0
    #: how often a session resumed before its charger was asked looks for the charger
    start_look: float = 1.0
    #: how often open sessions with no actor (retired after crashes, or missed) are looked for
    sweep_every: float = 60.0


@dataclass(frozen=True, slots=True)
class State:
    phase: Phase
    start_deadline: datetime
    max_deadline: datetime
    #: stopping, or a charging connector seen idle: when to look at the charger next
    check_at: datetime | None = None
    #: RemoteStops sent while stopping (for the backoff)
    stop_asks: int = 0
    #: the connector showed no transaction at the last look
    idle_seen: bool = False
    #: when the charger was first seen offline (stored: a restart doesn't reset the grace)
    offline_since: datetime | None = None
    #: the charger's StopTransaction has been recorded
    charger_stopped: bool = False
    settled_by: SettledBy | None = None
    #: the charger was asked to start since this actor (re)started
    start_sent: bool = False


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """The hold is committed (or, after a restart, found held)."""


@dataclass(frozen=True, slots=True)
class StartRefused:
    """RemoteStartTransaction rejected, failed or unanswered (and no StartTransaction came)."""


@dataclass(frozen=True, slots=True)
class ChargerStarted:
    """StartTransaction for this session."""


@dataclass(frozen=True, slots=True)
class Superseded:
    """The charger started another transaction on this session's connector."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A meter reading of the session's transaction (counted or not)."""


@dataclass(frozen=True, slots=True)
class LimitReached:
    """The last reading reached the session's limit (energy, amount or the reservation)."""


@dataclass(frozen=True, slots=True)
class StopRequested:
    """By the session's owner."""


@dataclass(frozen=True, slots=True)
class ChargerStopped:
    """The charger's StopTransaction (recorded in the session's row before it is sent)."""


@dataclass(frozen=True, slots=True)
class StopAnswered:
    """The RemoteStopTransaction's outcome: accepted, or rejected / failed / unanswered."""

    accepted: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """A look at the station, when the session wakes: whether its charger is online, and
    whether its connector shows a transaction (None: it can't tell, no status yet)."""

    online: bool
    in_transaction: bool | None


SessionEvent = (
    Begin
    | StartRefused
    | ChargerStarted
    | Superseded
    | Reading
    | LimitReached
    | StopRequested
    | ChargerStopped
    | StopAnswered
    | Tick
)
EVENTS: tuple[type[SessionEvent], ...] = (
    Begin,
    StartRefused,
    ChargerStarted,
    Superseded,
    Reading,
    LimitReached,
    StopRequested,
    ChargerStopped,
    StopAnswered,
    Tick,
)


@dataclass(frozen=True, slots=True)
class Step:
    state: State
    effects: tuple[Effect, ...] = ()
    #: why the session ended or changed course, when the machine decided it
    reason: str | None = None


class Unexpected(Exception):
    """An event the phase can never see: a bug in whoever sent it."""
