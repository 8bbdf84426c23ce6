"""The ledger arithmetic, without a database: settlement rules and batch semantics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpms.kernel.charging import Limit
from cpms.kernel.errors import Conflict, InsufficientBalance
from storage.ledger_ops import Capture, Credit, LedgerResult, Release, Reserve
from storage.ledger_plan import ClientState, LedgerState, plan_batch, settlement
from storage.sessions import SessionClaim

D = Decimal


@pytest.mark.parametrize(
    ("held", "cost", "free", "expected"),
    [
        ("270", "202.50", "230", [("charge_refund", "67.50")]),  # seed 001 §7 scenario 1
        ("270", "337.50", "230", [("charge_payment", "-67.50")]),  # scenario 2, paid
        ("270", "270", "230", []),  # scenario 3, exact
        ("270", "0", "0", [("charge_refund", "270")]),  # nothing consumed
        ("270", "350", "30", [("charge_payment", "-30"), ("charge_debt", "-50")]),
        ("270", "300", "0", [("charge_debt", "-30")]),
        ("100", "150", "-20", [("charge_debt", "-50")]),  # already in debt: all of it is debt
    ],
)
def test_settlement(held: str, cost: str, free: str, expected: list[tuple[str, str]]) -> None:
    lines = settlement(D(held), D(cost), D(free))
    assert [(t, a) for t, a in lines] == [(t, D(a)) for t, a in expected]
    assert -sum((a for _, a in lines), D(0)) == D(cost) - D(held)  # the hold's net is the cost


def state(balances: dict[uuid.UUID, str]) -> LedgerState:
    return LedgerState({c: ClientState(D(b), "active") for c, b in balances.items()}, {}, {})


def test_later_operations_see_earlier_ones_in_the_same_batch() -> None:
    client, hold = uuid.uuid4(), uuid.uuid4()
    plan = plan_batch(
        [
            Credit("a", client, D("100")),
            Reserve("b", client, D("150"), hold),  # refused: only 100
            Credit("c", client, D("60")),
            Reserve("d", client, D("150"), hold),
            Capture("e", hold, D("100")),
        ],
        state({client: "0"}),
    )
    _a, b, _c, _d, e = plan.outcomes
    assert isinstance(b, InsufficientBalance) and b.available == D("100")
    assert isinstance(e, LedgerResult) and e.balance == D("60") and e.refunded == D("50")
    assert plan.balances == {client: D("60")}
    # The hold was created and settled within the batch: it is written once, as it ends up.
    assert plan.new_holds[hold].status == "captured" and plan.settled_holds == {}
    assert [row.key for row in plan.entries] == ["a", "c", "d", "e"]


def test_a_key_used_twice_in_one_batch_replays() -> None:
    client = uuid.uuid4()
    plan = plan_batch(
        [Credit("k", client, D("5")), Credit("k", client, D("5")), Credit("k", client, D("6"))],
        state({client: "0"}),
    )
    first, again, other = plan.outcomes
    assert isinstance(first, LedgerResult) and isinstance(again, LedgerResult)
    assert again.replayed and again.balance == first.balance == D("5")
    assert isinstance(other, Conflict) and other.code == "idempotency_conflict"
    assert len(plan.operations) == len(plan.entries) == 1


def test_release_of_a_settled_hold_is_refused() -> None:
    client, hold = uuid.uuid4(), uuid.uuid4()
    plan = plan_batch(
        [Reserve("r", client, D("10"), hold), Release("x", hold), Release("y", hold)],
        state({client: "10"}),
    )
    assert isinstance(plan.outcomes[2], Conflict)
    assert plan.balances[client] == D("10")


amounts = st.decimals(min_value=D("0.01"), max_value=D("500"), places=2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["credit", "reserve", "capture", "release"]), amounts, st.integers(0, 4)
        ),
        max_size=40,
    )
)
def test_balances_always_equal_the_entries(steps: list[tuple[str, Decimal, int]]) -> None:
    client = uuid.uuid4()
    holds = [uuid.uuid4() for _ in range(5)]
    ops = []
    for n, (kind, amount, h) in enumerate(steps):
        key = f"k{n}"
        if kind == "credit":
            ops.append(Credit(key, client, amount))
        elif kind == "reserve":
            ops.append(Reserve(key, client, amount, holds[h]))
        elif kind == "capture":
            ops.append(Capture(key, holds[h], amount))
        else:
            ops.append(Release(key, holds[h]))
    plan = plan_batch(ops, state({client: "0"}))  # type: ignore[arg-type]
    total = sum((row.entry.amount for row in plan.entries), D("0"))
    assert plan.balances.get(client, D("0")) == total
    running = D("0")
    for row in plan.entries:
        assert row.entry.balance_before == running
        running = row.entry.balance_after
        if running < 0:
            assert row.entry.type == "charge_debt" or row.entry.amount > 0


def test_a_claim_takes_its_connector_only_when_its_reservation_succeeds() -> None:
    poor, rich = uuid.uuid4(), uuid.uuid4()
    ops = []
    for n, (client, amount) in enumerate([(poor, "50"), (rich, "50"), (rich, "20")]):
        session, hold = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
        claim = SessionClaim(
            session, client, "CP-1", 1, f"APP-{n}", "app", Limit("amount", D(amount)), None,
            D("15"), D("0"), now, now, D(amount), hold,
        )  # fmt: skip
        ops.append(Reserve(f"r{n}", client, D(amount), hold, session, claim))
    plan = plan_batch(ops, state({poor: "10", rich: "100"}))
    refused, won, lost = plan.outcomes
    assert isinstance(refused, InsufficientBalance)  # takes nothing
    assert isinstance(won, LedgerResult) and won.held == D("50.00")
    assert isinstance(lost, Conflict) and lost.code == "connector_occupied"
    assert [c.session_id for c in plan.claims] == [ops[1].session_id]
