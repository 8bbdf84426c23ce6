"""Garbage-collector settings for a server holding thousands of long-lived connections.

A full (generation 2) collection walks every tracked object; with ~10,000 charger connections
that is a pause long enough to show in round-trip latency. At start-up the objects that will live
for the whole run (modules, schemas, actors of known stations) are moved out of the collector's
view with ``gc.freeze()``, and the generation-0 threshold is raised so collections run less often.
Connections arrive later, so :func:`run_gc_maintenance` freezes again whenever a full collection
has just run (its survivors are long-lived by definition), and every ``refresh`` seconds it
unfreezes, collects once (freeing any cyclic garbage among what was frozen) and freezes the
survivors. Pauses over 20 ms are counted and logged.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.stdlib.get_logger("cpms.gc")


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
    """Freeze what exists now and raise thresholds (``enabled``); always measure pauses."""
    if STATS.callback not in gc.callbacks:
        gc.callbacks.append(STATS.callback)
    if not enabled:
        return
    gc.collect()
    gc.freeze()
    # Fewer young collections, but generation 1 stays small enough (10 × 10,000) to be quick.
    gc.set_threshold(10_000, 10, 1000)
    log.info("gc tuned", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())


async def run_gc_maintenance(
    until: trio.Event, *, check_every: float = 1.0, refresh: float = 600.0
) -> None:
    """Until ``until`` is set: freeze after each full collection; refresh every ``refresh`` s."""
    seen = STATS.full_collections
    next_refresh = trio.current_time() + refresh
    while True:
        with trio.move_on_after(check_every):
            await until.wait()
        if until.is_set():
            return
        if trio.current_time() >= next_refresh:
            began = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            next_refresh = trio.current_time() + refresh
            log.info(
                "gc refresh",
                frozen=gc.get_freeze_count(),
                ms=round((time.perf_counter() - began) * 1000, 1),
            )
        elif STATS.full_collections != seen:
            gc.freeze()
        seen = STATS.full_collections
