"""What the admin API answers with ``200``, as models (the rest: :mod:`api.responses`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from api.responses import Number, Part, Reply, Stamp


class CommandAnswered(Reply):
    station_id: str
    action: str
    response: dict[str, Any]


class Credited(Reply):
    client_id: str
    balance: Number
    replayed: bool


class OcppMessage(Part):
    id: int
    direction: Literal["in", "out"]
    message_type: int
    unique_id: str
    action: str | None
    payload: Any
    created_at: Stamp


class Messages(Reply):
    station_id: str
    messages: list[OcppMessage]


class OpenSession(Part):
    id: str
    client_id: str
    station_id: str
    connector_id: int
    status: str
    origin: str
    reserved_amount: Number
    created_at: Stamp
    age_seconds: int
    stop_reason: str | None
    stop_asks: int
    offline_since: Stamp | None
    next_deadline: Stamp | None
    overdue: bool
    actor: bool


class OpenSessions(Reply):
    sessions: list[OpenSession]


def provisioned(key: str) -> type[BaseModel]:
    """The answer to creating or changing a provisioned record: its id under ``key``."""
    from pydantic import create_model

    return create_model(f"Provisioned_{key}", __base__=Reply, **{key: (str, ...)})  # type: ignore[call-overload, no-any-return]
