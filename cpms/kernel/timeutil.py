"""Timestamps as OCPP and the app send them (ISO 8601), as aware UTC datetimes."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when no zone is given); None when absent,
    unreadable, or outside the calendar once in UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:  # a local time at the ends of the calendar may not exist in UTC
        parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_at(epoch: float) -> str:
    """A POSIX time in UTC as ISO 8601 with microseconds and a ``Z``. Every logged frame and
    status change takes one: each second's text is made once, which halves the cost (1 µs)."""
    second, micro = divmod(round(epoch * 1_000_000), 1_000_000)
    return f"{_second_text(second)}.{micro:06d}Z"


def iso_now() -> str:
    """Now, in UTC, as :func:`iso_at` writes it."""
    return iso_at(time.time())
