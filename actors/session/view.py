"""What the app sees of a session (status, energy, cost, progress, the refund), built from its
row or from its actor's state: the same shape either way, so a status read never needs the
actor."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def stop_outcome(view: dict[str, Any]) -> dict[str, Any]:
    """What the app gets for a stop (final cost, energy, refund, duration), from a
    :func:`session_view`."""
    final = view["final_cost"]
    return {
        "session_id": view["id"],
        "status": view["status"],
        "final_cost": final if final is not None else view["current_cost"],
        "energy_consumed": view["energy_consumed"],
        "refunded_amount": view["refunded_amount"],
        "duration_minutes": view["charging_duration_minutes"],
    }


def session_view(row: dict[str, Any]) -> dict[str, Any]:
    """A session as the app sees it, from the actor or from its row."""
    energy = Decimal(row["energy_kwh"] or 0).quantize(Decimal("0.001"))
    limit_type, limit_value = row["limit_type"], row["limit_value"]
    reserved = row["reserved_amount"] or Decimal("0")
    cost = row["final_cost"] if row["final_cost"] is not None else row["current_cost"]
    if limit_type == "energy" and limit_value:
        progress = energy / limit_value * 100
    elif limit_type == "amount" and limit_value:
        progress = cost / limit_value * 100
    else:
        progress = cost / reserved * 100 if reserved else Decimal("0")
    progress = min(Decimal("100"), progress).quantize(Decimal("1"))
    started, stopped = row["started_at"], row["stopped_at"]
    minutes = 0
    if started is not None:
        minutes = int(((stopped or datetime.now(UTC)) - started).total_seconds() // 60)
    power = row["power_kw"]
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "station_id": row["station_id"],
        "connector_id": row["connector_id"],
        "transaction_id": row.get("transaction_id"),
        "limit_type": limit_type,
        "limit_value": limit_value,
        "rate_per_kwh": row["rate_per_kwh"],
        "session_fee": row["session_fee"],
        "reserved_amount": reserved,
        "energy_consumed": energy,
        "current_cost": row["current_cost"],
        "final_cost": row["final_cost"],
        "refunded_amount": row["refunded_amount"],
        "debt_amount": row.get("debt_amount"),
        "charging_power": None if power is None else int(Decimal(power).to_integral_value()),
        "ev_battery_soc": row["soc_percent"],
        "progress_percent": progress,
        "limit_reached": row.get("stop_reason") == "limit_reached",
        "charging_duration_minutes": minutes,
        "started_at": started,
        "stopped_at": stopped,
        "stop_reason": row.get("stop_reason"),
        "error": row.get("error"),
    }
