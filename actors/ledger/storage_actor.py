"""The StorageActor: the single writer of money.

Every balance change is a message in its bounded inbox. It takes what is queued (up to a batch),
applies it in one transaction (one commit, one fsync for the lot), and only then answers each
caller, so an answer always means "committed". The answers go out as the batch's outcome reaches
the trio thread, before the actor itself is resumed (a start waits one pass of the scheduler
less). A refusal (unknown client, insufficient balance, reused key) is answered as that error; a
failure of the database connection crashes the actor, the supervisor restarts it, and callers
retry with the same idempotency keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import asyncpg
import structlog
import trio

from actors.runtime import Address, ChildSpec, Envelope, Mailbox, Restart
from cpms.kernel.events import BalanceChanged, EventBus
from cpms.metrics import LEDGER_BATCH, LEDGER_BATCH_SIZE
from storage.database import Database
from storage.ledger_ops import LedgerOp, LedgerResult
from storage.ledger_plan import Outcome
from storage.ledger_sql import LedgerCache, apply_batch, warm_up

STORAGE_ADDRESS = Address("storage", "ledger")
log = structlog.stdlib.get_logger("storage.actor")


@dataclass(frozen=True)
class StorageHooks:
    """Test seams inside the actor: ``after_commit(batch_size)`` runs after each commit, on the
    storage loop, before any caller is answered (raising there is a crash at the worst possible
    moment)."""

    after_commit: Callable[[int], None] | None = None


def storage_actor_spec(
    db: Database,
    *,
    batch: int = 64,
    inbox: int = 1024,
    hooks: StorageHooks | None = None,
    bus: EventBus | None = None,
) -> ChildSpec[LedgerOp]:
    """The child spec to start the StorageActor under a supervisor (permanent); with a
    ``bus``, each committed entry of a client is published there (:class:`BalanceChanged`)."""
    return ChildSpec(
        address=STORAGE_ADDRESS,
        run=partial(run_storage_actor, db=db, batch=batch, hooks=hooks or StorageHooks(), bus=bus),
        restart=Restart.PERMANENT,
        inbox=inbox,
    )


async def run_storage_actor(
    mailbox: Mailbox[LedgerOp],
    *,
    db: Database,
    batch: int,
    hooks: StorageHooks,
    bus: EventBus | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with db.connection() as conn:
        cache = LedgerCache()  # the rows it knows, for this connection's life: see ledger_sql
        await db.run_on(conn, warm_up)
        task_status.started()
        while True:
            try:
                envelopes = [await mailbox.receive()]
            except trio.EndOfChannel:
                return
            _take_batch(mailbox, envelopes, batch)
            await _apply(db, conn, cache, envelopes, hooks, bus)


def _take_batch(
    mailbox: Mailbox[LedgerOp], envelopes: list[Envelope[LedgerOp]], batch: int
) -> None:
    """Add what else is queued, up to ``batch``: one commit for all of it (group commit)."""
    while len(envelopes) < batch:
        try:
            envelopes.append(mailbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break


async def _apply(
    db: Database,
    conn: asyncpg.Connection,
    cache: LedgerCache,
    envelopes: list[Envelope[LedgerOp]],
    hooks: StorageHooks,
    bus: EventBus | None,
) -> None:
    began = time.perf_counter()
    await db.run_on(
        conn,
        _commit,
        [e.message for e in envelopes],
        cache,
        hooks.after_commit,
        answer=partial(_answer, envelopes, bus),
    )
    LEDGER_BATCH.observe(time.perf_counter() - began)
    LEDGER_BATCH_SIZE.observe(len(envelopes))


async def _commit(
    conn: asyncpg.Connection,
    ops: list[LedgerOp],
    cache: LedgerCache,
    after_commit: Callable[[int], None] | None,
) -> list[Outcome]:
    """On the storage loop: apply the batch, then run the test seam."""
    outcomes = await apply_batch(conn, ops, cache)
    if after_commit is not None:
        after_commit(len(ops))
    return outcomes


def _answer(
    envelopes: list[Envelope[LedgerOp]], bus: EventBus | None, outcomes: list[Outcome]
) -> None:
    for envelope, outcome in zip(envelopes, outcomes, strict=True):
        if isinstance(outcome, LedgerResult):
            envelope.respond(outcome)
            if not outcome.replayed:
                if bus is not None:
                    bus.publish(BalanceChanged(str(outcome.client_id)))
                log.debug(
                    "ledger",
                    op=envelope.message.kind,
                    key=outcome.key,
                    client_id=str(outcome.client_id),
                    balance=str(outcome.balance),
                )
        else:
            envelope.fail(outcome)
