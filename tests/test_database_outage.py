"""The embedded PostgreSQL killed (SIGKILL) under a charging session (issue 15, item 3): while it
is down the app gets 503 with Retry-After (never 500) and chargers are still answered; cpms
starts the database again by itself, and the session settles exactly; no actor crash-loops into
retirement and the server never exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import trio

from sim.charger import VirtualChargePoint
from tests.test_charging_restart import PASSWORD, check_ledger, provision
from tests.test_cli import clean_env, cpms, free_port, wait_healthy
from tests.tokens import SECRET, bearer, hs256


def serve_logging_to(
    log_path: Path, env: dict[str, str], http: int, ocpp: int
) -> subprocess.Popen[str]:
    """``cpms serve`` writing its log to a file (a pipe nobody reads would block it)."""
    with log_path.open("w") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "cpms", "serve", "--http-port", str(http),
             "--ocpp-port", str(ocpp), "--log-format", "json"],
            env=env, stdout=log_file, stderr=log_file, text=True,
        )  # fmt: skip


def postmaster_pid(pg_dir: Path) -> int:
    return int((pg_dir / "postmaster.pid").read_text().split()[0])


async def test_the_database_killed_under_a_session_comes_back_and_the_session_settles(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {**clean_env(data), "CPMS_JWT_SECRET": SECRET}
    await provision(data / "pg")
    http_port, ocpp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    client = uuid.uuid4()
    me = bearer(hs256(client))
    credited = await trio.to_thread.run_sync(
        lambda: cpms("wallet", "credit", str(client), "300", "--reason", "t", "--create", env=env)
    )
    assert credited.returncode == 0, credited.stderr
    log_path = tmp_path / "server.log"
    server = serve_logging_to(log_path, env, http_port, ocpp_port)
    cp = VirtualChargePoint(
        "CP-K",
        f"ws://127.0.0.1:{ocpp_port}/ws",
        password=PASSWORD,
        connectors=1,
        meter_interval=0.2,
        time_scale=60,
        reconnect_delay=(0.2, 0.5),
    )
    try:
        await trio.to_thread.run_sync(wait_healthy, base, server)
        async with cp, httpx.AsyncClient(base_url=base, timeout=30) as http:
            await cp.wait_booted(timeout=30)
            reply = await http.post(
                "/api/v1/charging/start",
                headers=me,
                json={"station_id": "CP-K", "connector_id": 1, "amount_som": 200},
            )
            assert reply.status_code == 200, reply.text
            session = reply.json()["session_id"]
            with trio.fail_after(30):
                while cp.connectors[1].tx is None or cp.connectors[1].tx.transaction_id is None:  # noqa: ASYNC110
                    await trio.sleep(0.05)

            os.kill(postmaster_pid(data / "pg"), signal.SIGKILL)
            unavailable = None
            with trio.fail_after(30):  # some request meets the database down
                while unavailable is None:
                    for path in ("/api/v1/balance/get", f"/api/v1/charging/status/{session}"):
                        reply = await http.get(path, headers=me)
                        assert reply.status_code != 500, reply.text
                        if reply.status_code == 503:
                            unavailable = reply
                    await trio.sleep(0.02)
            assert unavailable.json()["error"] == "service_unavailable"
            assert int(unavailable.headers["Retry-After"]) > 0

            with trio.fail_after(60):  # cpms starts it again by itself
                while (await http.get("/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.2)
            await cp.unplug(1)
            meter_stop = cp.connectors[1].register
            with trio.fail_after(60):
                while True:
                    reply = await http.get(f"/api/v1/charging/status/{session}", headers=me)
                    if reply.status_code == 200 and reply.json()["session"]["status"] == "settled":
                        break
                    await trio.sleep(0.1)
            assert server.poll() is None  # it never exited
    finally:
        server.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: server.wait(timeout=30))
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert "embedded PostgreSQL is up again" in log
    assert "actor retired" not in log and "supervisor giving up" not in log
    balance, row = await check_ledger(data / "pg", client)
    energy = (Decimal(meter_stop) - Decimal(row["meter_start_wh"])) / 1000  # type: ignore[arg-type]
    cost = (energy * 15 + 10).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert row["final_cost"] == cost and balance == Decimal("300") - cost
