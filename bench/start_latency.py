"""Start latency: from ``POST /api/v1/charging/start`` to the RemoteStartTransaction frame at the
charger, with thousands of stations connected and Heartbeat + MeterValues background load.

Starts ``cpms serve`` on a temporary embedded database with N stations, a tariff and funded
clients; connects N chargers from a load generator process (``bench/load_generator.py``), keeps
``--rate`` msg/s of background traffic going, and on ``--probes`` separate stations measures
start after start, at random moments: POST start → the charger sees RemoteStartTransaction
(answers Accepted) → POST stop (the session is cancelled and refunded, freeing the connector for
the next sample). Each probe first makes ``--warm-up`` unmeasured starts for another client, so
the server is measured warm; each measured client's first start is still its first (its record
and balance new to the server). The driver's POSTs go over a minimal HTTP/1.1 client
(``RawHttp``), as the probe chargers' frames go over a minimal WebSocket client: the time is the
server's and the network's, from the request written to the frame read.

    python bench/start_latency.py                         # 10,000 stations, 1,000 msg/s
    python bench/start_latency.py --stations 2000 --samples 200
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import trio
from cpms_process import RawHttp, Served, Steal, report, serving
from load_generator import GeneratorProcess

SECRET = "bench-secret-0123456789-0123456789-0123"
ARRIVAL_LIMIT_S = 10  # a start whose RemoteStartTransaction never comes is counted as an error


def token(client: uuid.UUID) -> dict[str, str]:
    claims = {"sub": str(client), "aud": "authenticated", "exp": int(time.time()) + 86400}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


async def provision(data: Path, stations: int, probes: int, clients: list[uuid.UUID]) -> None:
    from actors.ledger import Ledger, storage_actor_spec
    from actors.runtime import Intensity, Registry, run_supervisor
    from storage import open_storage
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


class Closed(Exception):
    """The server closed the connection or answered out of turn."""


class RawSocket:
    """A minimal OCPP-J WebSocket client over a bare trio stream, for the probe chargers: one
    handshake, unfragmented text frames out (masked with a zero key, which leaves the payload as
    is), unmasked frames in."""

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

    async def call(self, action: str, payload: dict[str, Any]) -> float:
        unique_id = str(next(self.ids))
        began = time.perf_counter()
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        reply = json.loads(await self.ws.receive())
        if reply[0] != 3 or reply[1] != unique_id:
            raise Closed(f"{self.station}: unexpected {reply}")
        return time.perf_counter() - began


class Probe:
    """A charger that answers RemoteStartTransaction and notes when each one arrives."""

    def __init__(self, station: str, ws: RawSocket) -> None:
        self.station = station
        self.ws = ws
        self.arrived: trio.MemorySendChannel[float]
        self.arrived, self.arrivals = trio.open_memory_channel[float](10)

    def forget_late(self) -> None:
        """Drop arrivals of starts already counted as errors (they came after the limit)."""
        with contextlib.suppress(trio.WouldBlock):
            while True:
                self.arrivals.receive_nowait()

    async def serve(self) -> None:
        try:
            while True:
                frame = json.loads(await self.ws.receive())
                if frame[0] == 2:
                    if frame[2] == "RemoteStartTransaction":
                        with contextlib.suppress(trio.WouldBlock):  # only late ones pile up
                            self.arrived.send_nowait(time.perf_counter())
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        except (Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = [uuid.uuid4() for _ in range(args.probes)]
    warm_up_clients = [uuid.uuid4() for _ in range(args.probes)]
    with tempfile.TemporaryDirectory(prefix="cpms-start-bench-") as tmp:
        data = Path(tmp)
        await provision(data, args.stations, args.probes, clients + warm_up_clients)
        async with serving(data, CPMS_JWT_SECRET=SECRET) as server:
            return await measure(args, clients, warm_up_clients, server)


async def measure(
    args: argparse.Namespace,
    clients: list[uuid.UUID],
    warm_up_clients: list[uuid.UUID],
    server: Served,
) -> dict[str, Any]:
    ocpp_port = server.ocpp_port
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
        load = await GeneratorProcess.start("127.0.0.1", ocpp_port, "/ws")
        try:
            connected = await load.ask(connect=["BENCH-", 1, args.stations], parallel=200)
            print(f"connect: {json.dumps(connected)}", flush=True)
            probes = []
            for n in range(args.probes):
                station = f"BENCH-{args.stations + n + 1:05d}"
                ws = await RawSocket.open("127.0.0.1", ocpp_port, f"/ws/{station}")
                boot = Charger(station, ws)
                boot_payload = {"chargePointVendor": "b", "chargePointModel": "p"}
                await boot.call("BootNotification", boot_payload)
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
                nursery.start_soon(partial(load.ask, drive=args.rate, seconds=args.seconds))
                # the load is steady after one period
                await trio.sleep(connected["connected"] / args.rate + 2)

                host, port = server.http_url.removeprefix("http://").rsplit(":", 1)

                async def start_once(
                    probe: Probe, driver: RawHttp, client: uuid.UUID
                ) -> float | None:
                    """One start and its stop: seconds to the RemoteStart, None on an error."""
                    headers = token(client)
                    start = driver.request(
                        "/api/v1/charging/start",
                        headers,
                        {"station_id": probe.station, "connector_id": 1, "amount_som": 50},
                    )
                    stream = await driver.ready()
                    probe.forget_late()
                    began = time.perf_counter()
                    await stream.send_all(start)
                    status, started = await driver.response(stream)
                    if status != 200:
                        await trio.sleep(0.5)
                        return None
                    arrived: float | None = None
                    with trio.move_on_after(ARRIVAL_LIMIT_S):
                        arrived = await probe.arrivals.receive()
                    await driver.post(
                        "/api/v1/charging/stop", headers, {"session_id": started["session_id"]}
                    )
                    # the charger never saw it: an error, and go on
                    return None if arrived is None else arrived - began

                async def sample(probe: Probe, client: uuid.UUID, warm_up: uuid.UUID) -> None:
                    nonlocal errors
                    driver = RawHttp(host, int(port))
                    # The server is warmed up first (its connections to the database, the code
                    # paths) by starts of another client; the measured client's first start is
                    # still its first: its record, balance and token are new to the server.
                    for _ in range(args.warm_up):
                        await start_once(probe, driver, warm_up)
                    # Drivers start independently: each probe begins at a random moment and
                    # waits a random while between its starts (probes started in step measured
                    # how ten simultaneous starts queue, not how long one start takes).
                    await trio.sleep(random.uniform(0, args.pause * 2))
                    for _ in range(args.samples // len(probes)):
                        latency = await start_once(probe, driver, client)
                        if latency is None:
                            errors += 1
                        else:
                            latencies.append(latency)
                        await trio.sleep(random.uniform(0, args.pause * 2))
                    await driver.aclose()

                steal = Steal()
                async with trio.open_nursery() as sampling:
                    for probe, client, warm_up in zip(
                        probes, clients, warm_up_clients, strict=True
                    ):
                        sampling.start_soon(sample, probe, client, warm_up)
                steal_pct = steal.percent()
                nursery.cancel_scope.cancel()
            gc = (await http.get("/health")).json().get("gc")
        finally:
            await load.aclose()
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
        "machine_steal_pct": steal_pct,
        "server_gc": gc,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=1000.0, help="background msgs/s")
    parser.add_argument("--seconds", type=float, default=120.0, help="background load length")
    parser.add_argument("--probes", type=int, default=10, help="stations that take starts")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument(
        "--pause", type=float, default=0.5, help="mean s between one probe's starts (uniform)"
    )
    parser.add_argument(
        "--warm-up", type=int, default=2, help="unmeasured starts per probe, by another client"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(run, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
