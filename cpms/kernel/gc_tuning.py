"""Garbage collection for a server holding thousands of long-lived connections.

CPython starts a young (generation 0) collection when *net* allocations pass a threshold. A
server with thousands of idle connections defeats that rule: every message wakes a few tasks
whose suspended ``await`` chains (coroutines, frames, cells, cancel scopes) are freed and built
anew, so the count barely moves while the young generation fills with the waiting coroutines of
every station that spoke recently. The collection that finally runs walks them all, a pause that
grows with the fleet, and each of them is walked again in the older generations. Collecting the
young generation on a clock does not help: the waiting chains are rebuilt with every message.

What the server does produce is almost no cyclic garbage: reference counting frees nearly
everything, frozen or not. So the automatic collector is turned down to a safety net, and
:func:`run_gc_maintenance`:

* every ``every`` seconds freezes whatever is alive (``gc.freeze()`` moves the generations to the
  permanent one without walking them: no pause), so any collection that does run walks at most
  the last ``every`` seconds' survivors, not the whole fleet's state;
* when the heap (``sys.getallocatedblocks()``, cheap to count, unlike ``gc.get_freeze_count()``
  which walks every frozen object) has doubled (``growth``) since the last full collection, it
  unfreezes everything and collects once, then freezes again. Frozen objects that
  die are still freed by reference counting, so the heap follows what is alive; what it gains
  beyond that is new connections or cyclic garbage frozen meanwhile (a disconnected charger's
  connection, say). This is the one pause that grows with the fleet. CPython's own rule waits
  for a quarter of growth, which came during steady load right after a fleet had connected, so
  cpms waits for the heap to double: the pauses come while a fleet connects (when the heap is
  still small), and the price is at most as much memory again in uncollected cycles. A
  collection that finds next to no cycles (under one per hundred blocks) doubles the growth
  awaited before the next (up to :data:`MAX_GROWTH`; one that finds more goes back to the
  start): 10,000 app sockets connecting grew the heap from 2.4 M to 4.8 M blocks, and the
  second pause (2.1 s, 0 cycles found) came as their updates began to flow.

The figures behind these choices are in ``bench/README.md``.

Pauses over 20 ms are counted and logged; ``/health`` shows them.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.stdlib.get_logger("cpms.gc")

#: The automatic trigger's net-allocation threshold: a safety net for when the event loop is too
#: busy to run :func:`run_gc_maintenance`.
SAFETY_THRESHOLD = 2_000_000
#: the most the heap may grow (a fraction of it) between full collections that find no cycles
MAX_GROWTH = 8.0


@dataclass
class GcStats:
    collections: int = 0
    full_collections: int = 0
    long_pauses: int = 0
    longest_ms: float = 0.0
    growth: float = 1.0  # the heap grows by this fraction before the next full collection
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


async def run_gc_maintenance(
    until: trio.Event,
    *,
    every: float = 1.0,
    growth: float = 1.0,
    max_growth: float = MAX_GROWTH,
) -> None:
    """Freeze, and collect fully after growth, until ``until`` is set (see the module docstring)."""
    baseline = sys.getallocatedblocks()
    first = growth
    STATS.growth = growth
    while True:
        with trio.move_on_after(every):
            await until.wait()
        if until.is_set():
            return
        gc.freeze()
        if sys.getallocatedblocks() <= baseline * (1 + growth):
            continue
        began = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        baseline = sys.getallocatedblocks()
        # next time after as much growth again; after twice as much when this one found next to
        # no cycles (the heap grew by what lives: connections), up to max_growth
        growth = first if collected * 100 >= baseline else min(growth * 2, max_growth)
        STATS.growth = growth
        ms = round((time.perf_counter() - began) * 1000, 1)
        log.info("gc after growth", collected=collected, ms=ms, blocks=baseline, growth=growth)
