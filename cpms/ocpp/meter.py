"""MeterValues → typed samples and a per-reading summary (energy Wh, power kW, SoC, A, V)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cpms.kernel.timeutil import parse_time
from cpms.ocpp.frames import OcppError

ENERGY = "Energy.Active.Import.Register"
#: A sampled value's size: below 10^15 (a kWh register in Wh still fits a bigint) and no finer
#: than 10^-20; anything else is no measurement, and no column could hold it.
MAX_DIGITS = 15
MIN_EXPONENT = -20
_SCALE = {"kWh": Decimal(1000), "Wh": Decimal(1), "kW": Decimal(1000), "W": Decimal(1)}


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampledValue, its value converted to base units (Wh, W, A, V, %) where known."""

    sampled_at: datetime
    measurand: str
    value: Decimal
    unit: str | None
    phase: str | None
    context: str | None
    location: str | None


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest meter state a MeterValues message tells."""

    energy_wh: Decimal | None = None
    power_kw: Decimal | None = None
    soc_percent: int | None = None
    current_a: Decimal | None = None
    voltage_v: Decimal | None = None


def parse_samples(meter_values: Iterable[dict[str, Any]], unique_id: str) -> list[Sample]:
    """Flatten ``meterValue`` entries into samples.

    Raises:
        OcppError: a value that is not a number, or not of a measurement's size
            (PropertyConstraintViolation).
    """
    samples = []
    for entry in meter_values:
        at = parse_time(entry["timestamp"])
        if at is None:
            raise OcppError("PropertyConstraintViolation", "timestamp is not ISO 8601", unique_id)
        for sv in entry["sampledValue"]:
            if sv.get("format") == "SignedData":
                continue  # an opaque signed blob, kept in the message log only
            try:
                raw = Decimal(sv["value"])
            except InvalidOperation:
                raise OcppError(
                    "PropertyConstraintViolation",
                    f"value {sv['value']!r} is not a number",
                    unique_id,
                ) from None
            if not raw.is_finite():
                raise OcppError("PropertyConstraintViolation", "value must be finite", unique_id)
            if raw and not MIN_EXPONENT <= raw.adjusted() < MAX_DIGITS:
                raise OcppError(
                    "PropertyConstraintViolation",
                    f"value must be below 1e{MAX_DIGITS} and above 1e{MIN_EXPONENT} in size",
                    unique_id,
                )
            unit = sv.get("unit")
            measurand = sv.get("measurand", ENERGY)
            samples.append(
                Sample(
                    at,
                    measurand,
                    raw * _SCALE.get(unit or "", Decimal(1)),
                    _base_unit(measurand, unit),
                    sv.get("phase"),
                    sv.get("context"),
                    sv.get("location"),
                )
            )
    return samples


def _base_unit(measurand: str, unit: str | None) -> str | None:
    if measurand.startswith("Energy.Active"):
        return "Wh"
    if measurand.startswith("Power.Active") or measurand == "Power.Offered":
        return "W"
    return unit


def summarize(samples: list[Sample]) -> Reading:
    """The newest energy register, power, SoC, current and voltage among ``samples``.

    Per-phase values are added (energy, power), the highest is kept (current) or averaged
    (voltage) when no total is given.
    """
    if not samples:
        return Reading()
    latest = max(s.sampled_at for s in samples)
    now = [s for s in samples if s.sampled_at == latest]
    energy = _total(now, ENERGY)
    power = _total(now, "Power.Active.Import")
    soc = _pick(now, "SoC")
    currents = [s.value for s in now if s.measurand == "Current.Import"]
    voltages = [s.value for s in now if s.measurand == "Voltage"]
    return Reading(
        energy_wh=energy,
        power_kw=None if power is None else (power / 1000).quantize(Decimal("0.001")),
        soc_percent=None if soc is None else int(soc),
        current_a=max(currents) if currents else None,
        voltage_v=(sum(voltages, Decimal(0)) / len(voltages)).quantize(Decimal("0.1"))
        if voltages
        else None,
    )


def _pick(samples: list[Sample], measurand: str) -> Decimal | None:
    values = [s.value for s in samples if s.measurand == measurand]
    return values[-1] if values else None


def _total(samples: list[Sample], measurand: str) -> Decimal | None:
    matching = [s for s in samples if s.measurand == measurand and s.location != "Inlet"]
    if not matching:
        return None
    whole = [s.value for s in matching if s.phase in (None, "N")]
    if whole:
        return whole[-1]
    return sum((s.value for s in matching if s.phase in ("L1", "L2", "L3")), Decimal(0))
