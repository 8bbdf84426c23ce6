"""Applying a batch of ledger operations to PostgreSQL. Runs on the storage loop.

A batch costs at most two round trips whatever its size, and a start waits for the batch ahead
of it:

1. one read, taking no locks: the clients the batch touches (its own and its holds' owners),
   its holds, the keys already applied, and which claimed connectors have an open session;
2. plan the batch in memory (``ledger_plan``), then one statement, its own transaction, writes
   operations, holds, entries, balances and the claimed sessions' rows, and checks as it writes
   that nothing it read has changed: each balance and status as read, each settled hold still
   held, each claimed connector still free.

Only a ledger in another process (an operator's command) can change those rows meanwhile; then
the check aborts the statement as a serialization failure, nothing is written, and each
operation is redone alone on fresh rows. The same happens when the database rejects the batch
otherwise (a key applied meanwhile), so one bad operation can't sink the others.

The read is mostly skipped. The StorageActor keeps what it last read or wrote (a
:class:`LedgerCache`: balances, statuses, open holds), and a batch whose rows are all there is
planned on them: one round trip. That guess is checked exactly as a read is, by the write, and
where it was wrong (an operator's credit, a client blocked, a key or a connector used by another
process) nothing is written and the batch goes the long way. A refusal planned on it is never
answered: it is confirmed on fresh rows first (a top-up elsewhere may have covered it).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from uuid import UUID

import asyncpg

from storage.errors import LedgerFailure
from storage.ledger_ops import (
    Adjust,
    Capture,
    Credit,
    LedgerOp,
    LedgerResult,
    Recharge,
    Release,
    Reserve,
)
from storage.ledger_plan import (
    BatchPlan,
    ClientState,
    HoldState,
    LedgerState,
    Outcome,
    plan_batch,
)
from storage.payments import approval_arrays, approve_in_batch_sql
from storage.sessions import OPEN, claim_arrays, insert_claims_sql

# SQLSTATE classes a batch can recover from by redoing its operations one by one:
# 22 data exception, 23 integrity violation, 40 serialization failure / deadlock.
_RECOVERABLE = ("22", "23", "40")
_ATTEMPTS = 5

_READ = """
WITH held AS (
    SELECT id, client_id, amount, status, session_id FROM holds WHERE id = ANY($2)
)
SELECT 'prior' AS kind, o.idempotency_key AS key, o.request, o.result, NULL::uuid AS id,
       NULL::uuid AS client_id, NULL::numeric AS amount, NULL::text AS status,
       NULL::uuid AS session_id, NULL::smallint AS connector
FROM unnest($1::text[]) AS k(key) JOIN ledger_operations o ON o.idempotency_key = k.key
UNION ALL
SELECT 'hold', NULL, NULL, NULL, id, client_id, amount, status, session_id, NULL FROM held
UNION ALL
SELECT 'client', NULL, NULL, NULL, id, NULL, balance, status, NULL, NULL FROM clients
WHERE id = ANY($3) OR id IN (SELECT client_id FROM held)
UNION ALL
SELECT 'taken', s.station_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, s.connector_id
FROM unnest($4::text[], $5::smallint[]) AS c(station, connector)
JOIN charging_sessions s ON s.station_id = c.station AND s.connector_id = c.connector
WHERE s.status = ANY($6)
"""
_WRITE = f"""
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
    WHERE h.id = s.id AND h.status = 'held'
    RETURNING h.id
), balances AS (
    UPDATE clients c SET balance = b.balance, updated_at = now()
    FROM unnest($13::uuid[], $14::numeric[], $28::numeric[], $29::text[])
         AS b(id, balance, was, status)
    WHERE c.id = b.id AND c.balance = b.was AND c.status = b.status
    RETURNING c.id
), claimed AS ({insert_claims_sql(30)}
), entries AS (
    INSERT INTO ledger_entries (client_id, type, amount, balance_before, balance_after, hold_id,
                                session_id, invoice_id, operation_key, idempotency_key,
                                description)
    SELECT * FROM unnest($15::uuid[], $16::text[], $17::numeric[], $18::numeric[],
                         $19::numeric[], $20::uuid[], $21::uuid[], $22::text[], $23::text[],
                         $24::text[], $25::text[])
), approved AS ({approve_in_batch_sql(30 + len(claim_arrays([])))}
)
SELECT cpms_ledger_unchanged(
    (SELECT count(*) FROM settled) = cardinality($10::uuid[])
    AND (SELECT count(*) FROM balances) = cardinality($13::uuid[])
    AND (SELECT count(*) FROM claimed) = cardinality($30::uuid[])
)
"""


class LedgerCache:
    """The rows one ledger last read or wrote: each client's balance and status (the
    ``size`` most recently used), and the holds still held. Only a guess at the database: see
    the module's docstring. Used on the storage loop only."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._clients: dict[UUID, ClientState] = {}
        self._holds: dict[UUID, HoldState] = {}

    def state(self, ops: list[LedgerOp]) -> LedgerState | None:
        """Copies of the rows ``ops`` touch, as a batch's state; None when one isn't known.
        Keys are taken as unused and claimed connectors as free (the write checks both)."""
        state = LedgerState({}, {}, {})
        for op in ops:
            if isinstance(op, Release | Capture):
                hold = self._holds.get(op.hold_id)
                if hold is None:
                    return None
                state.holds[op.hold_id] = replace(hold)
                client_id = hold.client_id
            elif isinstance(op, Reserve) and op.hold_id in self._holds:
                return None  # its hold exists: a replay, answered from the stored result
            else:
                client_id = op.client_id
            client = self._clients.get(client_id)
            if client is None:
                return None
            state.clients[client_id] = replace(client)
        return state

    def keep(self, state: LedgerState) -> None:
        """Remember ``state``: rows as read, or as a batch that was written left them."""
        for client_id, client in state.clients.items():
            self._clients.pop(client_id, None)
            self._clients[client_id] = replace(client)
        while len(self._clients) > self.size:
            del self._clients[next(iter(self._clients))]
        for hold_id, hold in state.holds.items():
            if hold.status == "held":
                self._holds[hold_id] = replace(hold)
            else:
                self._holds.pop(hold_id, None)

    def forget(self, ops: list[LedgerOp]) -> None:
        """Drop the rows ``ops`` touch (a write on them failed: they may have changed)."""
        for op in ops:
            if isinstance(op, Release | Capture | Reserve):
                hold = self._holds.pop(op.hold_id, None)
                if hold is not None:
                    self._clients.pop(hold.client_id, None)
            if isinstance(op, Credit | Adjust | Reserve | Recharge):
                self._clients.pop(op.client_id, None)


async def warm_up(conn: asyncpg.Connection) -> None:
    """Run the read and the write once on no rows (the write, its own transaction as always,
    writes nothing): the first real batch on ``conn`` then finds both prepared, their types
    known and the backend's caches filled (without it, that batch is the slowest of all). No
    explicit transaction: asyncpg may hand back a connection whose server
    session ended inside one broken to the pool (MagicStack/asyncpg#1069)."""
    await _read(conn, [])
    await _write(conn, BatchPlan(), {})


def _recoverable(exc: asyncpg.PostgresError) -> bool:
    return str(getattr(exc, "sqlstate", "") or "")[:2] in _RECOVERABLE


async def apply_batch(
    conn: asyncpg.Connection, ops: list[LedgerOp], cache: LedgerCache | None = None
) -> list[Outcome]:
    """Apply ``ops`` in order, in one transaction; one outcome per operation. With a ``cache``,
    planned on the rows it knows when it knows them all, and kept up to date.

    Raises:
        asyncpg.PostgresError, asyncpg.InterfaceError: the connection or server failed; nothing
            may be assumed about the batch except that replaying its keys is safe.
    """
    if cache is not None and (known := cache.state(ops)) is not None:
        try:
            outcomes = await _apply_known(conn, ops, known, cache)
        except asyncpg.PostgresError as exc:
            if not _recoverable(exc):
                raise
            cache.forget(ops)
            outcomes = None
        if outcomes is not None:
            return outcomes
    try:
        return await _apply(conn, ops, cache)
    except asyncpg.PostgresError as exc:
        if not _recoverable(exc):
            raise
        if cache is not None:
            cache.forget(ops)
    return [await _apply_alone(conn, op, cache) for op in ops]


async def _apply_known(
    conn: asyncpg.Connection, ops: list[LedgerOp], state: LedgerState, cache: LedgerCache
) -> list[Outcome] | None:
    """Plan ``ops`` on the cached ``state`` and write them; None (nothing written) when one
    was refused, which only fresh rows may confirm."""
    read = {cid: (c.balance, c.status) for cid, c in state.clients.items()}
    plan = plan_batch(ops, state)
    if not all(isinstance(outcome, LedgerResult) for outcome in plan.outcomes):
        return None
    await _write(conn, plan, read)
    cache.keep(state)
    return plan.outcomes


async def _apply_alone(
    conn: asyncpg.Connection, op: LedgerOp, cache: LedgerCache | None
) -> Outcome:
    error: asyncpg.PostgresError | None = None
    for _ in range(_ATTEMPTS):
        try:
            return (await _apply(conn, [op], cache))[0]
        except asyncpg.PostgresError as exc:
            if not _recoverable(exc):
                raise
            error = exc
            if not str(exc.sqlstate).startswith("40"):
                break  # only serialization failures and deadlocks are worth retrying
    return LedgerFailure(f"{op.kind} {op.key!r} refused by the database: {error}")


async def _apply(
    conn: asyncpg.Connection, ops: list[LedgerOp], cache: LedgerCache | None
) -> list[Outcome]:
    state = await _read(conn, ops)
    read = {cid: (c.balance, c.status) for cid, c in state.clients.items()}
    plan = plan_batch(ops, state)
    if plan.writes:
        await _write(conn, plan, read)
    if cache is not None:
        cache.keep(state)
    return plan.outcomes


async def _read(conn: asyncpg.Connection, ops: list[LedgerOp]) -> LedgerState:
    """The state the batch is planned on."""
    keys = [op.key for op in ops]
    hold_ids = sorted({op.hold_id for op in ops if isinstance(op, Release | Capture | Reserve)})
    client_ids = sorted(
        {op.client_id for op in ops if isinstance(op, Credit | Adjust | Reserve | Recharge)}
    )
    claims = [op.claim for op in ops if isinstance(op, Reserve) and op.claim is not None]
    stations = [c.station_id for c in claims]
    connectors = [c.connector_id for c in claims]
    state = LedgerState({}, {}, {})
    for r in await conn.fetch(_READ, keys, hold_ids, client_ids, stations, connectors, OPEN):
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
                state.taken.add((r["key"], r["connector"]))
    return state


async def _write(
    conn: asyncpg.Connection, plan: BatchPlan, read: dict[UUID, tuple[Decimal, str]]
) -> None:
    """Write the plan, checking that the rows it was planned on are as they were read."""
    ops, entries = plan.operations, plan.entries
    settled = list(plan.settled_holds.items())
    new = list(plan.new_holds.items())
    await conn.fetchval(
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
        [read[c][0] for c in plan.balances],
        [read[c][1] for c in plan.balances],
        *claim_arrays(plan.claims),
        *approval_arrays(plan.approvals),
    )
