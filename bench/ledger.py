"""Ledger operations per second through the StorageActor, on the embedded PostgreSQL.

Runs a realistic mix (reserve a session's money, settle it with a refund, an overrun or a debt,
top up, release) first from one caller at a time, then from many concurrent callers, and checks
afterwards that every balance still equals the sum of its entries.

    python bench/ledger.py                      # embedded PostgreSQL in a temporary directory
    python bench/ledger.py --callers 50 --ops 20000 --json result.json
    CPMS_DATABASE_URL=postgresql://... python bench/ledger.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import trio

from actors.ledger import Ledger, storage_actor_spec
from actors.runtime import Intensity, Registry, run_supervisor
from cpms.kernel.money import round_money
from cpms.logs import configure_logging
from storage import open_storage
from storage.clients import ensure_client


@dataclass
class Phase:
    name: str
    callers: int
    ops: int
    seconds: float
    ops_per_second: float
    p50_ms: float
    p99_ms: float


async def caller(
    ledger: Ledger, clients: list[uuid.UUID], ops: int, seed: int, latencies: list[float]
) -> None:
    """One session's money at a time: reserve, settle (or release), top up."""
    rng = random.Random(seed)
    done = 0

    async def timed(op: Awaitable[object]) -> None:
        nonlocal done
        began = time.perf_counter()
        await op
        latencies.append(time.perf_counter() - began)
        done += 1

    while done < ops:
        client, hold = rng.choice(clients), uuid.uuid4()
        amount = Decimal(rng.randint(1000, 30000)) / 100
        await timed(ledger.reserve(client, amount, key=f"r-{hold}", hold_id=hold))
        if done < ops:
            if rng.random() < 0.85:
                cost = round_money(amount * Decimal(rng.choice(["0.7", "1", "1.1"])))
                await timed(ledger.capture(hold, cost, key=f"c-{hold}"))
            else:
                await timed(ledger.release(hold, key=f"x-{hold}"))
        if done < ops:
            await timed(ledger.credit(client, amount, key=f"t-{hold}"))


async def run_phase(
    name: str, ledger: Ledger, clients: list[uuid.UUID], callers: int, ops: int
) -> Phase:
    latencies: list[float] = []
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(callers):
            nursery.start_soon(caller, ledger, clients, ops // callers, i, latencies)
    seconds = time.perf_counter() - began
    latencies.sort()
    done = len(latencies)
    return Phase(
        name,
        callers,
        done,
        round(seconds, 3),
        round(done / seconds, 1),
        round(statistics.median(latencies) * 1000, 2),
        round(latencies[int(done * 0.99) - 1] * 1000, 2),
    )


async def bench(args: argparse.Namespace) -> dict[str, object]:
    url = os.environ.get("CPMS_DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="cpms-bench-") as tmp:
        async with (
            open_storage(database_url=url, pg_dir=Path(tmp) / "pg", pool_size=4) as db,
            trio.open_nursery() as nursery,
        ):
            supervisor = await nursery.start(run_supervisor, "bench", Registry(), Intensity())
            ref = await supervisor.start_child(storage_actor_spec(db, batch=args.batch))
            ledger = Ledger(ref, db)
            clients = [uuid.uuid4() for _ in range(args.clients)]
            for c in clients:
                await ensure_client(db, c)
                await ledger.credit(c, "1000000", key=f"seed-{c}")
            phases = [
                await run_phase("sequential", ledger, clients, 1, args.sequential_ops),
                await run_phase("concurrent", ledger, clients, args.callers, args.ops),
            ]
            problems = await ledger.discrepancies()
            nursery.cancel_scope.cancel()
    return {
        "phases": [asdict(p) for p in phases],
        "batch": args.batch,
        "clients": args.clients,
        "ledger_exact": not problems,
        "database": "external" if url else "embedded",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="operations, concurrent phase")
    parser.add_argument("--sequential-ops", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="StorageActor batch size")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_logging("WARNING")
    result = trio.run(bench, args)
    for p in result["phases"]:  # type: ignore[attr-defined]
        print(
            f"{p['name']:>10}: {p['callers']:>3} callers  {p['ops']:>6} ops in "
            f"{p['seconds']:>7.2f} s  = {p['ops_per_second']:>8.1f} ops/s   "
            f"p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms"
        )
    print(
        f"ledger exact: {result['ledger_exact']}  (batch {args.batch}, "
        f"{result['database']} database)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["ledger_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
