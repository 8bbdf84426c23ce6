"""PostgreSQL storage: the asyncio bridge, migrations, and every SQL statement of cpms.

:func:`open_storage` is the door: it starts the embedded PostgreSQL when no URL is configured,
connects the pool on the storage loop, applies pending migrations and yields the
:class:`Database`. Each aggregate has its repository module (``clients``, ``ledger_sql``,
``sessions``, ``transactions``, ``stations``, ``tariffs``, ``telemetry``): functions taking the
database and plain values. The ledger's single writer, the StorageActor, is a domain actor
(:mod:`actors.ledger`) that applies its batches with :mod:`storage.ledger_sql`. Storage imports
only the domain kernel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from storage.database import Database, Row, open_database
from storage.embedded import open_embedded_postgres
from storage.ledger_ops import (
    Adjust,
    Capture,
    Credit,
    Entry,
    LedgerOp,
    LedgerResult,
    Recharge,
    Release,
    Reserve,
)
from storage.migrate import migrate

__all__ = [
    "Adjust",
    "Capture",
    "Credit",
    "Database",
    "Entry",
    "LedgerOp",
    "LedgerResult",
    "Recharge",
    "Release",
    "Reserve",
    "Row",
    "migrate",
    "open_storage",
]


@asynccontextmanager
async def open_storage(
    *, database_url: str | None, pg_dir: Path, pool_size: int = 10, run_migrations: bool = True
) -> AsyncIterator[Database]:
    """Open the database (embedded in ``pg_dir`` unless ``database_url`` is given), migrated.

    Raises:
        StorageUnavailable: PostgreSQL can't be started or reached.
        MigrationError: a migration failed.
    """
    async with AsyncExitStack() as stack:
        dsn = database_url
        if dsn is None:
            dsn = await stack.enter_async_context(open_embedded_postgres(pg_dir))
        db = await stack.enter_async_context(open_database(dsn, pool_size=pool_size))
        if run_migrations:
            await migrate(db)
        yield db
