"""A plausible charging curve: what an electric vehicle draws as its battery fills.

Floats are fine here: this is physics for a simulator, not money. The charger reports energy as
a whole-Wh register, like a real meter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Above this state of charge the battery takes less and less (constant-voltage phase).
TAPER_FROM = 80.0
#: At 100 % it still trickles this share of its maximum.
TRICKLE = 0.05
AC_VOLTAGE = 230.0
AC_PHASES = 3
DC_VOLTAGE = 400.0


@dataclass
class Vehicle:
    capacity_kwh: float
    soc: float  # percent
    max_power_kw: float
    target_soc: float = 100.0

    def acceptance_kw(self) -> float:
        """Power the battery takes at its present state of charge."""
        if self.soc < TAPER_FROM:
            return self.max_power_kw
        share = (100.0 - self.soc) / (100.0 - TAPER_FROM)
        return self.max_power_kw * max(TRICKLE, share)

    @property
    def full(self) -> bool:
        return self.soc >= self.target_soc - 1e-9

    def charge(self, offered_kw: float, seconds: float) -> tuple[float, float]:
        """Charge for ``seconds`` at up to ``offered_kw``: (energy taken in kWh, power in kW)."""
        if self.full or offered_kw <= 0 or seconds <= 0:
            return 0.0, 0.0
        power = min(offered_kw, self.acceptance_kw())
        energy = power * seconds / 3600
        room = (self.target_soc - self.soc) / 100 * self.capacity_kwh
        if energy >= room:
            energy = room
            power = energy * 3600 / seconds
        self.soc = min(self.target_soc, self.soc + energy / self.capacity_kwh * 100)
        return energy, power


def random_vehicle(rng: random.Random, *, dc: bool) -> Vehicle:
    """A vehicle arriving at a charger: battery size, state of charge, on-board limit."""
    capacity = rng.choice([40.0, 52.0, 58.0, 64.0, 77.0, 82.0, 100.0])
    max_power = rng.choice([50.0, 100.0, 150.0]) if dc else rng.choice([7.4, 11.0, 22.0])
    return Vehicle(capacity, round(rng.uniform(8, 60), 1), max_power)


def electrical(power_kw: float, *, dc: bool) -> tuple[float, float]:
    """(current in A, voltage in V) for ``power_kw`` at this kind of connector."""
    if dc:
        return power_kw * 1000 / DC_VOLTAGE, DC_VOLTAGE
    return power_kw * 1000 / (AC_VOLTAGE * AC_PHASES), AC_VOLTAGE
