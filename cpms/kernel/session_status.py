"""A charging session's statuses, as stored and as the app sees them: the one definition.

    reserved → starting → charging → stopping → settled, or rejected / cancelled / failed

``OPEN`` are the statuses of a session not ended yet (money may be on hold, a connector taken).
"""

from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    RESERVED = "reserved"
    STARTING = "starting"
    CHARGING = "charging"
    STOPPING = "stopping"
    SETTLED = "settled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


OPEN = frozenset(
    {
        SessionStatus.RESERVED,
        SessionStatus.STARTING,
        SessionStatus.CHARGING,
        SessionStatus.STOPPING,
    }
)
#: ``OPEN`` as a query parameter (``status = ANY($n::text[])``)
OPEN_VALUES = sorted(status.value for status in OPEN)
