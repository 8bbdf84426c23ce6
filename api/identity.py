"""The calling client, for handlers: verified token → client id, the client record created on
first use (a zero balance, status ``active``)."""

from __future__ import annotations

from uuid import UUID

from quart import request

from api.auth import TokenVerifier
from cpms.kernel.errors import Forbidden
from storage import Database
from storage.clients import ensure_client


class Identity:
    def __init__(self, verifier: TokenVerifier, db: Database) -> None:
        self.verifier = verifier
        self.db = db
        #: clients known to exist: the first request of each creates its record, once
        self._known: set[UUID] = set()

    async def client_id(self) -> UUID:
        """The client the current request's bearer token proves (its record exists after)."""
        client_id = await self.verifier.client_id(request.headers.get("Authorization"))
        if client_id not in self._known:
            await ensure_client(self.db, client_id)
            self._known.add(client_id)
        return client_id

    async def owner_of(self, client_id: str) -> UUID:
        """The caller, when ``client_id`` (from a path) is the caller; else 403
        ``client_mismatch``: a client reads only its own records."""
        caller = await self.client_id()
        if client_id != str(caller):
            raise Forbidden("a client can read only its own records", code="client_mismatch")
        return caller
