"""Top-ups in the server: the payment providers the settings name, a supervisor with a
PaymentActor per open invoice, and every open invoice's actor brought back at start."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import structlog
import trio

from actors.core import Core
from actors.payment.actor import PaymentDeps
from actors.payment.obank import ObankProvider
from actors.payment.odengi import ODengiProvider
from actors.payment.provider import InvoiceStatus, PaymentProvider, Providers
from actors.payment.sandbox import SandboxProvider
from actors.payment.service import Payments
from actors.runtime import Supervisor, run_supervisor
from cpms.server.central import CHILD_INTENSITY
from cpms.settings import Settings

log = structlog.stdlib.get_logger("cpms.server.payments")


def _now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[Providers]:
    """The QR and card providers the settings name (their HTTP clients closed after)."""
    base = f"http://{settings.http_host}:{settings.http_port}"
    sandbox = SandboxProvider(base_url=base)
    qr: SandboxProvider | ODengiProvider = sandbox
    if settings.payment_provider == "odengi":
        assert settings.odengi_url and settings.odengi_sid and settings.odengi_password
        qr = ODengiProvider(
            settings.odengi_url,
            settings.odengi_sid,
            settings.odengi_password.get_secret_value(),
            test=settings.odengi_test,
        )
    card: SandboxProvider | ObankProvider | None = None
    if settings.cards == "sandbox":
        card = sandbox
    elif settings.cards == "obank":
        assert settings.obank_url and settings.obank_cert and settings.obank_key
        tls = ObankProvider.tls(
            str(settings.obank_cert),
            str(settings.obank_key),
            None if settings.obank_ca is None else str(settings.obank_ca),
        )
        card = ObankProvider(
            settings.obank_url,
            settings.obank_point_id or "",
            settings.obank_service_id or "",
            tls,
            term_url=f"{base}/api/v1/payment/3ds-callback",
        )
    try:
        yield Providers(qr, card)
    finally:
        for provider in {id(p): p for p in (qr, card)}.values():
            if isinstance(provider, ODengiProvider | ObankProvider):
                with trio.CancelScope(shield=True):
                    await provider.aclose()


async def run_payments(
    core: Core,
    settings: Settings,
    *,
    provider: PaymentProvider | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[Payments] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run top-ups until ``shutdown_trigger`` returns; reports the :class:`Payments` door once
    ready. ``provider``: one for both QR and cards instead of the settings' (tests)."""
    async with open_providers(settings) as configured, trio.open_nursery() as nursery:
        providers = configured if provider is None else Providers.one(provider)
        supervisor: Supervisor = await nursery.start(
            run_supervisor, "payments", core.registry, CHILD_INTENSITY
        )
        deps = PaymentDeps(
            core.db,
            core.ledger,
            core.registry,
            providers,
            _now,
            lifetime_s=settings.payment_invoice_lifetime,
            poll_every_s=settings.payment_poll_every,
            bus=core.bus,
        )
        payments = Payments(supervisor, deps)

        async def notify(invoice: str, status: InvoiceStatus) -> None:
            await payments.provider_said(invoice, status, reason="sandbox")

        for each in (providers.qr, providers.card):
            if isinstance(each, SandboxProvider):
                each.notify = notify
        resumed = await payments.recover()
        if resumed:
            log.info("payments resumed", invoices=resumed)
        task_status.started(payments)
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
