"""Rate limits by a sliding window counter (the count of this minute plus the last minute's,
weighted by how much of it still lies in the sliding minute): 60 requests a minute by default,
10 on the critical calls (sign-in, start, stop, top-ups), 30 for webhooks from addresses that are
not the provider's; per client where a request proves one, per address otherwise.

The counters live in this process (one node). :class:`RateLimiter` is the whole interface, and
it is async, so a shared store (Redis) can take their place for a cluster.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    per_minute: int  # 0: no limit


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request was told: allowed or not, and the headers' figures."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # Unix time the current window ends
    retry_after: int  # seconds until a request would be allowed again (0 when allowed)


class RateLimiter:
    """In-memory counters; ``clock`` (Unix seconds) is a parameter so tests can move time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[tuple[str, str], list[float]] = {}  # → [window, previous, current]
        self._next_sweep = 0.0

    async def hit(self, limit: Limit, key: str) -> Verdict:
        """Count a request of ``key`` against ``limit`` if it is allowed (a refused one is not
        counted: a client that keeps knocking is let in as soon as its window allows)."""
        now = self.clock()
        window = math.floor(now / WINDOW_S)
        reset_at = int((window + 1) * WINDOW_S)
        if limit.per_minute <= 0:
            return Verdict(True, 0, 0, reset_at, 0)
        self._sweep(now, window)
        entry = self._counts.get((limit.name, key))
        if entry is None or entry[0] < window - 1:
            entry = [window, 0.0, 0.0]
        elif entry[0] == window - 1:
            entry = [window, entry[2], 0.0]
        self._counts[(limit.name, key)] = entry
        elapsed = (now - window * WINDOW_S) / WINDOW_S
        estimate = entry[1] * (1 - elapsed) + entry[2]
        if estimate + 1 > limit.per_minute:
            wait = _retry_after(limit.per_minute, entry[1], entry[2], elapsed)
            return Verdict(False, limit.per_minute, 0, reset_at, wait)
        entry[2] += 1
        remaining = max(0, math.floor(limit.per_minute - estimate - 1))
        return Verdict(True, limit.per_minute, remaining, reset_at, 0)

    def _sweep(self, now: float, window: int) -> None:
        """Forget keys silent for two windows (once a window)."""
        if now < self._next_sweep:
            return
        self._next_sweep = (window + 1) * WINDOW_S
        self._counts = {k: v for k, v in self._counts.items() if v[0] >= window - 1}


def _retry_after(limit: int, previous: float, current: float, elapsed: float) -> int:
    """Whole seconds until ``previous * (1 - f) + current + 1 <= limit`` holds again."""
    room = limit - 1 - current
    if room >= 0 and previous > 0:  # this window, once enough of the last one has slid out
        fraction = 1 - room / previous
        return max(1, math.ceil((fraction - elapsed) * WINDOW_S))
    # not within this window: in the next, this window's count is the one sliding out
    fraction = 1 - (limit - 1) / current if current > 0 else 0.0
    return max(1, math.ceil((1 - elapsed + max(0.0, fraction)) * WINDOW_S))
