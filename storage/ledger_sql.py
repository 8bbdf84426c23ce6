"""Applying a batch of ledger operations to PostgreSQL. Runs on the storage loop.

A batch costs four round trips whatever its size, and a start waits for the batch ahead of it:

1. ``BEGIN``;
2. one read: write the rows of the sessions its reservations claim, lock every hold it names
   and then every client row it touches (each in id order, so concurrent writers can't
   deadlock), and read the keys already applied;
3. plan the batch in memory (``ledger_plan``), then write operations, holds, entries and
   balances in one statement;
4. ``COMMIT``.

A claim that loses its connector, or a reservation refused, costs one more. If the database
rejects the batch anyway, it is rolled back and each operation is redone alone, so one bad
operation can't sink the others.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import asyncpg

from cpms.errors import Conflict
from storage.errors import LedgerFailure
from storage.ledger_ops import Adjust, Capture, Credit, LedgerOp, LedgerResult, Release, Reserve
from storage.ledger_plan import (
    BatchPlan,
    ClientState,
    HoldState,
    LedgerState,
    Outcome,
    plan_batch,
)
from storage.sessions import claim_arrays, drop_claims, existing_sessions, insert_claims_sql

# SQLSTATE classes a batch can recover from by redoing its operations one by one:
# 22 data exception, 23 integrity violation, 40 serialization failure / deadlock.
_RECOVERABLE = ("22", "23", "40")

# Everything a batch reads, in one round trip: the rows of the sessions its reservations claim
# are written, its holds locked, then the clients it touches (its own and the holds' owners,
# which the holds name: holds are always locked first), and the keys already applied.
_READ = f"""
WITH claimed AS ({insert_claims_sql(4)}
), held AS (
    SELECT id, client_id, amount, status, session_id FROM holds WHERE id = ANY($2)
    ORDER BY id FOR UPDATE
), owners AS (
    SELECT id, balance, status FROM clients
    WHERE id = ANY($3) OR id IN (SELECT client_id FROM held)
    ORDER BY id FOR UPDATE
)
SELECT 'prior' AS kind, o.idempotency_key AS key, o.request, o.result, NULL::uuid AS id,
       NULL::uuid AS client_id, NULL::numeric AS amount, NULL::text AS status,
       NULL::uuid AS session_id
FROM unnest($1::text[]) AS k(key) JOIN ledger_operations o ON o.idempotency_key = k.key
UNION ALL
SELECT 'hold', NULL, NULL, NULL, id, client_id, amount, status, session_id FROM held
UNION ALL
SELECT 'client', NULL, NULL, NULL, id, NULL, balance, status, NULL FROM owners
UNION ALL
SELECT 'claimed', NULL, NULL, NULL, id, NULL, NULL, NULL, NULL FROM claimed
"""
_WRITE = """
WITH ops AS (
    INSERT INTO ledger_operations (idempotency_key, kind, client_id, request, result)
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::jsonb[], $5::jsonb[])
), new_holds AS (
    INSERT INTO holds (id, client_id, amount, session_id, status, captured_amount, settled_at)
    SELECT n.*, CASE WHEN n.status = 'held' THEN NULL ELSE now() END
    FROM unnest($6::uuid[], $7::uuid[], $8::numeric[], $9::uuid[], $26::text[],
                $27::numeric[]) AS n(id, client_id, amount, session_id, status, captured)
), settled AS (
    UPDATE holds h SET status = s.status, captured_amount = s.captured, settled_at = now()
    FROM unnest($10::uuid[], $11::text[], $12::numeric[]) AS s(id, status, captured)
    WHERE h.id = s.id
), balances AS (
    UPDATE clients c SET balance = b.balance, updated_at = now()
    FROM unnest($13::uuid[], $14::numeric[]) AS b(id, balance)
    WHERE c.id = b.id
), sized AS (
    UPDATE charging_sessions s SET reserved_amount = z.amount
    FROM unnest($28::uuid[], $29::numeric[]) AS z(id, amount)
    WHERE s.id = z.id
)
INSERT INTO ledger_entries (client_id, type, amount, balance_before, balance_after, hold_id,
                            session_id, invoice_id, operation_key, idempotency_key, description)
SELECT * FROM unnest($15::uuid[], $16::text[], $17::numeric[], $18::numeric[], $19::numeric[],
                     $20::uuid[], $21::uuid[], $22::text[], $23::text[], $24::text[], $25::text[])
"""


def _recoverable(exc: asyncpg.PostgresError) -> bool:
    return str(getattr(exc, "sqlstate", "") or "")[:2] in _RECOVERABLE


async def apply_batch(conn: asyncpg.Connection, ops: list[LedgerOp]) -> list[Outcome]:
    """Apply ``ops`` in order, in one transaction; one outcome per operation.

    Raises:
        asyncpg.PostgresError, asyncpg.InterfaceError: the connection or server failed; nothing
            may be assumed about the batch except that replaying its keys is safe.
    """
    try:
        async with conn.transaction():
            return await _apply(conn, ops)
    except asyncpg.PostgresError as exc:
        if not _recoverable(exc):
            raise
    return [await _apply_alone(conn, op) for op in ops]


async def _apply_alone(conn: asyncpg.Connection, op: LedgerOp, attempts: int = 3) -> Outcome:
    error: asyncpg.PostgresError | None = None
    for _ in range(attempts):
        try:
            async with conn.transaction():
                return (await _apply(conn, [op]))[0]
        except asyncpg.PostgresError as exc:
            if not _recoverable(exc):
                raise
            error = exc
            if not str(exc.sqlstate).startswith("40"):
                break  # only serialization failures and deadlocks are worth retrying
    return LedgerFailure(f"{op.kind} {op.key!r} refused by the database: {error}")


async def _apply(conn: asyncpg.Connection, ops: list[LedgerOp]) -> list[Outcome]:
    state, written = await _read(conn, ops)
    lost = {c for op in ops if (c := _claim_of(op)) is not None and c not in written}
    if lost:  # not written: taken by an open session, unless already there (a replay)
        lost -= await existing_sessions(conn, lost)
    occupied = [_claim_of(op) in lost for op in ops]
    live = [op for op, taken in zip(ops, occupied, strict=True) if not taken]
    plan = plan_batch(live, state)
    refused = [
        claim
        for op, outcome in zip(live, plan.outcomes, strict=True)
        if not isinstance(outcome, LedgerResult)
        and (claim := _claim_of(op)) is not None
        and claim in written
    ]
    if refused:
        await drop_claims(conn, refused)
    if plan.writes:
        await _write(conn, plan, _sized_claims(live, plan.outcomes, written))
    planned = iter(plan.outcomes)
    return [
        _occupied(op) if taken else next(planned) for op, taken in zip(ops, occupied, strict=True)
    ]


def _sized_claims(
    ops: list[LedgerOp], outcomes: list[Outcome], written: set[UUID]
) -> dict[UUID, Decimal]:
    """Claimed rows whose reservation was sized on the balance (a ``minimum``), with what was
    held: they were written with the ceiling."""
    return {
        op.claim.session_id: outcome.held
        for op, outcome in zip(ops, outcomes, strict=True)
        if isinstance(op, Reserve)
        and op.minimum is not None
        and op.claim is not None
        and op.claim.session_id in written
        and isinstance(outcome, LedgerResult)
        and outcome.held != op.claim.reserved
    }


def _claim_of(op: LedgerOp) -> UUID | None:
    return op.claim.session_id if isinstance(op, Reserve) and op.claim is not None else None


def _occupied(op: LedgerOp) -> Conflict:
    assert isinstance(op, Reserve) and op.claim is not None
    claim = op.claim
    return Conflict(
        f"connector {claim.connector_id} of {claim.station_id} is busy",
        code="connector_occupied",
    )


async def _read(conn: asyncpg.Connection, ops: list[LedgerOp]) -> tuple[LedgerState, set[UUID]]:
    """The locked state the batch is planned on, and the sessions whose claims were written."""
    keys = [op.key for op in ops]
    hold_ids = sorted({op.hold_id for op in ops if isinstance(op, Release | Capture | Reserve)})
    client_ids = sorted({op.client_id for op in ops if isinstance(op, Credit | Adjust | Reserve)})
    claims = [op.claim for op in ops if isinstance(op, Reserve) and op.claim is not None]
    state = LedgerState({}, {}, {})
    written: set[UUID] = set()
    for r in await conn.fetch(_READ, keys, hold_ids, client_ids, *claim_arrays(claims)):
        match r["kind"]:
            case "prior":
                state.priors[r["key"]] = (r["request"], r["result"])
            case "hold":
                state.holds[r["id"]] = HoldState(
                    r["client_id"], r["amount"], r["status"], r["session_id"]
                )
            case "client":
                state.clients[r["id"]] = ClientState(r["amount"], r["status"])
            case _:
                written.add(r["id"])
    return state, written


async def _write(conn: asyncpg.Connection, plan: BatchPlan, sized: dict[UUID, Decimal]) -> None:
    ops, entries = plan.operations, plan.entries
    settled = list(plan.settled_holds.items())
    new = list(plan.new_holds.items())
    await conn.execute(
        _WRITE,
        [o[0] for o in ops],
        [o[1] for o in ops],
        [o[2] for o in ops],
        [o[3] for o in ops],
        [o[4] for o in ops],
        [h for h, _ in new],
        [n.client_id for _, n in new],
        [n.amount for _, n in new],
        [n.session_id for _, n in new],
        [h for h, _ in settled],
        [s for _, (s, _) in settled],
        [c for _, (_, c) in settled],
        list(plan.balances),
        list(plan.balances.values()),
        [e.client_id for e in entries],
        [e.entry.type for e in entries],
        [e.entry.amount for e in entries],
        [e.entry.balance_before for e in entries],
        [e.entry.balance_after for e in entries],
        [e.hold_id for e in entries],
        [e.session_id for e in entries],
        [e.invoice_id for e in entries],
        [e.operation_key for e in entries],
        [e.key for e in entries],
        [e.description for e in entries],
        [n.status for _, n in new],
        [n.captured for _, n in new],
        list(sized),
        list(sized.values()),
    )
