"""Garbage collection for a server holding thousands of long-lived connections.

CPython starts a young (generation 0) collection when *net* allocations pass a threshold. A
server with thousands of idle connections defeats that rule: every message wakes a few tasks
whose suspended ``await`` chains (coroutines, frames, cells, cancel scopes) are freed and built
anew, so the count barely moves while the young generation fills with the waiting coroutines of
every station that spoke recently. The collection that finally runs walks them all (100–150 ms
with 3,000 chargers at 1,500 msg/s, measured; it grows with the fleet), and each of them is walked
again in the older generations. Pacing young collections by the clock does not help: the waiting
chains survive them, so most of the work is repeated.

What the server does produce is almost no cyclic garbage (0–11 objects per 30 s under load,
measured): reference counting frees nearly everything. So the automatic collector is turned down
to a safety net, and :func:`run_gc_maintenance` collects on purpose:

* when ``burst`` more objects than were freed have been created since the last collection (new
  connections arriving, or garbage building up), a collection whose survivors are then frozen
  (moved out of the collector's view: they are long-lived by now);
* every ``refresh`` seconds, everything is unfrozen and collected once, so cyclic garbage among
  frozen objects (a disconnected charger's connection, say) is freed, then frozen again.

Pauses over 20 ms are counted and logged; ``/health`` shows them.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.stdlib.get_logger("cpms.gc")

#: The automatic trigger's net-allocation threshold: a safety net for when the event loop is too
#: busy to run :func:`run_gc_maintenance`.
SAFETY_THRESHOLD = 2_000_000


@dataclass
class GcStats:
    collections: int = 0
    full_collections: int = 0
    long_pauses: int = 0
    longest_ms: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._started) * 1000
        self.collections += 1
        if info.get("generation") == 2:
            self.full_collections += 1
        self.longest_ms = max(self.longest_ms, pause_ms)
        if pause_ms > 20:
            self.long_pauses += 1
            log.info("long gc pause", generation=info.get("generation"), ms=round(pause_ms, 1))


STATS = GcStats()


def tune_gc(enabled: bool = True) -> None:
    """Freeze what exists now and turn the automatic collector down to a safety net
    (``enabled``); always measure pauses."""
    if STATS.callback not in gc.callbacks:
        gc.callbacks.append(STATS.callback)
    if not enabled:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(SAFETY_THRESHOLD, 10, 10)
    log.info("gc tuned", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())


def _collect_and_freeze(*, unfreeze: bool) -> tuple[int, float]:
    began = time.perf_counter()
    if unfreeze:
        gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected, round((time.perf_counter() - began) * 1000, 1)


async def run_gc_maintenance(
    until: trio.Event,
    *,
    check_every: float = 1.0,
    burst: int = 300_000,
    refresh: float = 600.0,
) -> None:
    """Collect on purpose until ``until`` is set (see the module docstring)."""
    next_refresh = trio.current_time() + refresh
    while True:
        with trio.move_on_after(check_every):
            await until.wait()
        if until.is_set():
            return
        if trio.current_time() >= next_refresh:
            collected, ms = _collect_and_freeze(unfreeze=True)
            next_refresh = trio.current_time() + refresh
            log.info("gc refresh", collected=collected, ms=ms, frozen=gc.get_freeze_count())
        elif gc.get_count()[0] > burst:
            collected, ms = _collect_and_freeze(unfreeze=False)
            log.info("gc after growth", collected=collected, ms=ms, frozen=gc.get_freeze_count())
