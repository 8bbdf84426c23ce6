"""The server: one root nursery holding storage, the actor system, and the two front doors.

Start order: storage (embedded PostgreSQL, migrations) → root supervisor and StorageActor →
OCPP listener and REST facade. Stop order is the reverse: when ``shutdown`` is set the doors stop
taking work (hypercorn lets in-flight requests finish), then the actors are cancelled, then the
pool closes and the embedded database stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import structlog
import trio

from actors.ledger import StorageHooks
from actors.payment.provider import PaymentProvider
from actors.push.notices import NoticeSettings, follow_events
from actors.push.sender import PushSender, PushSettings
from api import create_app, serve_api
from api.app import webhook_intake
from api.auth import TokenVerifier
from api.config import ApiConfig
from api.idempotency import Idempotency
from api.live_hub import LiveHub, LiveTimings
from api.live_listener import serve_live_sockets
from api.rate_limit import RateLimiter
from api.sms import ConsoleSms, HttpSms, SmsSender
from api.tokens import TokenIssuer
from api.webhook_listener import serve_webhooks
from cpms import __version__
from cpms.kernel.gc_tuning import run_gc_maintenance, tune_gc
from cpms.server.central import run_central_system
from cpms.server.core import open_core, session_timings
from cpms.server.payments import run_payments
from cpms.settings import Settings
from storage import Database
from storage.accounts import purge_deleted
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("cpms.server.app")

PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Endpoints:
    """Where a running server listens (ports resolved when 0 was asked for)."""

    http_url: str
    ocpp_url: str
    webhook_url: str | None = None  # the webhooks' own port, when it has one
    app_ws_url: str | None = None  # the app socket's own port, when it has one


def api_config(settings: Settings, clock: Callable[[], float] = time.time) -> ApiConfig:
    """The REST facade's configuration, from the settings."""
    secret, admin = settings.jwt_secret, settings.admin_token
    signing = settings.auth_signing_key
    issuer = TokenIssuer(
        None if signing is None else signing.get_secret_value(), settings.jwt_audience
    )
    if issuer.ephemeral:
        log.warning(
            "no CPMS_AUTH_SIGNING_KEY: tokens signed with a key made now, not accepted after"
            " a restart"
        )
    webhook, metrics = settings.payment_webhook_secret, settings.metrics_token
    return ApiConfig(
        verifier=TokenVerifier(
            secret=None if secret is None else secret.get_secret_value(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            jwks_source=settings.jwt_jwks_url,
            own_key=(issuer.kid, issuer.key.public_key()),
        ),
        timings=session_timings(settings),
        admin_token=None if admin is None else admin.get_secret_value(),
        node_id=settings.node_id,
        embedded_database=settings.database_url is None,
        webhook_secret=None if webhook is None else webhook.get_secret_value(),
        webhook_ips=frozenset(ip.strip() for ip in settings.payment_webhook_ips.split(",") if ip),
        rate_limits=(
            settings.rate_limit_default,
            settings.rate_limit_critical,
            settings.rate_limit_webhook,
        ),
        limiter=RateLimiter(clock),
        cors_origins=settings.cors,
        metrics_token=None if metrics is None else metrics.get_secret_value(),
        issuer=issuer,
        sms=sms_sender(settings),
        purge_after_days=settings.account_purge_days,
        push_allow_http=settings.push_allow_http,
    )


async def purge_deleted_accounts(db: Database, days: int, shutdown: trio.Event) -> None:
    """Once an hour until shutdown: the personal data of accounts deleted ``days`` ago erased."""
    while not shutdown.is_set():
        try:
            purged = await purge_deleted(db, timedelta(days=days))
            if purged:
                log.info("deleted accounts purged", accounts=purged)
        except StorageUnavailable as error:
            log.warning("purging deleted accounts failed; next hour", error=str(error))
        with trio.move_on_after(PURGE_EVERY_S):
            await shutdown.wait()


def sms_sender(settings: Settings) -> SmsSender:
    """The gateway the settings name, or the console."""
    if settings.sms_gateway_url is None:
        return ConsoleSms()
    password = settings.sms_gateway_password
    return HttpSms(
        settings.sms_gateway_url,
        method=settings.sms_gateway_method,
        user=settings.sms_gateway_user,
        password=None if password is None else password.get_secret_value(),
    )


async def run_server(
    settings: Settings,
    shutdown: trio.Event,
    *,
    storage_hooks: StorageHooks | None = None,
    payment_provider: PaymentProvider | None = None,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run cpms until ``shutdown`` is set; reports its :class:`Endpoints` once serving.
    ``payment_provider``: a provider to use instead of the one the settings name (tests);
    ``clock``: the rate limits' (tests move it)."""
    log.info(
        "starting",
        version=__version__,
        data_dir=str(settings.data_dir),
        embedded_db=settings.database_url is None,
    )
    async with open_core(settings, storage_hooks=storage_hooks) as core:
        idempotency = Idempotency(core.db)
        hub = LiveHub(
            core,
            LiveTimings(
                ping_every=settings.ws_ping_interval,
                refresh_every=settings.ws_full_update_interval,
                first_refresh=min(2.0, settings.ws_full_update_interval),
                idle=settings.ws_idle_timeout,
                outbox=settings.ws_outbox,
                max_clients=settings.ws_max_clients,
            ),
        )
        push = PushSender(
            core.db,
            settings.vapid_keys(),
            PushSettings(
                tries=settings.push_max_retries,
                ttl_s=settings.push_ttl,
                timeout_s=settings.push_timeout,
                queue=settings.push_queue,
            ),
        )
        async with trio.open_nursery() as doors:
            await doors.start(hub.run, shutdown)  # following the bus before any station speaks
            if push.enabled:
                await doors.start(push.run, shutdown)
                notices = NoticeSettings(settings.push_low_balance)
                await doors.start(partial(follow_events, core.bus, push, notices, shutdown))
            _central, ocpp_port, sessions = await doors.start(
                lambda task_status: run_central_system(
                    core, settings, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            )
            payments = await doors.start(
                lambda task_status: run_payments(
                    core,
                    settings,
                    provider=payment_provider,
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
            )
            config = api_config(settings, clock)
            intake = webhook_intake(config, payments)
            await idempotency.load()
            doors.start_soon(idempotency.write_behind, shutdown)
            http_url = await doors.start(
                lambda task_status: serve_api(
                    create_app(core, sessions, config, payments, intake, idempotency, hub, push),
                    settings.http_host,
                    settings.http_port,
                    shutdown_trigger=shutdown.wait,
                    graceful_timeout=settings.shutdown_timeout / 2,
                    stall_timeout=settings.http_stall_timeout,
                    task_status=task_status,
                )
            )
            webhook_url = None
            if settings.payment_webhook_port is not None:
                webhook_url = await doors.start(
                    lambda task_status: serve_webhooks(
                        intake,
                        settings.http_host,
                        settings.payment_webhook_port,  # type: ignore[arg-type]
                        shutdown_trigger=shutdown.wait,
                        graceful_timeout=settings.shutdown_timeout / 2,
                        task_status=task_status,
                    )
                )
            app_ws_url = None
            if settings.app_ws_port is not None:
                app_ws_url = await doors.start(
                    partial(
                        serve_live_sockets,
                        hub,
                        config.verifier,
                        settings.http_host,
                        settings.app_ws_port,
                        stall_timeout=settings.http_stall_timeout,
                        shutdown_trigger=shutdown.wait,
                    )
                )
            scheme = "wss" if settings.ocpp_tls_cert else "ws"
            prefix = "/" + settings.ocpp_path_prefix.strip("/")
            ocpp_url = f"{scheme}://{settings.ocpp_host}:{ocpp_port}{prefix}"
            endpoints = Endpoints(http_url, ocpp_url, webhook_url, app_ws_url)
            doors.start_soon(purge_deleted_accounts, core.db, settings.account_purge_days, shutdown)
            tune_gc(settings.gc_tuning)
            if settings.gc_tuning:
                doors.start_soon(run_gc_maintenance, shutdown)
            log.info("ready", http=http_url, ocpp=ocpp_url, webhooks=webhook_url, app_ws=app_ws_url)
            task_status.started(endpoints)
        with trio.move_on_after(settings.shutdown_timeout / 2):
            await idempotency.flush()  # the answers of the last requests
        log.info("front doors closed; stopping actors and storage")
    log.info("stopped")
