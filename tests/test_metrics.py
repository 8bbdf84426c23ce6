"""``GET /metrics`` scraped and read with Prometheus's own text parser: requests by route and
status, OCPP messages by action and direction, stations connected, open sessions by state,
ledger batches; and the scrape token. The metrics are the process's, shared by every server a
test run starts, so each check is of a change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from storage import Database
from tests.test_charging import Rig, running_rig, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    token = "scrape-token-0123456789"
    async with running_rig(db, dsn, tmp_path, nursery, metrics_token=token) as rig:
        yield rig


async def scrape(rig: Rig) -> Samples:
    reply = await rig.http.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_scrape_shows_what_the_node_did(rig: Rig) -> None:
    before = await scrape(rig)
    _, headers = await rig.client("100")
    async with rig.charger() as cp:
        await cp.wait_booted()
        await until(lambda: not cp._outbox)
        connected = await scrape(rig)
        session = await rig.started(headers, amount_som=30)
        await rig.until_status(session, headers, "charging")
        during = await scrape(rig)
        assert value(during, "cpms_sessions", state="charging") >= 1
        for state in ("reserved", "starting", "charging", "stopping"):  # every state is named
            assert ("cpms_sessions", (("state", state),)) in during
    gone = value(before, "cpms_stations_connected")
    with trio.fail_after(10):  # the server sees the charger gone a moment after it left
        while value(await scrape(rig), "cpms_stations_connected") != gone:  # noqa: ASYNC110
            await trio.sleep(0.05)

    assert (
        value(connected, "cpms_stations_connected") == value(before, "cpms_stations_connected") + 1
    )

    def grew(name: str, **labels: str) -> float:
        return value(during, name, **labels) - value(before, name, **labels)

    assert grew("cpms_ocpp_messages_total", action="BootNotification", direction="in") >= 1
    assert grew("cpms_ocpp_messages_total", action="StartTransaction", direction="in") >= 1
    assert grew("cpms_ocpp_messages_total", action="RemoteStartTransaction", direction="out") >= 1
    route = "/api/v1/charging/start"
    assert grew("cpms_http_requests_total", method="POST", route=route, status="200") == 1
    assert grew("cpms_http_request_duration_seconds_count", method="POST", route=route) == 1
    assert grew("cpms_ledger_batch_seconds_count") >= 2  # the top-up, the hold
    assert ("cpms_actor_restarts_total", ()) in during


async def test_the_scrape_asks_for_its_token_when_one_is_set(rig: Rig) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = await rig.http.get("/metrics", headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")
    assert await scrape(rig)  # with it: the text format
