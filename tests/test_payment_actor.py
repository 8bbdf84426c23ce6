"""PaymentActors on trio's autojump clock against the test database and the sandbox provider:
an invoice paid without a word from the provider is found by polling; an unpaid one is asked 20
times, 15 s apart, and expires; an invoice's actor brought back after a restart goes on; an
approval whose credit was interrupted is credited once when its actor comes back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import trio
import trio.testing

from actors.ledger import Ledger, storage_actor_spec
from actors.payment.actor import LINGER_S, PAYMENT, PaymentDeps
from actors.payment.provider import InvoiceStatus, Providers
from actors.payment.sandbox import SandboxProvider
from actors.payment.service import Payments
from actors.runtime import Registry, Supervisor, run_supervisor
from cpms.kernel.payments import POLL_EVERY_S, POLL_TIMES
from storage import Database
from storage import payments as payments_store
from storage.clients import ensure_client
from tests.clock import hold_while_the_database_answers

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TICK = 5.0


def virtual_now() -> datetime:
    return T0 + timedelta(seconds=trio.current_time())


async def ticker() -> None:
    """Keeps a deadline at most ``TICK`` ahead (a jump made while the database answers stays
    small)."""
    while True:  # noqa: ASYNC110 - a tick, not a wait for something
        await trio.sleep(TICK)


@dataclass
class Rig:
    db: Database
    registry: Registry
    payments: Payments
    sandbox: SandboxProvider
    client: uuid.UUID

    def running(self, invoice: str) -> bool:
        return self.registry.lookup(PAYMENT, invoice) is not None

    async def until(self, invoice: str, state: str) -> None:
        """Wait (virtual time, a second at a time) until the invoice's row is in ``state``."""
        while (await self.state(invoice))[0] != state:  # noqa: ASYNC110 - a row, no event
            await trio.sleep(1)

    async def topups(self) -> list[Decimal]:
        rows = await self.db.fetch(
            "SELECT amount FROM ledger_entries WHERE client_id = $1 AND type = 'topup'",
            self.client,
        )
        return [r["amount"] for r in rows]

    async def state(self, invoice: str) -> tuple[str, bool]:
        row = await payments_store.get(self.db, invoice)
        assert row is not None
        return row["state"], row["credited"]


async def start_payments(
    nursery: trio.Nursery, db: Database, sandbox: SandboxProvider
) -> tuple[Registry, Payments]:
    registry = Registry()
    supervisor: Supervisor = await nursery.start(run_supervisor, "test", registry)
    storage = await supervisor.start_child(storage_actor_spec(db))
    ledger = Ledger(storage, db, timeout=10**6)  # the database answers in real time
    payments = Payments(
        supervisor, PaymentDeps(db, ledger, registry, Providers.one(sandbox), virtual_now)
    )

    async def notify(invoice: str, status: InvoiceStatus) -> None:
        await payments.provider_said(invoice, status)

    sandbox.notify = notify  # what the provider's webhook does over HTTP
    return registry, payments


@pytest.fixture
async def rig(
    db: Database,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Rig]:
    autojump_clock.autojump_threshold = 0.02
    hold_while_the_database_answers(db, autojump_clock, monkeypatch)
    nursery.start_soon(ticker)
    sandbox = SandboxProvider()
    registry, payments = await start_payments(nursery, db, sandbox)
    client = uuid.uuid4()
    await ensure_client(db, client)
    yield Rig(db, registry, payments, sandbox, client)


async def test_an_invoice_paid_silently_is_found_by_polling(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    issued = await rig.payments.topup_qr(rig.client, Decimal("250"), None)
    invoice = issued["invoice_id"]
    await trio.sleep(POLL_EVERY_S * 3 + 1)
    assert rig.sandbox.polls[invoice] == 3
    assert (await rig.state(invoice))[0] == "pending"
    await rig.sandbox.pay(invoice, silent=True)
    with trio.fail_after(POLL_EVERY_S + TICK):
        await rig.until(invoice, "approved")
    assert rig.sandbox.polls[invoice] == 4
    assert (await rig.state(invoice))[0] == "approved"
    assert await rig.topups() == [Decimal("250.00")]


async def test_an_unpaid_invoice_is_asked_20_times_and_expires(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    began = trio.current_time()
    invoice = (await rig.payments.topup_qr(rig.client, Decimal("40"), None))["invoice_id"]
    with trio.fail_after(POLL_EVERY_S * (POLL_TIMES + 2)):
        await rig.until(invoice, "expired")
    with trio.fail_after(LINGER_S + TICK):
        while rig.running(invoice):  # noqa: ASYNC110 - it goes a minute after the invoice
            await trio.sleep(1)
    assert (await rig.state(invoice))[0] == "expired"
    assert rig.sandbox.polls[invoice] == POLL_TIMES
    assert trio.current_time() - began >= 300
    # the payer pays after all: told by the provider, a new actor credits it
    await rig.sandbox.pay(invoice)
    assert (await rig.state(invoice))[0] == "approved"
    assert await rig.topups() == [Decimal("40.00")]


async def test_an_open_invoice_goes_on_after_a_restart(
    db: Database,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    hold_while_the_database_answers(db, autojump_clock, monkeypatch)
    nursery.start_soon(ticker)
    sandbox = SandboxProvider()
    client = uuid.uuid4()
    await ensure_client(db, client)
    async with trio.open_nursery() as first:
        _, payments = await start_payments(first, db, sandbox)
        invoice = (await payments.topup_qr(client, Decimal("75"), None))["invoice_id"]
        await trio.sleep(POLL_EVERY_S * 2 + 1)
        first.cancel_scope.cancel()  # the server stops with the invoice open
    await sandbox.pay(invoice, silent=True)  # paid while nobody listened
    _, payments = await start_payments(nursery, db, sandbox)
    assert await payments.recover() == 1
    with trio.fail_after(POLL_EVERY_S + TICK):
        while (await payments_store.get(db, invoice) or {}).get("credited") is not True:  # noqa: ASYNC110
            await trio.sleep(1)
    rows = await db.fetch("SELECT amount FROM ledger_entries WHERE invoice_id = $1", invoice)
    assert [r["amount"] for r in rows] == [Decimal("75.00")]


async def test_an_approval_whose_credit_was_cut_off_is_credited_once(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    invoice = (await rig.payments.topup_qr(rig.client, Decimal("60"), None))["invoice_id"]
    transaction = await rig.sandbox.pay(invoice)
    assert await rig.topups() == [Decimal("60.00")]
    # as if the server died after the credit and before the row said so
    await rig.db.execute("UPDATE invoices SET credited = false WHERE id = $1", invoice)
    assert await rig.payments.recover() == 1
    view = await rig.payments.provider_said(
        invoice, InvoiceStatus("approved", transaction, Decimal("60"))
    )
    assert view.credited
    assert await rig.topups() == [Decimal("60.00")]  # the ledger's key made the repeat a replay
