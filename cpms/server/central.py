"""The central system: the station supervisor with one ChargePointActor per known station, the
OCPP message log writer, the watcher of operators' changes, and the WebSocket listener chargers
connect to."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import structlog
import trio

from actors.charge_point.actor import charge_point_spec
from actors.charge_point.admission import Admission
from actors.charge_point.config import StationTariffs, run_config_watch
from actors.charge_point.context import StationContext
from actors.charge_point.listener import CentralSystem, ListenerConfig, serve_ocpp
from actors.charge_point.passwords import StationPasswords, verifier_key
from actors.charge_point.telemetry import Telemetry
from actors.core import Core
from actors.location_status import run_location_status
from actors.runtime import Intensity, Supervisor, run_supervisor
from actors.session.deps import MeterBounds, SessionDeps
from actors.session.service import Sessions
from cpms.ocpp import schemas
from cpms.server.core import session_timings
from cpms.settings import Settings
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("cpms.server.central")

#: One actor per station and per session: one that keeps crashing is retired for a minute (its
#: station refused meanwhile), never the server.
CHILD_INTENSITY = Intensity(
    restarts=5, period=30.0, escalate=False, cooldown=60.0, waits_for=(StorageUnavailable,)
)


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.ocpp_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.ocpp_tls_cert, settings.ocpp_tls_key)
    return context


def _signing_key(settings: Settings) -> bytes | None:
    """The secret the stations' password verifiers are keyed from (the token signing key)."""
    key = settings.auth_signing_key
    return None if key is None else key.get_secret_value().encode()


async def run_central_system(
    core: Core,
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[tuple[CentralSystem, int, Sessions]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start every known station's actor and every open session's, then listen; reports
    ``(central system, port, sessions)``."""
    schemas.warm_up()
    telemetry = Telemetry()
    config = ListenerConfig(
        prefix=settings.ocpp_path_prefix,
        auto_register=settings.ocpp_auto_register,
        offline_after=settings.ocpp_offline_after,
        max_frame=settings.ocpp_max_frame,
        rate=settings.ocpp_rate,
        burst=settings.ocpp_burst,
        backlog=settings.ocpp_backlog,
        handshakes=settings.ocpp_handshakes,
    )
    admission = Admission(
        queue_limit=settings.ocpp_admit_queue,
        pending_min=settings.ocpp_pending_min,
        pending_max=settings.ocpp_pending_max,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry.run, core.db)
        await nursery.start(run_location_status, core.db, core.bus)
        supervisor: Supervisor = await nursery.start(
            run_supervisor, "sessions", core.registry, CHILD_INTENSITY
        )
        timings = session_timings(settings)
        tariffs = StationTariffs(core.db)
        await nursery.start(run_config_watch, core.db, core.registry, tariffs)
        sessions = Sessions(
            supervisor,
            SessionDeps(
                core.db,
                core.ledger,
                core.registry,
                core.bus,
                tariffs,
                timings,
                MeterBounds(
                    margin=settings.meter_power_margin,
                    slack_wh=settings.meter_slack_wh,
                ),
            ),
        )
        stations: Supervisor = await nursery.start(
            run_supervisor, "stations", core.registry, CHILD_INTENSITY
        )
        contexts = await StationContext.load_all(core.db, telemetry)
        for station_id, context in contexts.items():
            await stations.start_child(
                charge_point_spec(
                    station_id,
                    db=core.db,
                    bus=core.bus,
                    offline_after=config.offline_after,
                    telemetry=telemetry,
                    endpoint=config.endpoint,
                    context=context,
                    registry=core.registry,
                    sessions=sessions,
                    admission=admission,
                )
            )
        log.info("station actors started", stations=len(contexts))
        await sessions.recover()
        await nursery.start(sessions.run_sweeper)
        cs = CentralSystem(
            core.db,
            core.registry,
            stations,
            core.bus,
            telemetry,
            config,
            passwords=StationPasswords(core.db, verifier_key(_signing_key(settings))),
            sessions=sessions,
            admission=admission,
        )
        port: int = await nursery.start(
            lambda task_status: serve_ocpp(
                cs,
                settings.ocpp_host,
                settings.ocpp_port,
                ssl_context=_tls(settings),
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )
        )
        task_status.started((cs, port, sessions))
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
