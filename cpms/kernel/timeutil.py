"""Timestamps as OCPP and the app send them (ISO 8601), as aware UTC datetimes."""

from __future__ import annotations

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


def iso_now() -> str:
    """Now, in UTC, as ISO 8601 with a ``Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
