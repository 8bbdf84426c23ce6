"""Numbers and dates from outside, bounded to what the database holds (pydantic types, used by
request and provisioning models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

#: A row offset or count: PostgreSQL's int4.
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]
#: A row id: PostgreSQL's int8.
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _storable(value: datetime) -> datetime:
    """A point in time the database holds: aware (UTC when no zone is given), in the calendar
    once in UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the calendar in UTC") from None


#: Sign-in names and secrets of drivers and station owners.
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{7,14}$")]
Email = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254, to_lower=True)
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]

#: A timestamp from a client.
Stamp = Annotated[datetime, AfterValidator(_storable)]
