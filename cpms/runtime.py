"""The core every entry point shares: storage, the actor registry, the root supervisor, and the
StorageActor with its :class:`Ledger` — opened in order and closed in reverse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from actors import Intensity, Registry, Supervisor, run_supervisor
from cpms.events import EventBus
from cpms.settings import Settings
from storage import (
    Database,
    Ledger,
    StorageHooks,
    open_storage,
    storage_actor_spec,
)
from storage.errors import StorageUnavailable


@dataclass(frozen=True)
class Core:
    """Handles passed explicitly to everything that needs them."""

    settings: Settings
    db: Database
    registry: Registry
    supervisor: Supervisor
    ledger: Ledger
    bus: EventBus


@asynccontextmanager
async def open_core(
    settings: Settings, *, storage_hooks: StorageHooks | None = None
) -> AsyncIterator[Core]:
    """Open storage and start the root supervisor with the StorageActor under it.

    Raises:
        StorageUnavailable, MigrationError: the database can't be used.
        SupervisorEscalation (in a group): the actor system gave up.
    """
    async with open_storage(
        database_url=settings.database_dsn, pg_dir=settings.pg_dir, pool_size=settings.db_pool_size
    ) as db:
        registry = Registry(node=settings.node_id)
        async with trio.open_nursery() as nursery:
            supervisor: Supervisor = await nursery.start(
                run_supervisor,
                "root",
                registry,
                Intensity(restarts=10, period=10.0, waits_for=(StorageUnavailable,)),
            )
            storage_ref = await supervisor.start_child(
                storage_actor_spec(
                    db,
                    batch=settings.storage_batch,
                    inbox=settings.storage_inbox,
                    hooks=storage_hooks,
                )
            )
            yield Core(settings, db, registry, supervisor, Ledger(storage_ref, db), EventBus())
            nursery.cancel_scope.cancel()
