"""Top-ups on one cpms node: ``topup-qr`` latency with the in-process sandbox, then provider
webhooks processed per second with exactly-once crediting.

Starts ``cpms serve`` on a temporary embedded database; ``--invoices`` clients each ask for a QR
invoice (``--concurrency`` at once: the latency percentiles); then every invoice is approved by
a signed webhook, and then told again by a second one (another delivery, another signature),
``--concurrency`` at once: webhooks per second, in all and for each half (an approval is
credited, a duplicate only answered). Finally every client's balance is read back: it
must be its invoice's amount exactly (credited once, nothing else credited).

    python bench/payments.py                         # 2,000 invoices, 4,000 webhooks
    python bench/payments.py --door rest             # the webhooks to the REST port instead
    python bench/payments.py --invoices 500 --concurrency 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import trio
from cpms_process import RawHttp, Steal, free_port, report, serving

from cpms.kernel.payments import webhook_signature as sign

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


async def pooled(host: str, port: int, jobs: list[Any], work: Any, concurrency: int) -> None:
    """Run ``work(http, job)`` for every job, ``concurrency`` at once, each worker on its own
    kept-alive connection (a minimal client: the bench's CPU is not the server's)."""
    send, receive = trio.open_memory_channel[Any](len(jobs))
    for job in jobs:
        send.send_nowait(job)
    send.close()

    async def worker() -> None:
        http = RawHttp(host, port)
        async for job in receive:
            await work(http, job)
        await http.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "invoices": args.invoices,
        "concurrency": args.concurrency,
        "webhook_door": args.door,
    }
    own = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        async with serving(
            Path(tmp),
            CPMS_JWT_SECRET=JWT_SECRET,
            CPMS_PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            CPMS_PAYMENT_WEBHOOK_PORT=str(own),
        ) as served:
            host, port = served.http_url.removeprefix("http://").split(":")
            hooks = own if args.door == "own" else int(port)
            clients = [uuid.uuid4() for _ in range(args.invoices)]
            amounts = {c: Decimal(10 + i % 990) for i, c in enumerate(clients)}
            invoices: dict[uuid.UUID, str] = {}
            latencies: list[float] = []
            errors = 0

            async def topup(http: RawHttp, client: uuid.UUID) -> None:
                nonlocal errors
                headers = {"Authorization": f"Bearer {token(client)}"}
                began = time.perf_counter()
                status, body = await http.post(
                    "/api/v1/balance/topup-qr", headers, {"amount": str(amounts[client])}
                )
                latencies.append(time.perf_counter() - began)
                if status == 200:
                    invoices[client] = body["invoice_id"]
                else:
                    errors += 1

            steal = Steal()
            began = time.perf_counter()
            await pooled(host, int(port), clients, topup, args.concurrency)
            elapsed = time.perf_counter() - began
            result["topup_qr"] = {
                **percentiles(latencies),
                "per_second": round(len(latencies) / elapsed),
                "errors": errors,
                "machine_steal_pct": steal.percent(),
            }

            accepted = refused = 0

            def signed(client: uuid.UUID, delivery: int) -> tuple[dict[str, str], bytes]:
                payload = {
                    "invoice_id": invoices[client],
                    "status": "approved",
                    "transaction_id": f"BENCH-{client}",
                    "amount": str(amounts[client]),
                }
                raw = json.dumps(payload).encode()
                stamp = str(int(time.time()) + delivery)  # another delivery, another signature
                headers = {
                    "X-Webhook-Timestamp": stamp,
                    "X-Webhook-Signature": sign(WEBHOOK_SECRET, stamp, raw),
                }
                return headers, raw

            firsts = [signed(c, 0) for c in invoices]
            seconds = [signed(c, 1) for c in invoices]

            async def webhook(http: RawHttp, delivery: tuple[dict[str, str], bytes]) -> None:
                nonlocal accepted, refused
                status, _ = await http.post("/api/v1/payment/webhook", *delivery)
                if status == 200:
                    accepted += 1
                else:
                    refused += 1

            steal = Steal()
            print("webhooks: begin", file=sys.stderr, flush=True)  # for a profiler to attach
            began = time.perf_counter()
            await pooled(host, hooks, firsts, webhook, args.concurrency)
            middle = time.perf_counter()
            await pooled(host, hooks, seconds, webhook, args.concurrency)
            print("webhooks: end", file=sys.stderr, flush=True)
            ended = time.perf_counter()
            result["webhooks"] = {
                "sent": len(firsts) + len(seconds),
                "accepted": accepted,
                "refused": refused,
                "seconds": round(ended - began, 2),
                "per_second": round((len(firsts) + len(seconds)) / (ended - began)),
                "approvals_per_second": round(len(firsts) / (middle - began)),
                "duplicates_per_second": round(len(seconds) / (ended - middle)),
                "machine_steal_pct": steal.percent(),
            }

            wrong = 0
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=served.http_url, limits=limits) as checker:
                limiter = trio.CapacityLimiter(args.concurrency)

                async def check(client: uuid.UUID) -> None:
                    nonlocal wrong
                    headers = {"Authorization": f"Bearer {token(client)}"}
                    async with limiter:
                        reply = await checker.get("/api/v1/balance/get", headers=headers)
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
    parser.add_argument(
        "--door",
        choices=["own", "rest"],
        default="own",
        help="webhooks to their own port (CPMS_PAYMENT_WEBHOOK_PORT) or to the REST port",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
