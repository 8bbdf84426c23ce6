"""What the app's protections add to one request, measured in-process (no network, no server
to share the machine with): a QuartTrio app with one route answering a constant, called through
Quart's test client with a valid token, bare; with :class:`api.protect.Protections` (token
check, rate limit, request id, headers, request log, metrics); and with
:class:`api.idempotency.Idempotency` too. A ``GET /balance/get``, and a ``POST /charging/start``
with a new ``Idempotency-Key`` each (looked up in memory, its answer queued for the writer).
Each variant runs ``--rounds`` times in turn; the fastest round of each is reported (on a shared
machine the minimum is the figure least moved by others' work).

    python bench/api_hooks.py
    python bench/api_hooks.py --requests 3000 --rounds 12
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import trio
from cpms_process import report
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from api.auth import TokenVerifier
from api.idempotency import Idempotency
from api.protect import Protections
from api.rate_limit import Limit, RateLimiter
from cpms.logs import configure_logging

SECRET = "bench-jwt-secret-0123456789-0123456789"
UNLIMITED = (Limit("default", 10**9), Limit("critical", 10**9))


def app(protections: bool, idempotency: bool) -> QuartTrio:
    made = QuartTrio("bench")

    @made.get("/api/v1/balance/get")
    async def balance() -> Response:
        return jsonify({"success": True, "balance": "100.00"})

    @made.post("/api/v1/charging/start")
    async def start() -> Response:
        await request.get_data()
        return jsonify({"success": True, "session_id": "s", "reserved_amount": "40.00"})

    if protections:
        verifier = TokenVerifier(secret=SECRET, audience="authenticated")
        Protections(verifier, RateLimiter(), UNLIMITED, None).install(made)
    if idempotency:
        keys = Idempotency(db=None)  # type: ignore[arg-type]  # never asked: see below
        keys.kept = {}  # no key kept before: a new key is known new without asking
        keys.writing = True  # answers queued for a writer (not run here: its batches are the
        keys.install(made)  # database's work, a round trip per 50 ms, not the request's)
    return made


async def per_request_us(
    made: QuartTrio, headers: dict[str, str], requests: int, post: bool
) -> float:
    client = made.test_client()
    body = {"station_id": "CP-1", "connector_id": 1, "amount_som": 40}

    async def call() -> None:
        if post:
            keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
            await client.post("/api/v1/charging/start", headers=keyed, json=body)
        else:
            await client.get("/api/v1/balance/get", headers=headers)

    for _ in range(200):
        await call()
    began = time.perf_counter()
    for _ in range(requests):
        await call()
    return (time.perf_counter() - began) / requests * 1e6


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": now + 7200}
    headers = {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
    variants = {"bare": (False, False), "protections": (True, False), "all": (True, True)}
    result: dict[str, Any] = {"requests": args.requests, "rounds": args.rounds}
    for call, post in (("get_balance", False), ("post_start_with_key", True)):
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (protect, idem) in variants.items():
                took = await per_request_us(app(protect, idem), headers, args.requests, post)
                best[name] = min(best.get(name, float("inf")), took)
        result[call] = {
            "per_request_us": {name: round(us, 1) for name, us in best.items()},
            "added_us": round(best["all"] - best["bare"], 1),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("INFO", "json")  # the request log written, as in production ...
    stderr, sys.stderr = sys.stderr, io.StringIO()  # ... to memory, not the terminal
    try:
        result = trio.run(bench, args)
    finally:
        sys.stderr = stderr
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
