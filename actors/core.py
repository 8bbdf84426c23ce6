"""The handles every door of cpms shares: the database, the actor registry, the root supervisor,
the ledger (over the StorageActor) and the event bus. The server's composition root opens them
(``cpms.server.core.open_core``) and passes them explicitly to whatever needs them."""

from __future__ import annotations

from dataclasses import dataclass

from actors.ledger import Ledger
from actors.runtime import Registry, Supervisor
from cpms.kernel.events import EventBus
from storage import Database


@dataclass(frozen=True)
class Core:
    """Handles passed explicitly to everything that needs them."""

    db: Database
    registry: Registry
    supervisor: Supervisor
    ledger: Ledger
    bus: EventBus
