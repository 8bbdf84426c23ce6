"""OCPP load on one cpms node: connections held, server CPU per message, round-trip latency.

Starts ``cpms serve`` in its own process on a temporary embedded database with N stations
provisioned, connects N chargers from a load generator process (``bench/load_generator.py``: raw
OCPP-J on one epoll loop, each charger boots first), then drives Heartbeat + MeterValues at each
requested rate and reports the round-trip percentiles, the achieved rate and the CPU time per
message of the server, the load generator and PostgreSQL. Finally it tries to hold
``--max-stations`` connections at once.

    python bench/ocpp_load.py                                  # 10,000 stations, 1k and 3k msg/s
    python bench/ocpp_load.py --stations 2000 --rates 500 --max-stations 0
    python bench/ocpp_load.py --no-gc-tuning                   # compare GC pauses
    BENCH_SERVER_LOG=INFO python bench/ocpp_load.py ...        # the server's log (GC pauses)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from cpms_process import Served, Steal, report, serving
from load_generator import GeneratorProcess


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def main_thread_seconds(process: psutil.Process) -> float:
    """CPU time of the server's trio thread alone (the rest is the storage thread)."""
    for thread in process.threads():
        if thread.id == process.pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


def database_processes(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL's processes: the postmaster and its backends."""
    main = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(data_dir) in " ".join(p.info["cmdline"] or [])
    ]
    return [*main, *(c for p in main for c in p.children(recursive=True))]


async def provision(dsn_dir: Path, count: int, first: int = 1) -> None:
    """Stations BENCH-{first} onwards, ``count`` of them, with two Type2 connectors each."""
    from storage import open_storage

    async with open_storage(database_url=None, pg_dir=dsn_dir / "pg") as db:
        await db.execute(
            """INSERT INTO stations (id, connectors_count)
               SELECT 'BENCH-' || lpad(n::text, 5, '0'), 2
               FROM generate_series($2::int, $2::int + $1::int - 1) n
               ON CONFLICT DO NOTHING""",
            count,
            first,
        )
        await db.execute(
            """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
               SELECT s.id, c, 'Type2', 22 FROM stations s, generate_series(1, 2) c
               ON CONFLICT DO NOTHING"""
        )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cpms-ocpp-bench-") as tmp:
        data = Path(tmp)
        await provision(data, max(args.stations, args.max_stations))
        tuning = "true" if args.gc_tuning else "false"
        async with serving(data, CPMS_GC_TUNING=tuning) as server:
            return await run_phases(args, server, data)


async def run_phases(args: argparse.Namespace, server: Served, data_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"server_start_s": server.started_s, "gc_tuning": args.gc_tuning}
    proc = psutil.Process(server.pid)
    load = await GeneratorProcess.start("127.0.0.1", server.ocpp_port, "/ws")
    try:
        result["connect"] = {
            "stations": args.stations,
            **await load.ask(connect=["BENCH-", 1, args.stations], parallel=args.parallel),
        }
        print(f"connect: {json.dumps(result['connect'])}", flush=True)
        result["rates"] = []
        generator = psutil.Process(load.process.pid)
        for rate in args.rates:
            watched = [proc, generator, *database_processes(data_dir)]
            before = [cpu_seconds(p) for p in watched]
            main_before = main_thread_seconds(proc)
            steal = Steal()
            phase = await load.ask(drive=rate, seconds=args.phase_seconds)
            phase["machine_steal_pct"] = steal.percent()
            after = [cpu_seconds(p) for p in watched]
            per_msg = 1e6 / max(phase["messages"], 1)
            phase["server_cpu_us_per_msg"] = round((after[0] - before[0]) * per_msg, 1)
            main = main_thread_seconds(proc) - main_before
            phase["server_main_thread_cpu_us_per_msg"] = round(main * per_msg, 1)
            phase["load_generator_cpu_us_per_msg"] = round((after[1] - before[1]) * per_msg, 1)
            database = sum(after[2:]) - sum(before[2:])
            phase["database_cpu_us_per_msg"] = round(database * per_msg, 1)
            print(json.dumps(phase), flush=True)
            result["rates"].append(phase)
        if args.max_stations > args.stations:
            more = args.max_stations - args.stations
            connect = await load.ask(
                connect=["BENCH-", args.stations + 1, more], parallel=args.parallel
            )
            alive = (await load.ask(heartbeat_all=True))["alive"]
            result["max"] = {
                "target": args.max_stations,
                "held": alive,
                "failures": connect["failures"],
                "connect_seconds": connect["seconds"],
                "server_rss_mb": round(proc.memory_info().rss / 2**20),
            }
            print(json.dumps(result["max"]), flush=True)
    finally:
        await load.aclose()
    # 60 s: the server is busy a while after the fleet has gone (thousands of disconnects)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as client:
        result["server_gc"] = (await client.get("/health")).json().get("gc")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(r) for r in s.split(",")],
        default=[1000.0, 3000.0],
        help="msgs/s, comma separated",
    )
    parser.add_argument("--phase-seconds", type=float, default=20)
    parser.add_argument("--max-stations", type=int, default=19000)
    parser.add_argument("--parallel", type=int, default=200, help="handshakes at once")
    parser.add_argument("--no-gc-tuning", dest="gc_tuning", action="store_false")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
