"""Charging maths, pure: tariffs (with time-of-day rates), limits, the reservation held at start,
and a session's running cost.

    reservation = energy limit → kWh × rate + session fee
                  amount limit → the amount
                  no limit     → min(balance, 200), at least 10

Cost accrues as the meter moves: each increment of energy is priced at the rate in force when it
was metered (local time of the network), plus the session fee once charging has begun, plus any
per-minute price. Money is Decimal throughout and rounded to the cent only when shown or billed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from cpms.kernel.errors import InvalidRequest
from cpms.kernel.money import round_money

LimitKind = Literal["energy", "amount", "none"]

NO_LIMIT_CAP = Decimal("200")
NO_LIMIT_MINIMUM = Decimal("10")
MAX_AMOUNT_LIMIT = Decimal("100000")
MAX_ENERGY_LIMIT = Decimal("1000")  # kWh; no vehicle takes more in one session
KWH = Decimal("1000")


@dataclass(frozen=True)
class TimeRate:
    starts_at: time
    ends_at: time  # exclusive; at or before starts_at means past midnight
    price_per_kwh: Decimal
    weekdays: frozenset[int] | None = None  # ISO 1..7; None = every day

    def applies(self, local: datetime) -> bool:
        if self.weekdays is not None and local.isoweekday() not in self.weekdays:
            return False
        now = local.time()
        if self.starts_at < self.ends_at:
            return self.starts_at <= now < self.ends_at
        return now >= self.starts_at or now < self.ends_at


@dataclass(frozen=True)
class Tariff:
    id: str | None
    price_per_kwh: Decimal
    session_fee: Decimal = Decimal("0")
    price_per_minute: Decimal = Decimal("0")
    rates: tuple[TimeRate, ...] = ()
    currency: str = "KGS"
    zone: str = "Asia/Bishkek"

    def rate_at(self, when: datetime) -> Decimal:
        local = when.astimezone(ZoneInfo(self.zone))
        for rate in self.rates:
            if rate.applies(local):
                return rate.price_per_kwh
        return self.price_per_kwh


@dataclass(frozen=True)
class Limit:
    kind: LimitKind
    value: Decimal | None = None

    @classmethod
    def from_request(cls, energy_kwh: Decimal | None, amount_som: Decimal | None) -> Limit:
        if energy_kwh is not None and amount_som is not None:
            raise InvalidRequest("give energy_kwh or amount_som, not both", code="validation_error")
        if energy_kwh is not None:
            if not Decimal("0") < energy_kwh <= MAX_ENERGY_LIMIT:
                raise InvalidRequest(
                    f"energy_kwh must be above 0 and at most {MAX_ENERGY_LIMIT}",
                    code="validation_error",
                )
            return cls("energy", energy_kwh)
        if amount_som is not None:
            if not Decimal("0") < amount_som <= MAX_AMOUNT_LIMIT:
                raise InvalidRequest(
                    f"amount_som must be above 0 and at most {MAX_AMOUNT_LIMIT}",
                    code="validation_error",
                )
            return cls("amount", amount_som)
        return cls("none")


@dataclass(frozen=True)
class Hold:
    """What to reserve: ``amount``; with a ``minimum``, as much of ``amount`` as the balance
    covers and at least ``minimum``. The ledger sizes it on the balance it writes, and
    refuses it (``insufficient_balance``) when the balance is short."""

    amount: Decimal
    minimum: Decimal | None = None


def reservation(limit: Limit, tariff: Tariff, at: datetime) -> Hold:
    """What to hold for a session: by its limit, or for a no-limit one as much of the ceiling
    as the balance covers, at least the minimum."""
    if limit.kind == "energy":
        assert limit.value is not None
        return Hold(round_money(limit.value * tariff.rate_at(at) + tariff.session_fee))
    if limit.kind == "amount":
        assert limit.value is not None
        return Hold(round_money(limit.value))
    return Hold(NO_LIMIT_CAP, NO_LIMIT_MINIMUM)


@dataclass(frozen=True)
class Plausibility:
    """How much energy a connector's meter can plausibly count: its rated ``power_kw`` × the
    time elapsed × ``margin``, plus ``slack_wh`` for a register that counts in coarse steps
    (whole kWh), the time counted up to ``max_hours`` whatever the charger's clock says."""

    power_kw: Decimal
    margin: Decimal = Decimal("1.25")
    slack_wh: int = 1000
    max_hours: Decimal = Decimal("13")

    def allowed_wh(self, elapsed_s: float) -> Decimal:
        hours = min(self.max_hours, Decimal(max(0, int(elapsed_s))) / 3600)
        return self.power_kw * 1000 * hours * self.margin + self.slack_wh


class Verdict(StrEnum):
    """What became of one meter reading."""

    COUNTED = "counted"
    BACKWARDS = "backwards"  #: below the last counted one: a reset, a wrap or a glitch
    IMPLAUSIBLE = "implausible"  #: more than the connector could have delivered by then


@dataclass
class Meter:
    """A session's energy and cost as meter readings arrive.

    Only plausible readings are counted (``plausibility``): a reading that goes backwards or
    jumps further than the connector could deliver is flagged (``anomalies``, ``anomaly``)
    and not billed, and the session bills on the last plausible one. A register that really
    restarted (reset, a 32-bit wrap) is recognised when the readings after a backwards one go
    on plausibly from there: the energy counted before is kept, and counting resumes from the
    new register value.
    """

    tariff: Tariff
    start_wh: int
    plausibility: Plausibility
    #: the register at the last counted reading
    last_wh: int = 0
    #: energy counted since the start (across register restarts)
    counted_wh: int = 0
    energy_cost: Decimal = Decimal("0")
    started_at: datetime | None = None
    last_at: datetime | None = None
    samples: int = field(default=0)
    #: where the register went back to: it may have restarted there
    restarted_at_wh: int | None = None
    anomalies: int = 0
    anomaly: str | None = None

    def __post_init__(self) -> None:
        self.last_wh = max(self.last_wh, self.start_wh)

    def restore(self, last_wh: int, counted_wh: int, at: datetime) -> None:
        """Take up where a persisted session was (its energy priced at the rate of ``at``)."""
        self.last_wh, self.counted_wh = last_wh, counted_wh
        self.energy_cost = Decimal(counted_wh) / KWH * self.tariff.rate_at(at)
        self.last_at = at

    def reading(self, wh: int, at: datetime) -> Verdict:
        """Count the register value ``wh`` read at ``at`` if it is plausible."""
        self.samples += 1
        for base in (self.last_wh, self.restarted_at_wh):
            if base is not None and wh >= base and self._plausible(wh - base, at):
                self._count(wh - base, at)
                self.last_wh, self.restarted_at_wh = wh, None
                return Verdict.COUNTED
        self.anomalies += 1
        if wh < self.last_wh:
            self.restarted_at_wh = wh
            self.anomaly = f"meter went back from {self.last_wh} to {wh} Wh"
            return Verdict.BACKWARDS
        elapsed = self._elapsed(at)
        self.anomaly = (
            f"meter jumped to {wh} Wh: {wh - self.last_wh} Wh more in {elapsed:.0f} s, more than "
            f"{self.plausibility.power_kw} kW could deliver"
        )
        return Verdict.IMPLAUSIBLE

    def _elapsed(self, at: datetime) -> float:
        return 0.0 if self.started_at is None else (at - self.started_at).total_seconds()

    def _plausible(self, delta_wh: int, at: datetime) -> bool:
        return self.counted_wh + delta_wh <= self.plausibility.allowed_wh(self._elapsed(at))

    def _count(self, delta_wh: int, at: datetime) -> None:
        if delta_wh:
            self.energy_cost += Decimal(delta_wh) / KWH * self.tariff.rate_at(at)
            self.counted_wh += delta_wh
        self.last_at = at if self.last_at is None else max(self.last_at, at)

    @property
    def energy_kwh(self) -> Decimal:
        return Decimal(self.counted_wh) / KWH

    def cost(self, now: datetime | None = None) -> Decimal:
        """The cost so far (to the cent): energy, the session fee, minutes."""
        minutes = Decimal("0")
        end = now or self.last_at
        if self.started_at is not None and end is not None and self.tariff.price_per_minute:
            minutes = Decimal(max(0, int((end - self.started_at).total_seconds()))) / 60
        return round_money(
            self.energy_cost + self.tariff.session_fee + minutes * self.tariff.price_per_minute
        )

    def limit_reached(self, limit: Limit, reserved: Decimal) -> bool:
        if limit.kind == "energy":
            assert limit.value is not None
            return self.energy_kwh >= limit.value
        whole = limit.value if limit.kind == "amount" else reserved
        assert whole is not None
        return self.cost() >= whole
