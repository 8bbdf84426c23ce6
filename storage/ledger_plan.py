"""Ledger arithmetic with no I/O: what a batch of operations does to balances and holds.

:func:`plan_batch` takes the operations of one batch and the state they touch (read by
``ledger_sql``), applies them in order in memory, and returns one outcome per operation plus the
rows to write. A refused operation changes nothing, later operations see the effects of earlier
ones, and a key used twice in one batch replays like a key used in an earlier one. A
reservation's session claim takes its connector: one open session per connector.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any
from uuid import UUID

from cpms.kernel.errors import Conflict, CpmsError, Forbidden, InsufficientBalance, NotFound
from storage.errors import LedgerFailure
from storage.ledger_ops import (
    Adjust,
    Capture,
    Credit,
    Entry,
    EntryType,
    LedgerOp,
    LedgerResult,
    Recharge,
    Release,
    Reserve,
)
from storage.payments import InvoiceApproval
from storage.sessions import SessionClaim

Outcome = LedgerResult | CpmsError | LedgerFailure
ZERO = Decimal("0.00")
CENT = Decimal("0.01")


@dataclass(slots=True)
class ClientState:
    balance: Decimal
    status: str


@dataclass(slots=True)
class HoldState:
    client_id: UUID
    amount: Decimal
    status: str
    session_id: UUID | None
    captured: Decimal | None = None


@dataclass(slots=True)
class EntryRow:
    client_id: UUID
    entry: Entry
    hold_id: UUID | None
    session_id: UUID | None
    invoice_id: str | None
    operation_key: str
    key: str
    description: str | None


@dataclass
class BatchPlan:
    """The outcome of every operation and the rows that make the successful ones durable."""

    outcomes: list[Outcome] = field(default_factory=list)
    operations: list[tuple[str, str, UUID, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list
    )
    entries: list[EntryRow] = field(default_factory=list)
    #: holds created by this batch, in their state at the end of it (a sibling statement can't
    #: update a row inserted in the same statement, so they are inserted as they end up)
    new_holds: dict[UUID, HoldState] = field(default_factory=dict)
    #: holds that existed before the batch and were settled by it: status, captured amount
    settled_holds: dict[UUID, tuple[str, Decimal | None]] = field(default_factory=dict)
    balances: dict[UUID, Decimal] = field(default_factory=dict)
    #: the rows of the sessions whose reservations succeeded, holding what was held
    claims: list[SessionClaim] = field(default_factory=list)
    #: the invoices whose top-ups were credited, written approved and credited
    approvals: list[InvoiceApproval] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(self.operations)


@dataclass
class LedgerState:
    """Locked rows a batch may touch, plus results of keys already applied."""

    clients: dict[UUID, ClientState]
    holds: dict[UUID, HoldState]
    priors: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    #: connectors (station, connector) of the batch's claims that have an open session
    taken: set[tuple[str, int]] = field(default_factory=set)


def plan_batch(ops: list[LedgerOp], state: LedgerState) -> BatchPlan:
    """Apply ``ops`` in order to ``state`` (mutated) and return what to write and answer."""
    plan = BatchPlan()
    for op in ops:
        try:
            result = _plan_one(op, state, plan)
        except CpmsError as refusal:
            plan.outcomes.append(refusal)
            continue
        plan.outcomes.append(result)
        if not result.replayed:  # a second use of the key in this batch replays this result
            key, _kind, _client, request, stored = plan.operations[-1]
            state.priors[key] = (request, stored)
    return plan


def _plan_one(op: LedgerOp, state: LedgerState, plan: BatchPlan) -> LedgerResult:
    prior = state.priors.get(op.key)
    if prior is not None:
        request, result = prior
        if request != op.request():
            raise Conflict(
                f"idempotency key {op.key!r} was already used for a different operation",
                code="idempotency_conflict",
            )
        return LedgerResult.from_json(result, replayed=True)

    if isinstance(op, Release | Capture):
        hold = state.holds.get(op.hold_id)
        if hold is None:
            raise NotFound(f"hold {op.hold_id} not found", code="hold_not_found")
        if hold.status != "held":
            raise Conflict(
                f"hold {op.hold_id} is already {hold.status}", code="hold_already_settled"
            )
        client = state.clients[hold.client_id]
        if isinstance(op, Release):
            lines: list[tuple[EntryType, Decimal]] = [("charge_refund", hold.amount)]
            hold.status = "released"
        else:
            lines = settlement(hold.amount, op.cost, client.balance)
            hold.status, hold.captured = "captured", op.cost
        if op.hold_id not in plan.new_holds:
            plan.settled_holds[op.hold_id] = (hold.status, hold.captured)
        return _record(op, plan, hold.client_id, client, lines, op.hold_id, hold.session_id)

    client_or_none = state.clients.get(op.client_id)
    if client_or_none is None:
        raise NotFound(f"client {op.client_id} not found", code="client_not_found")
    client = client_or_none
    if isinstance(op, Credit | Adjust):  # one entry of its own type, perhaps for an invoice
        if isinstance(op, Adjust) and client.balance + op.amount < 0:
            raise InsufficientBalance(required=-op.amount, available=client.balance)
        if isinstance(op, Credit) and op.entry_type == "topup":
            _require_active(client.status)
        if isinstance(op, Credit) and op.approval is not None:
            plan.approvals.append(op.approval)
        return _record(
            op,
            plan,
            op.client_id,
            client,
            [(op.entry_type, op.amount)],
            invoice_id=op.invoice_id,
            description=op.description if isinstance(op, Credit) else op.reason,
        )
    if isinstance(op, Recharge):
        lines = (
            settlement(ZERO, op.amount, client.balance)
            if op.amount > 0
            else [("charge_refund", -op.amount)]
            if op.amount < 0
            else []
        )
        return _record(op, plan, op.client_id, client, lines, session_id=op.session_id)
    assert isinstance(op, Reserve)
    claim = op.claim
    place = None if claim is None else (claim.station_id, claim.connector_id)
    if claim is not None and place in state.taken:
        raise Conflict(
            f"connector {claim.connector_id} of {claim.station_id} is busy",
            code="connector_occupied",
        )
    _require_active(client.status)
    if op.hold_id in state.holds:
        raise Conflict(f"hold {op.hold_id} already exists", code="hold_exists")
    amount = op.amount
    if op.minimum is not None:  # as much of the ceiling as the balance covers
        amount = min(amount, client.balance).quantize(CENT, rounding=ROUND_DOWN)
        if amount < op.minimum:
            raise InsufficientBalance(required=op.minimum, available=client.balance)
    if client.balance < amount:
        raise InsufficientBalance(required=amount, available=client.balance)
    hold = HoldState(op.client_id, amount, "held", op.session_id)
    state.holds[op.hold_id] = plan.new_holds[op.hold_id] = hold
    if claim is not None and place is not None:  # the session's row takes the connector
        state.taken.add(place)
        plan.claims.append(replace(claim, reserved=amount))
    return _record(
        op, plan, op.client_id, client, [("charge_reserve", -amount)], op.hold_id, op.session_id
    )


def settlement(held: Decimal, cost: Decimal, free: Decimal) -> list[tuple[EntryType, Decimal]]:
    """Entries settling a hold of ``held`` at ``cost``, with ``free`` balance besides the hold:
    refund the rest; or take the overrun from the free balance, and what it can't cover is debt.
    """
    if cost < held:
        return [("charge_refund", held - cost)]
    overrun = cost - held
    paid = min(max(free, ZERO), overrun)
    lines: list[tuple[EntryType, Decimal]] = []
    if paid > 0:
        lines.append(("charge_payment", -paid))
    if overrun > paid:
        lines.append(("charge_debt", -(overrun - paid)))
    return lines


def _require_active(status: str) -> None:
    if status == "blocked":
        raise Forbidden("client is blocked", code="client_blocked")
    if status == "pending_deletion":
        raise Forbidden("client account is being deleted", code="client_pending_deletion")


def _record(
    op: LedgerOp,
    plan: BatchPlan,
    client_id: UUID,
    client: ClientState,
    lines: list[tuple[EntryType, Decimal]],
    hold_id: UUID | None = None,
    session_id: UUID | None = None,
    *,
    invoice_id: str | None = None,
    description: str | None = None,
) -> LedgerResult:
    entries = []
    for entry_type, amount in lines:
        entry = Entry(entry_type, amount, client.balance, client.balance + amount)
        client.balance = entry.balance_after
        entries.append(entry)
    result = LedgerResult(op.key, client_id, client.balance, tuple(entries), hold_id)
    for i, entry in enumerate(entries):
        key = op.key if i == 0 else f"{op.key}#{i + 1}"
        plan.entries.append(
            EntryRow(client_id, entry, hold_id, session_id, invoice_id, op.key, key, description)
        )
    request, stored = op.request(), result.to_json()
    plan.operations.append((op.key, op.kind, client_id, request, stored))
    plan.balances[client_id] = client.balance
    return result
