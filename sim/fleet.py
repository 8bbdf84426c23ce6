"""A fleet of virtual charge points with drivers, in one process (or one shard of several).

Each station connects at its moment within ``ramp`` seconds, then every connector has drivers
arriving at random (exponential gaps): they plug in, present a tag, charge until they leave or the
battery is full, and unplug. Scenarios shape that:

* ``steady``: arrivals at a constant rate;
* ``rush-hour``: the arrival rate swells to five times the base at mid-run and falls back;
* ``faults``: steady, plus connector faults, dropped connections, slow answers and malformed
  frames at random;
* ``reconnect-storm``: steady, then at mid-run every connection drops at once; the time until all
  stations are connected and booted again is the report's ``recovery_s``.

Everything is drawn from ``random.Random`` seeded with ``seed`` (per station), so a run with the
same seed makes the same decisions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import trio

from sim.charger import VirtualChargePoint
from sim.drivers import DriverOptions, run_drivers
from sim.stats import Stats

SCENARIOS = ("steady", "rush-hour", "faults", "reconnect-storm")


@dataclass(frozen=True)
class FleetOptions:
    url: str
    stations: int = 10
    connectors: int = 2
    prefix: str = "SIM"
    password: str | None = None
    duration: float = 60.0  # 0: until stopped
    ramp: float = 10.0
    scenario: str = "steady"
    meter_interval: float = 15.0
    seed: int = 0
    #: mean seconds a connector stays free between drivers, and a driver's longest stay
    idle_mean: float = 120.0
    stay_max: float = 900.0
    #: simulated seconds per real second for charging physics and heartbeats
    time_scale: float = 1.0
    tags: tuple[str, ...] = ()
    #: this process runs the stations whose index % shards == shard
    shard: int = 0
    shards: int = 1
    power_kw: float = 22.0
    #: explicit stations instead of PREFIX-00001...: (id, ((power kW, DC?) per connector))
    layout: tuple[tuple[str, tuple[tuple[float, bool], ...]], ...] = ()
    #: app-side drivers through the REST API, besides the drivers with cards at the chargers
    drivers: DriverOptions | None = None

    def station_specs(self) -> list[tuple[str, int | tuple[tuple[float, bool], ...]]]:
        """This shard's stations with their connectors."""
        if self.layout:
            every: list[tuple[str, int | tuple[tuple[float, bool], ...]]] = list(self.layout)
        else:
            width = max(5, len(str(self.stations)))
            every = [
                (f"{self.prefix}-{n:0{width}d}", self.connectors)
                for n in range(1, self.stations + 1)
            ]
        return [spec for index, spec in enumerate(every) if index % self.shards == self.shard]


@dataclass
class Fleet:
    options: FleetOptions
    stats: Stats = field(default_factory=Stats)
    chargers: list[VirtualChargePoint] = field(default_factory=list)
    started_at: float = 0.0
    #: set to end the run early (Ctrl-C); the run then ends as at its duration
    stop: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        o = self.options
        specs = o.station_specs()
        self.stats.stations = len(specs)
        for station_id, connectors in specs:
            self.chargers.append(
                VirtualChargePoint(
                    station_id,
                    o.url,
                    password=o.password,
                    connectors=connectors,
                    power_kw=o.power_kw,
                    meter_interval=o.meter_interval,
                    seed=o.seed,
                    stats=self.stats,
                    time_scale=o.time_scale,
                )
            )

    async def run(self) -> Stats:
        """Run for ``duration`` seconds, then end sessions, drain and disconnect."""
        o = self.options
        self.started_at = trio.current_time()
        finished = trio.Event()
        async with trio.open_nursery() as nursery:
            for index, cp in enumerate(self.chargers):
                delay = o.ramp * index / max(1, len(self.chargers))
                nursery.start_soon(self._station, cp, delay, finished)
            storm = trio.CancelScope()
            if o.scenario == "reconnect-storm":
                nursery.start_soon(self._storm, storm)
            app = trio.CancelScope()
            if o.drivers is not None:
                nursery.start_soon(self._app_drivers, o.drivers, app)
            with trio.move_on_after(o.duration if o.duration > 0 else math.inf):
                await self.stop.wait()
            self.stats.events["connected_at_end"] = self.stats.connected
            storm.cancel()  # a storm not recovered by now reports no recovery time
            app.cancel()
            finished.set()
        return self.stats

    async def _station(self, cp: VirtualChargePoint, delay: float, finished: trio.Event) -> None:
        await trio.sleep(delay)
        async with cp:
            async with trio.open_nursery() as drivers:
                for connector_id in cp.connectors:
                    drivers.start_soon(self._drivers, cp, connector_id)
                if self.options.scenario == "faults":
                    drivers.start_soon(self._faults, cp)
                await finished.wait()
                drivers.cancel_scope.cancel()
            if not await cp.drain(timeout=60):
                self.stats.error("drain:timeout")

    def _arrival_rate(self, rng: random.Random, now: float | None = None) -> float:
        """Arrivals per second on one connector at ``now`` (trio's clock; by default now)."""
        o = self.options
        base = 1 / o.idle_mean
        if o.scenario != "rush-hour":
            return base
        at = trio.current_time() if now is None else now
        phase = (at - self.started_at) / max(o.duration, 1)
        return base * (1 + 4 * math.sin(math.pi * min(max(phase, 0), 1)))

    async def _drivers(self, cp: VirtualChargePoint, connector_id: int) -> None:
        o = self.options
        rng = random.Random(f"{o.seed}:{cp.station_id}:{connector_id}:drivers")
        await cp.wait_booted(timeout=math.inf)
        while True:
            await trio.sleep(rng.expovariate(self._arrival_rate(rng)))
            if not cp.connected:
                continue
            tag = rng.choice(o.tags) if o.tags else f"{o.prefix}-DRIVER-{rng.randrange(10**6)}"
            stay = rng.uniform(min(60.0, o.stay_max), o.stay_max)
            tx = await cp.plug_in(connector_id, tag, stop_after=rng.uniform(30, 300))
            if tx is None:
                continue
            with trio.move_on_after(stay):
                await tx.ended.wait()
            await cp.unplug(connector_id)

    async def _app_drivers(self, options: DriverOptions, scope: trio.CancelScope) -> None:
        with scope:
            await run_drivers(options, self.chargers, self.stats)

    async def _faults(self, cp: VirtualChargePoint) -> None:
        rng = random.Random(f"{self.options.seed}:{cp.station_id}:faults")
        mean_gap = max(10.0, self.options.duration / 3)
        while True:
            await trio.sleep(rng.expovariate(1 / mean_gap))
            kind = rng.choice(["connector", "disconnect", "slow", "malformed"])
            self.stats.events[f"fault:{kind}"] += 1
            if kind == "connector":
                connector_id = rng.choice(list(cp.connectors))
                await cp.fault(connector_id, rng.choice(["GroundFailure", "OverCurrentFailure"]))
                await trio.sleep(rng.uniform(5, 30))
                cp.clear_fault(connector_id)
            elif kind == "disconnect":
                cp.disconnect(reconnect_after=rng.uniform(1, 5))
            elif kind == "slow":
                cp.response_delay = rng.uniform(1, 3)
                await trio.sleep(rng.uniform(5, 20))
                cp.response_delay = 0.0
            else:
                await cp.send_malformed()

    async def _storm(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._storm_once()

    async def _storm_once(self) -> None:
        o = self.options
        rng = random.Random(f"{o.seed}:storm")
        await trio.sleep(max(o.ramp + 1, o.duration / 2))
        with trio.move_on_after(max(1.0, o.duration / 2 - 1)):
            while self.stats.connected < len(self.chargers):  # noqa: ASYNC110 - counters only
                await trio.sleep(0.1)  # wait until everyone is in before the storm
        began = trio.current_time()
        dropped = [cp for cp in self.chargers if cp.connected]
        self.stats.events["storm_dropped"] = len(dropped)
        for cp in dropped:
            cp.disconnect(reconnect_after=rng.uniform(0, 1))

        def recovered() -> bool:
            """Every station dropped has booted again since, and every station is in."""
            return all(cp.booted_at > began for cp in dropped) and all(
                cp.connected for cp in self.chargers
            )

        while not recovered():  # noqa: ASYNC110 - counters only
            await trio.sleep(0.1)
        self.stats.recovery_s = round(trio.current_time() - began, 2)
