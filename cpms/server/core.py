"""The core every entry point shares, opened from the settings: storage, the actor registry, the
root supervisor, and the StorageActor with its :class:`Ledger` — opened in order and closed in
reverse; and the session machine's deadlines as the settings give them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors.core import Core
from actors.ledger import Ledger, StorageHooks, storage_actor_spec
from actors.runtime import Intensity, Registry, Supervisor, run_supervisor
from actors.session.machine import Timings
from cpms.kernel.events import EventBus
from cpms.settings import Settings
from storage import open_storage
from storage.errors import StorageUnavailable


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
            bus = EventBus()
            storage_ref = await supervisor.start_child(
                storage_actor_spec(
                    db,
                    batch=settings.storage_batch,
                    inbox=settings.storage_inbox,
                    hooks=storage_hooks,
                    bus=bus,
                )
            )
            yield Core(db, registry, supervisor, Ledger(storage_ref, db), bus)
            nursery.cancel_scope.cancel()


def session_timings(settings: Settings) -> Timings:
    """The session machine's deadlines, from the settings."""
    return Timings(
        start_timeout=settings.session_start_timeout,
        max_duration=settings.session_max_duration,
        offline_grace=settings.session_offline_grace,
        offline_check=min(30.0, settings.session_offline_grace / 4),
        stop_check=settings.session_stop_check,
        settle_wait=settings.session_settle_wait,
        sweep_every=max(1.0, min(60.0, settings.session_offline_grace)),
    )
