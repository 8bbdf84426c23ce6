"""The top-up invoice machine, pure: every (state, event) pair is in the table, and whatever the
provider says in whatever order (duplicates, an approval after a cancel or past expiry, polls),
an approval is credited exactly once and nothing else is credited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.payment import machine as pm
from cpms.kernel.payments import POLL_EVERY_S, POLL_TIMES, PaymentState

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
AMOUNT = Decimal("500.00")


def created() -> pm.Invoice:
    return pm.Invoice(PaymentState.CREATED, AMOUNT, T0 + timedelta(minutes=5))


def test_the_table_covers_every_state_and_event() -> None:
    assert set(pm.TABLE) == {(s, e) for s in PaymentState for e in pm.EVENTS}


def test_an_issued_invoice_is_polled_every_15_s_20_times_then_expires() -> None:
    inv = pm.decide(created(), pm.Issued(), T0).invoice
    assert inv.state is PaymentState.PENDING
    polls, now = 0, T0
    while inv.state is PaymentState.PENDING:
        wake = pm.next_wake(inv)
        assert wake is not None and wake >= now
        now = wake
        step = pm.decide(inv, pm.Tick(), now)
        inv = step.invoice
        if pm.Effect.POLL in step.effects:
            polls += 1
            inv = pm.decide(inv, pm.StillPending(), now).invoice
    assert polls == POLL_TIMES
    assert inv.state is PaymentState.EXPIRED
    assert now - T0 >= timedelta(seconds=POLL_EVERY_S * POLL_TIMES - 1)
    assert pm.next_wake(inv) is None


@pytest.mark.parametrize("ended", [PaymentState.CANCELED, PaymentState.EXPIRED])
def test_an_approval_after_the_invoice_ended_is_credited(ended: PaymentState) -> None:
    inv = pm.Invoice(ended, AMOUNT, T0)
    step = pm.decide(inv, pm.Approved("TX-1", AMOUNT), T0 + timedelta(hours=1))
    assert step.invoice.state is PaymentState.APPROVED
    assert pm.Effect.CREDIT in step.effects


def test_a_cancel_after_an_approval_changes_nothing() -> None:
    inv = pm.decide(created(), pm.Approved("TX-1", AMOUNT), T0).invoice
    assert pm.decide(inv, pm.Canceled("late"), T0) == pm.Step(inv)


EVENTS = st.sampled_from(
    [
        pm.Issued(),
        pm.Approved("TX-1", AMOUNT),
        pm.Canceled("payer"),
        pm.StillPending(),
        pm.Tick(),
    ]
)


@given(st.lists(st.tuples(EVENTS, st.integers(0, 900)), max_size=40))
def test_whatever_the_order_an_approval_is_credited_exactly_once(
    told: list[tuple[pm.Event, int]],
) -> None:
    inv, credits = created(), 0
    for event, seconds in told:
        step = pm.decide(inv, event, T0 + timedelta(seconds=seconds))
        inv = step.invoice
        if pm.Effect.CREDIT in step.effects:
            credits += 1
            inv = pm.decide(inv, pm.Credited(), T0).invoice  # the ledger took it
    approved = any(isinstance(event, pm.Approved) for event, _ in told)
    assert credits == (1 if approved else 0)
    assert (inv.state is PaymentState.APPROVED) == approved
    assert inv.credited == approved


def test_a_provider_that_cannot_be_asked_lets_the_invoice_expire_at_its_time() -> None:
    """A failed poll before the invoice's time changes nothing (the next poll will tell); one
    at or past it expires the invoice (it was polled every interval forever); a payment the
    provider reports later is still credited."""
    inv = pm.decide(created(), pm.Issued(), T0).invoice
    early = pm.decide(inv, pm.PollFailed(), T0 + timedelta(minutes=1))
    assert early == pm.Step(inv)
    late = pm.decide(inv, pm.PollFailed(), inv.expires_at)
    assert late.invoice.state is PaymentState.EXPIRED and pm.Effect.PERSIST in late.effects
    assert pm.next_wake(late.invoice) is None
    after = pm.decide(late.invoice, pm.Approved("TX-9", AMOUNT), inv.expires_at)
    assert after.invoice.state is PaymentState.APPROVED and pm.Effect.CREDIT in after.effects
