"""The session machine, pure: its table, each deadline on an injected clock, and a model-based
test (random interleavings of charger, app and timer events, duplicated and reordered, with
crash/rebuild points) that always ends settled, exactly, before the deadlines."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.session import machine as sm
from actors.session.machine import OPEN, Effect, Phase, SettledBy, State

T = sm.Timings(start_timeout=600, max_duration=12 * 3600, offline_grace=600, offline_check=30)
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def fresh(phase: Phase = Phase.RESERVED, **changes: object) -> State:
    state = State(
        phase,
        start_deadline=T0 + timedelta(seconds=T.start_timeout),
        max_deadline=T0 + timedelta(seconds=T.max_duration),
    )
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(state: State, event: sm.SessionEvent, seconds: float) -> sm.Step:
    return sm.decide(state, event, at(seconds), T)


ONLINE_IDLE = sm.Tick(online=True, in_transaction=False)
ONLINE_BUSY = sm.Tick(online=True, in_transaction=True)
OFFLINE = sm.Tick(online=False, in_transaction=None)


def test_the_table_answers_every_phase_and_event() -> None:
    for phase in Phase:
        for event in sm.EVENTS:
            assert (phase, event) in sm.TABLE, (phase, event)


def test_an_event_a_phase_never_sees_is_an_error_not_a_silent_no_op() -> None:
    with pytest.raises(sm.Unexpected):
        step(fresh(Phase.CHARGING), sm.Begin(), 1)
    with pytest.raises(sm.Unexpected):
        step(fresh(Phase.STARTING), sm.ChargerStopped(), 1)


def test_no_start_within_the_timeout_gives_the_money_back() -> None:
    starting = step(fresh(), sm.Begin(), 0).state
    assert step(starting, ONLINE_IDLE, 599).state.phase is Phase.STARTING
    ended = step(starting, ONLINE_IDLE, 600)
    assert ended.state.phase is Phase.CANCELLED and Effect.RELEASE in ended.effects
    assert ended.reason == "start_timeout"


def test_a_reserved_session_asks_its_charger_only_once_it_is_back() -> None:
    reserved = fresh()
    assert step(reserved, OFFLINE, 10).effects == ()
    asked = step(reserved, ONLINE_IDLE, 20)
    assert asked.state.phase is Phase.STARTING and Effect.REMOTE_START in asked.effects


def test_a_resumed_starting_session_asks_again_once_its_charger_is_back() -> None:
    resumed = fresh(Phase.STARTING)  # start_sent is not stored: a rebuilt actor asks again
    assert step(resumed, OFFLINE, 5).effects == ()
    again = step(resumed, ONLINE_IDLE, 6)
    assert again.effects == (Effect.REMOTE_START,) and again.state.start_sent
    assert step(again.state, ONLINE_IDLE, 7).effects == ()


def test_the_twelve_hour_cap_stops_a_charging_session() -> None:
    charging = fresh(Phase.CHARGING)
    stopped = step(charging, ONLINE_BUSY, T.max_duration)
    assert stopped.state.phase is Phase.STOPPING and Effect.REMOTE_STOP in stopped.effects
    assert stopped.reason == "max_duration"


def test_the_cap_applies_while_stopping_too() -> None:
    stopping = fresh(Phase.STOPPING, check_at=at(10**6))
    deadline = sm.final_deadline(stopping, T)
    seconds = (deadline - T0).total_seconds()
    assert step(stopping, ONLINE_BUSY, seconds - 1).state.phase is Phase.STOPPING
    settled = step(stopping, ONLINE_BUSY, seconds)
    assert settled.state.phase is Phase.SETTLED
    assert settled.state.settled_by is SettledBy.LAST_READING and Effect.CAPTURE in settled.effects


def test_the_offline_grace_runs_from_the_stored_time_across_restarts() -> None:
    charging = fresh(Phase.CHARGING)
    first = step(charging, OFFLINE, 100)
    assert first.state.offline_since == at(100) and Effect.PERSIST in first.effects
    # a restart rebuilds from the row, where offline_since is kept
    rebuilt = fresh(Phase.CHARGING, offline_since=first.state.offline_since)
    assert step(rebuilt, OFFLINE, 699).state.phase is Phase.CHARGING
    settled = step(rebuilt, OFFLINE, 700)
    assert settled.state.phase is Phase.SETTLED and settled.reason == "charger_offline"


def test_a_rejected_stop_looks_at_the_charger_and_settles_when_it_has_ended() -> None:
    """Issue 16: RemoteStop Rejected because the charger had already ended (its StopTransaction
    lost): the session looks, sees no transaction twice, and settles on its last reading."""
    stopping = step(fresh(Phase.CHARGING), sm.LimitReached(), 0).state
    looked = step(stopping, sm.StopAnswered(accepted=False), 1)
    assert looked.effects == (Effect.LOOK,)
    waiting = step(looked.state, ONLINE_IDLE, 1 + T.settle_wait)
    assert waiting.state.idle_seen and waiting.effects == (Effect.LOOK,)
    assert step(waiting.state, ONLINE_IDLE, 2 + T.settle_wait).state.phase is Phase.STOPPING
    settled = step(waiting.state, ONLINE_IDLE, 1 + 2 * T.settle_wait)
    assert settled.state.phase is Phase.SETTLED and settled.reason == "charger_ended"
    assert settled.state.settled_by is SettledBy.LAST_READING


def test_a_charger_still_charging_is_asked_again_with_backoff() -> None:
    stopping = step(fresh(Phase.CHARGING), sm.StopRequested(), 0).state
    assert stopping.check_at == at(T.stop_check)  # accepted or not, it looks by then
    waits = []
    now = T.stop_check
    for _ in range(6):
        asked = step(stopping, ONLINE_BUSY, now)
        assert Effect.REMOTE_STOP in asked.effects
        assert asked.state.check_at is not None
        waits.append((asked.state.check_at - at(now)).total_seconds())
        stopping, now = asked.state, (asked.state.check_at - T0).total_seconds()
    assert waits == sorted(waits) and waits[-1] == T.stop_backoff_max


def test_a_reading_proves_the_transaction_runs() -> None:
    stopping = step(fresh(Phase.CHARGING), sm.StopRequested(), 0).state
    seen = step(stopping, ONLINE_IDLE, T.stop_check).state
    assert seen.idle_seen
    assert not step(seen, sm.Reading(), T.stop_check + 1).state.idle_seen


def test_a_late_stop_settles_again_once() -> None:
    settled = fresh(Phase.SETTLED, settled_by=SettledBy.LAST_READING)
    again = step(settled, sm.ChargerStopped(), 5)
    assert again.effects == (Effect.CORRECT, Effect.PERSIST, Effect.PUBLISH)
    assert again.state.settled_by is SettledBy.CHARGER
    assert step(again.state, sm.ChargerStopped(), 6).effects == ()  # a duplicate


def test_a_session_settled_on_its_stop_ignores_a_duplicate() -> None:
    settled = step(fresh(Phase.CHARGING), sm.ChargerStopped(), 1).state
    assert settled.settled_by is SettledBy.CHARGER
    assert step(settled, sm.ChargerStopped(), 2).effects == ()


# -- the model -----------------------------------------------------------------------------------

RATE = Decimal("15.00")  # per kWh
HOLD = Decimal("200.00")


def cost_of(wh: int) -> Decimal:
    return (RATE * wh / 1000).quantize(Decimal("0.01"))


class SessionModel(RuleBasedStateMachine):
    """The machine against a world: a charger that starts, charges, ends (sometimes without its
    StopTransaction reaching the server, sometimes late, sometimes twice), goes offline and
    comes back; an owner who stops; timers; and crashes that rebuild the state from what the
    row keeps. The money effects are applied as the interpreter does, on the model's meter."""

    def __init__(self) -> None:
        super().__init__()
        self.state = fresh()
        self.now = 0.0
        self.online = True
        self.charger_running = False  # the charger has a transaction for the session
        self.started = False
        self.wh = 0  # the charger's register (from 0)
        self.last_read = 0  # the server's last reading
        self.stop_wh: int | None = None  # meterStop, once the charger ended
        self.stop_pending = False  # ended, StopTransaction not delivered yet
        self.stop_lost = False  # ended, StopTransaction never to arrive
        self.captured: Decimal | None = None
        self.refunded = Decimal("0")
        self.released = False
        self.corrections: list[Decimal] = []
        self.billed_wh: int | None = None

    # -- driving the machine, and what the interpreter does with its effects ---------------

    def feed(self, event: sm.SessionEvent) -> None:
        before = self.state
        result = sm.decide(self.state, event, at(self.now), T)
        self.state = result.state
        if before.phase not in OPEN:
            assert result.effects in ((), (Effect.CORRECT, Effect.PERSIST, Effect.PUBLISH))
        for effect in result.effects:
            if effect is Effect.RELEASE:
                assert not self.released and self.captured is None
                self.released = True
                self.refunded = HOLD
            elif effect is Effect.CAPTURE:
                assert not self.released and self.captured is None
                wh = self.stop_wh if self.state.charger_stopped else self.last_read
                assert wh is not None
                self.billed_wh = wh
                self.captured = min(cost_of(wh), HOLD)
                self.refunded = HOLD - self.captured
                self.overrun = cost_of(wh) - self.captured
            elif effect is Effect.CORRECT:
                assert self.captured is not None and self.stop_wh is not None
                assert not self.corrections
                self.corrections.append(cost_of(self.stop_wh) - cost_of(self.last_read))
                self.billed_wh = self.stop_wh
            elif effect is Effect.REMOTE_START:
                self.remote_start_asked = True
            elif effect is Effect.REMOTE_STOP:
                self.answer_stop()

    def answer_stop(self) -> None:
        """The charger's answer comes later, as an event (see ``stop_answered``)."""
        self.stop_asked = True

    def tick(self) -> None:
        running = self.charger_running if self.online else None
        self.feed(sm.Tick(online=self.online, in_transaction=running if self.online else None))

    # -- rules -----------------------------------------------------------------------------

    @initialize(started=st.sampled_from([False, True, True, True]))
    def from_the_start(self, started: bool) -> None:
        """Most runs begin with the charger charging (where the races are)."""
        if started:
            self.feed(sm.Begin())
            self.charger_answers_start(accept=True)

    @rule()
    def begin(self) -> None:
        if self.state.phase is Phase.RESERVED:
            self.feed(sm.Begin())

    @precondition(lambda self: self.state.phase is Phase.STARTING and not self.started)
    @rule(accept=st.booleans())
    def charger_answers_start(self, accept: bool) -> None:
        if accept and self.online:
            self.started = self.charger_running = True
            self.feed(sm.ChargerStarted())
        else:
            self.feed(sm.StartRefused())

    @precondition(lambda self: self.charger_running and self.online)
    @rule(wh=st.integers(1, 5_000))
    def charger_reads(self, wh: int) -> None:
        self.wh += wh
        self.last_read = self.wh
        self.feed(sm.Reading())
        if self.wh > 20_000 and self.state.phase is Phase.CHARGING:
            self.feed(sm.LimitReached())

    @rule(chance=st.integers(0, 3))
    def owner_stops(self, chance: int) -> None:
        if self.state.phase in OPEN and (chance == 0 or self.state.phase is Phase.STOPPING):
            self.feed(sm.StopRequested())

    @precondition(lambda self: self.charger_running)
    @rule(lost=st.booleans(), unread=st.integers(0, 300))
    def charger_ends(self, lost: bool, unread: int = 0) -> None:
        """The charger ends the transaction (a stop asked, or its own), with ``unread`` Wh
        since its last reading: its StopTransaction is queued, or lost for good."""
        self.charger_running = False
        self.wh += unread
        self.stop_wh = self.wh
        self.stop_lost, self.stop_pending = lost, not lost

    @precondition(lambda self: self.stop_pending and self.online)
    @rule(twice=st.booleans())
    def stop_transaction_arrives(self, twice: bool) -> None:
        self.stop_pending = False
        for _ in range(2 if twice else 1):
            self.feed(sm.ChargerStopped())

    @precondition(lambda self: self.state.phase is Phase.STOPPING)
    @rule(delivered=st.booleans())
    def stop_answered(self, delivered: bool) -> None:
        self.feed(sm.StopAnswered(accepted=delivered and self.charger_running))
        if delivered and self.charger_running:
            self.charger_ends(lost=False, unread=7)

    @rule(online=st.booleans())
    def connection(self, online: bool) -> None:
        self.online = online

    @rule(seconds=st.sampled_from([1, 10, 30, 61, 600, 3600]))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds
        self.tick()

    @rule()
    def crash_and_rebuild(self) -> None:
        """What the row keeps survives; what only the actor knew does not."""
        s = self.state
        self.state = State(
            s.phase,
            start_deadline=s.start_deadline,
            max_deadline=s.max_deadline,
            check_at=s.check_at,
            stop_asks=s.stop_asks,
            offline_since=s.offline_since,
            charger_stopped=s.settled_by is SettledBy.CHARGER,
            settled_by=s.settled_by,
        )
        self.tick()

    # -- what must always hold -------------------------------------------------------------

    @invariant()
    def money_never_moves_twice(self) -> None:
        assert not (self.released and self.captured is not None)
        assert len(self.corrections) <= 1

    @invariant()
    def no_session_outlives_its_deadlines(self) -> None:
        now = at(self.now)
        if self.state.phase in (Phase.RESERVED, Phase.STARTING):
            assert now <= self.state.start_deadline + timedelta(seconds=3600)
        if self.state.phase in OPEN:
            assert now <= sm.final_deadline(self.state, T) + timedelta(seconds=3600)

    def teardown(self) -> None:
        """Whatever happened, with only time passing (the charger as it is) the session ends
        before its deadline, and the money is exact."""
        for _ in range(10_000):
            if self.state.phase not in OPEN:
                break
            wake = sm.next_wake(self.state, at(self.now), T)
            assert wake is not None
            self.now = max(self.now + 0.001, (wake - T0).total_seconds())
            self.tick()
        assert self.state.phase not in OPEN
        assert at(self.now) <= sm.final_deadline(self.state, T)
        if self.stop_pending:  # the charger's late StopTransaction arrives after all
            self.online = True
            self.stop_transaction_arrives(twice=True)
        if self.state.phase is Phase.SETTLED:
            assert self.captured is not None
            assert self.captured + self.refunded == HOLD
            billed = self.captured + self.overrun + sum(self.corrections)
            assert self.billed_wh is not None and billed == cost_of(self.billed_wh)
            if not self.stop_lost and self.stop_wh is not None:  # the stop arrived: exact
                assert self.billed_wh == self.stop_wh
        else:
            assert self.released and self.captured is None and not self.started


SessionModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, derandomize=True
)
test_every_session_settles_exactly = SessionModel.TestCase
