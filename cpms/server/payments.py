"""Top-ups in the server: the payment provider the settings name, a supervisor with a
PaymentActor per open invoice, and every open invoice's actor brought back at start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
import trio

from actors.core import Core
from actors.payment.actor import PaymentDeps
from actors.payment.provider import InvoiceStatus, PaymentProvider
from actors.payment.sandbox import SandboxProvider
from actors.payment.service import Payments
from actors.runtime import Supervisor, run_supervisor
from cpms.server.central import CHILD_INTENSITY
from cpms.settings import Settings

log = structlog.stdlib.get_logger("cpms.server.payments")


def _now() -> datetime:
    return datetime.now(UTC)


async def run_payments(
    core: Core,
    settings: Settings,
    *,
    provider: PaymentProvider | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[Payments] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run top-ups until ``shutdown_trigger`` returns; reports the :class:`Payments` door once
    ready."""
    if provider is None:
        provider = SandboxProvider(base_url=f"http://{settings.http_host}:{settings.http_port}")
    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(
            run_supervisor, "payments", core.registry, CHILD_INTENSITY
        )
        deps = PaymentDeps(core.db, core.ledger, core.registry, provider, _now)
        payments = Payments(supervisor, deps)

        async def notify(invoice: str, status: InvoiceStatus) -> None:
            await payments.provider_said(invoice, status, reason="sandbox")

        if isinstance(provider, SandboxProvider):
            provider.notify = notify
        resumed = await payments.recover()
        if resumed:
            log.info("payments resumed", invoices=resumed)
        task_status.started(payments)
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
