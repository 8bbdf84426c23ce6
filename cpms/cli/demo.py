"""``cpms demo``: the server on the embedded database, the Bishkek demo network, and a fleet of
simulated chargers with drivers, with the live view. Ctrl-C (or ``--duration``) ends it with a
summary: what the fleet did, and what the server recorded."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import trio
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from actors.ledger.client import discrepancies
from cpms.cli.demo_data import ID_TAGS, STATIONS, seed_demo
from cpms.logs import configure_logging
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from sim.cli import print_report
from sim.drivers import DriverOptions
from sim.fleet import FleetOptions
from sim.report import build_report
from sim.runner import run_local
from storage import Database, open_storage, wallets
from storage import sessions as sessions_store
from storage import stations as store

Common = Callable[[argparse.ArgumentParser], None]
DC_TYPES = {"CCS2", "GBT", "CHAdeMO"}


def add_demo_command(commands: Any, common: Common) -> None:
    demo = commands.add_parser(
        "demo",
        help="server + demo network + simulated chargers and drivers, live (Ctrl-C ends)",
        description="Start cpms on the embedded database, load the demo network in Bishkek and "
        "run simulated chargers with drivers against it. Ctrl-C ends with a summary.",
    )
    common(demo)
    demo.add_argument("--http-port", type=int, help="REST facade port (CPMS_HTTP_PORT)")
    demo.add_argument("--ocpp-port", type=int, help="OCPP listener port (CPMS_OCPP_PORT)")
    demo.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (default 0: until Ctrl-C)"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=30.0,
        help="simulated seconds per real second for batteries (default 30)",
    )
    demo.add_argument(
        "--idle-mean", type=float, default=20.0, help="mean seconds between drivers (default 20)"
    )
    demo.add_argument(
        "--app-drivers", type=int, default=4, help="drivers using the app's REST API (default 4)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-live", action="store_true", help="no live view")
    demo.set_defaults(handler=cmd_demo)


async def _layout(db: Database) -> tuple[tuple[str, tuple[tuple[float, bool], ...]], ...]:
    """The demo stations with their configured connectors, as the fleet should simulate them."""
    ids = [str(s["id"]) for s in STATIONS]
    rows = await store.connectors_of(db, ids)
    stations: dict[str, list[tuple[float, bool]]] = {}
    for row in rows:
        spec = (float(row["power_kw"] or 22), row["connector_type"] in DC_TYPES)
        stations.setdefault(row["station_id"], []).append(spec)
    return tuple((station, tuple(specs)) for station, specs in stations.items())


async def _recorded(db: Database, since: datetime) -> dict[str, Any]:
    row = await sessions_store.counts_since(db, since)
    money = await wallets.charged_since(db, since)
    return {
        "sessions": row["sessions"],
        "settled": row["settled"],
        "energy_kwh": row["energy"],
        "money_charged": money,
        "ledger_problems": len(await discrepancies(db)),
    }


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.log_level is None and "CPMS_LOG_LEVEL" not in os.environ:
        configure_logging("WARNING", settings.log_format)  # the live view needs the terminal
    console = Console(stderr=True)
    live = None if args.no_live or not console.is_terminal else console

    # The demo's app drivers sign their tokens and fund their wallets with these (one run's).
    secrets_for_demo = {
        name: SecretStr(secrets.token_urlsafe(32))
        for name in ("jwt_secret", "admin_token")
        if getattr(settings, name) is None
    }
    settings = settings.model_copy(update=secrets_for_demo)
    assert settings.jwt_secret is not None and settings.admin_token is not None
    jwt_secret = settings.jwt_secret.get_secret_value()
    admin_token = settings.admin_token.get_secret_value()

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with open_storage(database_url=settings.database_dsn, pg_dir=settings.pg_dir) as db:
            await seed_demo(db)
            layout = await _layout(db)
            since = datetime.now(UTC)
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
                console.print(
                    f"cpms demo: REST {endpoints.http_url}  OCPP {endpoints.ocpp_url}  "
                    f"{len(layout)} stations; Ctrl-C ends"
                )
                options = FleetOptions(
                    url=endpoints.ocpp_url,
                    layout=layout,
                    duration=args.duration,
                    ramp=2.0,
                    meter_interval=5.0,
                    idle_mean=args.idle_mean,
                    stay_max=600.0,
                    time_scale=args.speed,
                    tags=tuple(t.id_tag for t in ID_TAGS),
                    seed=args.seed,
                    drivers=DriverOptions(
                        rest_url=endpoints.http_url,
                        drivers=args.app_drivers,
                        jwt_secret=jwt_secret,
                        admin_token=admin_token,
                        idle_mean=args.idle_mean,
                        seed=args.seed,
                        audience=settings.jwt_audience,
                    ),
                )
                stats, elapsed = await run_local(options, console=live)
                await trio.sleep(0.5)  # the server's batched writes
                recorded = await _recorded(db, since)
                shutdown.set()
        report = build_report(stats, elapsed=elapsed, scenario="demo", seed=args.seed)
        return report, recorded

    report, recorded = trio.run(run)
    print_report(report, None)
    _print_recorded(recorded)
    return 0 if recorded["ledger_problems"] == 0 else 1


def _print_recorded(recorded: dict[str, Any]) -> None:
    table = Table(title="what the server recorded", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("charging sessions (settled)", f"{recorded['sessions']} ({recorded['settled']})")
    table.add_row("energy", f"{Decimal(recorded['energy_kwh']):.3f} kWh")
    table.add_row("money charged", f"{recorded['money_charged']} KGS")
    problems = recorded["ledger_problems"]
    verdict = f"{problems} MISMATCH" if problems else "OK: every balance = its entries"
    table.add_row("ledger check", verdict)
    Console(highlight=False, file=sys.stdout).print(table)
