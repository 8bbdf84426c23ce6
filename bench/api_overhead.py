"""What the app's request machinery costs a request: ``GET /api/v1/balance/get`` and ``POST
/api/v1/charging/start`` one after the other from one client (no queueing: each figure is one
request's own time, client to server and back), p50 and p99; and the server's CPU time per
request (its process's, every thread: on a shared two-core machine the steadier figure).

The start names a station that does not exist (404): the driver's start itself is measured by
``bench/start_latency.py``; here every part a request passes through before and after its
handler is (token, rate limit, request log, metrics, headers, and on the start an
``Idempotency-Key``: looked up, then its answer kept), with the handler's own work small.
Run it on two commits back to back to see what a change adds per request.

    python bench/api_overhead.py                  # 3,000 of each
    python bench/api_overhead.py --requests 10000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import trio
from cpms_process import RawHttp, Steal, report, serving

SECRET = "bench-jwt-secret-0123456789-0123456789"


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used (user + system), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"requests": args.requests}
    client = uuid.uuid4()
    now = int(time.time())
    claims = {"sub": str(client), "aud": "authenticated", "iat": now, "exp": now + 7200}
    headers = {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
    with tempfile.TemporaryDirectory() as tmp:
        async with serving(
            Path(tmp),
            log=Path(tmp) / "server.log",
            CPMS_JWT_SECRET=SECRET,
            CPMS_RATE_LIMIT_DEFAULT="100000000",  # counted, never refused
            CPMS_RATE_LIMIT_CRITICAL="100000000",
            CPMS_LOG_LEVEL="INFO",  # the request log written, as in production
            CPMS_LOG_FORMAT="json",
        ) as served:
            host, port = served.http_url.removeprefix("http://").split(":")
            http = RawHttp(host, int(port))
            start = {"station_id": "BENCH-NOWHERE", "connector_id": 1, "amount_limit": 100}

            async def balance() -> int:
                return (await http.get("/api/v1/balance/get", headers))[0]

            async def charge() -> int:  # each a new Idempotency-Key: looked up, then kept
                keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
                return (await http.post("/api/v1/charging/start", keyed, start))[0]

            for name, call, expected in [("balance_get", balance, 200), ("start", charge, 404)]:
                for _ in range(200):  # warm: the client's record, caches, the JIT-less paths
                    await call()
                steal, samples, wrong = Steal(), [], 0
                cpu = cpu_seconds(served.pid)
                for _ in range(args.requests):
                    began = time.perf_counter()
                    status = await call()
                    samples.append(time.perf_counter() - began)
                    wrong += status != expected
                used = cpu_seconds(served.pid) - cpu
                result[name] = {
                    **percentiles(samples),
                    "server_cpu_ms_per_request": round(used / args.requests * 1000, 3),
                    "unexpected_status": wrong,
                    "machine_steal_pct": steal.percent(),
                }
            await http.aclose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
