"""The running server: /health, error shapes, orderly shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from tests.documented import documented_client


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> Settings:
    return Settings(database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0)


async def test_health_reports_database_and_actors(settings: Settings) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
        async with documented_client(base_url=endpoints.http_url) as http:
            health = await http.get("/health")
            missing = await http.get("/api/v1/nothing-here")
            wrong_method = await http.delete("/health")
        shutdown.set()
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["actors"]["storage_actor"] == "running"
    assert body["actors"]["registered"] == {"storage": 1}
    assert missing.status_code == 404
    assert missing.json()["success"] is False and missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


async def test_shutdown_is_orderly_and_quick(settings: Settings) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_server, settings, shutdown)
        began = trio.current_time()
        shutdown.set()
    assert trio.current_time() - began < settings.shutdown_timeout
