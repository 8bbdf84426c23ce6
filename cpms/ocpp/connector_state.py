"""A connector's state as its station shows it: what an operator configured (type, rated power)
and what the charger last reported in a StatusNotification."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """``configured``: set up by an operator (a charger may report connectors nobody set up)."""

    status: str = "Unavailable"
    error_code: str | None = None
    connector_type: str | None = None
    power_kw: Decimal | None = None
    configured: bool = False
    info: str | None = None
    vendor_error_code: str | None = None

    def reported(self, payload: dict[str, Any]) -> ConnectorState:
        """After a (schema-checked) StatusNotification for this connector."""
        return replace(
            self,
            status=payload["status"],
            error_code=payload["errorCode"],
            info=payload.get("info"),
            vendor_error_code=payload.get("vendorErrorCode"),
        )

    def configured_as(self, connector_type: str | None, power_kw: Decimal | None) -> ConnectorState:
        """As an operator set it up (its reported status kept)."""
        return replace(self, configured=True, connector_type=connector_type, power_kw=power_kw)
