"""The database handle trio code uses: a connection pool living on the storage loop.

Reads go straight through :meth:`Database.fetch` and friends. Code that needs a connection for
several statements (the ledger, migrations) is written as a coroutine function taking an
``asyncpg.Connection`` and handed to :meth:`Database.run_with_connection`; it runs on the storage
loop. Rows come back as plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from uuid import UUID

import asyncpg
import trio

from storage.bridge import AsyncioBridge, Feed, open_bridge
from storage.errors import StorageUnavailable

P = ParamSpec("P")
T = TypeVar("T")

Row = dict[str, Any]


def _json_default(value: object) -> str:
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> str:
    """JSON for JSONB columns: Decimals and UUIDs as strings, never floats."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps, decoder=json.loads, schema="pg_catalog")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database can't be reached (it went away, is starting or
    shutting down), as opposed to refusing a statement."""
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.exceptions.OperatorInterventionError):
        return not isinstance(exc, asyncpg.exceptions.QueryCanceledError)
    if isinstance(exc, asyncpg.InternalClientError):  # a connection broken by the server's
        return str(exc).startswith("cannot switch to state")  # end (asyncpg#1069), unsent
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


@contextmanager
def unreachable_as_unavailable() -> Iterator[None]:
    """Raise the database being out of reach as :class:`StorageUnavailable` (callers answer
    503, actors wait for it): one error for every way asyncpg says it."""
    try:
        yield
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    ) as exc:
        if unreachable(exc):
            raise StorageUnavailable(f"the database is unreachable: {exc}") from exc
        raise


class Database:
    """A pool of PostgreSQL connections reached through the storage bridge. A statement that
    can't reach the database raises :class:`StorageUnavailable`."""

    def __init__(self, bridge: AsyncioBridge, pool: asyncpg.Pool, dsn: str) -> None:
        self.bridge = bridge
        self._pool = pool
        self._dsn = dsn

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        with unreachable_as_unavailable():
            return await self.bridge.run(_fetch, self._pool, sql, args)

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: object) -> Any:
        with unreachable_as_unavailable():
            return await self.bridge.run(_fetchval, self._pool, sql, args)

    async def execute(self, sql: str, *args: object) -> str:
        with unreachable_as_unavailable():
            return await self.bridge.run(_execute, self._pool, sql, args)

    async def run_with_connection(
        self, fn: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]], *args: Any
    ) -> T:
        """Run ``fn(conn, *args)`` on the storage loop with a pooled connection."""
        with unreachable_as_unavailable():
            return await self.bridge.run(_with_connection, self._pool, fn, args)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Lease one connection for a long-lived owner (the StorageActor); use it only through
        :meth:`run_on`. It goes back to the pool on exit; after a failure, closed (the pool
        opens a new one): its state is unknown then, and asyncpg may even take a connection
        whose server session ended mid-operation for an idle one (MagicStack/asyncpg#1069)."""
        with unreachable_as_unavailable():
            conn = await self.bridge.run(_acquire, self._pool)
        failed = True
        try:
            yield conn
            failed = False
        finally:
            with trio.CancelScope(shield=True):
                await self.bridge.run(_give_back, self._pool, conn, failed)

    async def run_on(
        self,
        conn: asyncpg.Connection,
        fn: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]],
        *args: Any,
        answer: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn(conn, *args)`` on the storage loop with a leased connection; ``answer``, as
        in :meth:`AsyncioBridge.run_answering`."""
        with unreachable_as_unavailable():
            if answer is not None:
                return await self.bridge.run_answering(answer, _call, fn, conn, args)
            return await self.bridge.run(_call, fn, conn, args)

    @asynccontextmanager
    async def notifications(
        self, *channels: str
    ) -> AsyncIterator[trio.MemoryReceiveChannel[tuple[str, str]]]:
        """``LISTEN`` on ``channels`` over a connection of its own: each ``NOTIFY`` arrives as
        ``(channel, payload)``, in commit order. The channel ends when that connection is lost
        (whatever was notified meanwhile is missed).

        Raises:
            StorageUnavailable: the database can't be reached.
        """
        feed: Feed[tuple[str, str]] = Feed()
        try:
            conn = await self.bridge.run(_listen, self._dsn, channels, feed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"can't listen for notifications: {exc}") from exc
        try:
            async with feed.receive:
                yield feed.receive
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.bridge.run(conn.close)

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers ``SELECT 1`` within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            try:
                return bool(await self.fetchval("SELECT 1") == 1)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, StorageUnavailable):
                return False
        return False

    @property
    def pool_size(self) -> int:
        return int(self._pool.get_size())


async def _fetch(pool: asyncpg.Pool, sql: str, args: tuple[object, ...]) -> list[Row]:
    return [dict(r) for r in await _pooled(pool, "fetch", sql, args)]


async def _fetchval(pool: asyncpg.Pool, sql: str, args: tuple[object, ...]) -> Any:
    return await _pooled(pool, "fetchval", sql, args)


async def _execute(pool: asyncpg.Pool, sql: str, args: tuple[object, ...]) -> str:
    return str(await _pooled(pool, "execute", sql, args))


async def _pooled(pool: asyncpg.Pool, method: str, sql: str, args: tuple[object, ...]) -> Any:
    """``conn.<method>(sql, *args)`` on a pooled connection. A connection that asyncpg gave back
    to the pool broken (its server session ended mid-operation: MagicStack/asyncpg#1069) refuses
    the statement before sending it ("cannot switch to state ..."): it is closed, and the
    statement goes to another connection, once. After any other of asyncpg's internal errors
    the connection is closed too, but the statement may have run, so the error is raised."""
    for attempt in (1, 2):
        async with pool.acquire() as conn:
            try:
                return await getattr(conn, method)(sql, *args)
            except asyncpg.InternalClientError as exc:
                conn.terminate()
                if attempt == 2 or not str(exc).startswith("cannot switch to state"):
                    raise
    raise AssertionError("unreachable")


async def _with_connection(
    pool: asyncpg.Pool, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
) -> T:
    async with pool.acquire() as conn:
        return await fn(cast(asyncpg.Connection, conn), *args)


async def _call(
    fn: Callable[..., Awaitable[T]], conn: asyncpg.Connection, args: tuple[Any, ...]
) -> T:
    return await fn(conn, *args)


async def _listen(
    dsn: str, channels: tuple[str, ...], feed: Feed[tuple[str, str]]
) -> asyncpg.Connection:
    def notified(_conn: object, _pid: int, channel: str, payload: object) -> None:
        feed.push((channel, str(payload)))

    conn = await asyncpg.connect(dsn)
    try:
        for channel in channels:
            await conn.add_listener(channel, notified)
    except BaseException:
        conn.terminate()
        raise
    conn.add_termination_listener(lambda _conn: feed.close())
    return conn


async def _acquire(pool: asyncpg.Pool) -> asyncpg.Connection:
    return cast(asyncpg.Connection, await pool.acquire())


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection, failed: bool) -> None:
    if failed:
        conn.terminate()
    await pool.release(cast(Any, conn))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the server round trip of asyncpg's default reset (``RESET ALL`` etc.):
    cpms leaves no session state behind (no SET, LISTEN, cursors or session advisory locks),
    and that query doubled the cost of every pooled statement."""


async def _create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        command_timeout=60,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def open_database(dsn: str, *, pool_size: int = 10) -> AsyncIterator[Database]:
    """Start the storage loop, connect a pool to ``dsn``, and close both on exit.

    Raises:
        StorageUnavailable: the database can't be reached.
    """
    async with open_bridge() as bridge:
        try:
            pool = await bridge.run(_create_pool, dsn, pool_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"can't connect to PostgreSQL: {exc}") from exc
        try:
            yield Database(bridge, pool, dsn)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await bridge.run(pool.close)
