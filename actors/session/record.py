"""What a SessionActor knows of its session (:class:`SessionRecord`), and how a session's row
becomes it: rebuilt after a restart, or read for an operator (:func:`open_report`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from actors.session import machine as sm
from actors.session.machine import Phase, SettledBy, State, Timings
from actors.session.messages import session_tag
from actors.session.view import session_view
from cpms.kernel.charging import Limit, Meter, Plausibility, Tariff

log = structlog.stdlib.get_logger("actors.session.actor")


@dataclass
class SessionRecord:
    """One session as its actor holds it: the machine's state (``m``), the meter, the money."""

    id: uuid.UUID
    client_id: uuid.UUID
    station_id: str
    connector_id: int
    limit: Limit
    tariff: Tariff
    rate: Decimal
    bounds: Plausibility
    m: State
    reserved: Decimal = Decimal("0")
    hold_id: uuid.UUID | None = None
    transaction_id: int | None = None
    meter: Meter | None = None
    power_kw: Decimal | None = None
    soc: int | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    meter_stop: int | None = None
    stop_reason: str | None = None
    final_cost: Decimal | None = None
    refunded: Decimal | None = None
    debt: Decimal | None = None
    error: str | None = None
    card: str | None = None  # the RFID card of a session begun at the charger
    #: why an operator should look at this session (implausible readings, a capped cost)
    flag: str | None = None

    @property
    def phase(self) -> Phase:
        return self.m.phase

    @property
    def id_tag(self) -> str:
        return self.card or session_tag(self.id)

    def start_meter(self, meter_start: int, at: datetime | None) -> Meter:
        self.meter = Meter(self.tariff, meter_start, self.bounds, started_at=at)
        return self.meter

    @classmethod
    def from_row(cls, row: dict[str, Any], tariff: Tariff, bounds: Plausibility) -> SessionRecord:
        limit = Limit(row["limit_type"], row["limit_value"])
        session = cls(
            row["id"],
            row["client_id"],
            row["station_id"],
            row["connector_id"],
            limit,
            tariff,
            row["rate_per_kwh"] or tariff.price_per_kwh,
            bounds,
            state_from_row(row),
            row["reserved_amount"],
            row["hold_id"],
            row["transaction_id"],
            started_at=row["started_at"],
            stopped_at=row["stopped_at"],
            meter_stop=row["meter_stop_wh"],
            stop_reason=row["stop_reason"],
            final_cost=row["final_cost"],
            refunded=row["refunded_amount"],
            debt=row["debt_amount"],
            error=row["error"],
        )
        if row["origin"] == "rfid":
            session.card = row["id_tag"]
        session.flag = row["meter_flag"]
        if row["meter_start_wh"] is not None:
            meter = session.start_meter(row["meter_start_wh"], row["started_at"])
            meter.anomalies = row["meter_anomalies"]
            if row["meter_last_wh"] is not None:
                session.restore_meter(row)
        session.power_kw, session.soc = row["power_kw"], row["soc_percent"]
        return session

    def restore_meter(self, row: dict[str, Any]) -> None:
        """Take up the energy counted before a restart, priced at the rate of its start. What a
        row says was counted is checked as a reading would be (a row written before readings
        were checked may hold an absurd one): beyond what the connector could have delivered
        by now, it is not billed and the session is flagged."""
        meter = self.meter
        assert meter is not None
        counted = int(row["energy_kwh"] * 1000)
        if counted > meter.plausibility.allowed_wh(
            (datetime.now(UTC) - (row["started_at"] or row["created_at"])).total_seconds()
        ):
            meter.anomalies += 1
            meter.anomaly = (
                f"{counted} Wh recorded before a restart: more than the connector could deliver"
            )
            self.flag = meter.anomaly
            log.warning("implausible recorded energy not billed", session=str(self.id), wh=counted)
            return
        meter.restore(row["meter_last_wh"], counted, row["started_at"] or row["created_at"])

    def current_cost(self) -> Decimal:
        return Decimal("0.00") if self.meter is None else self.meter.cost(self.stopped_at)


def state_from_row(row: dict[str, Any]) -> State:
    """The machine's state as a session's row keeps it (what only a running actor knows, such
    as whether it has asked the charger yet, starts afresh)."""
    return State(
        Phase(row["status"]),
        start_deadline=row["start_deadline"],
        max_deadline=row["max_deadline"],
        check_at=row["check_at"],
        stop_asks=row["stop_asks"],
        offline_since=row["offline_since"],
        charger_stopped=row["settled_by"] == SettledBy.CHARGER,
        settled_by=None if row["settled_by"] is None else SettledBy(row["settled_by"]),
    )


def open_report(row: dict[str, Any], timings: Timings, now: datetime) -> dict[str, Any]:
    """An open session for an operator: where it stands, how old, and its next deadline."""
    due = sm.deadline(state_from_row(row), timings)
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "station_id": row["station_id"],
        "connector_id": row["connector_id"],
        "status": row["status"],
        "origin": row["origin"],
        "reserved_amount": row["reserved_amount"],
        "created_at": row["created_at"],
        "age_seconds": int((now - row["created_at"]).total_seconds()),
        "stop_reason": row["stop_reason"],
        "stop_asks": row["stop_asks"],
        "offline_since": row["offline_since"],
        "next_deadline": due,
        "overdue": due is not None and due < now,
    }


def record_view(s: SessionRecord) -> dict[str, Any]:
    """What the app sees of the session as its actor holds it (:func:`session_view`)."""
    return session_view(
        {
            "id": s.id,
            "client_id": s.client_id,
            "station_id": s.station_id,
            "connector_id": s.connector_id,
            "status": s.phase.value,
            "limit_type": s.limit.kind,
            "limit_value": s.limit.value,
            "rate_per_kwh": s.rate,
            "session_fee": s.tariff.session_fee,
            "reserved_amount": s.reserved,
            "energy_kwh": Decimal("0") if s.meter is None else s.meter.energy_kwh,
            "current_cost": s.current_cost(),
            "final_cost": s.final_cost,
            "refunded_amount": s.refunded,
            "debt_amount": s.debt,
            "power_kw": s.power_kw,
            "soc_percent": s.soc,
            "started_at": s.started_at,
            "stopped_at": s.stopped_at,
            "stop_reason": s.stop_reason,
            "error": s.error,
            "transaction_id": s.transaction_id,
        }
    )
