"""PostgreSQL storage: the asyncio bridge, migrations, reads, and the StorageActor.

:func:`open_storage` is the door: it starts the embedded PostgreSQL when no URL is configured,
connects the pool on the storage loop, applies pending migrations and yields the
:class:`Database`. The StorageActor (``storage_actor_spec``) is started by the caller under its
supervisor, and :class:`Ledger` wraps it for everyone who moves money.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from storage.database import Database, Row, open_database
from storage.embedded import open_embedded_postgres
from storage.ledger import Discrepancy, Ledger
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
from storage.storage_actor import STORAGE_ADDRESS, StorageHooks, storage_actor_spec

__all__ = [
    "STORAGE_ADDRESS",
    "Adjust",
    "Capture",
    "Credit",
    "Database",
    "Discrepancy",
    "Entry",
    "Ledger",
    "LedgerOp",
    "LedgerResult",
    "Recharge",
    "Release",
    "Reserve",
    "Row",
    "StorageHooks",
    "migrate",
    "open_storage",
    "storage_actor_spec",
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
