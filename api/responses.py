"""What each endpoint answers with ``200``, as models: the OpenAPI document's response schemas
(:mod:`api.openapi`), and what the schema check of the API's fuzz test holds each real answer
to. Money is an exact JSON number (:mod:`api.jsonio`), times are ISO 8601 strings in UTC."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, WithJsonSchema

#: an exact decimal, written as a JSON number
Number = Annotated[Decimal, WithJsonSchema({"type": "number"})]
Stamp = datetime


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    success: Literal[True]


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- system -----------------------------------------------------------------------------------


class HealthDatabase(Part):
    ok: bool
    latency_ms: float | None
    embedded: bool
    pool_size: int


class HealthGc(Part):
    collections: int
    full_collections: int
    long_pauses: int
    longest_ms: float
    growth_before_full: float  # the heap grows by this fraction before the next full collection


class HealthActors(Part):
    ok: bool
    storage_actor: Literal["running", "down"]
    registered: dict[str, int]
    children: int
    restarts: int


class Health(BaseModel):
    """Also the body of the 503 when the database or the StorageActor is down."""

    model_config = ConfigDict(extra="forbid")

    success: bool
    status: Literal["ok", "degraded"]
    version: str
    node: str
    uptime_s: float
    database: HealthDatabase
    gc: HealthGc
    actors: HealthActors


class OpenApiDocument(BaseModel):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# -- stations and locations --------------------------------------------------------------------


class StationConnector(Part):
    connector_id: int
    status: str
    connector_type: str | None
    power_kw: Number | None
    error_code: str | None


class StationStatus(Reply):
    station_id: str
    status: Literal["available", "occupied", "offline", "maintenance"]
    is_online: bool
    last_heartbeat: Stamp | None
    connectors_count: int
    connectors: list[StationConnector]
    current_sessions: list[dict[str, Any]]
    firmware_version: str | None


class ConnectorCounts(Part):
    available: int
    occupied: int
    faulted: int


class ConnectorsSummary(ConnectorCounts):
    total: int


class StationsSummary(Part):
    total: int
    available: int
    occupied: int
    offline: int
    maintenance: int


class TariffShown(Part):
    price_per_kwh: Number
    session_fee: Number
    currency: str


class ConnectorShown(Part):
    connector_id: int
    connector_type: str | None
    power_kw: Number | None
    status: str


class StationShown(Part):
    id: str
    serial_number: str | None
    model: str | None
    status: Literal["available", "occupied", "offline", "maintenance"]
    power_capacity: Number | None
    connectors_count: int
    connector_types: list[str | None]
    tariff: TariffShown | None
    connectors_summary: ConnectorCounts
    connectors: list[ConnectorShown]


class Coordinates(Part):
    latitude: Number | None
    longitude: Number | None


class Location(Part):
    id: str
    name: str
    address: str | None
    city: str | None
    country: str | None
    coordinates: Coordinates
    working_hours: Any = None
    status: Literal["available", "occupied", "offline", "maintenance", "partial"]
    stations_summary: StationsSummary
    connectors_summary: ConnectorsSummary
    stations: list[StationShown] | None = None


class Locations(Reply):
    locations: list[Location]
    total_locations: int
    cached: bool


class OneLocation(Reply):
    location: Location


# -- wallet --------------------------------------------------------------------------------------


class Balance(Reply):
    client_id: str
    balance: Number
    reserved: Number
    total: Number
    currency: str
    status: str


class LedgerLine(Part):
    id: int
    type: str
    amount: Number
    balance_before: Number
    balance_after: Number
    session_id: str | None
    invoice_id: str | None
    description: str | None
    created_at: Stamp


class BalanceHistory(Reply):
    transactions: list[LedgerLine]
    total: int
    limit: int
    offset: int


# -- top-ups -------------------------------------------------------------------------------------


class QrIssued(Reply):
    invoice_id: str
    qr_code: str  # base64 PNG
    qr_code_url: str
    app_link: str
    amount: Number
    qr_expires_at: Stamp
    invoice_expires_at: Stamp


class CardCharged(Reply):
    """Approved: ``new_balance`` and ``card_mask``; or 3-D Secure is needed: ``requires_3ds``,
    ``acs_url``, ``pa_req``, ``md``, ``term_url`` (the bank returns the payer there)."""

    invoice_id: str
    transaction_id: str | None = None
    amount: Number | None = None
    status: str | None = None
    new_balance: Number | None = None
    card_mask: str | None = None
    timestamp: Stamp | None = None
    requires_3ds: bool | None = None
    acs_url: str | None = None
    pa_req: str | None = None
    md: str | None = None
    term_url: str | None = None


class ThreeDsDone(Reply):
    invoice_id: str
    status: str
    amount: Number
    new_balance: Number | None


class PaymentStatus(Reply):
    invoice_id: str
    status: Literal[0, 1, 2]
    status_text: Literal["created", "pending", "approved", "canceled", "expired"]
    amount: Number
    paid_amount: Number | None
    can_start_charging: bool


class PaymentLine(Part):
    invoice_id: str
    method: Literal["qr", "card"]
    provider: str
    amount: Number
    status: Literal[0, 1, 2]
    status_text: str
    paid_amount: Number | None
    card_mask: str | None
    created_at: Stamp
    paid_at: Stamp | None


class PaymentHistory(Reply):
    payments: list[PaymentLine]
    total: int
    limit: int
    offset: int


class WebhookTaken(Reply):
    invoice_id: str
    status: str


# -- charging ------------------------------------------------------------------------------------


class Started(Reply):
    session_id: str
    reserved_amount: Number
    limit_type: Literal["energy", "amount", "none"]
    limit_value: Number | None
    rate_per_kwh: Number
    session_fee: Number
    estimated_energy: Number | None = None
    status: str | None = None


class Session(Part):
    id: str
    status: str
    station_id: str
    connector_id: int
    transaction_id: int | None
    limit_type: Literal["energy", "amount", "none"]
    limit_value: Number | None
    rate_per_kwh: Number | None
    session_fee: Number | None
    reserved_amount: Number
    energy_consumed: Number
    current_cost: Number | None
    final_cost: Number | None
    refunded_amount: Number | None
    debt_amount: Number | None
    charging_power: int | None
    ev_battery_soc: Number | None
    progress_percent: Number
    limit_reached: bool
    charging_duration_minutes: int
    started_at: Stamp | None
    stopped_at: Stamp | None
    stop_reason: str | None
    error: str | None


class SessionStatus(Reply):
    """Both app generations' shape: seed 000's nested ``session``, and seed 001's flat fields
    (``status`` ``started`` while the session runs, ``stopped`` once it has ended)."""

    session: Session
    session_id: str
    status: Literal["started", "stopped"]
    reserved_amount: Number
    current_cost: Number | None
    energy_consumed: Number
    rate_per_kwh: Number | None
    limit_type: Literal["energy", "amount", "none"]
    limit_value: Number | None
    limit_percentage: Number
    duration_minutes: int
    final_cost: Number | None = None
    refunded_amount: Number | None = None


class Stopped(Reply):
    session_id: str
    status: str
    final_cost: Number | None
    energy_consumed: Number
    refunded_amount: Number | None
    duration_minutes: int
    message: str | None = None


class ChargingHistory(Reply):
    sessions: list[Session]
    total: int
    limit: int
    offset: int


# -- favourites ----------------------------------------------------------------------------------


class Favorite(Part):
    location_id: str
    name: str
    address: str | None
    city: str | None
    added_at: Stamp


class Favorites(Reply):
    favorites: list[Favorite]
    total: int


class FavoriteAdded(Reply):
    location_id: str
    added: bool  # false: it was a favourite already


class FavoriteRemoved(Reply):
    location_id: str
    removed: Literal[True]
