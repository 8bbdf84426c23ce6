"""JSON for the REST facade: Decimals are written as exact JSON numbers (``150.50``), UUIDs and
datetimes as strings (ISO 8601, UTC with ``Z``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import simplejson
from quart.json.provider import DefaultJSONProvider


def _default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    return str(simplejson.dumps(value, use_decimal=True, default=_default, ensure_ascii=False))


class DecimalJSONProvider(DefaultJSONProvider):
    """Quart's JSON provider with exact money."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return simplejson.loads(s, use_decimal=True)
