"""What a fleet measures: counts, latency histograms and errors, mergeable across processes.

Latencies go into a histogram with buckets 1% wide (relative), so percentiles are exact to about
1% and the histograms of several worker processes add up bucket by bucket.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_STEP = math.log(1.01)
_FLOOR_MS = 0.01


def _bucket(ms: float) -> int:
    return 0 if ms <= _FLOOR_MS else int(math.log(ms / _FLOOR_MS) / _STEP) + 1


def _upper(bucket: int) -> float:
    return _FLOOR_MS * math.exp(bucket * _STEP)


@dataclass
class Histogram:
    buckets: Counter[int] = field(default_factory=Counter)
    count: int = 0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.buckets[_bucket(ms)] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float:
        """The latency at or under which a fraction ``p`` of the samples fall (ms)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(_upper(bucket), self.max_ms)
        return self.max_ms

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": round(self.percentile(0.50), 2),
            "p95": round(self.percentile(0.95), 2),
            "p99": round(self.percentile(0.99), 2),
            "max": round(self.max_ms, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "b": {str(k): v for k, v in self.buckets.items()},
            "n": self.count,
            "m": self.max_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        return cls(Counter({int(k): int(v) for k, v in data["b"].items()}), data["n"], data["m"])


@dataclass
class Stats:
    """One process's fleet counters. Every field merges by addition (``max_ms`` by max)."""

    stations: int = 0  # in the fleet, connected or not
    connected: int = 0
    ever_connected: int = 0
    active_sessions: int = 0
    sessions_started: int = 0
    sessions_completed: int = 0
    energy_wh: int = 0
    #: CALLs we sent, by action (their round trips are in ``latency``)
    sent: Counter[str] = field(default_factory=Counter)
    #: CALLs the server sent us, by action
    received: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    latency: dict[str, Histogram] = field(default_factory=dict)
    #: REST drivers: latency per endpoint, and their errors are in ``errors`` as ``rest:...``
    rest_latency: dict[str, Histogram] = field(default_factory=dict)
    rest_calls: Counter[str] = field(default_factory=Counter)
    recovery_s: float | None = None

    def answered(self, action: str, seconds: float) -> None:
        histogram = self.latency.get(action)
        if histogram is None:
            histogram = self.latency[action] = Histogram()
        histogram.add(seconds * 1000)

    def rest_done(self, endpoint: str, seconds: float) -> None:
        self.rest_calls[endpoint] += 1
        histogram = self.rest_latency.get(endpoint)
        if histogram is None:
            histogram = self.rest_latency[endpoint] = Histogram()
        histogram.add(seconds * 1000)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    @property
    def messages(self) -> int:
        """CALLs both ways (a CALL and its answer count as one message)."""
        return sum(self.sent.values()) + sum(self.received.values())

    def overall(self) -> Histogram:
        total = Histogram()
        for histogram in self.latency.values():
            total.merge(histogram)
        return total

    def merge(self, other: Stats) -> None:
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _COUNTERS:
            getattr(self, name).update(getattr(other, name))
        for name in _HISTOGRAMS:
            mine = getattr(self, name)
            for key, histogram in getattr(other, name).items():
                mine.setdefault(key, Histogram()).merge(histogram)
        if other.recovery_s is not None:
            self.recovery_s = max(self.recovery_s or 0.0, other.recovery_s)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in (*_SUMS, "recovery_s")}
        data.update({name: dict(getattr(self, name)) for name in _COUNTERS})
        for name in _HISTOGRAMS:
            data[name] = {k: h.to_json() for k, h in getattr(self, name).items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        stats = cls()
        for name in (*_SUMS, "recovery_s"):
            setattr(stats, name, data[name])
        for name in _COUNTERS:
            setattr(stats, name, Counter(data[name]))
        for name in _HISTOGRAMS:
            setattr(stats, name, {k: Histogram.from_json(v) for k, v in data[name].items()})
        return stats


#: How each field of :class:`Stats` merges: added up, counters added up, histograms merged.
_SUMS = (
    "stations",
    "connected",
    "ever_connected",
    "active_sessions",
    "sessions_started",
    "sessions_completed",
    "energy_wh",
)
_COUNTERS = ("sent", "received", "errors", "events", "rest_calls")
_HISTOGRAMS = ("latency", "rest_latency")
