"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import trio

from api import webhook_door
from api.app import create_app
from api.openapi import document
from cpms.server.app import Endpoints, api_config, run_server
from cpms.settings import Settings
from storage import Database


def served_routes(settings: Settings) -> set[tuple[str, str]]:
    # Building the app only wires blueprints, so stand-ins for the core will do.
    core: Any = SimpleNamespace(db=None, ledger=None, bus=None, registry=None)
    routes = set()
    app = create_app(core, SimpleNamespace(), api_config(settings), SimpleNamespace())  # type: ignore[arg-type]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if rule.websocket:  # documented apart: OpenAPI has no WebSockets
            routes.add(("WEBSOCKET", path))
            continue
        routes |= {(m, path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return routes | {("POST", path) for path in webhook_door.PATHS}  # served before the app


async def test_openapi_lists_every_route_and_only_those(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = Settings(database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0)
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    async with httpx.AsyncClient(base_url=endpoints.http_url) as http:
        reply = await http.get("/api/v1/openapi.json")
    shutdown.set()
    assert reply.status_code == 200
    spec = reply.json()
    assert spec["openapi"].startswith("3.")
    documented = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    documented |= {("WEBSOCKET", path) for path in spec["x-websockets"]}
    assert documented == served_routes(settings)
    start = spec["paths"]["/api/v1/charging/start"]["post"]
    body = start["requestBody"]["content"]["application/json"]["schema"]
    assert {"station_id", "connector_id", "energy_kwh", "amount_som"} <= set(body["properties"])
    assert start["security"] == [{"appToken": []}]


def test_every_reference_in_the_document_resolves() -> None:
    """A nested model's schema lives in the components, where its ``$ref`` points (it pointed
    at ``#/$defs/ConnectorIn`` inside an operation, which resolves nowhere)."""
    spec = document()

    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield str(value)
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    found = list(refs(spec))
    assert "#/components/schemas/ConnectorIn" in found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref
    assert "$defs" not in json.dumps(spec)
