"""The ``cpms`` command: the server and the operator's tools.

Every command reads the settings once (``CPMS_*`` environment, then the flags given here) and
works whether or not a server is running on the same data directory.
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
import trio
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from actors.push.webpush import new_key_pair
from actors.session.record import open_report
from cpms import __version__
from cpms.cli.demo import add_demo_command
from cpms.cli.network import add_network_commands
from cpms.cli.payments import add_payments_commands
from cpms.cli.sandbox import add_sandbox_command
from cpms.kernel.errors import CpmsError
from cpms.logs import configure_logging
from cpms.server.app import run_server
from cpms.server.core import open_core, session_timings
from cpms.settings import Settings, SettingsError, load_settings
from sim.cli import SimSecrets, add_sim_commands, cmd_sim
from storage import migrate, open_storage
from storage import sessions as sessions_store
from storage.clients import ensure_client, get_client
from storage.errors import StorageError
from storage.ledger_ops import parse_uuid
from storage.migrate import load_migrations

log = structlog.stdlib.get_logger("cpms.cli.main")
out = Console(highlight=False, soft_wrap=True)

Handler = Callable[[argparse.Namespace, Settings], int]


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override CPMS_* variables)")
    group.add_argument("--data-dir", help="data directory (CPMS_DATA_DIR, default ./.cpms)")
    group.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (CPMS_LOG_LEVEL)")
    group.add_argument("--log-format", help="console or json (CPMS_LOG_FORMAT)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpms", description="Actor-based charge-point management system (OCPP 1.6J)."
    )
    parser.add_argument("--version", action="version", version=f"cpms {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (OCPP listener + REST facade)")
    _common(serve)
    serve.add_argument("--http-host", help="REST facade address (CPMS_HTTP_HOST)")
    serve.add_argument("--http-port", type=int, help="REST facade port (CPMS_HTTP_PORT)")
    serve.add_argument("--ocpp-host", help="OCPP listener address (CPMS_OCPP_HOST)")
    serve.add_argument("--ocpp-port", type=int, help="OCPP listener port (CPMS_OCPP_PORT)")
    serve.set_defaults(handler=cmd_serve)

    mig = commands.add_parser("migrate", help="apply pending database migrations and exit")
    _common(mig)
    mig.set_defaults(handler=cmd_migrate)

    keys = commands.add_parser(
        "vapid-keys", help="print a new VAPID key pair for Web Push, as environment lines"
    )
    keys.set_defaults(handler=cmd_vapid_keys)

    wallet = commands.add_parser("wallet", help="inspect and correct client wallets")
    wallet_cmds = wallet.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")

    credit = wallet_cmds.add_parser(
        "credit", help="credit a client's balance (ledger type: adjustment)"
    )
    _common(credit)
    credit.add_argument("client_id", help="client UUID")
    credit.add_argument("amount", help="amount in som, e.g. 500 or 150.50")
    credit.add_argument("--reason", required=True, help="why (kept in the ledger)")
    credit.add_argument(
        "--key", help="idempotency key; repeat a command with the same key to be safe"
    )
    credit.add_argument("--create", action="store_true", help="create the client if unknown")
    credit.set_defaults(handler=cmd_wallet_credit)

    adjust = wallet_cmds.add_parser(
        "adjust", help="correct a balance by a signed amount (a debit can't go below zero)"
    )
    _common(adjust)
    adjust.add_argument("client_id", help="client UUID")
    adjust.add_argument("amount", help="signed amount in som, e.g. -25.50")
    adjust.add_argument("--reason", required=True, help="why (kept in the ledger)")
    adjust.add_argument("--key", help="idempotency key")
    adjust.set_defaults(handler=cmd_wallet_adjust)

    show = wallet_cmds.add_parser("show", help="balance, money on hold and recent entries")
    _common(show)
    show.add_argument("client_id", help="client UUID")
    show.add_argument("--limit", type=int, default=20, help="entries to show (default 20)")
    show.set_defaults(handler=cmd_wallet_show)

    check = wallet_cmds.add_parser(
        "check", help="verify every balance equals the sum of its ledger entries"
    )
    _common(check)
    check.set_defaults(handler=cmd_wallet_check)
    sessions = commands.add_parser("sessions", help="inspect charging sessions")
    sessions_cmds = sessions.add_subparsers(
        dest="sessions_command", required=True, metavar="ACTION"
    )
    listing = sessions_cmds.add_parser(
        "list", help="the newest sessions; --open: every session not ended, with its deadline"
    )
    _common(listing)
    listing.add_argument("--open", action="store_true", help="only sessions not ended yet")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_sessions_list)
    add_network_commands(commands, _common)
    add_payments_commands(commands, _common)
    add_sandbox_command(commands, _common)
    add_sim_commands(commands, _common).set_defaults(handler=cmd_sim_with_settings)
    add_demo_command(commands, _common)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "data_dir",
        "log_level",
        "log_format",
        "http_host",
        "http_port",
        "ocpp_host",
        "ocpp_port",
    )
    return {name: getattr(args, name, None) for name in names}


def cmd_sim_with_settings(args: argparse.Namespace, settings: Settings) -> int:
    """``cpms sim`` with the secrets the settings took from the environment."""

    def secret(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    return cmd_sim(
        args,
        SimSecrets(
            jwt_secret=secret(settings.jwt_secret),
            admin_token=secret(settings.admin_token),
            sim_password=secret(settings.sim_password),
            jwt_audience=settings.jwt_audience,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(_overrides(args))
    except SettingsError as exc:
        print(f"cpms: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except BaseException as exc:  # translate known failures (also inside groups) to messages
        known = _known_failure(exc)
        if known is None:
            raise
        print(f"cpms: {known}", file=sys.stderr)
        return 1


def _known_failure(exc: BaseException) -> str | None:
    """A one-line message for a refusal or infrastructure failure, found inside groups too."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _known_failure(exc.exceptions[0])
    if isinstance(exc, CpmsError):
        return f"{exc.message} ({exc.code})"
    if isinstance(exc, StorageError):
        return str(exc)
    return None


# -- serve --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    trio.run(_serve, settings)
    return 0


async def _serve(settings: Settings) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signals, shutdown, nursery.cancel_scope, settings.shutdown_timeout)
        await run_server(settings, shutdown)
        nursery.cancel_scope.cancel()


async def _on_signals(shutdown: trio.Event, scope: trio.CancelScope, timeout: float) -> None:
    """First SIGINT/SIGTERM: orderly shutdown with a deadline; second: stop at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if shutdown.is_set():
                log.warning("second signal: stopping now", signal=name)
                scope.cancel()
                return
            log.info("shutting down", signal=name, timeout_s=timeout)
            shutdown.set()
            # Leave a third of the budget for closing the pool and stopping the database.
            scope.deadline = trio.current_time() + timeout * 2 / 3


# -- vapid-keys ---------------------------------------------------------------------------------


def cmd_vapid_keys(args: argparse.Namespace, settings: Settings) -> int:
    private, public = new_key_pair()
    print("# Web Push: keep the private key secret; the subject is who push services can write to")
    print(f"CPMS_VAPID_PRIVATE_KEY={private}")
    print(f"CPMS_VAPID_PUBLIC_KEY={public}")
    print("CPMS_VAPID_SUBJECT=mailto:ops@example.com")
    return 0


# -- migrate ------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> list[int]:
        async with open_storage(
            database_url=settings.database_dsn, pg_dir=settings.pg_dir, run_migrations=False
        ) as db:
            return await migrate(db)

    applied = trio.run(run)
    names = {m.version: f"{m.version:04d}_{m.name}" for m in load_migrations()}
    for version in applied:
        out.print(f"applied {names[version]}")
    out.print("migrations: up to date" if not applied else f"{len(applied)} migration(s) applied")
    return 0


# -- wallet -------------------------------------------------------------------------------------


def cmd_wallet_credit(args: argparse.Namespace, settings: Settings) -> int:
    client_id = parse_uuid(args.client_id, field="client_id", code="invalid_client_id")
    key = args.key or f"cli:credit:{uuid.uuid4()}"

    async def run() -> None:
        async with open_core(settings) as core:
            if args.create:
                await ensure_client(core.db, client_id)
            result = await core.ledger.credit(
                client_id, args.amount, key=key, entry_type="adjustment", description=args.reason
            )
        note = " (already applied earlier with this key)" if result.replayed else ""
        out.print(f"credited {args.amount} to {client_id}; balance {result.balance}{note}")
        out.print(f"idempotency key: {key}")

    trio.run(run)
    return 0


def cmd_wallet_adjust(args: argparse.Namespace, settings: Settings) -> int:
    client_id = parse_uuid(args.client_id, field="client_id", code="invalid_client_id")
    key = args.key or f"cli:adjust:{uuid.uuid4()}"

    async def run() -> None:
        async with open_core(settings) as core:
            result = await core.ledger.adjust(client_id, args.amount, key=key, reason=args.reason)
        note = " (already applied earlier with this key)" if result.replayed else ""
        out.print(f"adjusted {client_id} by {args.amount}; balance {result.balance}{note}")
        out.print(f"idempotency key: {key}")

    trio.run(run)
    return 0


def cmd_wallet_show(args: argparse.Namespace, settings: Settings) -> int:
    client_id = parse_uuid(args.client_id, field="client_id", code="invalid_client_id")

    async def run() -> None:
        async with open_core(settings) as core:
            client = await get_client(core.db, client_id)
            held = await core.ledger.held(client_id)
            entries = await core.ledger.entries(client_id, limit=max(1, args.limit))
        out.print(f"client   {client['id']}  ({client['status']})")
        out.print(f"balance  {client['balance']} KGS")
        out.print(f"on hold  {held} KGS")
        table = Table("when (UTC)", "type", "amount", "before", "after", "reference")
        for e in entries:
            ref = e["description"] or e["invoice_id"] or e["session_id"] or e["hold_id"] or ""
            table.add_row(
                e["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
                e["type"],
                f"{e['amount']:+}",
                str(e["balance_before"]),
                str(e["balance_after"]),
                str(ref),
            )
        out.print(table)

    trio.run(run)
    return 0


def cmd_wallet_check(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with open_core(settings) as core:
            problems = await core.ledger.discrepancies()
            holds = await sessions_store.held_holds(core.db)
        for p in problems:
            out.print(f"MISMATCH {p.client_id}: balance {p.balance} != entries {p.entries_sum}")
        if not problems:
            out.print("ledger OK: every balance equals the sum of its entries")
        timings, now = session_timings(settings), datetime.now(UTC)
        stale = 0
        for row in holds:
            report = open_report(row, timings, now)
            if report["overdue"] or report["next_deadline"] is None:
                stale += 1
                due = report["next_deadline"]
                out.print(
                    f"STALE HOLD {row['hold_amount']} KGS of {row['client_id']} since "
                    f"{row['held_since']:%Y-%m-%d %H:%M:%S}: session {row['id']} is "
                    f"{row['status']}, " + ("ended" if due is None else f"due {due:%H:%M:%S}")
                )
        if not stale:
            out.print(f"holds OK: {len(holds)} on hold, none past its session's deadline")
        return 1 if problems or stale else 0

    return trio.run(run)


def cmd_sessions_list(args: argparse.Namespace, settings: Settings) -> int:
    limit = min(max(1, args.limit), 1000)

    async def run() -> None:
        async with open_core(settings) as core:
            rows = await (
                sessions_store.list_open(core.db, limit)
                if args.open
                else sessions_store.recent(core.db, limit)
            )
        timings, now = session_timings(settings), datetime.now(UTC)
        for row in rows:  # a line each, whole ids: an operator copies them
            report = open_report(row, timings, now)
            due = report["next_deadline"]
            when = "ended" if due is None else f"next deadline {due:%Y-%m-%d %H:%M:%S}"
            out.print(
                f"{report['id']}  {row['station_id']}/{row['connector_id']}  "
                f"{row['status']:<9}  age {_age(report['age_seconds']):>7}  {when}"
                + ("  OVERDUE" if report["overdue"] else "")
                + f"  client {report['client_id']}"
            )
        out.print(f"{len(rows)} session(s)" + (" not ended" if args.open else ""))

    trio.run(run)
    return 0


def _age(seconds: int) -> str:
    minutes, _ = divmod(max(0, seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"
