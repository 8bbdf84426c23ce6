"""A thousand QR top-ups through a whole cpms (its own process, on the O!Dengi-style adapter)
and the payment sandbox service (``cpms sandbox-pay``, its own process), the sandbox an
unreliable provider: webhooks duplicated (replayed byte for byte, or signed afresh), reordered,
dropped, delayed past the invoice's expiry; invoices paid, paid with no webhook at all (only a
poll finds out), canceled then paid, canceled, left to expire, paid after they expired; and the
server killed (SIGKILL) in the middle of issuing invoices and restarted. Every invoice the
sandbox holds approved is credited exactly once, no other invoice is credited, and every
client's balance is the sum of its ledger entries."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from storage import open_storage
from storage.clients import ensure_client
from tests.paysandbox import PASSWORD, SID, sandbox_process
from tests.test_cli import clean_env, free_port, wait_healthy
from tests.tokens import SECRET, bearer, hs256

WEBHOOK_SECRET = "storm-webhook-secret-0123456789abcdef"
INVOICES, BATCH, CLIENTS = 1000, 100, 40
LIFETIME, POLL_EVERY = 8, 2
#: what the payer does with each invoice, by its number modulo 20
PLAN = (
    ["pay"] * 11
    + ["pay_silently"] * 2  # no webhook: a poll must find it
    + ["cancel_then_pay"] * 2
    + ["cancel"]
    + ["leave"]  # it expires
    + ["pay_late"] * 3  # after it expired: its webhook is credited all the same
)


def serve(env: dict[str, str], http: int, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cpms", "serve", "--http-port", str(http), "--ocpp-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
        text=True,
    )


async def provision_clients(pg_dir: Path) -> list[uuid.UUID]:
    clients = [uuid.uuid4() for _ in range(CLIENTS)]
    async with open_storage(database_url=None, pg_dir=pg_dir) as db:
        for client in clients:
            await ensure_client(db, client)
    return clients


async def ledger_facts(pg_dir: Path) -> tuple[dict[str, tuple[int, Decimal]], list[Any], int]:
    """Top-up entries by invoice (how many, how much), clients whose balance is not the sum of
    their entries, and invoices still open."""
    async with open_storage(database_url=None, pg_dir=pg_dir) as db:
        rows = await db.fetch(
            "SELECT invoice_id, count(*) AS n, sum(amount) AS total FROM ledger_entries "
            "WHERE type = 'topup' GROUP BY invoice_id"
        )
        wrong = await db.fetch(
            "SELECT c.id FROM clients c LEFT JOIN ledger_entries l ON l.client_id = c.id "
            "GROUP BY c.id, c.balance HAVING c.balance <> coalesce(sum(l.amount), 0)"
        )
        still_open = await db.fetchval(
            "SELECT count(*) FROM invoices WHERE state IN ('created', 'pending')"
        )
    return {r["invoice_id"]: (r["n"], r["total"]) for r in rows}, list(wrong), still_open


async def settled(
    http: httpx.AsyncClient, base: str, clients: list[uuid.UUID], approved: set[str]
) -> bool:
    """The server holds no invoice open, and every one approved at the sandbox approved (its
    credit is written before the row that says approved)."""
    seen: set[str] = set()
    for client in clients:
        reply = await http.get(
            f"{base}/api/v1/payment/history?limit=100", headers=bearer(hs256(client))
        )
        for payment in reply.json()["payments"]:
            if payment["status"] == 0:
                return False
            if payment["status"] == 1:
                seen.add(payment["invoice_id"])
    return seen >= approved


async def test_a_thousand_invoices_through_an_unreliable_provider_and_a_sigkill(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    clients = await provision_clients(data / "pg")
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    shared = {
        **clean_env(data),
        "CPMS_ODENGI_SID": SID,
        "CPMS_ODENGI_PASSWORD": PASSWORD,
        "CPMS_PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CPMS_LOG_LEVEL": "WARNING",
    }
    sandbox, pay_url = sandbox_process(
        shared,
        tmp_path / "sandbox.log",
        "--webhook-url",
        f"{base}/api/v1/payment/webhook",
        "--duplicate",
        "0.3",
        "--drop",
        "0.15",
        "--delay-max",
        str(LIFETIME + 2),  # some arrive after the invoice expired
        "--seed",
        "18",
    )
    env = {
        **shared,
        "CPMS_JWT_SECRET": SECRET,
        "CPMS_PAYMENT_PROVIDER": "odengi",
        "CPMS_ODENGI_URL": f"{pay_url}/api/json/json.php",
        "CPMS_PAYMENT_INVOICE_LIFETIME": str(LIFETIME),
        "CPMS_PAYMENT_POLL_EVERY": str(POLL_EVERY),
        "CPMS_RATE_LIMIT_CRITICAL": "0",  # each client tops up ten times within seconds
    }
    server_log = tmp_path / "server.log"
    server = serve(env, http_port, server_log)
    rng = random.Random(18)
    issued: dict[str, str] = {}  # invoice → what the payer does
    late: list[str] = []
    refused: Counter[str] = Counter()
    midway = trio.Event()
    limits = httpx.Limits(max_connections=20)
    try:
        await trio.to_thread.run_sync(wait_healthy, base, server)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:

            async def issue(number: int) -> None:
                client = clients[number % CLIENTS]
                amount = f"{rng.randint(10, 5000)}.{rng.randint(0, 99):02d}"
                try:
                    reply = await http.post(
                        f"{base}/api/v1/balance/topup-qr",
                        headers=bearer(hs256(client)),
                        json={"amount": amount},
                    )
                except httpx.HTTPError:  # the server was killed under this request
                    refused["lost"] += 1
                    return
                if reply.status_code != 200:
                    refused[str(reply.status_code)] += 1
                    return
                issued[reply.json()["invoice_id"]] = PLAN[number % len(PLAN)]
                if len(issued) >= kill_after:
                    midway.set()  # the server is killed while the next ones are being issued

            async def payer(path: str) -> None:
                reply = await http.post(f"{pay_url}/sandbox/invoices/{path}")
                assert reply.status_code == 200, reply.text

            async def act(invoice: str) -> None:
                match issued[invoice]:
                    case "pay":
                        await payer(f"{invoice}/pay")
                    case "pay_silently":
                        await payer(f"{invoice}/pay?silent=1")
                    case "cancel_then_pay":
                        await payer(f"{invoice}/cancel")
                        await payer(f"{invoice}/pay?reliable=1")
                    case "cancel":
                        await payer(f"{invoice}/cancel")
                    case "pay_late":
                        late.append(invoice)

            for start in range(0, INVOICES, BATCH):
                before = set(issued)
                kill_after = len(before) + 10
                async with trio.open_nursery() as nursery:
                    for number in range(start, start + BATCH):
                        nursery.start_soon(issue, number)
                    if start == INVOICES // 2:  # killed while issuing: no goodbye
                        await midway.wait()
                        server.send_signal(signal.SIGKILL)
                if start == INVOICES // 2:
                    await trio.to_thread.run_sync(server.wait)
                    server = serve(env, http_port, server_log)
                    await trio.to_thread.run_sync(wait_healthy, base, server)
                async with trio.open_nursery() as nursery:
                    for invoice in set(issued) - before:
                        nursery.start_soon(act, invoice)

            await trio.sleep(LIFETIME + 1)  # the last of them have expired now
            async with trio.open_nursery() as nursery:
                for invoice in late:
                    nursery.start_soon(payer, f"{invoice}/pay?reliable=1")

            # every webhook delivered (or refused) and acted on: the sandbox answers when so
            stats = (await http.get(f"{pay_url}/sandbox/stats?wait=180", timeout=200)).json()
            assert stats["outstanding"] == 0, stats
            at_sandbox = (await http.get(f"{pay_url}/sandbox/invoices")).json()
            approved = {
                i["order_id"]: Decimal(i["amount"]) / 100
                for i in at_sandbox
                if i["status"] == "approved"
            }
            with trio.fail_after(120):  # polls and late credits finish
                while not await settled(http, base, clients, set(approved)):  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        sandbox.kill()
        await trio.to_thread.run_sync(server.wait)
        await trio.to_thread.run_sync(sandbox.wait)

    credited, wrong, still_open = await ledger_facts(data / "pg")
    assert len(issued) > INVOICES * 0.85, refused  # the kill lost a few requests, not more
    assert set(approved) <= set(issued)  # the payer paid only invoices it was given
    assert credited == {invoice: (1, amount) for invoice, amount in approved.items()}
    assert wrong == [] and still_open == 0
    expected = {plan for plan in PLAN if plan not in ("cancel", "leave")}
    assert {issued[i] for i in approved} == expected
    faults = stats["webhooks"]
    assert faults["dropped"] > 0 and faults["duplicated"] > 0 and faults["replay_refused"] > 0
    assert faults.get("attempts_failed", 0) > 0  # some met the server down, and were retried
