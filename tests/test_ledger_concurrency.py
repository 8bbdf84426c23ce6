"""Ledger exactness under concurrency, duplicated keys, and crashes of the StorageActor.

50 tasks send 2,000 random credits, holds, captures, releases and adjustments for 20 clients,
re-sending earlier operations (their own and other tasks') with the same keys along the way. After
the run, for every client: the balance equals the sum of its entries, the entries chain
before→after without gaps, every acknowledged operation was applied exactly once, every hold's
entries add up to what was captured, and no balance went below zero except by a debt entry.
The same must hold when the StorageActor crashes after a commit (before answering) or loses its
database connection mid-run, and is restarted by its supervisor.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
import trio
import trio.lowlevel

from actors.ledger import StorageHooks
from cpms.kernel.errors import CpmsError
from storage import Database, LedgerOp, LedgerResult
from storage.clients import ensure_client
from storage.ledger_ops import Adjust, Capture, Credit, Release, Reserve
from tests.conftest import start_ledger

TASKS = 50
OPS = 2000
CLIENTS = 20
D = Decimal


def money(rng: random.Random, low: int, high: int) -> Decimal:
    return D(rng.randint(low * 100, high * 100)) / 100


class Workload:
    """Random operations from many tasks, with a shared pool of already-sent operations."""

    def __init__(self, seed: int, clients: list[uuid.UUID]) -> None:
        self.rng = random.Random(seed)
        self.clients = clients
        self.sent: list[LedgerOp] = []
        self.answers: dict[str, LedgerResult] = {}
        self.refusals: dict[str, int] = defaultdict(int)
        self.open_holds: dict[uuid.UUID, Decimal] = {}
        self.duplicates = 0

    def next_op(self, task: int, n: int) -> LedgerOp:
        rng = self.rng
        if self.sent and rng.random() < 0.15:
            self.duplicates += 1
            return rng.choice(self.sent)
        key = f"t{task}-{n}"
        roll = rng.random()
        client = rng.choice(self.clients)
        op: LedgerOp
        if roll < 0.35 or (0.6 <= roll < 0.9 and not self.open_holds):
            op = Credit(key, client, money(rng, 1, 300), rng.choice(["topup", "adjustment"]))
        elif roll < 0.6:
            hold = uuid.uuid4()
            op = Reserve(key, client, money(rng, 1, 150), hold)
            self.open_holds[hold] = op.amount
        elif roll < 0.8:
            hold, held = rng.choice(list(self.open_holds.items()))
            if rng.random() < 0.8:
                self.open_holds.pop(hold, None)
            op = Capture(key, hold, money(rng, 0, int(held * D("1.5")) + 1))
        elif roll < 0.9:
            hold = rng.choice(list(self.open_holds))
            self.open_holds.pop(hold, None)
            op = Release(key, hold)
        else:
            op = Adjust(key, client, money(rng, -50, 50) or D("1.00"), "correction")
        self.sent.append(op)
        return op

    def record(self, op: LedgerOp, outcome: LedgerResult | CpmsError) -> None:
        if isinstance(outcome, CpmsError):
            self.refusals[outcome.code] += 1
            return
        first = self.answers.setdefault(op.key, outcome)
        assert (first.balance, first.entries) == (outcome.balance, outcome.entries), op.key


async def run_workload(rig_ledger: object, workload: Workload) -> None:
    ledger = rig_ledger
    per_task = OPS // TASKS

    async def worker(task: int) -> None:
        for n in range(per_task):
            op = workload.next_op(task, n)
            try:
                result = await ledger.apply(op)  # type: ignore[attr-defined]
            except CpmsError as refusal:
                workload.record(op, refusal)
            else:
                workload.record(op, result)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for task in range(TASKS):
            nursery.start_soon(worker, task)


async def assert_ledger_exact(db: Database, workload: Workload) -> None:
    # Every balance is the sum of its entries, and the entries chain without gaps.
    entries = await db.fetch(
        """SELECT client_id, type, amount, balance_before, balance_after, operation_key, hold_id
           FROM ledger_entries ORDER BY id"""
    )
    balances = {r["id"]: r["balance"] for r in await db.fetch("SELECT id, balance FROM clients")}
    running: dict[uuid.UUID, Decimal] = defaultdict(lambda: D("0.00"))
    for e in entries:
        assert e["balance_before"] == running[e["client_id"]], "entries don't chain"
        assert e["balance_after"] == e["balance_before"] + e["amount"]
        if e["balance_after"] < 0:  # only a debt entry takes (or keeps) a balance below zero
            assert e["type"] == "charge_debt" or e["amount"] > 0, e
        running[e["client_id"]] = e["balance_after"]
    for client, balance in balances.items():
        assert balance == running[client], f"{client}: {balance} != {running[client]}"

    # Every acknowledged operation was applied exactly once; nothing else was applied.
    operations = {
        r["idempotency_key"]: r["result"]
        for r in await db.fetch("SELECT idempotency_key, result FROM ledger_operations")
    }
    assert set(operations) == set(workload.answers)
    per_op: dict[str, int] = defaultdict(int)
    for e in entries:
        per_op[e["operation_key"]] += 1
    for key, answer in workload.answers.items():
        assert per_op[key] == len(answer.entries), key
        assert LedgerResult.from_json(operations[key], replayed=False).entries == answer.entries

    # A hold's entries add up to minus what it finally cost.
    holds = await db.fetch("SELECT id, amount, status, captured_amount FROM holds")
    by_hold: dict[uuid.UUID, Decimal] = defaultdict(lambda: D("0.00"))
    for e in entries:
        if e["hold_id"] is not None:
            by_hold[e["hold_id"]] += e["amount"]
    for h in holds:
        cost = {"held": h["amount"], "released": D("0.00"), "captured": h["captured_amount"]}
        assert by_hold[h["id"]] == -cost[h["status"]], h


class CrashAfterCommit:
    """Crashes the StorageActor after chosen commits, before it answers anyone."""

    def __init__(self, batches: set[int]) -> None:
        self.batches = batches
        self.seen = 0
        self.crashed = 0

    def __call__(self, size: int) -> None:
        self.seen += 1
        if self.seen in self.batches:
            self.crashed += 1
            raise RuntimeError(f"injected crash after commit #{self.seen}")


async def kill_connections(db: Database, times: int, every: float) -> int:
    killed = 0
    for _ in range(times):
        await trio.sleep(every)
        killed += await db.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        )
    return killed


@pytest.mark.parametrize("fault", ["none", "crash_after_commit", "connection_killed"])
async def test_ledger_stays_exact_under_concurrency(db: Database, fault: str) -> None:
    clients = [uuid.uuid4() for _ in range(CLIENTS)]
    for c in clients:
        await ensure_client(db, c)
    crash = CrashAfterCommit({3, 8, 15, 24})
    hooks = StorageHooks(after_commit=crash if fault == "crash_after_commit" else None)
    workload = Workload(seed=20261122, clients=clients)
    async with trio.open_nursery() as nursery:
        rig = await start_ledger(nursery, db, hooks=hooks, batch=16)
        if fault == "connection_killed":
            nursery.start_soon(kill_connections, db, 3, 0.15)
        await run_workload(rig.ledger, workload)
        restarts = rig.supervisor.total_restarts
        nursery.cancel_scope.cancel()

    assert workload.duplicates > 100
    assert len(workload.answers) > 1000
    if fault == "crash_after_commit":
        assert crash.crashed == 4 and restarts == 4
    if fault == "connection_killed":
        assert restarts >= 1
    await assert_ledger_exact(db, workload)
