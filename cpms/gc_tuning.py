"""Garbage-collector settings for a server holding thousands of long-lived connections.

A full (generation 2) collection walks every tracked object; with ~10,000 charger connections
that is a pause long enough to show in round-trip latency. At start-up the objects that will live
for the whole run (modules, schemas, actors of known stations) are moved out of the collector's
view with ``gc.freeze()``, and the generation-0 threshold is raised so collections run less often.
Pauses over 20 ms are counted and logged.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.stdlib.get_logger("cpms.gc")


@dataclass
class GcStats:
    collections: int = 0
    long_pauses: int = 0
    longest_ms: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._started) * 1000
        self.collections += 1
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
    gc.set_threshold(50_000, 50, 100)
    log.info("gc tuned", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())
