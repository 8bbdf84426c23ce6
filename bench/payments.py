"""Top-ups on one cpms node: ``topup-qr`` latency with the in-process sandbox, then provider
webhooks processed per second with exactly-once crediting.

Starts ``cpms serve`` on a temporary embedded database; ``--invoices`` clients each ask for a QR
invoice (``--concurrency`` at once: the latency percentiles); then every invoice is approved by
a signed webhook, and told again by a second one (another delivery, another signature), all
``--concurrency`` at once: webhooks per second. Finally every client's balance is read back: it
must be its invoice's amount exactly (credited once, nothing else credited).

    python bench/payments.py                         # 2,000 invoices, 4,000 webhooks
    python bench/payments.py --invoices 500 --concurrency 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import trio
from cpms_process import Steal, report, serving

from api.webhooks import sign

JWT_SECRET = "bench-jwt-secret-0123456789-0123456789"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"


def token(client: uuid.UUID) -> str:
    now = int(time.time())
    claims = {"sub": str(client), "aud": "authenticated", "iat": now, "exp": now + 7200}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"invoices": args.invoices, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        async with serving(
            Path(tmp),
            CPMS_JWT_SECRET=JWT_SECRET,
            CPMS_PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        ) as served:
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(
                base_url=served.http_url, timeout=60, limits=limits
            ) as http:
                clients = [uuid.uuid4() for _ in range(args.invoices)]
                amounts = {c: Decimal(10 + i % 990) for i, c in enumerate(clients)}
                invoices: dict[uuid.UUID, str] = {}
                latencies: list[float] = []
                errors = 0
                limiter = trio.CapacityLimiter(args.concurrency)

                async def topup(client: uuid.UUID) -> None:
                    nonlocal errors
                    headers = {"Authorization": f"Bearer {token(client)}"}
                    body = {"amount": str(amounts[client])}
                    async with limiter:
                        began = time.perf_counter()
                        reply = await http.post(
                            "/api/v1/balance/topup-qr", json=body, headers=headers
                        )
                        latencies.append(time.perf_counter() - began)
                    if reply.status_code == 200:
                        invoices[client] = reply.json()["invoice_id"]
                    else:
                        errors += 1

                steal = Steal()
                began = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for client in clients:
                        nursery.start_soon(topup, client)
                elapsed = time.perf_counter() - began
                result["topup_qr"] = {
                    **percentiles(latencies),
                    "per_second": round(len(latencies) / elapsed),
                    "errors": errors,
                    "machine_steal_pct": steal.percent(),
                }

                accepted = refused = 0

                async def webhook(client: uuid.UUID, delivery: int) -> None:
                    nonlocal accepted, refused
                    payload = {
                        "invoice_id": invoices[client],
                        "status": "approved",
                        "transaction_id": f"BENCH-{client}",
                        "amount": str(amounts[client]),
                    }
                    raw = json.dumps(payload).encode()
                    stamp = str(int(time.time()) + delivery)  # another delivery, another signature
                    headers = {
                        "Content-Type": "application/json",
                        "X-Webhook-Timestamp": stamp,
                        "X-Webhook-Signature": sign(WEBHOOK_SECRET, stamp, raw),
                    }
                    async with limiter:
                        reply = await http.post(
                            "/api/v1/payment/webhook", content=raw, headers=headers
                        )
                    if reply.status_code == 200:
                        accepted += 1
                    else:
                        refused += 1

                steal = Steal()
                began = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for delivery in (0, 1):
                        for client in invoices:
                            nursery.start_soon(webhook, client, delivery)
                elapsed = time.perf_counter() - began
                result["webhooks"] = {
                    "sent": 2 * len(invoices),
                    "accepted": accepted,
                    "refused": refused,
                    "seconds": round(elapsed, 2),
                    "per_second": round(2 * len(invoices) / elapsed),
                    "machine_steal_pct": steal.percent(),
                }

                wrong = 0

                async def check(client: uuid.UUID) -> None:
                    nonlocal wrong
                    headers = {"Authorization": f"Bearer {token(client)}"}
                    async with limiter:
                        reply = await http.get("/api/v1/balance/get", headers=headers)
                    if Decimal(str(reply.json()["balance"])) != amounts[client]:
                        wrong += 1

                async with trio.open_nursery() as nursery:
                    for client in invoices:
                        nursery.start_soon(check, client)
                result["exactly_once"] = {"balances_checked": len(invoices), "wrong": wrong}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
