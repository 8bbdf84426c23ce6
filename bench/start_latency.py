"""Start latency: from ``POST /api/v1/charging/start`` to the RemoteStartTransaction frame at the
charger, with thousands of stations connected and Heartbeat + MeterValues background load.

Starts ``cpms serve`` on a temporary embedded database with N stations, a tariff and funded
clients; connects N chargers (the raw client of ``bench/ocpp_load.py``), keeps ``--rate`` msg/s
of background traffic going, and on ``--probes`` separate stations measures start after start:
POST start → the charger sees RemoteStartTransaction (answers Accepted) → POST stop (the session
is cancelled and refunded, freeing the connector for the next sample).

    python bench/start_latency.py                         # 10,000 stations, 1,000 msg/s
    python bench/start_latency.py --stations 2000 --samples 200
"""

from __future__ import annotations

import argparse
import json
import os
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
from ocpp_load import Charger, Closed, Fleet, RawSocket, connect_all, drive, free_port

SECRET = "bench-secret-0123456789-0123456789-0123"


def token(client: uuid.UUID) -> dict[str, str]:
    claims = {"sub": str(client), "aud": "authenticated", "exp": int(time.time()) + 86400}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


async def provision(data: Path, stations: int, probes: int, clients: list[uuid.UUID]) -> None:
    from actors import Intensity, Registry, run_supervisor
    from storage import Ledger, open_storage, storage_actor_spec
    from storage.clients import ensure_client

    async with open_storage(database_url=None, pg_dir=data / "pg") as db:
        await db.execute(
            "INSERT INTO tariffs (id, name, price_per_kwh, session_fee) VALUES ('B', 'b', 15, 0)"
        )
        await db.execute(
            """INSERT INTO stations (id, connectors_count, tariff_id)
               SELECT 'BENCH-' || lpad(n::text, 5, '0'), 2, 'B' FROM generate_series(1, $1) n""",
            stations + probes,
        )
        await db.execute(
            """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
               SELECT s.id, c, 'Type2', 22 FROM stations s, generate_series(1, 2) c"""
        )
        registry = Registry()
        async with trio.open_nursery() as nursery:
            supervisor = await nursery.start(run_supervisor, "bench", registry, Intensity())
            ledger = Ledger(await supervisor.start_child(storage_actor_spec(db)), db)
            for client in clients:
                await ensure_client(db, client)
                await ledger.credit(client, Decimal("100000"), key=f"bench-{client}")
            nursery.cancel_scope.cancel()


class Probe:
    """A charger that answers RemoteStartTransaction and notes when each one arrives."""

    def __init__(self, station: str, ws: RawSocket) -> None:
        self.station = station
        self.ws = ws
        self.arrived: trio.MemorySendChannel[float]
        self.arrived, self.arrivals = trio.open_memory_channel[float](10)

    async def serve(self) -> None:
        try:
            while True:
                frame = json.loads(await self.ws.receive())
                if frame[0] == 2:
                    if frame[2] == "RemoteStartTransaction":
                        self.arrived.send_nowait(time.perf_counter())
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        except (Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = [uuid.uuid4() for _ in range(args.probes)]
    with tempfile.TemporaryDirectory(prefix="cpms-start-bench-") as tmp:
        data = Path(tmp)
        await provision(data, args.stations, args.probes, clients)
        http, ocpp = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CPMS_")},
            "CPMS_DATA_DIR": str(data),
            "CPMS_HTTP_PORT": str(http),
            "CPMS_OCPP_PORT": str(ocpp),
            "CPMS_LOG_LEVEL": "WARNING",
            "CPMS_JWT_SECRET": SECRET,
        }
        server = await trio.lowlevel.open_process([sys.executable, "-m", "cpms", "serve"], env=env)
        try:
            return await measure(args, clients, http, ocpp)
        finally:
            server.terminate()
            with trio.move_on_after(60):
                await server.wait()


async def measure(
    args: argparse.Namespace, clients: list[uuid.UUID], http_port: int, ocpp_port: int
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while True:
            try:
                if (await http.get("/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await trio.sleep(0.5)
        fleet = Fleet(f"ws://127.0.0.1:{ocpp_port}/ws")
        names = [f"BENCH-{n:05d}" for n in range(1, args.stations + 1)]
        took = await connect_all(fleet, names, 200)
        print(f"connected {len(fleet.chargers)}/{args.stations} in {took:.1f} s", flush=True)
        probes = []
        for n in range(args.probes):
            station = f"BENCH-{args.stations + n + 1:05d}"
            ws = await RawSocket.open("127.0.0.1", ocpp_port, f"/ws/{station}")
            boot = Charger(station, ws)
            await boot.call("BootNotification", {"chargePointVendor": "b", "chargePointModel": "p"})
            await boot.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
            probes.append(Probe(station, ws))
        latencies: list[float] = []
        errors = 0
        async with trio.open_nursery() as nursery:
            for probe in probes:
                nursery.start_soon(probe.serve)
            background: dict[str, Any] = {}

            async def load() -> None:
                background.update(await drive(fleet, args.rate, args.seconds))

            nursery.start_soon(load)
            await trio.sleep(len(fleet.chargers) / args.rate + 2)  # the load is steady by now

            async def sample(probe: Probe, client: uuid.UUID) -> None:
                nonlocal errors
                headers = token(client)
                for _ in range(args.samples // len(probes)):
                    began = time.perf_counter()
                    reply = await http.post(
                        "/api/v1/charging/start",
                        headers=headers,
                        json={"station_id": probe.station, "connector_id": 1, "amount_som": 50},
                    )
                    if reply.status_code != 200:
                        errors += 1
                        await trio.sleep(0.5)
                        continue
                    arrived = await probe.arrivals.receive()
                    latencies.append(arrived - began)
                    await http.post(
                        "/api/v1/charging/stop",
                        headers=headers,
                        json={"session_id": reply.json()["session_id"]},
                    )
                    await trio.sleep(0.2)

            async with trio.open_nursery() as sampling:
                for probe, client in zip(probes, clients, strict=True):
                    sampling.start_soon(sample, probe, client)
            nursery.cancel_scope.cancel()
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 2)

    return {
        "stations": args.stations,
        "background_rate": args.rate,
        "samples": len(latencies),
        "errors": errors,
        "start_to_remote_start_ms": {
            "p50": pct(0.5),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": pct(1.0),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=1000.0, help="background msgs/s")
    parser.add_argument("--seconds", type=float, default=120.0, help="background load length")
    parser.add_argument("--probes", type=int, default=10, help="stations that take starts")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = trio.run(run, args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
