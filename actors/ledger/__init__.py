"""The wallet's single writer: the StorageActor, and the :class:`Ledger` everyone who moves money
holds."""

from actors.ledger.client import Discrepancy, Ledger
from actors.ledger.storage_actor import STORAGE_ADDRESS, StorageHooks, storage_actor_spec

__all__ = ["STORAGE_ADDRESS", "Discrepancy", "Ledger", "StorageHooks", "storage_actor_spec"]
