"""The app's live socket under load: N app WebSocket clients connected while M chargers report
status changes at a rate; how long a charger's StatusNotification takes to reach the app clients
subscribed to its location, what an app client costs the server in memory, and what the app
clients cost the chargers' round trips.

``cpms serve`` runs in its own process on a temporary embedded database with M stations, S per
location; the chargers and the app clients are driven from one load process (raw sockets on one
epoll loop, as ``bench/load_generator.py``), so a status change and its arrival are timed on one
clock. Each app client leaves the default ``all`` channel and subscribes to one location's
``location_stations:`` and ``location:`` channels (``--on-all`` of them stay on ``all``: every
update of the network); app clients answer the server's pings as seed 000's app does.

Phases: (1) the chargers alone, status changes at ``--rate``: the OCPP round trips; (2) the app
clients connect: the server's RSS before and after; (3) status changes at ``--rate`` again: the
round trips, and the delay from each StatusNotification sent to its ``station_status_update``
received by each subscribed client.

    python bench/app_ws.py                                   # 10,000 apps, 5,000 chargers, 500/s
    python bench/app_ws.py --apps 2000 --chargers 1000 --rate 100 --seconds 10
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import trio
from cpms_process import Steal, free_port, report, serving
from load_generator import NOW, Closed, Generator, GeneratorProcess, _Conn

STATUSES = ("Available", "Preparing")


class Cpu:
    """CPU seconds used since made: the server's (all threads, and its trio thread) and the
    load's, as shares of one core over the wall time."""

    def __init__(self, server: psutil.Process, load: psutil.Process) -> None:
        self.server, self.load = server, load
        self.began = time.perf_counter()
        self.at = self._now()

    def _now(self) -> tuple[float, float, float]:
        main = next(t for t in self.server.threads() if t.id == self.server.pid)
        server, load = self.server.cpu_times(), self.load.cpu_times()
        return (
            server.user + server.system,
            main.user_time + main.system_time,
            load.user + load.system,
        )

    def used(self) -> dict[str, float]:
        wall = time.perf_counter() - self.began
        now = self._now()
        server, main, load = (
            round((b - a) / wall * 100) for a, b in zip(self.at, now, strict=True)
        )
        return {"server_cpu_pct": server, "server_trio_thread_pct": main, "load_cpu_pct": load}


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)

    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


class Load(Generator):
    """The chargers (:class:`Generator`) and the app clients, on one epoll."""

    def __init__(self, host: str, ocpp_port: int, http_port: int) -> None:
        super().__init__(host, ocpp_port, "/ws")
        self.http_port = http_port
        self.apps: dict[int, _Conn] = {}
        self.sent_at: dict[str, float] = {}  # station → when its last status change was sent
        self.arrived: list[float] = []  # when each timed update arrived
        self.wanted: dict[str, list[str]] = {}  # app → the channels it subscribes to

    # -- app clients ------------------------------------------------------------------------

    def connect_apps(
        self, count: int, locations: list[str], on_all: int, parallel: int
    ) -> dict[str, Any]:
        """``count`` app clients, the first ``on_all`` on ``all``, the others each on one
        location's channels (in turn)."""
        self.wanted = {}
        for n in range(count):
            place = locations[n % len(locations)]
            mine = [f"location_stations:{place}", f"location:{place}"]
            self.wanted[f"app-{n}"] = [] if n < on_all else mine

        def meanwhile(fd: int) -> None:  # connected already: answer its pings
            if fd in self.apps:
                self._app_frames(fd, [])

        return self.open_many(
            list(self.wanted),
            self.http_port,
            parallel,
            self._app_handshake,
            self._app_ready,
            self.apps,
            other=meanwhile,
        )

    def _app_handshake(self, app: _Conn) -> None:
        path = f"/api/v1/ws/locations?client_id={uuid.uuid4()}"
        app.upgrade(f"{self.host}:{self.http_port}", path)

    def _app_ready(self, app: _Conn) -> bool:
        """101 → greeting → (unsubscribe all, subscribe each wanted) → every ack. True then."""
        wanted = self.wanted[app.station]
        if app.next_id == 1:
            if not app.upgraded():
                return False
            asks = [{"action": "subscribe", "channel": c} for c in wanted]
            if wanted:
                asks.insert(0, {"action": "unsubscribe", "channel": "all"})
            for ask in asks:
                app.send_text(json.dumps(ask))
            app.next_id = 2 + len(asks)  # the acks still to come, counted down below
        for text in app.frames():
            if '"subscription"' in text:
                app.next_id -= 1
        return app.next_id == 2

    # -- status changes ---------------------------------------------------------------------

    def statuses(self, rate: float, seconds: float) -> dict[str, Any]:
        """Each charger flips connector 1 between Available and Preparing every
        len(chargers)/rate seconds; round trips, and the delivery delay to the app clients."""
        rtts: list[float] = []
        delivered: list[float] = []
        self.arrived = []
        other = 0
        self.sent_at.clear()
        began = time.perf_counter()

        def app_event(fd: int) -> None:
            nonlocal other
            if fd in self.apps:
                other += self._app_frames(fd, delivered)

        errors = self.pace(
            rate,
            seconds,
            self._status_call,
            rtts.append,
            other=app_event,
            linger=5.0 if self.apps else 0.0,  # updates still arriving after the last change
        )
        period = len(self.conns) / rate
        return {
            "status_changes": len(rtts),
            "achieved_rate": round(len(rtts) / (seconds + period)),
            "ocpp_round_trip": percentiles(rtts),
            "app_updates_received": len(delivered),
            "app_update_delay": percentiles(delivered),
            # in which seconds of the phase the deliveries over 100 ms came: a pause, or a queue
            "app_late_by_second": late_by_second(self.arrived, delivered, began),
            "app_other_messages": other,
            "apps_connected_after": len(self.apps),
            "errors": errors,
        }

    def _status_call(self, conn: _Conn) -> None:
        conn.energy += 1
        status = STATUSES[conn.energy % 2]
        payload = {"connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": NOW}
        conn.call("StatusNotification", payload)
        self.sent_at[conn.station] = conn.sent_at

    def _app_frames(self, fd: int, delivered: list[float]) -> int:
        app = self.apps[fd]
        other = 0
        try:
            if not self._read(app):
                return 0
            now = time.perf_counter()
            for text in app.frames():
                if text.startswith('{"type": "station_status_update"'):
                    station = json.loads(text)["data"]["station_id"]
                    sent = self.sent_at.get(station)
                    if sent is not None:
                        delivered.append(now - sent)
                        self.arrived.append(now)
                elif '"type": "ping"' in text:
                    app.send_text('{"type": "pong"}')
                else:
                    other += 1
        except (OSError, Closed):
            del self.apps[fd]
            self.epoll.unregister(fd)
            app.sock.close()
        return other


def late_by_second(arrived: list[float], delays: list[float], began: float) -> dict[int, int]:
    late: dict[int, int] = {}
    for at, delay in zip(arrived, delays, strict=True):
        if delay > 0.1:
            second = int(at - began)
            late[second] = late.get(second, 0) + 1
    return late


def child(host: str, ocpp_port: int, http_port: int) -> int:
    gc.disable()  # nothing here builds cycles; a collection would add pauses to the timings
    load = Load(host, ocpp_port, http_port)
    for line in sys.stdin:
        command = json.loads(line)
        if "chargers" in command:
            prefix, first, count = command["chargers"]
            names = [f"{prefix}{n:05d}" for n in range(first, first + count)]
            answer: dict[str, Any] = load.connect(names, command.get("parallel", 200))
        elif "apps" in command:
            answer = load.connect_apps(
                command["apps"], command["locations"], command["on_all"], command["parallel"]
            )
        elif "statuses" in command:
            answer = load.statuses(command["statuses"], command["seconds"])
        else:
            answer = {"error": f"unknown command {command}"}
        print(json.dumps(answer), flush=True)
    return 0


async def provision(data: Path, chargers: int, per_location: int) -> list[str]:
    from storage import open_storage

    places = [f"LOC-{n:04d}" for n in range(1, chargers // per_location + 1)]
    async with open_storage(database_url=None, pg_dir=data / "pg") as db:
        await db.execute(
            "INSERT INTO locations (id, name) SELECT unnest($1::text[]), 'bench'", places
        )
        await db.execute(
            """INSERT INTO stations (id, location_id, connectors_count)
               SELECT 'BENCH-' || lpad(n::text, 5, '0'),
                      'LOC-' || lpad(((n - 1) / $2 + 1)::text, 4, '0'), 2
               FROM generate_series(1, $1) n""",
            chargers,
            per_location,
        )
        await db.execute(
            """INSERT INTO connectors (station_id, connector_id, connector_type, power_kw)
               SELECT s.id, c, 'Type2', 22 FROM stations s, generate_series(1, 2) c"""
        )
    return places


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "apps": args.apps,
        "chargers": args.chargers,
        "rate": args.rate,
        "on_all": args.on_all,
        "gc_tuning": args.gc_tuning,
        "door": args.door,
    }
    with tempfile.TemporaryDirectory(prefix="cpms-app-ws-bench-") as tmp:
        data = Path(tmp)
        places = await provision(data, args.chargers, args.per_location)
        tuning = "true" if args.gc_tuning else "false"
        own = free_port()  # the socket's own port (--door own); else the REST port's route
        door = {"CPMS_APP_WS_PORT": str(own)} if args.door == "own" else {}
        async with serving(data, CPMS_GC_TUNING=tuning, **door) as server:
            proc = psutil.Process(server.pid)
            app_port = own if door else int(server.http_url.rsplit(":", 1)[1])
            load = await GeneratorProcess.start_command(
                [sys.executable, __file__, "--child", str(server.ocpp_port), str(app_port)]
            )
            try:
                result["chargers_connect"] = await load.ask(
                    chargers=["BENCH-", 1, args.chargers], parallel=200
                )
                generator = psutil.Process(load.process.pid)
                steal, cpu = Steal(), Cpu(proc, generator)
                alone = await load.ask(statuses=args.rate, seconds=args.seconds)
                result["chargers_alone"] = {
                    **alone,
                    **cpu.used(),
                    "machine_steal_pct": steal.percent(),
                }
                print(json.dumps(result["chargers_alone"]), flush=True)
                before = proc.memory_info().rss
                result["apps_connect"] = await load.ask(
                    apps=args.apps, locations=places, on_all=args.on_all, parallel=200
                )
                await trio.sleep(2)
                after = proc.memory_info().rss
                result["server_rss_mb"] = {"before_apps": before >> 20, "with_apps": after >> 20}
                connected = max(1, result["apps_connect"]["connected"])
                result["server_kb_per_app"] = round((after - before) / connected / 1024, 1)
                print(json.dumps(result["apps_connect"]), flush=True)
                steal, cpu = Steal(), Cpu(proc, generator)
                loaded = await load.ask(statuses=args.rate, seconds=args.seconds)
                result["with_apps"] = {**loaded, **cpu.used(), "machine_steal_pct": steal.percent()}
            finally:
                await load.aclose()
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child("127.0.0.1", int(sys.argv[2]), int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--chargers", type=int, default=5_000)
    parser.add_argument("--per-location", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--on-all", type=int, default=0)
    parser.add_argument("--no-gc-tuning", dest="gc_tuning", action="store_false")
    parser.add_argument(
        "--door",
        choices=("own", "rest"),
        default="own",
        help="app sockets to their own port (CPMS_APP_WS_PORT) or to the REST port's route",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
