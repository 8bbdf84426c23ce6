"""The messages of the StorageActor: every way a balance can change, and what comes back.

Each operation is validated when it is built (so bad input never reaches the inbox) and carries
an idempotency key: the first time a key is applied its result is stored; every later use of the
same key with the same request returns that result and writes nothing, and the same key with a
different request is refused as ``idempotency_conflict``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal
from uuid import UUID

from cpms.kernel.errors import InvalidRequest
from cpms.kernel.messages import Request
from cpms.kernel.money import parse_amount
from storage.payments import InvoiceApproval
from storage.sessions import SessionClaim

EntryType = Literal[
    "topup",
    "adjustment",
    "charge_reserve",
    "charge_refund",
    "charge_payment",
    "charge_debt",
    "topup_refund",
]
MAX_KEY = 200
# No "#": an operation writing several entries keys the later ones "<key>#2", "<key>#3".
_KEY = re.compile(rf"[A-Za-z0-9_.:/@-]{{1,{MAX_KEY}}}")
MAX_TEXT = 500


def parse_uuid(value: object, *, field: str, code: str = "invalid_request") -> UUID:
    """A UUID from a UUID or its string form; anything else is an ``InvalidRequest``."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidRequest(f"{field} must be a UUID", code=code, field=field)


def _key(value: object) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise InvalidRequest(
            f"idempotency key must be 1..{MAX_KEY} of A-Z a-z 0-9 _ . : / @ -",
            code="validation_error",
        )
    return value


def _text(value: str | None, field: str) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
        raise InvalidRequest(f"{field} must be text of at most {MAX_TEXT} characters")
    return value


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line as the operation wrote it."""

    type: EntryType
    amount: Decimal
    balance_before: Decimal
    balance_after: Decimal


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """What a balance operation did: the new balance and the entries it wrote."""

    key: str
    client_id: UUID
    balance: Decimal
    entries: tuple[Entry, ...] = ()
    hold_id: UUID | None = None
    replayed: bool = False

    def total(self, entry_type: EntryType) -> Decimal:
        return sum((e.amount for e in self.entries if e.type == entry_type), Decimal("0.00"))

    @property
    def held(self) -> Decimal:
        """What a reservation set aside, as a positive amount."""
        return -self.total("charge_reserve")

    @property
    def refunded(self) -> Decimal:
        return self.total("charge_refund")

    @property
    def charged(self) -> Decimal:
        """Extra taken from the free balance at capture (an overrun), as a positive amount."""
        return -self.total("charge_payment")

    @property
    def debt(self) -> Decimal:
        """Overrun the free balance could not cover, as a positive amount."""
        return -self.total("charge_debt")

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "client_id": str(self.client_id),
            "balance": str(self.balance),
            "hold_id": None if self.hold_id is None else str(self.hold_id),
            "entries": [
                [e.type, str(e.amount), str(e.balance_before), str(e.balance_after)]
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool) -> LedgerResult:
        return cls(
            key=data["key"],
            client_id=UUID(data["client_id"]),
            balance=Decimal(data["balance"]),
            hold_id=None if data["hold_id"] is None else UUID(data["hold_id"]),
            entries=tuple(
                Entry(t, Decimal(a), Decimal(b), Decimal(c)) for t, a, b, c in data["entries"]
            ),
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class _Op(Request[LedgerResult]):
    """Every operation has an idempotency key, a ``kind`` and a canonical ``request()`` (stored to
    recognise a key reused for a different operation)."""

    key: str


def _keyed_for_client(op: Credit | Adjust | Reserve | Recharge) -> None:
    """Check an operation's idempotency key and client id (a frozen dataclass's own fields)."""
    object.__setattr__(op, "key", _key(op.key))
    client = parse_uuid(op.client_id, field="client_id", code="invalid_client_id")
    object.__setattr__(op, "client_id", client)


@dataclass(frozen=True, slots=True)
class Credit(_Op):
    """Money in: a top-up (``topup``, refused for blocked clients) or operator ``adjustment``."""

    client_id: UUID
    amount: Decimal
    entry_type: Literal["topup", "adjustment"] = "topup"
    invoice_id: str | None = None
    description: str | None = None
    #: a top-up's invoice, written approved and credited in the same transaction
    approval: InvoiceApproval | None = None
    kind: ClassVar[str] = "credit"

    def __post_init__(self) -> None:
        _keyed_for_client(self)
        object.__setattr__(self, "amount", parse_amount(self.amount))
        if self.entry_type not in ("topup", "adjustment"):
            raise InvalidRequest("credit type must be topup or adjustment")
        _text(self.invoice_id, "invoice_id")
        _text(self.description, "description")

    def request(self) -> dict[str, Any]:
        return {
            "op": self.kind,
            "client": str(self.client_id),
            "amount": str(self.amount),
            "type": self.entry_type,
            "invoice": self.invoice_id,
        }


@dataclass(frozen=True, slots=True)
class Adjust(_Op):
    """Operator correction by a signed amount; a debit may not take the balance below zero.
    A ``topup_refund`` is one: a top-up returned to the payer (its invoice named)."""

    client_id: UUID
    amount: Decimal
    reason: str
    entry_type: Literal["adjustment", "topup_refund"] = "adjustment"
    invoice_id: str | None = None
    kind: ClassVar[str] = "adjust"

    def __post_init__(self) -> None:
        _keyed_for_client(self)
        object.__setattr__(self, "amount", parse_amount(self.amount, allow_negative=True))
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise InvalidRequest("an adjustment needs a reason", code="validation_error")
        _text(self.reason, "reason")
        _text(self.invoice_id, "invoice_id")
        if self.entry_type not in ("adjustment", "topup_refund"):
            raise InvalidRequest("adjustment type must be adjustment or topup_refund")

    def request(self) -> dict[str, Any]:
        return {
            "op": self.kind,
            "client": str(self.client_id),
            "amount": str(self.amount),
            "reason": self.reason,
            "type": self.entry_type,
            "invoice": self.invoice_id,
        }


@dataclass(frozen=True, slots=True)
class Reserve(_Op):
    """Set money aside for a session (a hold): balance down, ``charge_reserve`` entry.

    With a ``minimum``, ``amount`` is a ceiling: the hold is as much of it as the balance covers,
    and at least ``minimum`` (else ``insufficient_balance``), sized on the balance it writes.

    With a ``claim``, the session's row is written in the same transaction, taking its
    connector: a connector with an open session refuses the reservation
    (``connector_occupied``), and a refused reservation leaves no row. The claim is not part of
    the request an idempotency key stands for (a replay after a crash comes without it).
    """

    client_id: UUID
    amount: Decimal
    hold_id: UUID
    session_id: UUID | None = None
    claim: SessionClaim | None = None
    minimum: Decimal | None = None
    kind: ClassVar[str] = "reserve"

    def __post_init__(self) -> None:
        _keyed_for_client(self)
        object.__setattr__(self, "hold_id", parse_uuid(self.hold_id, field="hold_id"))
        if self.session_id is not None:
            object.__setattr__(self, "session_id", parse_uuid(self.session_id, field="session_id"))
        if self.claim is not None and (
            self.claim.session_id != self.session_id or self.claim.hold_id != self.hold_id
        ):
            raise InvalidRequest("the claimed session must be the reservation's own")
        object.__setattr__(self, "amount", parse_amount(self.amount))
        if self.minimum is not None:
            minimum = parse_amount(self.minimum, field="minimum")
            if minimum > self.amount:
                raise InvalidRequest("minimum must not be above amount", field="minimum")
            object.__setattr__(self, "minimum", minimum)

    def request(self) -> dict[str, Any]:
        request = {
            "op": self.kind,
            "client": str(self.client_id),
            "amount": str(self.amount),
            "hold": str(self.hold_id),
            "session": str(self.session_id),
        }
        if self.minimum is not None:
            request["minimum"] = str(self.minimum)
        return request


@dataclass(frozen=True, slots=True)
class Release(_Op):
    """Give a whole hold back (session never started): ``charge_refund`` of its amount."""

    hold_id: UUID
    kind: ClassVar[str] = "release"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self.key))
        object.__setattr__(self, "hold_id", parse_uuid(self.hold_id, field="hold_id"))

    def request(self) -> dict[str, Any]:
        return {"op": self.kind, "hold": str(self.hold_id)}


@dataclass(frozen=True, slots=True)
class Capture(_Op):
    """Settle a hold at the actual ``cost``: refund the rest, or charge the overrun from the free
    balance and record what it can't cover as debt."""

    hold_id: UUID
    cost: Decimal
    kind: ClassVar[str] = "capture"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self.key))
        object.__setattr__(self, "hold_id", parse_uuid(self.hold_id, field="hold_id"))
        object.__setattr__(self, "cost", parse_amount(self.cost, field="cost", allow_zero=True))

    def request(self) -> dict[str, Any]:
        return {"op": self.kind, "hold": str(self.hold_id), "cost": str(self.cost)}


@dataclass(frozen=True, slots=True)
class Recharge(_Op):
    """Settle a captured session again by the difference ``amount`` (signed): a late
    StopTransaction's exact cost against what its last reading billed. More is charged from the
    balance, and what it can't cover is debt (as a capture's overrun); less is refunded."""

    client_id: UUID
    session_id: UUID
    amount: Decimal
    kind: ClassVar[str] = "recharge"

    def __post_init__(self) -> None:
        _keyed_for_client(self)
        object.__setattr__(self, "session_id", parse_uuid(self.session_id, field="session_id"))
        amount = parse_amount(self.amount, allow_negative=True, allow_zero=True)
        object.__setattr__(self, "amount", amount)

    def request(self) -> dict[str, Any]:
        return {
            "op": self.kind,
            "client": str(self.client_id),
            "session": str(self.session_id),
            "amount": str(self.amount),
        }


LedgerOp = Credit | Adjust | Reserve | Release | Capture | Recharge
