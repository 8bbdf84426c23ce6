"""OCPP load on one cpms node: connections held, server CPU per message, round-trip latency.

Starts ``cpms serve`` in its own process on a temporary embedded database with N stations
provisioned, connects N chargers from this process (raw OCPP-J over trio-websocket, each boots
first), then drives Heartbeat + MeterValues at each requested rate and reports the round-trip
percentiles, the achieved rate and the server's CPU time per message. Finally it tries to hold
``--max-stations`` connections at once.

    python bench/ocpp_load.py                                  # 10,000 stations, 1k and 3k msg/s
    python bench/ocpp_load.py --stations 2000 --rates 500 --max-stations 0
    python bench/ocpp_load.py --no-gc-tuning                   # compare GC pauses
    BENCH_SERVER_LOG=INFO python bench/ocpp_load.py ...        # the server's log (GC pauses)
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import json
import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

NOW = "2026-11-22T10:00:00Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Closed(Exception):
    """The server closed the connection or answered out of turn."""


class RawSocket:
    """A minimal OCPP-J WebSocket client over a bare trio stream.

    The load generator shares this machine's two cores with the server, so it speaks just enough
    RFC 6455 to be cheap: one handshake, unfragmented text frames out (masked with a zero key, which
    leaves the payload as is), unmasked frames in.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> RawSocket:
        stream = await trio.open_tcp_stream(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )
        sock = cls(stream)
        while b"\r\n\r\n" not in sock.buffer:
            await sock._fill()
        head, _, rest = bytes(sock.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            raise Closed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        sock.buffer = bytearray(rest)
        return sock

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise Closed("connection closed")
        self.buffer += data

    async def send(self, text: str) -> None:
        data = text.encode()
        size = len(data)
        if size < 126:
            head = bytes((0x81, 0x80 | size))
        elif size < 65536:
            head = bytes((0x81, 0xFE)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x81, 0xFF)) + size.to_bytes(8, "big")
        await self.stream.send_all(head + b"\0\0\0\0" + data)

    async def receive(self) -> str:
        while True:
            while len(self.buffer) < 2:
                await self._fill()
            opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if size == 126:
                start, size = 4, -1
            elif size == 127:
                start, size = 10, -1
            while len(self.buffer) < start:
                await self._fill()
            if size < 0:
                size = int.from_bytes(self.buffer[2:start], "big")
            while len(self.buffer) < start + size:
                await self._fill()
            payload = bytes(self.buffer[start : start + size])
            del self.buffer[: start + size]
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                raise Closed("close frame")
            # pings and pongs are not expected from cpms; anything else is skipped

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass
class Charger:
    station: str
    ws: RawSocket
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    energy: int = 0

    async def call(self, action: str, payload: dict[str, Any]) -> float:
        unique_id = str(next(self.ids))
        began = time.perf_counter()
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        reply = json.loads(await self.ws.receive())
        if reply[0] != 3 or reply[1] != unique_id:
            raise Closed(f"{self.station}: unexpected {reply}")
        return time.perf_counter() - began


@dataclass
class Fleet:
    url: str
    chargers: list[Charger] = field(default_factory=list)
    failures: int = 0

    async def connect(self, station: str) -> None:
        host, port = self.url.split("//")[1].split("/")[0].split(":")
        try:
            ws = await RawSocket.open(host, int(port), f"/ws/{station}")
            charger = Charger(station, ws)
            await charger.call(
                "BootNotification", {"chargePointVendor": "bench", "chargePointModel": "raw"}
            )
        except (OSError, Closed, trio.BrokenResourceError):
            self.failures += 1
            return
        self.chargers.append(charger)


async def connect_all(fleet: Fleet, names: list[str], parallel: int) -> float:
    began = time.perf_counter()
    limit = trio.CapacityLimiter(parallel)

    async def one(name: str) -> None:
        async with limit:
            await fleet.connect(name)

    async with trio.open_nursery() as connecting:
        for name in names:
            connecting.start_soon(one, name)
    return time.perf_counter() - began


async def drive(fleet: Fleet, rate: float, seconds: float) -> dict[str, Any]:
    """Each charger sends a Heartbeat or a MeterValues every len(fleet)/rate seconds.

    Chargers start at random offsets within the first period; the achieved rate is counted over
    the steady part after it.
    """
    period = len(fleet.chargers) / rate
    rtts: list[float] = []
    done_at: list[float] = []
    errors = 0
    began = trio.current_time()
    deadline = began + period + seconds

    async def station(charger: Charger) -> None:
        nonlocal errors
        await trio.sleep(random.random() * period)
        while trio.current_time() < deadline:
            tick = trio.current_time()
            charger.energy += random.randint(10, 60)
            try:
                if random.random() < 0.5:
                    rtt = await charger.call("Heartbeat", {})
                else:
                    rtt = await charger.call(
                        "MeterValues",
                        {
                            "connectorId": 1,
                            "meterValue": [
                                {
                                    "timestamp": NOW,
                                    "sampledValue": [
                                        {"value": str(charger.energy), "unit": "Wh"},
                                        {
                                            "value": "7400",
                                            "measurand": "Power.Active.Import",
                                            "unit": "W",
                                        },
                                    ],
                                }
                            ],
                        },
                    )
            except (Closed, OSError, trio.BrokenResourceError):
                errors += 1
                return
            rtts.append(rtt)
            done_at.append(trio.current_time())
            await trio.sleep_until(tick + period)

    async with trio.open_nursery() as nursery:
        for charger in fleet.chargers:
            nursery.start_soon(station, charger)
    steady = [t for t in done_at if began + period <= t <= deadline]
    rtts.sort()

    def pct(p: float) -> float:
        return round(rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1000, 2) if rtts else 0.0

    return {
        "target_rate": rate,
        "messages": len(rtts),
        "achieved_rate": round(len(steady) / seconds),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "errors": errors,
    }


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def database_processes(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL's processes: the postmaster and its backends."""
    main = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(data_dir) in " ".join(p.info["cmdline"] or [])
    ]
    return [*main, *(c for p in main for c in p.children(recursive=True))]


async def provision(dsn_dir: Path, count: int) -> None:
    from storage import open_storage

    async with open_storage(database_url=None, pg_dir=dsn_dir / "pg") as db:
        await db.execute(
            """INSERT INTO stations (id, connectors_count)
               SELECT 'BENCH-' || lpad(n::text, 5, '0'), 2 FROM generate_series(1, $1) n
               ON CONFLICT DO NOTHING""",
            count,
        )
        await db.execute(
            """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
               SELECT s.id, c, 'Type2', 22 FROM stations s, generate_series(1, 2) c
               ON CONFLICT DO NOTHING"""
        )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    total = max(args.stations, args.max_stations)
    names = [f"BENCH-{n:05d}" for n in range(1, total + 1)]
    with tempfile.TemporaryDirectory(prefix="cpms-ocpp-bench-") as tmp:
        data = Path(tmp)
        await provision(data, total)
        http, ocpp = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CPMS_")},
            "CPMS_DATA_DIR": str(data),
            "CPMS_HTTP_PORT": str(http),
            "CPMS_OCPP_PORT": str(ocpp),
            "CPMS_LOG_LEVEL": os.environ.get("BENCH_SERVER_LOG", "WARNING"),
            "CPMS_GC_TUNING": "true" if args.gc_tuning else "false",
        }
        server = await trio.lowlevel.open_process([sys.executable, "-m", "cpms", "serve"], env=env)
        try:
            return await run_phases(args, names, server.pid, data, http, ocpp)
        finally:
            server.terminate()
            with trio.move_on_after(60):
                await server.wait()


async def run_phases(
    args: argparse.Namespace,
    names: list[str],
    server_pid: int,
    data_dir: Path,
    http: int,
    ocpp: int,
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{http}"
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await trio.sleep(0.5)
    result: dict[str, Any] = {
        "server_start_s": round(time.perf_counter() - started, 1),
        "gc_tuning": args.gc_tuning,
    }
    proc = psutil.Process(server_pid)
    fleet = Fleet(f"ws://127.0.0.1:{ocpp}/ws")
    async with trio.open_nursery() as nursery:
        took = await connect_all(fleet, names[: args.stations], args.parallel)
        result["connect"] = {
            "stations": args.stations,
            "connected": len(fleet.chargers),
            "failures": fleet.failures,
            "seconds": round(took, 1),
        }
        print(f"connected {len(fleet.chargers)}/{args.stations} in {took:.1f} s", flush=True)
        # The load generator's own collector must not pause the measured round trips.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 1000)
        result["rates"] = []
        me = psutil.Process()
        for rate in args.rates:
            watched = [proc, me, *database_processes(data_dir)]
            before = [cpu_seconds(p) for p in watched]
            phase = await drive(fleet, rate, args.phase_seconds)
            after = [cpu_seconds(p) for p in watched]
            per_msg = 1e6 / max(phase["messages"], 1)
            phase["server_cpu_us_per_msg"] = round((after[0] - before[0]) * per_msg, 1)
            phase["load_generator_cpu_us_per_msg"] = round((after[1] - before[1]) * per_msg, 1)
            database = sum(after[2:]) - sum(before[2:])
            phase["database_cpu_us_per_msg"] = round(database * per_msg, 1)
            print(json.dumps(phase), flush=True)
            result["rates"].append(phase)
        if args.max_stations > args.stations:
            took = await connect_all(fleet, names[args.stations : args.max_stations], args.parallel)
            alive = 0
            for charger in fleet.chargers:
                try:
                    await charger.call("Heartbeat", {})
                    alive += 1
                except (Closed, OSError, trio.BrokenResourceError):
                    pass
            result["max"] = {
                "target": args.max_stations,
                "held": alive,
                "failures": fleet.failures,
                "connect_seconds": round(took, 1),
                "server_rss_mb": round(proc.memory_info().rss / 2**20),
            }
            print(json.dumps(result["max"]), flush=True)
        async with httpx.AsyncClient(base_url=base) as client:
            result["server_gc"] = (await client.get("/health")).json().get("gc")
        nursery.cancel_scope.cancel()
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
    result = trio.run(bench, args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
