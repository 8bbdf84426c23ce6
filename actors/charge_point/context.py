"""What the handlers of one station share: its record, its connectors' state, the station's
transactions already looked up, and the ports to storage and sessions."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from actors.charge_point.admission import Admission
from actors.charge_point.telemetry import Telemetry
from actors.runtime import Registry
from actors.session.messages import RfidSessions
from cpms.ocpp.connector_state import ConnectorState
from cpms.ocpp.frames import Frame, OcppError
from storage import Database, Row
from storage import stations as store
from storage import transactions as tx

_IN_TRANSACTION = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"})


@dataclass
class StationContext:
    """What the handlers of one station share: its settings, connectors and storage."""

    db: Database
    station_id: str
    location_id: str | None
    registration: str
    admin_status: str
    accept_unknown_tags: bool
    connectors_count: int
    connectors: dict[int, ConnectorState]
    telemetry: Telemetry
    #: where the app's sessions are found; None in a central system without them (tests)
    registry: Registry | None = None
    #: bills card transactions to their clients; None in a central system without sessions
    sessions: RfidSessions | None = None
    #: transaction id → its billed session's id, or None for an unbilled one (MeterValues come
    #: every few seconds: the database is asked once per transaction)
    transactions: dict[int, uuid.UUID | None] = field(default_factory=dict)
    #: admission control of boots in reconnect storms; None: every boot accepted (tests)
    admission: Admission | None = None
    #: what the door checks a charger's password against (None: no password set)
    password_hash: str | None = None
    password_verifier: str | None = None
    #: the record was deleted (its actor runs on until the server stops; the door asks the
    #: database again, which refuses it)
    deleted: bool = False
    #: DataTransfer handlers by vendor id
    vendors: dict[str, Callable[[StationContext, dict[str, Any]], Awaitable[dict[str, Any]]]] = (
        field(default_factory=dict)
    )

    @classmethod
    async def load(cls, db: Database, station_id: str, telemetry: Telemetry) -> StationContext:
        row = await store.get_station(db, station_id)
        if row is None:
            raise LookupError(f"station {station_id} is not provisioned")
        return cls.from_rows(db, row, await store.connectors(db, station_id), telemetry)

    @classmethod
    async def load_all(cls, db: Database, telemetry: Telemetry) -> dict[str, StationContext]:
        """Every station's context in two queries (start-up with thousands of stations)."""
        return {
            row["id"]: cls.from_rows(db, row, connectors, telemetry)
            for row, connectors in await store.all_with_connectors(db)
        }

    @classmethod
    def from_rows(
        cls, db: Database, row: Row, connector_rows: list[Row], telemetry: Telemetry
    ) -> StationContext:
        connectors = {
            c["connector_id"]: ConnectorState(
                status=c["status"],
                error_code=c["error_code"],
                connector_type=c["connector_type"],
                power_kw=c["power_kw"],
                configured=True,
            )
            for c in connector_rows
        }
        return cls(
            db,
            row["id"],
            row["location_id"],
            row["registration_status"],
            row["admin_status"],
            row["accept_unknown_tags"],
            row["connectors_count"],
            connectors,
            telemetry,
            password_hash=row["password_hash"],
            password_verifier=row["password_verifier"],
        )

    async def refresh(self) -> None:
        """Take up what an operator changed: registration, admin status, connectors."""
        try:
            fresh = await StationContext.load(self.db, self.station_id, self.telemetry)
        except LookupError:
            self.deleted = True
            raise
        self.deleted = False
        for name in (
            "password_hash",
            "password_verifier",
            "location_id",
            "registration",
            "admin_status",
            "accept_unknown_tags",
            "connectors_count",
        ):
            setattr(self, name, getattr(fresh, name))
        for number, connector in fresh.connectors.items():
            known = self.connectors.get(number, connector)
            self.connectors[number] = known.configured_as(
                connector.connector_type, connector.power_kw
            )
        for number, known in self.connectors.items():
            if number not in fresh.connectors and known.configured:  # removed by an operator
                self.connectors[number] = replace(known, configured=False)

    def in_transaction(self) -> bool:
        """Whether a transaction is open as far as the charger last said (a connector charging,
        suspended or finishing)."""
        return any(c.status in _IN_TRANSACTION for c in self.connectors.values())

    async def app_session(self, transaction_id: int) -> uuid.UUID | None:
        """The billed session (app or card) behind one of this station's transactions."""
        if transaction_id in self.transactions:
            return self.transactions[transaction_id]
        row = await tx.transaction(self.db, self.station_id, transaction_id)
        session_id: uuid.UUID | None = None
        if row is not None and row["hold_id"] is not None:  # billed: it has an actor
            session_id = row["id"]
        self.transactions[transaction_id] = session_id
        return session_id

    def log_message(
        self, direction: str, frame: Frame, action: str | None = None, text: str | None = None
    ) -> None:
        self.telemetry.frame(self.station_id, direction, frame, action, text)

    def check_connector(self, connector_id: int, unique_id: str, *, allow_zero: bool) -> None:
        low = 0 if allow_zero else 1
        if not low <= connector_id <= self.connectors_count:
            raise OcppError(
                "PropertyConstraintViolation",
                f"connectorId {connector_id} is outside {low}..{self.connectors_count}",
                unique_id,
            )
