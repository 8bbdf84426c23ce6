"""Errors of the storage layer (infrastructure, not domain refusals).

    StorageError
    ├── StorageUnavailable   the database or the storage loop can't be reached
    ├── MigrationError       a migration failed or an applied one was edited
    └── LedgerFailure        the database refused a ledger write (a bug, not bad input)

Domain refusals (unknown client, insufficient balance, bad amount) are ``cpms.kernel.errors`` types.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of storage infrastructure failures."""


class StorageUnavailable(StorageError):
    """The database (or the loop that talks to it) is not reachable."""


class MigrationError(StorageError):
    """Migrations could not be applied."""


class LedgerFailure(StorageError):
    """The database rejected a ledger operation; nothing of it was written."""
