"""The link state machine of a charge point: the table, exhaustively, and random event runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpms.ocpp.link_state import (
    TABLE,
    Effect,
    FrameArrived,
    InvalidTransition,
    Link,
    LinkState,
    SilenceElapsed,
    transition,
)

AFTER = 300.0


@pytest.mark.parametrize("link", list(Link))
@pytest.mark.parametrize("event_type", [FrameArrived, SilenceElapsed])
def test_every_pair_is_in_the_table_or_refused(link: Link, event_type: type) -> None:
    state = LinkState(link, 0.0)
    event = event_type(1000.0)
    if (link, event_type) not in TABLE:
        with pytest.raises(InvalidTransition):
            transition(state, event, AFTER)
        return
    step = transition(state, event, AFTER)
    assert (step.state.link, step.effects) == TABLE[(link, event_type)]


def test_coming_online_and_going_offline_persist_and_publish() -> None:
    step = transition(LinkState(), FrameArrived(10.0), AFTER)
    assert step.state == LinkState(Link.ONLINE, 10.0)
    assert step.effects == (Effect.PERSIST_ONLINE, Effect.PUBLISH)
    assert step.state.deadline(AFTER) == 310.0
    with pytest.raises(InvalidTransition):
        transition(step.state, SilenceElapsed(309.9), AFTER)
    down = transition(step.state, SilenceElapsed(310.0), AFTER)
    assert down.state.link is Link.OFFLINE and down.state.deadline(AFTER) == math.inf


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=50))
def test_online_exactly_while_frames_keep_coming(gaps: list[float]) -> None:
    state, now = LinkState(), 0.0
    for gap in gaps:
        if state.link is Link.ONLINE and now + gap >= state.deadline(AFTER):
            state = transition(state, SilenceElapsed(state.deadline(AFTER)), AFTER).state
            assert state.link is Link.OFFLINE
        now += gap
        state = transition(state, FrameArrived(now), AFTER).state
        assert state.link is Link.ONLINE and state.last_seen == now
