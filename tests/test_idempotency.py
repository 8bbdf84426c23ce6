"""``Idempotency-Key``: a start sent three times at once and again after its answer is one
session and one hold; the same key with another body is 422, a malformed key 400; keys are
each client's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from tests.test_charging import Rig, running_rig, until
from tests.tokens import SECRET, bearer, hs256

START = {"station_id": "CP-1", "connector_id": 1, "amount_som": 40}


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    async with running_rig(db, dsn, tmp_path, nursery) as rig:
        yield rig


async def test_a_start_sent_three_times_and_again_is_one_session(rig: Rig) -> None:
    client, headers = await rig.client("100")
    keyed = {**headers, "Idempotency-Key": "start-7f3a9c"}
    replies: list[httpx.Response] = []
    async with rig.charger() as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)

        async def send() -> None:
            replies.append(await rig.http.post("/api/v1/charging/start", headers=keyed, json=START))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(send)
        done = [r for r in replies if r.status_code == 200]
        busy = [r for r in replies if r.status_code != 200]
        assert done, [r.text for r in replies]
        assert {(r.status_code, r.json()["error"]) for r in busy} <= {(409, "request_in_progress")}
        session = done[0].json()["session_id"]
        assert {r.json()["session_id"] for r in done} == {session}

        again = await rig.http.post("/api/v1/charging/start", headers=keyed, json=START)
        assert again.status_code == 200, again.text
        assert again.json() == done[0].json()
        assert again.headers["Idempotent-Replayed"] == "true"

        assert (
            await rig.db.fetchval(
                "SELECT count(*) FROM charging_sessions WHERE client_id = $1", client
            )
            == 1
        )
        holds = await rig.db.fetchval("SELECT count(*) FROM holds WHERE client_id = $1", client)
        assert holds == 1
        balance = await rig.balance(headers)
        assert balance["reserved"] == 40

        # the same key with another request: refused, nothing more reserved
        other = await rig.http.post(
            "/api/v1/charging/start", headers=keyed, json={**START, "amount_som": 50}
        )
        assert (other.status_code, other.json()["error"]) == (422, "idempotency_conflict")
        elsewhere = await rig.http.post(
            "/api/v1/charging/stop", headers=keyed, json={"session_id": session}
        )
        assert (elsewhere.status_code, elsewhere.json()["error"]) == (422, "idempotency_conflict")
        assert (await rig.balance(headers))["reserved"] == 40

        # another client's same key is its own: its start is tried (and refused: the connector
        # is taken), not answered with the first client's session
        _, theirs = await rig.client("100")
        their = await rig.http.post(
            "/api/v1/charging/start",
            headers={**theirs, "Idempotency-Key": "start-7f3a9c"},
            json=START,
        )
        assert (their.status_code, their.json()["error"]) == (409, "connector_occupied")

        stop = {**headers, "Idempotency-Key": "stop-1"}
        stopped = await rig.http.post(
            "/api/v1/charging/stop", headers=stop, json={"session_id": session}
        )
        assert stopped.status_code == 200, stopped.text
        restopped = await rig.http.post(
            "/api/v1/charging/stop", headers=stop, json={"session_id": session}
        )
        assert restopped.json() == stopped.json()
        assert restopped.headers["Idempotent-Replayed"] == "true"


async def test_malformed_keys_and_refusals_are_not_kept(rig: Rig) -> None:
    _, headers = await rig.client("100")
    for bad in [b"", b"x" * 256, b"has space", "ключ".encode()]:
        sent: dict[str, str | bytes] = {**headers, "Idempotency-Key": bad}
        reply = await rig.http.post("/api/v1/charging/start", headers=sent, json=START)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_idempotency_key"), bad
    # an answer given without a client (401) is not kept: the same key later, signed in, works
    nowhere = {**START, "station_id": "CP-404"}
    anonymous = await rig.http.post(
        "/api/v1/charging/start", headers={"Idempotency-Key": "k-1"}, json=nowhere
    )
    assert anonymous.status_code == 401
    keyed = {**headers, "Idempotency-Key": "k-1"}
    refused = await rig.http.post("/api/v1/charging/start", headers=keyed, json=nowhere)
    assert refused.json()["error"] == "station_not_found"  # a refusal is an answer: kept ...
    again = await rig.http.post("/api/v1/charging/start", headers=keyed, json=nowhere)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == refused.json()
    # ... but a 5xx is not (no charger connected: 503), so its retry is tried afresh
    keyed = {**headers, "Idempotency-Key": "k-2"}
    offline = await rig.http.post("/api/v1/charging/start", headers=keyed, json=START)
    assert (offline.status_code, offline.json()["error"]) == (503, "station_offline")
    retried = await rig.http.post("/api/v1/charging/start", headers=keyed, json=START)
    assert retried.status_code == 503 and "Idempotent-Replayed" not in retried.headers
    assert await rig.db.fetchval("SELECT count(*) FROM holds") == 0


async def test_an_answer_outlives_a_restart(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Answers are written behind the request, in batches; a stop writes what waits, and the
    next server knows the keys: the retry after the restart is replayed from the database."""
    client = uuid.uuid4()
    keyed = {**bearer(hs256(client)), "Idempotency-Key": "topup-after-restart"}
    body = {"station_id": "CP-404", "connector_id": 1, "amount_som": 40}

    async def one_server(
        task_status: trio.TaskStatus[httpx.Response] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        settings = Settings(
            database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, jwt_secret=SECRET
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as inner:
            endpoints: Endpoints = await inner.start(run_server, settings, shutdown)
            async with httpx.AsyncClient(base_url=endpoints.http_url) as http:
                reply = await http.post("/api/v1/charging/start", headers=keyed, json=body)
            shutdown.set()
        task_status.started(reply)  # the server has stopped

    first: httpx.Response = await nursery.start(one_server)
    assert (first.status_code, first.json()["error"]) == (404, "station_not_found")
    kept = await db.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE key = $1", keyed["Idempotency-Key"]
    )
    assert kept == 1
    second: httpx.Response = await nursery.start(one_server)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
