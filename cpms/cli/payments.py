"""``cpms payments list|show|refund``: top-up invoices for operators (never card data: only
masks), and returning a top-up to its payer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import trio
from rich.console import Console

from actors.payment.refund import refund_topup
from cpms.cli.network import db_command
from cpms.kernel.errors import NotFound
from cpms.kernel.payments import PaymentState
from cpms.server.core import open_core
from cpms.server.payments import open_providers
from cpms.settings import Settings
from storage import Database
from storage import payments as payments_store

Common = Callable[[argparse.ArgumentParser], None]
out = Console(highlight=False, soft_wrap=True)


def add_payments_commands(commands: Any, common: Common) -> None:
    payments = commands.add_parser("payments", help="inspect top-up invoices")
    actions = payments.add_subparsers(dest="payments_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest invoices, of one state or all")
    common(listing)
    listing.add_argument("--state", choices=[s.value for s in PaymentState])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=db_command(_list))
    show = actions.add_parser("show", help="one invoice and its audit log")
    common(show)
    show.add_argument("invoice_id")
    show.set_defaults(handler=db_command(_show))
    refund = actions.add_parser(
        "refund",
        help="return a credited top-up to the payer: the wallet is debited, the provider pays back",
    )
    common(refund)
    refund.add_argument("invoice_id")
    refund.add_argument("--amount", help="how much (default: all that is left)")
    refund.add_argument("--reason", required=True, help="why, for the audit log and the ledger")
    refund.set_defaults(handler=_refund)


async def _list(db: Database, args: argparse.Namespace) -> str:
    rows = await payments_store.listing(db, state=args.state, limit=min(max(1, args.limit), 1000))
    lines = [
        f"{r['id']}  {r['method']:<4}  {r['state']:<8}  {r['amount']:>10}  "
        f"{'credited' if r['credited'] else (r['credit_error'] or '-'):<14}  "
        f"{r['created_at']:%Y-%m-%d %H:%M:%S}  client {r['client_id']}"
        + (f"  card {r['card_mask']}" if r["card_mask"] else "")
        for r in rows
    ]
    return "\n".join([*lines, f"{len(rows)} invoice(s)"])


async def _show(db: Database, args: argparse.Namespace) -> str:
    row = await payments_store.get(db, args.invoice_id)
    if row is None:
        raise NotFound(f"payment {args.invoice_id} not found", code="payment_not_found")
    fields = (
        "client_id", "provider", "method", "amount", "state", "status", "paid_amount",
        "provider_ref", "provider_tx", "card_mask", "credited", "credit_error", "checks",
        "refunded_amount", "refunds",
        "created_at", "expires_at", "paid_at", "credited_at",
    )  # fmt: skip
    lines = [f"invoice {row['id']}", *(f"  {name}: {row[name]}" for name in fields)]
    lines.append("audit:")
    for entry in await payments_store.audit_of(db, args.invoice_id):
        lines.append(
            f"  {entry['created_at']:%Y-%m-%d %H:%M:%S}  {entry['event']}  {entry['data']}"
        )
    return "\n".join(lines)


def _refund(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> None:
        async with open_core(settings) as core, open_providers(settings) as providers:
            done = await refund_topup(
                core.db,
                core.ledger,
                providers,
                args.invoice_id,
                amount=args.amount,
                reason=args.reason,
            )
        out.print(
            f"refunded {done.amount} of {done.invoice_id} (refund {done.refund_ref}); "
            f"{done.refunded_total} refunded in all; wallet balance {done.balance}"
        )

    trio.run(run)
    return 0
