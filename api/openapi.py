"""``GET /api/v1/openapi.json``: an OpenAPI 3.1 document of every endpoint the facade serves.

The operations themselves are listed in :mod:`api.operations`; here they become the document.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response, jsonify

from api.operations import Op, operations
from api.operations_auth import auth_operations
from api.operations_push import push_operations
from cpms import __version__

ERROR = {
    "type": "object",
    "required": ["success", "error", "message"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string", "description": "a stable error code, e.g. station_offline"},
        "message": {"type": "string"},
    },
}


def _schema(model: type[BaseModel], shared: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema, the models it nests moved to the document's components (a
    ``$ref`` to ``#/$defs/…`` inside an operation resolves nowhere)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    shared.update(schema.pop("$defs", {}))
    return schema


def _body(op: Op, shared: dict[str, Any]) -> dict[str, Any]:
    if op.media != "application/json":
        return {"type": "string"}
    return _schema(op.response, shared)


def _parameters(op: Op, shared: dict[str, Any]) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in op.path.split("/") if part.startswith("{"))
    ]
    if op.query is not None:
        schema = _schema(op.query, shared)
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    return params


UNLIMITED_TAGS = frozenset({"system"})  # /health and this document
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key with the same request within 24 h replays the first answer",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
}


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


WEBSOCKETS = {
    "/api/v1/ws/locations": {
        "summary": "Live station and location status; with a token, the client's balance and "
        "charging (api/live_socket.py); also on CPMS_APP_WS_PORT when set (api/live_listener.py)",
        "query": {"client_id": "the client's UUID (optional)", "token": "a JWT (optional)"},
        "client_messages": [
            {"action": "subscribe", "channel": "all | location:<id> | location_stations:<id>"},
            {"action": "unsubscribe", "channel": "..."},
            {"action": "ping"},
            {"action": "auth", "token": "<JWT>"},
            {"type": "pong"},
        ],
        "server_messages": [
            "connection",
            "subscription",
            "pong",
            "ping",
            "location_status_update",
            "station_status_update",
            "stations_update",
            "auth",
            "balance_update",
            "charging_update",
            "error",
        ],
        "close_codes": {
            "1000": "idle",
            "1001": "server stopping",
            "1008": "bad client_id",
            "1009": "message over 16 KB",
            "1013": "too slow",
        },
    }
}


@functools.cache
def document() -> dict[str, Any]:
    """The document, built once per process (a fifth of a second: every model's JSON schema);
    callers read it and never change it."""
    paths: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {"Error": ERROR}
    for op in [*operations(), *auth_operations(), *push_operations()]:
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op, shared),
            "responses": {
                **{
                    str(code): {
                        "description": "OK" if code < 400 else "not ready",
                        "content": {op.media: {"schema": _body(op, shared)}},
                    }
                    for code in (op.status, *op.same_body_on)
                },
                **{
                    str(code): {
                        "description": "error",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for code in op.errors
                },
            },
        }
        if op.tag not in UNLIMITED_TAGS:  # rate limited (api.protect)
            operation["responses"].setdefault("429", _error("over the rate limit"))
        if op.method in ("post", "patch", "delete") and op.auth is not None:
            operation["parameters"].append(IDEMPOTENCY_KEY)  # api.idempotency
            for code in (409, 422):
                operation["responses"].setdefault(str(code), _error("error"))
        if op.auth is not None:
            operation["security"] = [{"appToken" if op.auth == "app" else "adminToken": []}]
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(op.body, shared)}},
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "cpms", "version": __version__},
        "paths": paths,
        "x-websockets": WEBSOCKETS,  # OpenAPI describes no WebSockets: the messages, briefly
        "components": {
            "schemas": shared,
            "securitySchemes": {
                "appToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_blueprint() -> Blueprint:
    bp = Blueprint("openapi", __name__)
    spec = document()

    @bp.get("/api/v1/openapi.json")
    async def openapi() -> Response:
        return jsonify(spec)

    return bp
