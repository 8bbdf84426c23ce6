"""``cpms sim``: a fleet of virtual charge points against a running server, with a report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

from sim.drivers import DriverOptions
from sim.fleet import SCENARIOS, FleetOptions
from sim.report import build_report, report_tables
from sim.runner import SimError, run_local, run_workers
from sim.stats import Stats

Common = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class SimSecrets:
    """What ``cpms sim`` takes from the environment, read by the command line that runs it
    (``CPMS_JWT_SECRET``, ``CPMS_ADMIN_TOKEN``, ``CPMS_SIM_PASSWORD``, ``CPMS_JWT_AUDIENCE``)."""

    jwt_secret: str | None = None
    admin_token: str | None = None
    sim_password: str | None = None
    jwt_audience: str = "authenticated"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str, *, allow_zero: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise argparse.ArgumentTypeError(f"must be {'≥' if allow_zero else '>'} 0, not {text}")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected K/W, e.g. 0/4") from None
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"shard {shard} is outside 0..{shards - 1}")
    return shard, shards


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--stations", type=_positive_int, default=10, help="stations (default 10)")
    fleet.add_argument(
        "--connectors", type=_positive_int, default=2, help="connectors per station (default 2)"
    )
    fleet.add_argument("--prefix", default="SIM", help="station id prefix: PREFIX-00001, ...")
    fleet.add_argument(
        "--password",
        help="HTTP Basic password of every station (or CPMS_SIM_PASSWORD; default none)",
    )
    fleet.add_argument(
        "--duration",
        type=_seconds,
        default=60.0,
        help="seconds to run, then end sessions and report (default 60; 0 = until Ctrl-C)",
    )
    fleet.add_argument(
        "--ramp", type=_seconds, default=10.0, help="seconds over which stations connect"
    )
    fleet.add_argument("--scenario", choices=SCENARIOS, default="steady")
    fleet.add_argument(
        "--meter-interval",
        type=lambda s: _seconds(s, allow_zero=False),
        default=15.0,
        help="seconds between MeterValues while charging (default 15)",
    )
    fleet.add_argument(
        "--idle-mean",
        type=lambda s: _seconds(s, allow_zero=False),
        default=120.0,
        help="mean seconds a connector waits for its next driver (default 120)",
    )
    fleet.add_argument(
        "--speed",
        type=lambda s: _seconds(s, allow_zero=False),
        default=1.0,
        help="simulated seconds per real second for batteries and heartbeats (default 1)",
    )
    fleet.add_argument(
        "--tag",
        action="append",
        default=[],
        dest="tags",
        help="id tag drivers present (repeat; default: random unknown tags)",
    )
    fleet.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def add_sim_commands(commands: Any, common: Common) -> argparse.ArgumentParser:
    """Add ``sim`` to ``commands``; the caller sets its handler (:func:`cmd_sim` with the
    environment's :class:`SimSecrets`)."""
    sim = commands.add_parser(
        "sim",
        help="run a fleet of virtual charge points against a server",
        description="Run N virtual OCPP 1.6J charge points with drivers against a cpms server, "
        "show live counters and end with a report.",
    )
    common(sim)
    sim.add_argument(
        "--url", required=True, help="OCPP base URL; /STATION_ID is appended (ws://host:9000/ws)"
    )
    add_fleet_arguments(sim)
    app = sim.add_argument_group("app-side drivers (the mobile app's REST calls)")
    app.add_argument("--rest-url", help="the REST facade, e.g. http://127.0.0.1:8080")
    app.add_argument(
        "--drivers",
        type=_positive_int,
        help="app users starting and stopping sessions through REST (needs --rest-url and the "
        "server's CPMS_JWT_SECRET and CPMS_ADMIN_TOKEN in the environment, to sign tokens and "
        "fund wallets)",
    )
    sim.add_argument(
        "--workers", type=_positive_int, default=1, help="processes to spread stations over"
    )
    sim.add_argument("--report", type=Path, help="write the report as JSON to this file")
    sim.add_argument("--no-live", action="store_true", help="no live view, just the report")
    sim.add_argument("--shard", type=_shard, help=argparse.SUPPRESS)
    sim.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser: argparse.ArgumentParser = sim
    return parser


def driver_options(args: argparse.Namespace, secrets: SimSecrets) -> DriverOptions | None:
    """The app-side drivers asked for, or None; SimError when they can't run."""
    if not getattr(args, "drivers", None):
        return None
    missing = [
        name
        for name, value in (
            ("--rest-url", args.rest_url),
            ("CPMS_JWT_SECRET", secrets.jwt_secret),
            ("CPMS_ADMIN_TOKEN", secrets.admin_token),
        )
        if not value
    ]
    if missing:
        raise SimError(f"--drivers needs {', '.join(missing)}")
    assert secrets.jwt_secret is not None and secrets.admin_token is not None
    shard, shards = args.shard if getattr(args, "shard", None) else (0, 1)
    share = args.drivers // shards + (1 if shard < args.drivers % shards else 0)
    return DriverOptions(
        rest_url=args.rest_url,
        drivers=share,
        jwt_secret=secrets.jwt_secret,
        admin_token=secrets.admin_token,
        idle_mean=args.idle_mean,
        seed=args.seed * 1000 + shard,
        audience=secrets.jwt_audience,
    )


def fleet_options(args: argparse.Namespace, secrets: SimSecrets, url: str) -> FleetOptions:
    password = args.password if args.password is not None else secrets.sim_password
    shard, shards = args.shard if getattr(args, "shard", None) else (0, 1)
    return FleetOptions(
        url=url,
        stations=args.stations,
        connectors=args.connectors,
        prefix=args.prefix,
        password=password,
        duration=args.duration,
        ramp=args.ramp,
        scenario=args.scenario,
        meter_interval=args.meter_interval,
        seed=args.seed,
        idle_mean=args.idle_mean,
        time_scale=args.speed,
        tags=tuple(args.tags),
        shard=shard,
        shards=shards,
        drivers=driver_options(args, secrets),
    )


def cmd_sim(args: argparse.Namespace, secrets: SimSecrets) -> int:
    if args.workers > args.stations:
        print(f"cpms sim: --workers {args.workers} is more than --stations", file=sys.stderr)
        return 2
    try:
        options = fleet_options(args, secrets, args.url)
    except SimError as error:
        print(f"cpms sim: {error}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    live = None if (args.no_live or args.stream or not console.is_terminal) else console

    async def run() -> tuple[Stats, float]:
        if args.workers > 1:
            return await run_workers(options, args.workers, console=live)
        return await run_local(options, console=live, stream=args.stream)

    try:
        stats, elapsed = trio.run(run)
    except SimError as error:
        print(f"cpms sim: {error}", file=sys.stderr)
        return 1
    if args.stream:
        return 0
    report = build_report(stats, elapsed=elapsed, scenario=options.scenario, seed=options.seed)
    print_report(report, args.report)
    return 0


def print_report(report: dict[str, Any], path: Path | None) -> None:
    Console(highlight=False).print(report_tables(report))
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
