"""The REST door (issue 15, items 5, 6 and 10): every malformed body, path value or query gets a
400 in the seed's shape and changes nothing; never a 500, never a hung keep-alive connection."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from cpms.server.app import Endpoints
from storage import Database
from tests.ocpp_server import ADMIN, provision, start_server
from tests.tokens import SECRET, bearer, hs256

ADMIN_HEADERS = bearer(ADMIN)
HUGE = str(2**70)
BEFORE_THE_CALENDAR = "0001-01-01T00:00:00+14:00"


@pytest.fixture
async def http(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[httpx.AsyncClient]:
    await provision(db, "CP-1")
    endpoints: Endpoints
    endpoints, shutdown = await start_server(
        nursery, dsn, tmp_path, admin_token=ADMIN, jwt_secret=SECRET
    )
    async with httpx.AsyncClient(base_url=endpoints.http_url, timeout=10) as client:
        yield client
    shutdown.set()


def refused(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["success"] is False and body["error"] == code and body["message"], body


async def test_bad_bodies_are_400_and_change_nothing(http: httpx.AsyncClient, db: Database) -> None:
    me = bearer(hs256(uuid.uuid4()))
    bodies: list[bytes] = [
        b'{"station_id": "CP-1", "connector_id": 1, "x": "\xff\xfe"}',  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested 100k deep
        b'{"a":' * 40 + b"1" + b"}" * 40,  # deeper than 32
        b'{"station_id": "CP-1", "connector_id": 1, "amount_som": NaN}',
        b'{"station_id": "CP-1", "connector_id": 1, "amount_som": 1e999999}',
        b"[1, 2]",
        b"not json",
    ]
    for body in bodies:
        reply = await http.post(
            "/api/v1/charging/start",
            content=body,
            headers={**me, "Content-Type": "application/json"},
        )
        refused(reply, 400, "invalid_request")
    for connector in (True, "1", 1.5):
        reply = await http.post(
            "/api/v1/charging/start",
            json={"station_id": "CP-1", "connector_id": connector},
            headers=me,
        )
        refused(reply, 400, "validation_error")
    admin_bodies = [b"\xff", b"[" * 100_000, b"{}" * 2]
    for body in admin_bodies:
        reply = await http.post(
            "/api/v1/admin/clients/" + str(uuid.uuid4()) + "/credit",
            content=body,
            headers=ADMIN_HEADERS,
        )
        refused(reply, 400, "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM charging_sessions") == 0
    assert await db.fetchval("SELECT count(*) FROM ledger_entries") == 0


async def test_bad_path_values_and_queries_are_400(http: httpx.AsyncClient) -> None:
    me = bearer(hs256(uuid.uuid4()))
    refused(await http.get("/api/v1/station/status/CP%001"), 400, "validation_error")
    refused(await http.get("/api/v1/locations/" + "L" * 500), 400, "validation_error")
    refused(await http.get("/api/v1/charging/status/a%00b", headers=me), 400, "validation_error")
    queries: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/balance/history", {"offset": HUGE}),
        ("/api/v1/balance/history", {"date_from": BEFORE_THE_CALENDAR}),
        ("/api/v1/charging/history", {"offset": HUGE}),
        ("/api/v1/charging/history", {"date_to": BEFORE_THE_CALENDAR}),
    ]
    for path, params in queries:
        refused(await http.get(path, params=params, headers=me), 400, "validation_error")
    admin_queries: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/admin/stations/CP-1/messages", {"before_id": HUGE}),
        ("/api/v1/admin/stations/CP-1/messages", {"limit": "abc"}),
    ]
    for path, params in admin_queries:
        reply = await http.get(path, params=params, headers=ADMIN_HEADERS)
        refused(reply, 400, "validation_error")
    for timeout in ("abc", "nan", "inf", "-1"):
        reply = await http.post(
            "/api/v1/admin/stations/CP-1/ocpp/ClearCache",
            params={"timeout": timeout},
            json={},
            headers=ADMIN_HEADERS,
        )
        refused(reply, 400, "validation_error")
    reply = await http.post(
        "/api/v1/admin/id-tags",
        json={"id_tag": "T-1", "expires_at": BEFORE_THE_CALENDAR},
        headers=ADMIN_HEADERS,
    )
    refused(reply, 400, "validation_error")


async def test_admin_token_missing_is_401_and_wrong_is_403_and_405_says_allow(
    http: httpx.AsyncClient,
) -> None:
    refused(await http.get("/api/v1/admin/stations/CP-1/messages"), 401, "unauthorized")
    reply = await http.get("/api/v1/admin/stations/CP-1/messages", headers=bearer("nope"))
    refused(reply, 403, "access_denied")
    reply = await http.delete("/api/v1/charging/start")
    refused(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["Allow"]


async def test_a_token_whose_exp_is_a_string_is_refused(http: httpx.AsyncClient) -> None:
    token = hs256(uuid.uuid4(), exp=str(int(time.time()) + 3600))
    refused(await http.get("/api/v1/balance/get", headers=bearer(token)), 401, "invalid_token")


async def test_answers_given_without_reading_the_body_keep_the_connection_usable(
    http: httpx.AsyncClient,
) -> None:
    """Item 5: after a 401/404/405/413 sent with the body unread, the next request on the same
    kept-alive connection was sometimes never answered."""
    body = {"station_id": "CP-1", "connector_id": 1, "pad": "x" * 2000}
    for n in range(60):
        with trio.fail_after(5):
            if n % 3 == 0:
                reply = await http.post("/api/v1/charging/start", json=body)  # 401
            elif n % 3 == 1:
                reply = await http.post("/api/v1/nowhere", json=body)  # 404
            else:
                reply = await http.put("/api/v1/charging/start", json=body)  # 405
            assert reply.status_code in (401, 404, 405)
            assert (await http.get("/health")).status_code == 200
    with trio.fail_after(10):
        reply = await http.post(
            "/api/v1/charging/start", content=b"x" * (2 * 1024 * 1024), headers=bearer("t")
        )
        assert reply.status_code in (401, 413)
        assert (await http.get("/health")).status_code == 200


async def test_strings_no_database_text_can_hold_are_400_and_change_nothing(
    http: httpx.AsyncClient, db: Database
) -> None:
    """JSON's escapes can spell a NUL or half a surrogate pair; PostgreSQL's text holds
    neither. Found by schemathesis: a location whose city held a NUL was a 500."""
    me = bearer(hs256(uuid.uuid4()))
    for spelled in (r"\u0000", r"\ud800", r"x\udc00y"):
        location = f'{{"id": "L-1", "name": "Depot", "city": "Bish{spelled}kek"}}'
        for path, body, headers in (
            ("/api/v1/admin/locations", location, ADMIN_HEADERS),
            ("/api/v1/admin/tariffs", f'{{"id": "T-1", "name": "{spelled}", '
             '"price_per_kwh": 15}', ADMIN_HEADERS),
            ("/api/v1/favorites", f'{{"location_id": "L{spelled}"}}', me),
            ("/api/v1/auth/register", f'{{"phone": "+996555000111", "name": "{spelled}"}}', {}),
            ("/api/v1/admin/locations", f'{{"id": "L-2", "name": "x", "{spelled}": 1}}',
             ADMIN_HEADERS),
        ):  # fmt: skip
            reply = await http.post(
                path, content=body, headers={**headers, "Content-Type": "application/json"}
            )
            refused(reply, 400, "invalid_request")
            assert "NUL" in reply.json()["message"]
    refused(
        await http.get("/api/v1/locations", params={"location_id": "L\x00"}),
        400,
        "validation_error",
    )
    refused(await http.get("/api/v1/locations?search=a%00b"), 400, "validation_error")
    assert await db.fetchval("SELECT count(*) FROM locations") == 0
    assert await db.fetchval("SELECT count(*) FROM tariffs") == 0
    # the same characters spelled as themselves are text like any other
    reply = await http.post(
        "/api/v1/admin/locations",
        json={"id": "L-1", "name": "Депо \U0001f50c", "city": "Бишкек"},
        headers=ADMIN_HEADERS,
    )
    assert reply.status_code in (200, 201), reply.text
