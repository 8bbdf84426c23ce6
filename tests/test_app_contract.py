"""The rest of the app's contract: favourites (seed 000 §7), the per-client history paths (seed
003 §5), ``search=`` on the locations, and ``/charging/status`` in both app generations' shapes
(seed 000's nested ``session``, seed 001's flat fields with ``started``/``stopped``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio

from cpms.cli.demo_data import seed_demo
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage.favorites import MAX_FAVORITES
from tests.documented import documented_client
from tests.test_charging import Rig, running_rig
from tests.tokens import SECRET, bearer, hs256


@pytest.fixture
async def http(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[httpx.AsyncClient]:
    await seed_demo(db)
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, jwt_secret=SECRET
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    async with documented_client(base_url=endpoints.http_url) as client:
        yield client
    shutdown.set()


async def test_favourites_are_each_drivers_own(http: httpx.AsyncClient, db: Database) -> None:
    me, other = bearer(hs256(uuid.uuid4())), bearer(hs256(uuid.uuid4()))
    empty = await http.get("/api/v1/favorites", headers=me)
    assert (empty.status_code, empty.json()["favorites"], empty.json()["total"]) == (200, [], 0)

    added = await http.post("/api/v1/favorites", headers=me, json={"location_id": "EVP-LOC-002"})
    assert (added.status_code, added.json()["added"]) == (201, True)
    again = await http.post("/api/v1/favorites", headers=me, json={"location_id": "EVP-LOC-002"})
    assert (again.status_code, again.json()["added"]) == (200, False)
    await http.post("/api/v1/favorites", headers=me, json={"location_id": "EVP-LOC-005"})
    listed = (await http.get("/api/v1/favorites", headers=me)).json()
    assert [f["location_id"] for f in listed["favorites"]] == ["EVP-LOC-005", "EVP-LOC-002"]
    assert listed["favorites"][1]["name"] == "Asia Mall" and listed["total"] == 2
    assert (await http.get("/api/v1/favorites", headers=other)).json()["total"] == 0

    # refusals: each a clear error, nothing changed
    for sent, status, code in [
        ({"location_id": "NOWHERE"}, 404, "location_not_found"),
        ({"location_id": ""}, 400, "validation_error"),
        ({"location": "EVP-LOC-001"}, 400, "validation_error"),
    ]:
        reply = await http.post("/api/v1/favorites", headers=me, json=sent)
        assert (reply.status_code, reply.json()["error"]) == (status, code), sent
    anonymous = await http.post("/api/v1/favorites", json={"location_id": "EVP-LOC-001"})
    assert anonymous.status_code == 401
    not_mine = await http.delete("/api/v1/favorites/EVP-LOC-002", headers=other)
    assert (not_mine.status_code, not_mine.json()["error"]) == (404, "favorite_not_found")
    assert (await http.get("/api/v1/favorites", headers=me)).json()["total"] == 2

    removed = await http.delete("/api/v1/favorites/EVP-LOC-002", headers=me)
    assert (removed.status_code, removed.json()["removed"]) == (200, True)
    gone = await http.delete("/api/v1/favorites/EVP-LOC-002", headers=me)
    assert gone.status_code == 404
    assert [
        f["location_id"]
        for f in (await http.get("/api/v1/favorites", headers=me)).json()["favorites"]
    ] == ["EVP-LOC-005"]

    # a bound against abuse: the 201st favourite is refused
    client = uuid.uuid4()
    await db.execute("INSERT INTO clients (id) VALUES ($1) ON CONFLICT DO NOTHING", client)
    await db.execute(
        "INSERT INTO locations (id, name) SELECT 'X-' || n, 'x' FROM generate_series(1, $1) n",
        MAX_FAVORITES,
    )
    await db.execute(
        "INSERT INTO favourites (client_id, location_id)"
        " SELECT $1, 'X-' || n FROM generate_series(1, $2) n",
        client,
        MAX_FAVORITES,
    )
    full = await http.post(
        "/api/v1/favorites", headers=bearer(hs256(client)), json={"location_id": "EVP-LOC-001"}
    )
    assert (full.status_code, full.json()["error"]) == (409, "too_many_favorites")


async def test_search_finds_a_location_by_any_part_of_its_name_address_or_city(
    http: httpx.AsyncClient,
) -> None:
    async def found(words: str) -> set[str]:
        reply = await http.get("/api/v1/locations", params={"search": words})
        assert reply.status_code == 200, reply.text
        return {loc["id"] for loc in reply.json()["locations"]}

    assert await found("asia") == {"EVP-LOC-002"}
    assert await found("ДОРДОЙ") == {"EVP-LOC-001"}  # any case, Cyrillic too
    assert await found("пр. Чуй") == {"EVP-LOC-002", "EVP-LOC-004"}  # the address
    assert len(await found("бишкек")) == 5  # the city
    assert await found("nothing like it") == set()
    for bad in ["", "x" * 101]:
        reply = await http.get("/api/v1/locations", params={"search": bad})
        assert (reply.status_code, reply.json()["error"]) == (400, "validation_error")


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    async with running_rig(db, dsn, tmp_path, nursery) as rig:
        yield rig


async def test_status_in_both_shapes_and_history_under_the_client_path(rig: Rig) -> None:
    client, headers = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        session = await rig.started(headers, energy_kwh=2)
        await rig.until_status(session, headers, "charging")
        running = (await rig.http.get(f"/api/v1/charging/status/{session}", headers=headers)).json()
        assert running["session"]["status"] == "charging"  # seed 000
        assert (running["session_id"], running["status"]) == (session, "started")  # seed 001
        assert running["limit_type"] == "energy" and Decimal(str(running["limit_value"])) == 2
        assert 0 <= running["limit_percentage"] <= 100
        assert "final_cost" not in running
        stopped = await rig.http.post(
            "/api/v1/charging/stop", headers=headers, json={"session_id": session}
        )
        assert stopped.status_code == 200, stopped.text
    ended = (await rig.http.get(f"/api/v1/charging/status/{session}", headers=headers)).json()
    assert ended["status"] == "stopped" and ended["session"]["status"] == "settled"
    assert ended["final_cost"] == ended["session"]["final_cost"]
    assert Decimal(str(ended["final_cost"])) + Decimal(str(ended["refunded_amount"])) == Decimal(
        str(ended["reserved_amount"])
    )

    mine = await rig.http.get(f"/api/v1/charging/history/{client}", headers=headers)
    assert [s["id"] for s in mine.json()["sessions"]] == [session]
    ledger = await rig.http.get(f"/api/v1/balance/history/{client}", headers=headers)
    plain = await rig.http.get("/api/v1/balance/history", headers=headers)
    assert ledger.json()["transactions"] == plain.json()["transactions"] != []
    _, stranger = await rig.client("0")
    for path in (f"/api/v1/charging/history/{client}", f"/api/v1/balance/history/{client}"):
        refused = await rig.http.get(path, headers=stranger)
        assert (refused.status_code, refused.json()["error"]) == (403, "client_mismatch")
