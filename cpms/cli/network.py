"""``cpms`` commands that provision the network and talk to chargers through a running server."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from pydantic import BaseModel
from rich.console import Console

from actors import provisioning as prov
from cpms.cli.demo_data import seed_demo
from cpms.kernel.errors import InvalidRequest, Unavailable
from cpms.kernel.validation import validate
from cpms.settings import Settings
from storage import Database, open_storage

out = Console(highlight=False, soft_wrap=True)
Common = Callable[[argparse.ArgumentParser], None]


def add_network_commands(commands: Any, common: Common) -> None:
    """Register ``tariffs``, ``locations``, ``stations``, ``tags``, ``seed-demo``, ``station``."""
    tariffs = commands.add_parser("tariffs", help="manage tariffs").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    add = tariffs.add_parser("add", help="add a tariff")
    common(add)
    add.add_argument("id")
    add.add_argument("--name", required=True)
    add.add_argument("--price-per-kwh", required=True, help="e.g. 13.50")
    add.add_argument("--session-fee", default="0")
    add.add_argument("--currency", default="KGS")
    add.set_defaults(handler=db_command(_tariff_add))
    update = tariffs.add_parser("update", help="change a tariff")
    common(update)
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--price-per-kwh")
    update.add_argument("--session-fee")
    update.set_defaults(
        handler=db_command(
            _updater(
                prov.TariffPatch,
                prov.update_tariff,
                "tariff",
                {"name": "name", "price_per_kwh": "price_per_kwh", "session_fee": "session_fee"},
            )
        )
    )

    locations = commands.add_parser("locations", help="manage locations").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    add = locations.add_parser("add", help="add a location")
    common(add)
    add.add_argument("id", help="e.g. EVP-LOC-010")
    add.add_argument("--name", required=True)
    add.add_argument("--address")
    add.add_argument("--city")
    add.add_argument("--country")
    add.add_argument("--lat", help="latitude, e.g. 42.8746")
    add.add_argument("--lon", help="longitude, e.g. 74.5698")
    add.add_argument("--tariff", help="tariff id")
    add.set_defaults(handler=db_command(_location_add))
    update = locations.add_parser("update", help="change a location")
    common(update)
    update.add_argument("id")
    for option in ("--name", "--address", "--city", "--country", "--lat", "--lon", "--tariff"):
        update.add_argument(option)
    update.add_argument("--status", help="active or inactive")
    update.set_defaults(
        handler=db_command(
            _updater(
                prov.LocationPatch,
                prov.update_location,
                "location",
                {
                    "name": "name",
                    "address": "address",
                    "city": "city",
                    "country": "country",
                    "lat": "latitude",
                    "lon": "longitude",
                    "tariff": "tariff_id",
                    "status": "status",
                },
            )
        )
    )

    stations = commands.add_parser("stations", help="manage stations").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    add = stations.add_parser("add", help="add a station")
    common(add)
    add.add_argument("id", help="the charge point id it connects with, e.g. EVP-010-01")
    add.add_argument("--connectors", type=int, required=True, help="physical connectors (1-10)")
    add.add_argument("--location", help="location id")
    add.add_argument(
        "--connector",
        action="append",
        default=[],
        metavar="N:TYPE:KW",
        help="a configured connector, e.g. 1:CCS2:120 (repeatable)",
    )
    add.add_argument("--model")
    add.add_argument("--password", help="HTTP Basic password the charger must present")
    add.add_argument("--tariff", help="tariff id (default: the location's)")
    add.set_defaults(handler=db_command(_station_add))

    update = stations.add_parser(
        "update", help="change a station (live on a running server after its next BootNotification)"
    )
    common(update)
    update.add_argument("id")
    update.add_argument("--location")
    update.add_argument("--password", help="new HTTP Basic password")
    update.add_argument("--admin-status", help="active, maintenance or inactive")
    update.add_argument("--registration", help="Accepted, Pending or Rejected (BootNotification)")
    update.add_argument("--accept-unknown-tags", type=_yes_no, metavar="yes|no")
    update.add_argument("--tariff")
    update.set_defaults(
        handler=db_command(
            _updater(
                prov.StationPatch,
                prov.update_station,
                "station",
                {
                    "location": "location_id",
                    "password": "password",
                    "admin_status": "admin_status",
                    "registration": "registration_status",
                    "accept_unknown_tags": "accept_unknown_tags",
                    "tariff": "tariff_id",
                },
            )
        )
    )

    tags = commands.add_parser("tags", help="manage RFID id tags").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    add = tags.add_parser("add", help="add an id tag")
    common(add)
    add.add_argument("tag", help="id tag (1-20 characters)")
    add.add_argument("--client", help="client UUID billed for sessions with this tag")
    add.add_argument("--parent", help="parent id tag")
    add.add_argument("--status", default="Accepted", help="Accepted, Blocked, Expired or Invalid")
    add.add_argument("--expires", help="expiry, ISO 8601")
    add.set_defaults(handler=db_command(_tag_add))
    update = tags.add_parser("update", help="change an id tag")
    common(update)
    update.add_argument("id", metavar="tag")
    update.add_argument("--client", help="client UUID")
    update.add_argument("--status", help="Accepted, Blocked, Expired or Invalid")
    update.add_argument("--expires", help="expiry, ISO 8601")
    update.set_defaults(
        handler=db_command(
            _updater(
                prov.IdTagPatch,
                prov.update_id_tag,
                "id tag",
                {"client": "client_id", "status": "status", "expires": "expires_at"},
            )
        )
    )

    demo = commands.add_parser("seed-demo", help="load a small demo network in Bishkek")
    common(demo)
    demo.add_argument("--station-password", help="password for every demo station")
    demo.set_defaults(handler=db_command(_seed_demo))

    station = commands.add_parser("station", help="talk to a connected charger").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    call = station.add_parser("call", help="send an OCPP command through the running server")
    common(call)
    call.add_argument("id", help="station id")
    call.add_argument("action", help="OCPP action, e.g. Reset")
    call.add_argument(
        "payload", nargs="?", default="{}", help='JSON payload, e.g. \'{"type": "Soft"}\''
    )
    call.add_argument("--url", help="server base URL (default http://<CPMS_HTTP_HOST>:<port>)")
    call.add_argument("--timeout", type=float, default=30)
    call.set_defaults(handler=_station_call)


def db_command(
    fn: Callable[[Database, argparse.Namespace], Awaitable[str]],
) -> Callable[[argparse.Namespace, Settings], int]:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        async def run() -> str:
            async with open_storage(
                database_url=settings.database_dsn, pg_dir=settings.pg_dir
            ) as db:
                return await fn(db, args)

        out.print(trio.run(run))
        return 0

    return handler


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError("expected yes or no")
    return text == "yes"


def _updater(
    model: type[BaseModel],
    update: Callable[[Database, str, Any], Awaitable[None]],
    kind: str,
    options: dict[str, str],
) -> Callable[[Database, argparse.Namespace], Awaitable[str]]:
    """A command handler applying the given options (option dest → model field) as a patch."""

    async def run(db: Database, a: argparse.Namespace) -> str:
        given = {
            field: getattr(a, dest)
            for dest, field in options.items()
            if getattr(a, dest) is not None
        }
        patch = validate(model, given)
        await update(db, a.id, patch)
        return f"{kind} {a.id} updated: {', '.join(sorted(patch.model_fields_set)) or 'nothing'}"

    return run


async def _tariff_add(db: Database, a: argparse.Namespace) -> str:
    tariff = validate(
        prov.TariffIn,
        {
            "id": a.id,
            "name": a.name,
            "price_per_kwh": a.price_per_kwh,
            "session_fee": a.session_fee,
            "currency": a.currency,
        },
    )
    await prov.add_tariff(db, tariff)
    return f"tariff {tariff.id}: {tariff.price_per_kwh} {tariff.currency}/kWh"


async def _location_add(db: Database, a: argparse.Namespace) -> str:
    location = validate(
        prov.LocationIn,
        {
            "id": a.id,
            "name": a.name,
            "address": a.address,
            "city": a.city,
            "country": a.country,
            "latitude": a.lat,
            "longitude": a.lon,
            "tariff_id": a.tariff,
        },
    )
    await prov.add_location(db, location)
    return f"location {location.id} added"


def _connector(text: str) -> dict[str, str]:
    parts = text.split(":")
    if len(parts) != 3:
        raise InvalidRequest(
            f"--connector {text!r}: expected N:TYPE:KW, e.g. 1:CCS2:120", code="validation_error"
        )
    return {"connector_id": parts[0], "connector_type": parts[1], "power_kw": parts[2]}


async def _station_add(db: Database, a: argparse.Namespace) -> str:
    station = validate(
        prov.StationIn,
        {
            "id": a.id,
            "location_id": a.location,
            "connectors_count": a.connectors,
            "connectors": [_connector(c) for c in a.connector],
            "model": a.model,
            "password": a.password,
            "tariff_id": a.tariff,
        },
    )
    await prov.add_station(db, station)
    auth = "with a password" if a.password else "without a password"
    return f"station {station.id} added ({station.connectors_count} connectors, {auth})"


async def _tag_add(db: Database, a: argparse.Namespace) -> str:
    tag = validate(
        prov.IdTagIn,
        {
            "id_tag": a.tag,
            "client_id": a.client,
            "parent_id_tag": a.parent,
            "status": a.status,
            "expires_at": a.expires,
        },
    )
    await prov.add_id_tag(db, tag)
    return f"id tag {tag.id_tag} added ({tag.status})"


async def _seed_demo(db: Database, a: argparse.Namespace) -> str:
    added = await seed_demo(db, station_password=a.station_password)
    return "demo network: " + ", ".join(f"{n} {kind} added" for kind, n in added.items())


def _station_call(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError:
        raise InvalidRequest("payload must be JSON", code="validation_error") from None
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is None:
        token = os.environ.get("CPMS_ADMIN_TOKEN")
    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        response = httpx.post(
            f"{base}/api/v1/admin/stations/{args.id}/ocpp/{args.action}",
            json=payload,
            params={"timeout": args.timeout},
            timeout=args.timeout + 10,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"no cpms server at {base}: {exc}", code="server_unreachable") from exc
    body = response.json()
    if not body.get("success"):
        raise InvalidRequest(body.get("message", response.text), code=body.get("error", "error"))
    out.print(json.dumps(body["response"], ensure_ascii=False, indent=2))
    return 0
