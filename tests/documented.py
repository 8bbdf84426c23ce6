"""Every answer the tests get from the REST facade, held to the OpenAPI document: a client made
with :func:`documented_client` checks each response against the schema documented for its
route and status (a success must be documented; an error is checked when its status is)."""

from __future__ import annotations

import re
import ssl
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from api.openapi import document

SPEC = document()
#: one TLS context for every client (httpx makes one per client otherwise: the CA store read
#: again each time, 30 ms; the tests' servers are plain HTTP)
_TLS = ssl.create_default_context()
_ROUTES = [
    (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
    for path in sorted(SPEC["paths"], key=lambda p: p.count("{"))  # literal paths first
]


def operation(method: str, path: str) -> dict[str, Any] | None:
    for pattern, template in _ROUTES:
        if pattern.match(path) and method.lower() in SPEC["paths"][template]:
            return dict(SPEC["paths"][template][method.lower()])
    return None


async def check_documented(response: httpx.Response) -> None:
    await response.aread()
    request = response.request
    op = operation(request.method, request.url.path)
    if op is None:
        return  # a route the app doesn't serve: the test is about the 404 or 405
    documented = op["responses"].get(str(response.status_code))
    if documented is None:
        assert response.status_code >= 400, (request.method, request.url.path, "undocumented")
        return
    media = next(iter(documented["content"]))
    if media != "application/json":  # a text body (/metrics): its type is what is documented
        assert response.headers["content-type"].startswith(media), response.headers
        return
    schema = documented["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": SPEC["components"]})
    problems = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert not problems, (request.method, request.url.path, response.status_code, problems[:5])


def documented_client(**options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that checks every response with :func:`check_documented`."""
    options.setdefault("verify", _TLS)
    return httpx.AsyncClient(event_hooks={"response": [check_documented]}, **options)
