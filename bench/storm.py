"""Reconnect storms: how fast a fleet of known stations gets (back) online, and what it does to
chargers already connected.

Starts ``cpms serve`` on a temporary embedded database with the stations provisioned, then from
a load process of its own (``bench/storm_load.py``):

1. connects ``--steady`` chargers that stay online throughout;
2. *cold*: ``--stations`` chargers connect and boot, ``--parallel`` at a time;
3. *storm*: all of them are dropped at once and, ``--hold`` seconds later (a charger notices the
   loss and waits out its retry timer), come back, ``--storm-parallel`` at a time; the steady
   ones heartbeat at ``--steady-rate`` in all throughout.

Each phase reports the seconds until every station was booted and Accepted (the storm's from
the herd's first reconnect), how many were told ``Pending`` (admission control), how many
connections were tried again, how many never got in, and the steady chargers' heartbeat round
trips: ``held_*`` while the server takes in the drop, ``steady_*`` while the herd reconnects,
and ``steady_slow_seconds``, each second of the phase (from the drop) whose slowest round trip
was over 100 ms; the server's trio thread's CPU time per station in each phase
(``server_trio_us_per_station``: the connect path's cost, steadier than the seconds); and the
server's memory per connection.

    python bench/storm.py                                   # 10,000 stations
    python bench/storm.py --stations 2000 --storm-parallel 500
    python bench/storm.py --password s3cret-pass                 # security profile 1, restarted
    python bench/storm.py --password s3cret-pass --first-contact --stations 1000
    python bench/storm.py --auto-register                   # first contacts, auto-registered
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import trio
from cpms_process import Steal, report, serving
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from load_generator import GeneratorProcess
from ocpp_load import main_thread_seconds, provision


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cpms-storm-bench-") as tmp:
        data = Path(tmp)
        settings = dict(item.split("=", 1) for item in args.set)
        if args.auto_register:  # the herd unknown until it first connects
            await provision(data, args.steady, first=args.stations + 1)
            settings["CPMS_OCPP_AUTO_REGISTER"] = "true"
        else:
            await provision(data, args.stations + args.steady)
        if args.password is not None:
            settings["CPMS_AUTH_SIGNING_KEY"] = signing_key = new_signing_key()
            remembered = None if args.first_contact else signing_key
            await set_passwords(data, args.password, remembered)
        async with serving(data, **settings) as server:
            proc = psutil.Process(server.pid)
            load = await GeneratorProcess.start_command(
                [
                    sys.executable,
                    str(Path(__file__).with_name("storm_load.py")),
                    "127.0.0.1",
                    str(server.ocpp_port),
                    "/ws",
                    *([] if args.password is None else [args.password]),
                ]
            )
            try:
                return await phases(args, proc, load, server.started_s)
            finally:
                await load.aclose()


def new_signing_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return pem.decode()


async def set_passwords(data: Path, password: str, signing_key: str | None) -> None:
    """Every station gets ``password`` (one scrypt hash for all) and, with ``signing_key``, the
    verifier a server with that key left when it last let each one in."""
    from actors.charge_point.passwords import station_verifier, verifier_key
    from cpms.kernel.passwords import hash_password
    from storage import open_storage

    stored = hash_password(password)
    async with open_storage(database_url=None, pg_dir=data / "pg") as db:
        await db.execute("UPDATE stations SET password_hash = $1", stored)
        if signing_key is None:
            return
        key = verifier_key(signing_key.encode())
        ids = [row["id"] for row in await db.fetch("SELECT id FROM stations")]
        await db.execute(
            """UPDATE stations s SET password_verifier = v.verifier
               FROM unnest($1::text[], $2::text[]) AS v(id, verifier) WHERE s.id = v.id""",
            ids,
            [station_verifier(key, station, stored, password) for station in ids],
        )


def rss_mb(proc: psutil.Process) -> float:
    return round(proc.memory_info().rss / 2**20, 1)


def per_station(proc: psutil.Process, since: float, stations: int) -> float:
    """The server's trio thread's CPU time since ``since``, in µs per station (the steady
    chargers' heartbeats included: about 1 % of it)."""
    return round((main_thread_seconds(proc) - since) / stations * 1e6)


async def phases(
    args: argparse.Namespace, proc: psutil.Process, load: GeneratorProcess, started: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"server_start_s": started, "stations": args.stations}
    first_steady = args.stations + 1
    result["steady"] = await load.ask(steady=["BENCH-", first_steady, args.steady])
    await trio.sleep(2)
    before = proc.memory_info().rss
    result["rss_before_mb"] = rss_mb(proc)
    steal, trio_s = Steal(), main_thread_seconds(proc)
    result["cold"] = await load.ask(
        herd=["BENCH-", 1, args.stations], parallel=args.parallel, connectors=args.connectors
    )
    result["cold"]["machine_steal_pct"] = steal.percent()
    result["cold"]["server_trio_us_per_station"] = per_station(proc, trio_s, args.stations)
    print(f"cold: {json.dumps(result['cold'])}", flush=True)
    await trio.sleep(5)
    connected = proc.memory_info().rss
    result["rss_connected_mb"] = rss_mb(proc)
    result["rss_kb_per_connection"] = round((connected - before) / 1024 / args.stations, 1)
    result["dropped"] = (await load.ask(drop=True))["dropped"]
    steal, trio_s = Steal(), main_thread_seconds(proc)
    result["storm"] = await load.ask(
        herd=["BENCH-", 1, args.stations],
        parallel=args.storm_parallel,
        steady_rate=args.steady_rate,
        hold=args.hold,
        connectors=args.connectors,
    )
    result["storm"]["machine_steal_pct"] = steal.percent()
    result["storm"]["server_trio_us_per_station"] = per_station(proc, trio_s, args.stations)
    print(f"storm: {json.dumps(result['storm'])}", flush=True)
    await trio.sleep(5)
    result["rss_after_storm_mb"] = rss_mb(proc)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument("--steady", type=int, default=500, help="chargers online throughout")
    parser.add_argument("--steady-rate", type=float, default=100, help="their heartbeats/s")
    parser.add_argument("--parallel", type=int, default=200, help="cold: handshakes at once")
    parser.add_argument(
        "--connectors",
        type=int,
        default=0,
        help="StatusNotifications each charger sends after its boot is accepted",
    )
    parser.add_argument("--storm-parallel", type=int, default=2000, help="storm: at once")
    parser.add_argument(
        "--hold",
        type=float,
        default=6.0,
        help="storm: seconds between the drop and the herd's first reconnect",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CPMS_NAME=VALUE",
        help="a server setting (repeatable), e.g. --set CPMS_OCPP_HANDSHAKES=32",
    )
    parser.add_argument(
        "--password",
        help="every station's password (HTTP Basic); the server has a CPMS_AUTH_SIGNING_KEY and "
        "each station the verifier it left when last let in (a restart)",
    )
    parser.add_argument(
        "--first-contact",
        action="store_true",
        help="with --password: no verifiers yet (each password checked with scrypt once)",
    )
    parser.add_argument(
        "--auto-register",
        action="store_true",
        help="the herd not provisioned: the cold phase is each station's first contact, "
        "registered as it connects (CPMS_OCPP_AUTO_REGISTER)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(trio.run(bench, args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
