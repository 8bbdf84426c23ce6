"""The ``cpms`` command: a real ``cpms serve`` process on the embedded database, and the admin
commands (run in-process against a test database)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio

from actors.session.messages import hold_for, session_tag
from cpms.cli.main import main
from cpms.settings import load_settings
from storage import open_database
from storage import payments as payments_store
from tests.ocpp_server import provision


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpms(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpms", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPMS_")}
    env["CPMS_DATA_DIR"] = str(data_dir)
    return env


def wait_healthy(url: str, proc: subprocess.Popen[str], within: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            response = httpx.get(f"{url}/health", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        assert response.status_code == 200
        return dict(response.json())
    raise AssertionError(f"/health did not answer within {within} s")


def serve(env: dict[str, str], http: int, ocpp: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cpms",
            "serve",
            "--http-port",
            str(http),
            "--ocpp-port",
            str(ocpp),
            "--log-format",
            "json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - began, err


def test_serve_on_embedded_postgres_reuses_data_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "data")
    http, ocpp = free_port(), free_port()
    client = str(uuid.uuid4())

    proc = serve(env, http, ocpp)
    try:
        health = wait_healthy(f"http://127.0.0.1:{http}", proc)
        assert health["database"] == {**health["database"], "ok": True, "embedded": True}  # type: ignore[dict-item]
        # An admin command works while the server runs on the same data directory.
        credited = cpms(
            "wallet", "credit", client, "250.75", "--reason", "welcome", "--create", env=env
        )
        assert credited.returncode == 0, credited.stderr
    finally:
        code, took, err = stop(proc)
    assert code == 0, err
    assert took < 10
    lines = err.splitlines()
    assert any('"event": "stopped"' in line for line in lines), err  # one JSON object per line
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()  # database stopped

    proc = serve(env, http, ocpp)
    try:
        wait_healthy(f"http://127.0.0.1:{http}", proc)
        shown = cpms("wallet", "show", client, env=env)
    finally:
        code, _took, err = stop(proc)
    assert code == 0, err
    assert "250.75" in shown.stdout and "welcome" in shown.stdout


def test_wallet_commands(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    client = str(uuid.uuid4())
    assert (
        main(
            ["wallet", "credit", client, "500", "--reason", "promo", "--create", "--key", "promo-1"]
        )
        == 0
    )
    assert "balance 500.00" in capsys.readouterr().out
    assert main(["wallet", "credit", client, "500", "--reason", "promo", "--key", "promo-1"]) == 0
    assert "already applied" in capsys.readouterr().out
    assert main(["wallet", "adjust", client, "-120.50", "--reason", "refund error"]) == 0
    assert "balance 379.50" in capsys.readouterr().out
    assert main(["wallet", "show", client]) == 0
    shown = capsys.readouterr().out
    assert "379.50" in shown and "adjustment" in shown and "refund error" in shown
    assert main(["wallet", "check"]) == 0
    assert "ledger OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wallet", "credit", "not-a-uuid", "5", "--reason", "x"], "invalid_client_id"),
        (["wallet", "credit", "{client}", "1.001", "--reason", "x"], "decimal places"),
        (["wallet", "credit", "{client}", "-5", "--reason", "x"], "must be positive"),
        (["wallet", "credit", "{unknown}", "5", "--reason", "x"], "client_not_found"),
        (["wallet", "adjust", "{client}", "-1000", "--reason", "x"], "insufficient_balance"),
        (["wallet", "show", "{unknown}"], "client_not_found"),
    ],
)
def test_wallet_refusals(
    cli_env: None, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    client = str(uuid.uuid4())
    assert main(["wallet", "credit", client, "10", "--reason", "seed", "--create"]) == 0
    capsys.readouterr()
    filled = [a.format(client=client, unknown=uuid.uuid4()) for a in args]
    assert main(filled) == 1
    assert message in capsys.readouterr().err
    assert main(["wallet", "show", client]) == 0
    assert "10.00" in capsys.readouterr().out  # nothing changed


async def _provision_station(dsn: str) -> None:
    async with open_database(dsn, pool_size=1) as db:
        await provision(db, "CP-1")


async def _two_held_sessions(dsn: str, client: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """Two sessions holding money: one started a minute ago, one whose start deadline passed
    long ago (its actor gone: nothing drives it)."""
    async with open_database(dsn, pool_size=2) as db:
        now = datetime.now(UTC)
        ids = []
        for station, connector, age in (("CP-1", 1, 60), ("CP-1", 2, 7200)):
            session = uuid.uuid4()
            created = now - timedelta(seconds=age)
            await db.execute(
                """INSERT INTO holds (id, client_id, amount, session_id, status, created_at)
                   VALUES ($1, $2, 20, $3, 'held', $4)""",
                hold_for(session), client, session, created,
            )  # fmt: skip
            await db.execute(
                """INSERT INTO charging_sessions
                     (id, client_id, station_id, connector_id, id_tag, origin, limit_type,
                      limit_value, status, reserved_amount, hold_id, start_deadline,
                      max_deadline, created_at)
                   VALUES ($1, $2, $3, $4, $5, 'app', 'amount', 20, 'starting', 20, $6,
                           $7, $8, $9)""",
                session, client, station, connector, session_tag(session), hold_for(session),
                created + timedelta(minutes=10), created + timedelta(hours=12), created,
            )  # fmt: skip
            ids.append(session)
        return ids[0], ids[1]


def test_open_sessions_and_stale_holds_are_shown(
    cli_env: None, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = uuid.uuid4()
    assert main(["wallet", "credit", str(client), "100", "--reason", "seed", "--create"]) == 0
    trio.run(_provision_station, dsn)
    fresh, stuck = trio.run(_two_held_sessions, dsn, client)
    capsys.readouterr()
    assert main(["sessions", "list", "--open"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fresh_line = next(line for line in lines if str(fresh) in line)
    stuck_line = next(line for line in lines if str(stuck) in line)
    assert "starting" in fresh_line and "OVERDUE" not in fresh_line and "age      1m" in fresh_line
    assert "OVERDUE" in stuck_line and "2h00m" in stuck_line
    assert main(["wallet", "check"]) == 1
    out = capsys.readouterr().out
    assert "STALE HOLD 20.00 KGS" in out
    assert str(stuck) in out and str(fresh) not in out


def test_migrate_reports_up_to_date(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_vapid_keys_prints_a_pair_the_server_takes(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vapid-keys"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    given = dict(line.split("=", 1) for line in lines)
    assert set(given) == {"CPMS_VAPID_PRIVATE_KEY", "CPMS_VAPID_PUBLIC_KEY", "CPMS_VAPID_SUBJECT"}
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    keys = load_settings().vapid_keys()
    assert keys is not None and keys.public_key == given["CPMS_VAPID_PUBLIC_KEY"]


def test_bad_configuration_exits_2(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CPMS_OCPP_PORTT", "1")
    assert main(["migrate"]) == 2
    assert "CPMS_OCPP_PORTT: unknown setting" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["migrate"],
        ["wallet", "credit"],
        ["wallet", "adjust"],
        ["wallet", "show"],
        ["wallet", "check"],
        ["sessions", "list"],
        ["sim"],
        ["demo"],
        ["payments", "list"],
        ["payments", "show"],
        ["payments", "refund"],
        ["sandbox-pay"],
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: cpms" in capsys.readouterr().out


async def _two_invoices(dsn: str, client: uuid.UUID) -> list[str]:
    async with open_database(dsn) as db:
        now = datetime.now(UTC)
        made = []
        for method, amount, mask in (("qr", "150", None), ("card", "80", "416958******5678")):
            row = await payments_store.create(
                db,
                client_id=client,
                provider="sandbox",
                method=method,
                amount=Decimal(amount),
                description=None,
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
                card_mask=mask,
            )
            assert row is not None
            made.append(row)
        await payments_store.audit(
            db, "issued", invoice_id=made[0]["id"], client_id=client, amount="150"
        )
        return [row["id"] for row in made]


def test_payments_are_listed_and_shown(
    cli_env: None, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = uuid.uuid4()
    assert main(["wallet", "credit", str(client), "1", "--reason", "seed", "--create"]) == 0
    qr, by_card = trio.run(_two_invoices, dsn, client)
    capsys.readouterr()
    assert main(["payments", "list"]) == 0
    listed = capsys.readouterr().out
    assert qr in listed and by_card in listed
    assert "416958******5678" in listed and "2 invoice(s)" in listed
    assert main(["payments", "list", "--state", "approved"]) == 0
    assert "0 invoice(s)" in capsys.readouterr().out
    assert main(["payments", "show", qr]) == 0
    shown = capsys.readouterr().out
    assert "state: created" in shown and "issued" in shown
    assert main(["payments", "show", "INV-20261203-999999"]) != 0
    assert "not found" in capsys.readouterr().err
