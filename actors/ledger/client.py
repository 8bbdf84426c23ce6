"""The wallet as the rest of cpms sees it: writes go through the StorageActor, reads to the pool.

Every write carries an idempotency key, so :class:`Ledger` can safely retry a write whose answer
was lost (the actor crashed or timed out): the retry either applies it or replays its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from uuid import UUID

import structlog
import trio

from actors.runtime import ActorCrashed, ActorRef, AskTimeout
from cpms.kernel.errors import NotFound, Unavailable
from cpms.kernel.money import parse_amount
from storage import wallets
from storage.database import Database, Row
from storage.ledger_ops import (
    Adjust,
    Capture,
    Credit,
    LedgerOp,
    LedgerResult,
    Recharge,
    Release,
    Reserve,
    parse_uuid,
)
from storage.payments import InvoiceApproval
from storage.sessions import SessionClaim

log = structlog.stdlib.get_logger("actors.ledger.client")
Money = Decimal | str | int


def _client(value: UUID | str) -> UUID:
    return parse_uuid(value, field="client_id", code="invalid_client_id")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """A client whose stored balance differs from the sum of its ledger entries."""

    client_id: UUID
    balance: Decimal
    entries_sum: Decimal


class Ledger:
    """Balance operations and balance reads for one database."""

    def __init__(
        self, actor: ActorRef[LedgerOp], db: Database, *, timeout: float = 10.0, attempts: int = 6
    ) -> None:
        self._actor = actor
        self._db = db
        self.timeout = timeout
        self.attempts = attempts

    async def apply(self, op: LedgerOp) -> LedgerResult:
        """Apply ``op`` through the StorageActor, retrying lost answers with the same key.

        Raises:
            CpmsError: the operation was refused (nothing was written).
            Unavailable: the StorageActor did not answer after every attempt.
        """
        delay = 0.02
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._actor.ask(op, timeout=self.timeout)
            except (ActorCrashed, AskTimeout) as exc:
                if attempt == self.attempts:
                    raise Unavailable("the ledger is not answering", code="internal_error") from exc
                log.warning("ledger retry", op=op.kind, key=op.key, attempt=attempt, error=str(exc))
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def credit(
        self,
        client_id: UUID | str,
        amount: Money,
        *,
        key: str,
        entry_type: Literal["topup", "adjustment"] = "topup",
        invoice_id: str | None = None,
        description: str | None = None,
        approval: InvoiceApproval | None = None,
    ) -> LedgerResult:
        return await self.apply(
            Credit(
                key,
                _client(client_id),
                parse_amount(amount),
                entry_type,
                invoice_id,
                description,
                approval,
            )
        )

    async def adjust(
        self,
        client_id: UUID | str,
        amount: Money,
        *,
        key: str,
        reason: str,
        entry_type: Literal["adjustment", "topup_refund"] = "adjustment",
        invoice_id: str | None = None,
    ) -> LedgerResult:
        signed = parse_amount(amount, allow_negative=True)
        return await self.apply(
            Adjust(key, _client(client_id), signed, reason, entry_type, invoice_id)
        )

    async def reserve(
        self,
        client_id: UUID | str,
        amount: Money,
        *,
        key: str,
        hold_id: UUID,
        session_id: UUID | None = None,
        claim: SessionClaim | None = None,
        minimum: Money | None = None,
    ) -> LedgerResult:
        """Hold ``amount`` (with a ``minimum``: as much of it as the balance covers, at least
        that); with a ``claim``, write that session's row in the same transaction (see
        :class:`Reserve`). The hold's amount is ``LedgerResult.held``."""
        return await self.apply(
            Reserve(
                key,
                _client(client_id),
                parse_amount(amount),
                hold_id,
                session_id,
                claim,
                None if minimum is None else parse_amount(minimum, field="minimum"),
            )
        )

    async def release(self, hold_id: UUID, *, key: str) -> LedgerResult:
        return await self.apply(Release(key, hold_id))

    async def capture(self, hold_id: UUID, cost: Money, *, key: str) -> LedgerResult:
        return await self.apply(
            Capture(key, hold_id, parse_amount(cost, field="cost", allow_zero=True))
        )

    async def recharge(
        self, client_id: UUID, session_id: UUID, amount: Money, *, key: str
    ) -> LedgerResult:
        """Settle a captured session again by the signed difference ``amount``."""
        signed = parse_amount(amount, allow_negative=True, allow_zero=True)
        return await self.apply(Recharge(key, client_id, session_id, signed))

    # -- reads ------------------------------------------------------------------------------

    async def balance(self, client_id: UUID | str) -> Decimal:
        """The client's balance (money on hold is not part of it).

        Raises:
            NotFound: no such client (``client_not_found``).
        """
        cid = _client(client_id)
        value = await wallets.balance(self._db, cid)
        if value is None:
            raise NotFound(f"client {cid} not found", code="client_not_found")
        return value

    async def held(self, client_id: UUID | str) -> Decimal:
        """Money currently on hold for the client's sessions."""
        return await wallets.held(self._db, _client(client_id))

    async def entries(
        self,
        client_id: UUID | str,
        *,
        limit: int = 50,
        offset: int = 0,
        entry_type: str | None = None,
    ) -> list[Row]:
        """The client's ledger, newest first."""
        return await wallets.entries(
            self._db, _client(client_id), limit=limit, offset=offset, entry_type=entry_type
        )

    async def discrepancies(self) -> list[Discrepancy]:
        """Clients whose balance is not the sum of their entries (should always be empty)."""
        return await discrepancies(self._db)


async def discrepancies(db: Database) -> list[Discrepancy]:
    """Clients whose balance is not the sum of their entries (should always be empty)."""
    rows = await wallets.discrepancies(db)
    return [Discrepancy(r["id"], r["balance"], r["entries_sum"]) for r in rows]
