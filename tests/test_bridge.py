"""The asyncio bridge: values and errors cross intact, cancellation really stops the work."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import cast

import asyncpg
import pytest
import trio

from storage import Database, database
from storage.bridge import open_bridge
from storage.errors import StorageUnavailable


async def test_values_and_errors_cross_the_bridge(db: Database) -> None:
    cid = uuid.uuid4()
    row = await db.fetchrow("SELECT $1::uuid AS id, 150.50::numeric(12,2) AS amount", cid)
    assert row == {"id": cid, "amount": Decimal("150.50")}
    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.fetchval("SELECT 1/0")


async def test_cancelled_query_is_stopped_on_the_server(db: Database) -> None:
    began = trio.current_time()
    with trio.move_on_after(0.3):
        await db.fetchval("SELECT pg_sleep(30)")
    assert trio.current_time() - began < 5
    # The asyncio side unwound before we got control back: nothing is still sleeping.
    running = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
        "AND state = 'active' AND pid <> pg_backend_pid()"
    )
    assert running == 0
    assert await db.fetchval("SELECT 41 + 1") == 42


async def test_a_leased_connection_goes_back_open_and_closed_after_a_failure(
    db: Database,
) -> None:
    async def pid(conn: asyncpg.Connection) -> int:
        return conn.get_server_pid()

    async def alive(backend: int) -> bool:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        return bool(await db.fetchval(sql, backend))

    async with db.connection() as kept:
        kept_pid = await db.run_on(kept, pid)
    assert await alive(kept_pid)
    with pytest.raises(RuntimeError):
        async with db.connection() as failed:  # (maybe the same connection again)
            failed_pid = await db.run_on(failed, pid)
            raise RuntimeError("its owner crashed: the connection's state is unknown")
    with trio.fail_after(5):
        while await alive(failed_pid):  # noqa: ASYNC110 - the server ends the session soon
            await trio.sleep(0.01)
    assert await db.fetchval("SELECT 41 + 1") == 42  # the pool opens a new one as needed


class BrokenOnce:
    """A pool whose first connection is one asyncpg gave back broken (asyncpg#1069)."""

    def __init__(self, broken: int, error: str = "cannot switch to state 11; another ...") -> None:
        self.broken, self.error = broken, error
        self.terminated = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[BrokenOnce]:
        yield self

    async def fetchval(self, sql: str, *args: object) -> object:
        if self.terminated < self.broken:
            raise asyncpg.InternalClientError(self.error)
        return args[0]

    def terminate(self) -> None:
        self.terminated += 1


async def test_a_broken_pooled_connection_is_closed_and_the_statement_goes_to_another() -> None:
    once = BrokenOnce(broken=1)
    assert await database._fetchval(cast(asyncpg.Pool, once), "SELECT $1", (7,)) == 7
    assert once.terminated == 1
    twice = BrokenOnce(broken=2)  # never more than one retry
    with pytest.raises(asyncpg.InternalClientError):
        await database._fetchval(cast(asyncpg.Pool, twice), "SELECT $1", (7,))
    assert twice.terminated == 2
    other = BrokenOnce(broken=1, error="_on_result: waiter is done")  # it may have run: no retry
    with pytest.raises(asyncpg.InternalClientError):
        await database._fetchval(cast(asyncpg.Pool, other), "SELECT $1", (7,))
    assert other.terminated == 1


async def test_many_concurrent_calls(db: Database) -> None:
    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await db.fetchval("SELECT $1::int * 2", i))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert sorted(results) == [i * 2 for i in range(200)]


async def test_a_stopped_bridge_refuses_work() -> None:
    async def answer() -> int:
        return 42

    async with open_bridge() as bridge:
        assert await bridge.run(answer) == 42
    with pytest.raises(StorageUnavailable):
        await bridge.run(answer)


async def test_a_call_cancelled_as_it_is_made_is_answered() -> None:
    """Cancelled at once, a call's asyncio task may be cancelled before its first step (its
    coroutine never runs, so it can't hand anything over) or just after; the trio side gets
    its cancellation either way, and doesn't wait forever."""

    async def answer() -> int:
        return 42

    async with open_bridge() as bridge:
        for _ in range(50):
            with trio.fail_after(5), trio.CancelScope() as scope:
                scope.cancel()
                await bridge.run(answer)
            assert scope.cancelled_caught
        assert await bridge.run(answer) == 42


async def test_a_result_can_be_answered_on_arrival() -> None:
    """``run_answering`` hands the result to ``answer`` on the trio thread, by the time the
    caller has it too; not when the call failed; an error in ``answer`` is the caller's."""
    seen: list[tuple[str, object, int]] = []

    def answer(value: int) -> None:
        seen.append(("answered", value, threading.get_ident()))

    async def double(x: int) -> int:
        seen.append(("ran", x, threading.get_ident()))
        return 2 * x

    async def fail() -> int:
        raise ValueError("no")

    def broken(value: int) -> None:
        raise KeyError(value)

    async with open_bridge() as bridge:
        assert await bridge.run_answering(answer, double, 21) == 42
        here = threading.get_ident()
        assert [s[:2] for s in seen] == [("ran", 21), ("answered", 42)]
        assert seen[0][2] != here and seen[1][2] == here
        with pytest.raises(ValueError, match="no"):
            await bridge.run_answering(answer, fail)
        assert len(seen) == 2
        with pytest.raises(KeyError):
            await bridge.run_answering(broken, double, 1)
