"""Provisioning the network: locations, tariffs, stations with connectors, id tags.

The same validated requests serve the admin REST endpoints and the CLI. Every function checks
its input with pydantic first (``InvalidRequest`` on bad input, nothing written).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import trio
from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cpms.kernel.bounded import Email, Password, Phone, Stamp
from cpms.kernel.errors import Conflict, InvalidRequest, NotFound
from cpms.kernel.passwords import hash_password
from storage import Database, network, owners
from storage import stations as store

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,50}$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LocationIn(_Model):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(None, max_length=300)
    city: str | None = Field(None, max_length=100)
    country: str | None = Field(None, max_length=100)
    latitude: Decimal | None = Field(None, ge=-90, le=90)
    longitude: Decimal | None = Field(None, ge=-180, le=180)
    tariff_id: Id | None = None


class TariffIn(_Model):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    price_per_kwh: Money
    session_fee: Money = Decimal("0")
    currency: str = Field("KGS", pattern=r"^[A-Z]{3}$")


class ConnectorIn(_Model):
    connector_id: int = Field(ge=1, le=10)
    connector_type: Literal["CCS1", "CCS2", "CHAdeMO", "GBT", "GBT-AC", "Type1", "Type2", "Tesla"]
    power_kw: Decimal = Field(gt=0, le=1000)


class StationIn(_Model):
    id: Id
    location_id: Id | None = None
    connectors_count: int = Field(ge=1, le=10)
    connectors: list[ConnectorIn] = []
    model: str | None = Field(None, max_length=100)
    password: str | None = Field(None, min_length=8, max_length=128)
    tariff_id: Id | None = None

    @field_validator("connectors")
    @classmethod
    def _distinct(cls, value: list[ConnectorIn]) -> list[ConnectorIn]:
        numbers = [c.connector_id for c in value]
        if len(set(numbers)) != len(numbers):
            raise ValueError("connector numbers must be distinct")
        return value


class StationPatch(_Model):
    location_id: Id | None = None
    owner_id: uuid.UUID | None = None
    password: str | None = Field(None, min_length=8, max_length=128)
    admin_status: Literal["active", "maintenance", "inactive"] | None = None
    registration_status: Literal["Accepted", "Pending", "Rejected"] | None = None
    accept_unknown_tags: bool | None = None
    tariff_id: Id | None = None
    model: str | None = Field(None, max_length=100)


class LocationPatch(_Model):
    name: str | None = Field(None, min_length=1, max_length=200)
    address: str | None = Field(None, max_length=300)
    city: str | None = Field(None, max_length=100)
    country: str | None = Field(None, max_length=100)
    latitude: Decimal | None = Field(None, ge=-90, le=90)
    longitude: Decimal | None = Field(None, ge=-180, le=180)
    tariff_id: Id | None = None
    owner_id: uuid.UUID | None = None
    status: Literal["active", "inactive"] | None = None


class OwnerIn(_Model):
    """A station owner: told of sessions and outages on their stations (Web Push), after
    signing in with the e-mail or phone and the password."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: str = Field(min_length=1, max_length=200)
    email: Email | None = None
    phone: Phone | None = None
    password: Password | None = None


class OwnerPatch(_Model):
    name: str | None = Field(None, min_length=1, max_length=200)
    email: Email | None = None
    phone: Phone | None = None
    password: Password | None = None


class TariffPatch(_Model):
    name: str | None = Field(None, min_length=1, max_length=200)
    price_per_kwh: Money | None = None
    session_fee: Money | None = None


class IdTagPatch(_Model):
    client_id: uuid.UUID | None = None
    status: Literal["Accepted", "Blocked", "Expired", "Invalid"] | None = None
    expires_at: Stamp | None = None


class IdTagIn(_Model):
    id_tag: str = Field(min_length=1, max_length=20)
    client_id: uuid.UUID | None = None
    parent_id_tag: str | None = Field(None, min_length=1, max_length=20)
    status: Literal["Accepted", "Blocked", "Expired", "Invalid"] = "Accepted"
    expires_at: Stamp | None = None


async def _require(db: Database, table: network.Table, value: object, code: str) -> None:
    if value is not None and not await network.exists(db, table, value):
        raise NotFound(f"{code.removesuffix('_not_found')} {value} not found", code=code)


async def add_tariff(db: Database, tariff: TariffIn) -> None:
    if await network.exists(db, "tariffs", tariff.id):
        raise Conflict(f"tariff {tariff.id} already exists", code="tariff_exists")
    await network.add_tariff(
        db,
        tariff.id,
        name=tariff.name,
        price_per_kwh=tariff.price_per_kwh,
        session_fee=tariff.session_fee,
        currency=tariff.currency,
    )


async def add_location(db: Database, location: LocationIn) -> None:
    if await network.exists(db, "locations", location.id):
        raise Conflict(f"location {location.id} already exists", code="location_exists")
    await _require(db, "tariffs", location.tariff_id, "tariff_not_found")
    await network.add_location(
        db,
        location.id,
        name=location.name,
        address=location.address,
        city=location.city,
        country=location.country,
        latitude=location.latitude,
        longitude=location.longitude,
        tariff_id=location.tariff_id,
    )


async def add_station(db: Database, station: StationIn) -> None:
    await _require(db, "tariffs", station.tariff_id, "tariff_not_found")
    await store.create_station(
        db,
        station.id,
        connectors_count=station.connectors_count,
        location_id=station.location_id,
        connectors=[
            store.ConnectorSpec(c.connector_id, c.connector_type, c.power_kw)
            for c in station.connectors
        ],
        model=station.model,
        password_hash=None if station.password is None else hash_password(station.password),
        tariff_id=station.tariff_id,
    )


async def _update(
    db: Database, table: network.Table, ident: object, changes: dict[str, Any], code: str
) -> None:
    """Set ``changes`` (column → value, from a validated model) on one row."""
    if not await network.patch(db, table, ident, changes):
        raise NotFound(f"{code.removesuffix('_not_found')} {ident} not found", code=code)


def _not_emptied(changes: dict[str, Any], *fields: str) -> None:
    """A patch may leave these out, not set them to null (their columns always hold a value).

    Raises:
        InvalidRequest: one of them is given as null.
    """
    emptied = [name for name in fields if name in changes and changes[name] is None]
    if emptied:
        raise InvalidRequest(
            f"{', '.join(emptied)} can't be empty", code="validation_error", fields=emptied
        )


async def update_station(db: Database, station_id: str, patch: StationPatch) -> None:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    _not_emptied(changes, "admin_status", "registration_status", "accept_unknown_tags")
    await _require(db, "locations", changes.get("location_id"), "location_not_found")
    await _require(db, "tariffs", changes.get("tariff_id"), "tariff_not_found")
    await _require(db, "owners", changes.get("owner_id"), "owner_not_found")
    if "password" in changes:
        password = changes.pop("password")
        changes["password_hash"] = None if password is None else hash_password(password)
        changes["password_verifier"] = None  # made for the old one (and worthless with the new)
    changes["updated_at"] = datetime.now(UTC)
    await _update(db, "stations", station_id, changes, "station_not_found")


async def update_location(db: Database, location_id: str, patch: LocationPatch) -> None:
    changes = patch.model_dump(exclude_unset=True)
    _not_emptied(changes, "name", "status")
    await _require(db, "tariffs", changes.get("tariff_id"), "tariff_not_found")
    await _require(db, "owners", changes.get("owner_id"), "owner_not_found")
    changes["updated_at"] = datetime.now(UTC)
    await _update(db, "locations", location_id, changes, "location_not_found")


async def update_tariff(db: Database, tariff_id: str, patch: TariffPatch) -> None:
    changes = patch.model_dump(exclude_unset=True)
    _not_emptied(changes, "name", "price_per_kwh", "session_fee")
    changes["updated_at"] = datetime.now(UTC)
    await _update(db, "tariffs", tariff_id, changes, "tariff_not_found")


async def update_id_tag(db: Database, id_tag: str, patch: IdTagPatch) -> None:
    changes = patch.model_dump(exclude_unset=True)
    _not_emptied(changes, "status")
    if changes.get("client_id") is not None and not await network.exists(
        db, "clients", changes["client_id"]
    ):
        raise NotFound(f"client {changes['client_id']} not found", code="client_not_found")
    await _update(db, "id_tags", id_tag, changes, "id_tag_not_found")


async def add_id_tag(db: Database, tag: IdTagIn) -> None:
    if tag.parent_id_tag is not None and not await network.exists(db, "id_tags", tag.parent_id_tag):
        raise NotFound(f"parent id tag {tag.parent_id_tag} not found", code="id_tag_not_found")
    await store.create_id_tag(
        db,
        tag.id_tag,
        client_id=tag.client_id,
        parent=tag.parent_id_tag,
        status=tag.status,
        expires_at=tag.expires_at,
    )


async def _owner_password(password: str | None) -> str | None:
    """argon2id, as the drivers' passwords (hashed on a worker thread: it is slow by design)."""
    if password is None:
        return None
    return await trio.to_thread.run_sync(PasswordHasher().hash, password)


async def add_owner(db: Database, owner: OwnerIn) -> None:
    outcome = await owners.add_owner(
        db,
        owner.id,
        name=owner.name,
        email=owner.email,
        phone=owner.phone,
        password_hash=await _owner_password(owner.password),
    )
    if outcome == "exists":
        raise Conflict(f"owner {owner.id} already exists", code="owner_exists")
    if outcome == "login_taken":
        raise Conflict("the e-mail or phone is another owner's", code="owner_login_taken")


async def update_owner(db: Database, owner_id: str, patch: OwnerPatch) -> None:
    try:
        ident = uuid.UUID(owner_id)
    except ValueError:
        raise NotFound(f"owner {owner_id} not found", code="owner_not_found") from None
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    _not_emptied(changes, "name")
    if await owners.login_taken(db, owner_id, changes.get("email"), changes.get("phone")):
        raise Conflict("the e-mail or phone is another owner's", code="owner_login_taken")
    if "password" in changes:
        changes["password_hash"] = await _owner_password(changes.pop("password"))
    await _update(db, "owners", ident, changes, "owner_not_found")
