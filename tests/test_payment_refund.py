"""Refunding a top-up (``cpms payments refund``): the wallet debited by a ``topup_refund``
entry naming the invoice, the provider paying back, the invoice counting it; a refund run again
after a crash is the same refund; a provider that refuses leaves the wallet whole; every refusal
changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import trio

from actors.payment.provider import ProviderError
from actors.payment.refund import refund_topup
from actors.payment.sandbox import SandboxProvider
from actors.payment.service import Payments
from cpms.cli.main import main
from cpms.kernel.errors import Conflict, InsufficientBalance, InvalidRequest, NotFound, Unavailable
from cpms.kernel.payments import Card
from storage import Database
from storage import payments as payments_store
from storage.clients import ensure_client
from tests.test_payment_actor import start_payments


@dataclass
class Rig:
    db: Database
    payments: Payments
    sandbox: SandboxProvider
    client: uuid.UUID

    async def paid(self, amount: str) -> str:
        card = Card("4169585512345678", "TEST CARD", "12/30", "739", today=date.today())
        invoice, _, view = await self.payments.topup_card(self.client, Decimal(amount), card, None)
        assert view is not None and view.credited
        return invoice

    async def refund(self, invoice: str, amount: str | None = None) -> Any:
        deps = self.payments.deps
        return await refund_topup(
            self.db, deps.ledger, deps.providers, invoice, amount=amount, reason="the driver asked"
        )

    async def wallet(self) -> tuple[Decimal, Decimal]:
        """The balance, and the sum of the client's ledger entries."""
        balance = await self.db.fetchval("SELECT balance FROM clients WHERE id = $1", self.client)
        total = await self.db.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE client_id = $1", self.client
        )
        return balance, total


@pytest.fixture
async def rig(db: Database, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    sandbox = SandboxProvider()
    _registry, payments = await start_payments(nursery, db, sandbox)
    client = uuid.uuid4()
    await ensure_client(db, client)
    yield Rig(db, payments, sandbox, client)


async def test_a_top_up_refunded_in_two_parts(rig: Rig) -> None:
    invoice = await rig.paid("500")
    first = await rig.refund(invoice, "120.50")
    assert (first.amount, first.balance, first.refunded_total) == (
        Decimal("120.50"),
        Decimal("379.50"),
        Decimal("120.50"),
    )
    rest = await rig.refund(invoice)  # all that is left
    assert rest.amount == Decimal("379.50") and rest.balance == Decimal("0.00")
    assert rig.sandbox.invoices[invoice].refunded == Decimal("500")
    entries = await rig.db.fetch(
        "SELECT type, amount, invoice_id FROM ledger_entries WHERE client_id = $1 ORDER BY id",
        rig.client,
    )
    assert [(e["type"], e["amount"], e["invoice_id"]) for e in entries] == [
        ("topup", Decimal("500.00"), invoice),
        ("topup_refund", Decimal("-120.50"), invoice),
        ("topup_refund", Decimal("-379.50"), invoice),
    ]
    row = await payments_store.get(rig.db, invoice)
    assert row is not None and (row["refunded_amount"], row["refunds"]) == (Decimal("500"), 2)
    audit = [a["event"] for a in await payments_store.audit_of(rig.db, invoice)]
    assert audit.count("refunded") == 2
    with pytest.raises(Conflict, match="in full"):
        await rig.refund(invoice)
    balance, total = await rig.wallet()
    assert balance == total == Decimal("0")


async def test_refusals_change_nothing(rig: Rig) -> None:
    invoice = await rig.paid("100")
    pending = (await rig.payments.topup_qr(rig.client, Decimal("50"), None))["invoice_id"]
    with pytest.raises(NotFound):
        await rig.refund("INV-20261203-999999")
    with pytest.raises(Conflict, match="credited"):
        await rig.refund(pending)
    with pytest.raises(InvalidRequest, match="at most 100"):
        await rig.refund(invoice, "100.01")
    with pytest.raises(InvalidRequest):
        await rig.refund(invoice, "-5")
    await rig.payments.deps.ledger.adjust(rig.client, "-60", key="spent", reason="charging")
    with pytest.raises(InsufficientBalance):  # the wallet spent it: nothing to return from
        await rig.refund(invoice)
    row = await payments_store.get(rig.db, invoice)
    assert row is not None and (row["refunded_amount"], row["refunds"]) == (Decimal("0"), 0)
    assert rig.sandbox.invoices[invoice].refunded == 0
    assert await rig.wallet() == (Decimal("40.00"), Decimal("40.00"))


async def test_a_refund_run_again_after_a_crash_is_the_same_refund(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = await rig.paid("300")

    async def crash(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("the operator's laptop died")

    real = payments_store.record_refund
    monkeypatch.setattr(payments_store, "record_refund", crash)
    with pytest.raises(RuntimeError):  # debited and paid back, not yet counted
        await rig.refund(invoice, "100")
    monkeypatch.setattr(payments_store, "record_refund", real)
    again = await rig.refund(invoice, "100")
    assert again.balance == Decimal("200.00") and again.refunded_total == Decimal("100")
    assert len(rig.sandbox.refunds) == 1 and rig.sandbox.invoices[invoice].refunded == 100
    assert await rig.wallet() == (Decimal("200.00"), Decimal("200.00"))


async def test_a_provider_that_refuses_leaves_the_wallet_whole(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = await rig.paid("80")

    async def refuse(*args: object, **kwargs: object) -> str:
        raise ProviderError("refunds are closed today")

    monkeypatch.setattr(rig.sandbox, "refund", refuse)
    with pytest.raises(Unavailable, match="did not refund"):
        await rig.refund(invoice)
    assert await rig.wallet() == (Decimal("80.00"), Decimal("80.00"))
    monkeypatch.undo()
    done = await rig.refund(invoice)  # the next attempt is a refund of its own
    assert done.balance == Decimal("0.00")
    row = await payments_store.get(rig.db, invoice)
    assert row is not None and (row["refunded_amount"], row["refunds"]) == (Decimal("80"), 2)


def test_the_refund_command(cli_env: None, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = uuid.uuid4()

    async def paid() -> str:
        from storage.database import open_database

        async with open_database(dsn) as db, trio.open_nursery() as nursery:
            await ensure_client(db, client)
            _registry, payments = await start_payments(nursery, db, SandboxProvider())
            card = Card("4169585512345678", "TEST CARD", "12/30", "739", today=date.today())
            invoice, _, _ = await payments.topup_card(client, Decimal("250"), card, None)
            nursery.cancel_scope.cancel()
        return invoice

    invoice = trio.run(paid)
    capsys.readouterr()
    assert main(["payments", "refund", invoice, "--amount", "50", "--reason", "asked"]) == 0
    done = capsys.readouterr().out
    assert "refunded 50.00" in done and "balance 200.00" in done
    assert main(["payments", "refund", invoice, "--amount", "500", "--reason", "asked"]) != 0
    assert "at most 200.00" in capsys.readouterr().err
    assert main(["payments", "show", invoice]) == 0
    assert "refunded" in capsys.readouterr().out
