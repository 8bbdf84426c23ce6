"""Schemathesis over the OpenAPI document (issue 15): requests generated from every operation's
schema, valid and not, with an app token and with the admin token, sent to a real server over
its socket on one kept-alive session. No answer is a 5xx, none times out."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import trio

from actors.push.webpush import new_key_pair
from storage import Database
from tests.ocpp_server import ADMIN, provision, start_server
from tests.tokens import SECRET, hs256

EXAMPLES = 5  # per operation and phase: the suite's budget; a deeper run is the same command


async def schemathesis(url: str, token: str, report: Path) -> trio.CompletedProcess[bytes]:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is installed with the test extras"
    return await trio.run_process(
        [
            cli, "run", url,
            "--checks", "not_a_server_error,response_schema_conformance",
            "--max-examples", str(EXAMPLES),
            "--seed", "15",
            "--workers", "1",
            "--request-timeout", "20",
            "--header", f"Authorization: Bearer {token}",
            "--report-dir", str(report),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=report.parent,  # its example cache stays out of the checkout
    )  # fmt: skip


async def test_no_generated_request_gets_a_server_error(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    await provision(db, "CP-1")
    vapid_key, _ = new_key_pair()  # Web Push on: its endpoints are fuzzed too
    endpoints, shutdown = await start_server(
        nursery,
        dsn,
        tmp_path,
        admin_token=ADMIN,
        jwt_secret=SECRET,
        vapid_private_key=vapid_key,
        vapid_subject="mailto:ops@example.com",
    )
    url = f"{endpoints.http_url}/api/v1/openapi.json"
    for who, token in (("app", hs256(uuid.uuid4())), ("admin", ADMIN)):
        run = await schemathesis(url, token, tmp_path / who)
        out = run.stdout.decode(errors="replace")
        assert run.returncode == 0, (who, out[-4000:], run.stderr.decode(errors="replace")[-2000:])
        assert " passed" in out and "generated" in out, out[-2000:]
    shutdown.set()
