"""A charging session's life, pure: ``decide(state, event, now, timings) -> Step(state, effects)``.

    reserved ─begin─▶ starting ─charger started─▶ charging ─limit / stop / 12 h─▶ stopping
        │                │ refused / 10 min / stop     │ stopped / gone / ended    │
        ▼                ▼                             ▼                           ▼
    cancelled      rejected / cancelled             settled ◀──────────────────────┘

No I/O and no clock of its own: the actor (:mod:`actors.session.actor`) performs the effects, feeds
back what happened as events, and wakes at :func:`next_wake`. Every open phase has a deadline:

* ``reserved`` / ``starting``: the start timeout; past it the hold is released.
* ``charging``: the 12 h cap; the charger gone past the offline grace (measured from a stored
  time, so restarts don't start it again) settles on the last reading; a connector seen without
  a transaction at two looks ``settle_wait`` apart means the transaction ended and its
  StopTransaction was lost: settled on the last reading.
* ``stopping``: a RemoteStop not accepted, or accepted with no StopTransaction after
  ``stop_check``, makes the session look at the charger (TriggerMessage StatusNotification, then
  the connector's status): still charging → asked again, with backoff; no transaction at two
  looks → settled on the last reading; and whatever happens, settled by the 12 h cap plus the
  grace.

A StopTransaction that arrives after a session was settled on its last reading settles it again
exactly (``CORRECT``: the difference, once). The table lists every (phase, event) pair: an event a
phase does not expect is ignored on purpose (a duplicate, or news that no longer matters) or is an
error (:class:`Unexpected`), never dropped by accident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta

from actors.session.state import (
    EVENTS,
    OPEN,
    Begin,
    ChargerStarted,
    ChargerStopped,
    Effect,
    LimitReached,
    Phase,
    Reading,
    SessionEvent,
    SettledBy,
    StartRefused,
    State,
    Step,
    StopAnswered,
    StopRequested,
    Superseded,
    Tick,
    Timings,
    Unexpected,
)

__all__ = [
    "EVENTS",
    "OPEN",
    "TABLE",
    "Begin",
    "ChargerStarted",
    "ChargerStopped",
    "Effect",
    "LimitReached",
    "Phase",
    "Reading",
    "Rule",
    "SessionEvent",
    "SettledBy",
    "StartRefused",
    "State",
    "Step",
    "StopAnswered",
    "StopRequested",
    "Superseded",
    "Tick",
    "Timings",
    "Unexpected",
    "deadline",
    "decide",
    "final_deadline",
    "next_wake",
]

# -- rules ----------------------------------------------------------------------------------------

Rule = Callable[[State, SessionEvent, datetime, Timings], Step]

_GIVE_BACK = (Effect.RELEASE, Effect.PERSIST, Effect.PUBLISH)
_SETTLE = (Effect.CAPTURE, Effect.PERSIST, Effect.PUBLISH)


def _ignore(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    return Step(state)


def _error(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    raise Unexpected(f"{type(event).__name__} in phase {state.phase.value}")


def _to(phase: Phase, effects: tuple[Effect, ...], reason: str | None = None) -> Rule:
    def rule(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
        return Step(_enter(state, phase, now, t), effects, reason)

    return rule


def _enter(state: State, phase: Phase, now: datetime, t: Timings) -> State:
    check_at = now + timedelta(seconds=t.stop_check) if phase is Phase.STOPPING else None
    return dataclasses.replace(state, phase=phase, check_at=check_at, idle_seen=False)


def _settle(state: State, by: SettledBy, reason: str | None = None) -> Step:
    settled = dataclasses.replace(
        state,
        phase=Phase.SETTLED,
        check_at=None,
        settled_by=by,
        charger_stopped=by is SettledBy.CHARGER,
    )
    return Step(settled, _SETTLE, reason)


def _begin(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    started = dataclasses.replace(state, phase=Phase.STARTING, start_sent=True)
    return Step(started, (Effect.REMOTE_START, Effect.PERSIST, Effect.PUBLISH))


def _stop(reason: str) -> Rule:
    def rule(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
        stopping = dataclasses.replace(_enter(state, Phase.STOPPING, now, t), stop_asks=1)
        return Step(stopping, (Effect.PERSIST, Effect.REMOTE_STOP, Effect.PUBLISH), reason)

    return rule


def _charger_stopped(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    return _settle(state, SettledBy.CHARGER)


def _ask_again(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    """The owner asks to stop again: so does the session, and looks again later."""
    asked = dataclasses.replace(
        state, stop_asks=state.stop_asks + 1, check_at=now + timedelta(seconds=t.stop_check)
    )
    return Step(asked, (Effect.REMOTE_STOP,))


def _stop_answered(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    assert isinstance(event, StopAnswered)
    if event.accepted:  # the StopTransaction should follow; look if it doesn't (not sooner
        # than the backoff of a charger already asked again said)
        look = now + timedelta(seconds=t.stop_check)
        later = look if state.check_at is None else max(state.check_at, look)
        return Step(dataclasses.replace(state, check_at=later))
    # rejected (the charger may have ended already) or unanswered: find out what it is doing
    looking = dataclasses.replace(state, check_at=now + timedelta(seconds=t.settle_wait))
    return Step(looking, (Effect.LOOK,))


def _late_stop(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    """A StopTransaction for a session settled on its last reading: settle again exactly."""
    if state.settled_by is not SettledBy.LAST_READING or state.charger_stopped:
        return Step(state)  # a duplicate: settled on it already
    corrected = dataclasses.replace(state, settled_by=SettledBy.CHARGER, charger_stopped=True)
    return Step(corrected, (Effect.CORRECT, Effect.PERSIST, Effect.PUBLISH))


def _unstarted_tick(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    assert isinstance(event, Tick)
    if now >= state.start_deadline:
        return Step(
            _enter(state, Phase.CANCELLED, now, t),
            _GIVE_BACK,
            "start_timeout",
        )
    if state.phase is Phase.RESERVED and event.online:  # after a restart: ask once it is back
        return _begin(state, event, now, t)
    if state.phase is Phase.STARTING and not state.start_sent and event.online:
        # asked before a restart, and the answer was lost with it: ask again
        return Step(dataclasses.replace(state, start_sent=True), (Effect.REMOTE_START,))
    return Step(state)


def _settle_if_gone(state: State, event: Tick, now: datetime, t: Timings) -> Step:
    """The charger is offline: the grace runs from the first look that found it so."""
    if state.offline_since is None:
        return Step(dataclasses.replace(state, offline_since=now), (Effect.PERSIST,))
    if now - state.offline_since >= timedelta(seconds=t.offline_grace):
        return _settle(state, SettledBy.LAST_READING, "charger_offline")
    return Step(state)


def _online(state: State) -> tuple[State, tuple[Effect, ...]]:
    if state.offline_since is None:
        return state, ()
    return dataclasses.replace(state, offline_since=None), (Effect.PERSIST,)


def _idle(state: State, event: Tick, now: datetime, wait: float) -> Step | None:
    """The connector shows no transaction: at a second look ``wait`` s later (no reading in
    between) the transaction has ended without its StopTransaction. None while it shows one."""
    if event.in_transaction is not False:
        return None
    if not state.idle_seen:
        seen = dataclasses.replace(state, idle_seen=True, check_at=now + timedelta(seconds=wait))
        return Step(seen, (Effect.LOOK,))
    if state.check_at is not None and now < state.check_at:
        return Step(state)
    return _settle(state, SettledBy.LAST_READING, "charger_ended")


def _charging_tick(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    assert isinstance(event, Tick)
    if now >= state.max_deadline:
        return _stop("max_duration")(state, event, now, t)
    if not event.online:
        return _settle_if_gone(state, event, now, t)
    state, effects = _online(state)
    # a transaction can look ended for a while (a status not sent yet): give it the grace
    idle = _idle(state, event, now, t.offline_grace)
    if idle is not None:
        return Step(idle.state, effects + idle.effects, idle.reason)
    if state.idle_seen:  # a transaction again
        state = dataclasses.replace(state, idle_seen=False, check_at=None)
    return Step(state, effects)


def _stopping_tick(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    assert isinstance(event, Tick)
    if now >= final_deadline(state, t):
        return _settle(state, SettledBy.LAST_READING, "max_duration")
    if not event.online:
        return _settle_if_gone(state, event, now, t)
    state, effects = _online(state)
    if state.check_at is not None and now < state.check_at:
        return Step(state, effects)
    idle = _idle(state, event, now, t.settle_wait)
    if idle is not None:
        return Step(idle.state, effects + idle.effects, idle.reason)
    # still charging (or it can't tell): ask again, waiting longer each time
    wait = min(t.stop_check * 2 ** min(state.stop_asks, 16), t.stop_backoff_max)
    asked = dataclasses.replace(
        state,
        stop_asks=state.stop_asks + 1,
        idle_seen=False,
        check_at=now + timedelta(seconds=wait),
    )
    return Step(asked, (Effect.REMOTE_STOP, Effect.PERSIST))


def _reading(state: State, event: SessionEvent, now: datetime, t: Timings) -> Step:
    """A meter reading of the transaction: it is running, whatever its connector showed."""
    if not state.idle_seen:
        return Step(state)
    check_at = state.check_at if state.phase is Phase.STOPPING else None
    return Step(dataclasses.replace(state, idle_seen=False, check_at=check_at))


def final_deadline(state: State, t: Timings) -> datetime:
    """No open session outlives this: the 12 h cap, plus the grace for the charger to report."""
    return state.max_deadline + timedelta(seconds=t.offline_grace)


P = Phase
_I, _X = _ignore, _error

#: Every (phase, event) pair. Final phases ignore news (a late or repeated message) apart from
#: the late StopTransaction of a session settled on its last reading.
TABLE: dict[tuple[Phase, type[SessionEvent]], Rule] = {
    (P.RESERVED, Begin): _begin,
    (P.RESERVED, StartRefused): _I,  # an answer to an ask of an earlier life
    (P.RESERVED, ChargerStarted): _to(P.CHARGING, (Effect.PERSIST, Effect.PUBLISH)),  # a card's
    (P.RESERVED, Superseded): _to(P.CANCELLED, _GIVE_BACK, "superseded"),
    (P.RESERVED, Reading): _I,  # a reading of a transaction not yet known as this one's
    (P.RESERVED, LimitReached): _X,
    (P.RESERVED, StopRequested): _to(P.CANCELLED, _GIVE_BACK, "user"),
    (P.RESERVED, ChargerStopped): _X,
    (P.RESERVED, StopAnswered): _I,
    (P.RESERVED, Tick): _unstarted_tick,
    (P.STARTING, Begin): _I,  # resumed with the hold found: asked already
    (P.STARTING, StartRefused): _to(P.REJECTED, _GIVE_BACK),
    (P.STARTING, ChargerStarted): _to(P.CHARGING, (Effect.PERSIST, Effect.PUBLISH)),
    (P.STARTING, Superseded): _to(P.CANCELLED, _GIVE_BACK, "superseded"),
    (P.STARTING, Reading): _I,
    (P.STARTING, LimitReached): _X,
    (P.STARTING, StopRequested): _to(P.CANCELLED, _GIVE_BACK, "user"),
    (P.STARTING, ChargerStopped): _X,  # a stop is recorded only on a started session
    (P.STARTING, StopAnswered): _I,
    (P.STARTING, Tick): _unstarted_tick,
    (P.CHARGING, Begin): _X,
    (P.CHARGING, StartRefused): _I,  # RemoteStart's answer lost the race with StartTransaction
    (P.CHARGING, ChargerStarted): _I,  # a replayed StartTransaction
    (P.CHARGING, Superseded): lambda s, e, n, t: _settle(s, SettledBy.LAST_READING, "superseded"),
    (P.CHARGING, Reading): _reading,
    (P.CHARGING, LimitReached): _stop("limit_reached"),
    (P.CHARGING, StopRequested): _stop("user"),
    (P.CHARGING, ChargerStopped): _charger_stopped,
    (P.CHARGING, StopAnswered): _I,  # an answer to a stop of an earlier life
    (P.CHARGING, Tick): _charging_tick,
    (P.STOPPING, Begin): _X,
    (P.STOPPING, StartRefused): _I,
    (P.STOPPING, ChargerStarted): _I,
    (P.STOPPING, Superseded): lambda s, e, n, t: _settle(s, SettledBy.LAST_READING, "superseded"),
    (P.STOPPING, Reading): _reading,
    (P.STOPPING, LimitReached): _I,  # asked to stop already
    (P.STOPPING, StopRequested): _ask_again,
    (P.STOPPING, ChargerStopped): _charger_stopped,
    (P.STOPPING, StopAnswered): _stop_answered,
    (P.STOPPING, Tick): _stopping_tick,
    (P.SETTLED, ChargerStopped): _late_stop,
}
for _phase in (P.SETTLED, P.REJECTED, P.CANCELLED, P.FAILED):
    for _event in EVENTS:
        if _event is Begin:
            TABLE.setdefault((_phase, _event), _X)
        else:
            TABLE.setdefault((_phase, _event), _I)


def decide(state: State, event: SessionEvent, now: datetime, timings: Timings) -> Step:
    """The next state and what to do, for ``event`` arriving at ``now``.

    Raises:
        Unexpected: the event can't happen in this phase (a bug in whoever sent it).
    """
    return TABLE[(state.phase, type(event))](state, event, now, timings)


def deadline(state: State, t: Timings) -> datetime | None:
    """When the session changes by itself if nothing else happens (None: it has ended): for an
    operator, a session open past this is stuck."""
    if state.phase in (Phase.RESERVED, Phase.STARTING):
        return state.start_deadline
    if state.phase not in OPEN:
        return None
    cap = state.max_deadline if state.phase is Phase.CHARGING else final_deadline(state, t)
    times = [cap]
    if state.check_at is not None and (state.phase is Phase.STOPPING or state.idle_seen):
        times.append(state.check_at)
    if state.offline_since is not None:
        times.append(state.offline_since + timedelta(seconds=t.offline_grace))
    return min(times)


def next_wake(state: State, now: datetime, t: Timings) -> datetime | None:
    """When the session must look at the time and its charger, with no message (None: never,
    it has ended)."""
    if state.phase in (Phase.RESERVED, Phase.STARTING):
        wake = state.start_deadline
        if state.phase is Phase.RESERVED or not state.start_sent:  # waiting for the charger
            wake = min(wake, now + timedelta(seconds=min(t.offline_check, t.start_look)))
        return wake
    if state.phase is Phase.CHARGING:
        wakes = [state.max_deadline, now + timedelta(seconds=t.offline_check)]
    elif state.phase is Phase.STOPPING:
        wakes = [final_deadline(state, t), now + timedelta(seconds=t.offline_check)]
    else:
        return None
    if state.check_at is not None and state.check_at > now:  # a past one waits for the charger
        wakes.append(state.check_at)
    if state.offline_since is not None:
        wakes.append(state.offline_since + timedelta(seconds=t.offline_grace))
    return min(wakes)
