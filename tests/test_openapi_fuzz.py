"""Schemathesis over the OpenAPI document (issue 15): requests generated from every operation's
schema, valid and not, sent to a real server over its socket on one kept-alive session: the
admin's operations with the admin token, every other one with an app token. No answer is a 5xx,
none times out."""

from __future__ import annotations

import re
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


#: the operations each token's run fuzzes: the admin's with its token, every other with an app
#: token (a request with the wrong one is refused before its body is read)
ADMIN_PATHS = "^/api/v1/admin/"
RUNS = (("app", "--exclude-path-regex"), ("admin", "--include-path-regex"))


async def schemathesis(
    url: str, token: str, select: str, report: Path
) -> trio.CompletedProcess[bytes]:
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
            select, ADMIN_PATHS,
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
    tokens = {"app": hs256(uuid.uuid4()), "admin": ADMIN}
    for who, select in RUNS:  # one after the other: the admin's run adds stations, and a
        # charge at one the app's run then finds is a 503 (station_offline) as documented
        run = await schemathesis(url, tokens[who], select, tmp_path / who)
        out = run.stdout.decode(errors="replace")
        assert run.returncode == 0, (who, out[-4000:], run.stderr.decode(errors="replace")[-2000:])
        assert " passed" in out and "generated" in out, out[-2000:]
        tested = re.search(r"Tested: (\d+)", out)
        assert tested is not None and int(tested[1]) >= 10, out[-2000:]  # the selection held
    shutdown.set()
