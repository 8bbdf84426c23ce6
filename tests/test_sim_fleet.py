"""Fleets: scenarios in process, `cpms sim` and `cpms demo` as a user runs them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from sim.drivers import DriverOptions
from sim.fleet import Fleet, FleetOptions
from sim.report import build_report
from storage import Database, open_storage
from tests.ocpp_server import ADMIN, start_server
from tests.test_cli import clean_env, free_port, serve, stop, wait_healthy
from tests.tokens import SECRET


@pytest.fixture
async def open_server(dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Endpoints]:
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, ocpp_auto_register=True
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    yield endpoints
    shutdown.set()


def options(server: Endpoints, **changes: Any) -> FleetOptions:
    base: dict[str, Any] = {
        "url": server.ocpp_url,
        "stations": 12,
        "duration": 6.0,
        "ramp": 0.5,
        "meter_interval": 0.5,
        "idle_mean": 0.5,
        "stay_max": 2.0,
        "time_scale": 60.0,
    }
    return FleetOptions(**{**base, **changes})


async def test_steady_fleet_charges_and_reports(open_server: Endpoints, db: Database) -> None:
    stats = await Fleet(options(open_server)).run()
    report = build_report(stats, elapsed=6.0, scenario="steady", seed=0)
    assert report["stations"] == report["connected"] == 12
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["sessions"]["started"] == report["sessions"]["completed"] > 0
    assert report["energy_kwh"] > 0 and report["latency_ms"]["count"] == stats.messages - sum(
        stats.received.values()
    )
    recorded = await db.fetchval("SELECT count(*) FROM charging_sessions WHERE status='settled'")
    assert recorded == report["sessions"]["completed"]


async def test_rush_hour_brings_more_drivers_at_mid_run(open_server: Endpoints) -> None:
    fleet = Fleet(options(open_server, scenario="rush-hour", duration=6.0, idle_mean=2.0))
    now, rng = trio.current_time(), random.Random(0)
    rates = []
    for phase in (0.0, 0.25, 0.5, 0.75, 1.0):
        fleet.started_at = now - phase * 6.0
        rates.append(fleet._arrival_rate(rng, now))  # one instant: no clock drift between
    assert rates[0] == pytest.approx(0.5, rel=1e-3)  # 1 / idle_mean
    assert rates[-1] == pytest.approx(0.5, rel=1e-3)
    assert rates[2] == pytest.approx(2.5, rel=1e-3)  # five times at mid-run
    assert rates[1] == pytest.approx(rates[3], rel=1e-3) and rates[0] < rates[1] < rates[2]
    stats = await fleet.run()
    assert stats.errors == {} and stats.sessions_started == stats.sessions_completed > 0


async def test_reconnect_storm_recovers_every_station(open_server: Endpoints) -> None:
    stats = await Fleet(options(open_server, scenario="reconnect-storm", stations=20)).run()
    assert stats.events["storm_dropped"] == 20
    assert stats.recovery_s is not None and 0 < stats.recovery_s < 5
    assert stats.events["connected_at_end"] == 20
    assert stats.ever_connected == 40 and stats.errors == {}


async def test_faults_scenario_injects_and_survives(open_server: Endpoints) -> None:
    fleet = Fleet(options(open_server, scenario="faults", duration=10.0, stations=10))
    stats = await fleet.run()
    injected = {k for k in stats.events if k.startswith("fault:")}
    assert len(injected) >= 3, stats.events
    # a dropped connection may lose a heartbeat's answer; nothing else goes wrong
    assert set(stats.errors) <= {"timeout:Heartbeat"}, stats.errors
    assert stats.sessions_started == stats.sessions_completed


async def test_same_seed_same_decisions(open_server: Endpoints) -> None:
    def decisions(fleet: Fleet) -> dict[str, list[tuple[int, str, float, float]]]:
        return {
            cp.station_id: [
                (tx.connector_id, tx.id_tag, tx.vehicle.capacity_kwh, tx.vehicle.max_power_kw)
                for tx in cp.transactions
            ]
            for cp in fleet.chargers
        }

    runs = []
    for seed in (7, 7, 8):
        fleet = Fleet(options(open_server, stations=4, duration=3.0, seed=seed))
        await fleet.run()
        runs.append(decisions(fleet))
    first, again, other = runs
    for station, made in first.items():
        common = min(len(made), len(again[station]))
        assert made[:common] == again[station][:common]
    assert sum(min(len(v), len(again[k])) for k, v in first.items()) > 0
    assert first != other


def test_sim_command_against_cpms_serve(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "data")
    env["CPMS_OCPP_AUTO_REGISTER"] = "true"
    http, ocpp = free_port(), free_port()
    server = serve(env, http, ocpp)
    try:
        wait_healthy(f"http://127.0.0.1:{http}", server)
        run = subprocess.run(
            [
                *(sys.executable, "-m", "cpms", "sim", "--url", f"ws://127.0.0.1:{ocpp}/ws"),
                *("--stations", "40", "--workers", "2", "--duration", "8", "--ramp", "2"),
                *("--meter-interval", "1", "--idle-mean", "1", "--speed", "60"),
                *("--report", str(tmp_path / "r.json"), "--seed", "3"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert "messages/s" in run.stdout
        report = json.loads((tmp_path / "r.json").read_text())
        logged = trio.run(_logged_calls, tmp_path / "data" / "pg")
    finally:
        code, _took, err = stop(server)
    assert code == 0, err
    assert report["stations"] == report["connected"] == 40
    assert report["errors"] == 0, report["errors_by_kind"]
    assert {"p50", "p95", "p99", "max"} <= set(report["latency_ms"])
    assert report["messages_per_second"] > 0
    assert report["messages_by_action"]["sent"] == logged  # the server saw exactly what we sent


async def _logged_calls(pg_dir: Path) -> dict[str, int]:
    async with open_storage(database_url=None, pg_dir=pg_dir) as db:
        await trio.sleep(0.5)  # the message log is written in batches
        rows = await db.fetch(
            """SELECT action, count(*) AS n FROM ocpp_messages
               WHERE direction = 'in' AND message_type = 2 GROUP BY action"""
        )
    return {r["action"]: r["n"] for r in rows}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "ws://127.0.0.1:1/ws", "--stations", "0"], "must be at least 1"),
        (["--url", "ws://127.0.0.1:1/ws", "--scenario", "party"], "invalid choice"),
        (["--url", "ws://127.0.0.1:1/ws", "--duration", "soon"], "not a number"),
        (["--url", "http://127.0.0.1:1/ws"], "--url must be ws://"),
        (["--url", "ws://127.0.0.1:1/ws"], "cannot reach 127.0.0.1:1"),
        (["--url", "ws://127.0.0.1:1/ws", "--workers", "3", "--stations", "2"], "more than"),
    ],
)
def test_sim_refuses_bad_options_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cpms", "sim", *args],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode in (1, 2)
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_demo_runs_and_summarises(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "cpms", "demo", "--duration", "8", "--idle-mean", "1"),
            *("--http-port", str(free_port()), "--ocpp-port", str(free_port())),
        ],
        env=clean_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "what the server recorded" in run.stdout
    assert "OK: every balance = its entries" in run.stdout
    sessions = 0
    for line in run.stdout.splitlines():
        if "charging sessions (settled)" in line:
            sessions = int(line.split("│")[2].split("(")[0])
    assert sessions > 0, run.stdout


async def test_app_drivers_charge_through_the_rest_api(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    await db.execute("INSERT INTO tariffs (id, name, price_per_kwh) VALUES ('T', 't', 12)")
    await db.execute(
        """INSERT INTO stations (id, connectors_count, tariff_id)
           SELECT 'APP-' || lpad(n::text, 5, '0'), 2, 'T' FROM generate_series(1, 6) n"""
    )
    await db.execute(
        """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
           SELECT id, c, 'CCS2', 50 FROM stations, generate_series(1, 2) c"""
    )
    server, shutdown = await start_server(
        nursery, dsn, tmp_path, jwt_secret=SECRET, admin_token=ADMIN
    )
    drivers = DriverOptions(
        rest_url=server.http_url, drivers=4, jwt_secret=SECRET, admin_token=ADMIN, idle_mean=0.3
    )
    fleet = Fleet(
        options(server, stations=6, prefix="APP", duration=8.0, idle_mean=1000.0, drivers=drivers)
    )
    stats = await fleet.run()
    shutdown.set()
    assert stats.errors == {}, stats.errors
    assert stats.rest_calls["admin/credit"] == 4 and stats.rest_calls["charging/start"] >= 2
    assert stats.received["RemoteStartTransaction"] >= 2
    rows = await db.fetch("SELECT status, client_id FROM charging_sessions WHERE origin = 'app'")
    assert rows and all(r["status"] in ("settled", "cancelled", "rejected") for r in rows)
    for client in {r["client_id"] for r in rows}:
        balance = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
        costs = await db.fetchval(
            "SELECT coalesce(sum(final_cost), 0) FROM charging_sessions WHERE client_id = $1",
            client,
        )
        assert balance == Decimal("1000") - costs
    report = build_report(stats, elapsed=8, scenario="steady", seed=0)
    assert report["rest"]["latency_by_endpoint"]["charging/start"]["count"] >= 2
