"""The OCPP WebSocket listener: ``ws://host:port/<prefix>/<station_id>``, subprotocol ``ocpp1.6``.

Per connection: check the path and the subprotocol, authenticate the station (HTTP Basic with
its own password, security profile 1; TLS when configured, profile 2), find or start its
ChargePointActor and attach the connection to it: the actor reads it from then on, and the
connection's task only waits for the actor to let it go. Each frame is size-checked,
rate-limited and parsed by the link (:meth:`_Link.screen`); a bad one gets its CALLERROR and the
connection goes on. Treatment of abuse:

* a handshake without ``ocpp1.6`` → HTTP 400; an unknown station → 404 (unless auto-registration
  is on); a wrong or missing password → 401. Each is logged.
* a frame over ``max_frame`` bytes → CALLERROR FormationViolation; over the WebSocket limit
  (4 × ``max_frame``) → the connection is closed with 1009.
* more than ``rate`` frames/s sustained (bucket of ``burst``) → CALLERROR GenericError for the
  excess; at ten times the rate the connection is closed with 1008. The first answer
  (CALLRESULT or CALLERROR) after each CALL of ours is let through whatever the rate: the
  server asked for it, and one CALL is outstanding at a time, so answers can't flood.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from actors import ActorRef, ActorUnavailable, Registry, Supervisor
from actors.charge_point import (
    STATION,
    Attach,
    Detach,
    Refusal,
    StationMsg,
    charge_point_spec,
)
from actors.session_messages import RfidSessions
from cpms.errors import Conflict
from cpms.events import EventBus
from cpms.ocpp.frames import CallError, Frame, OcppError, parse_frame, unique_id_hint
from cpms.ocpp.telemetry import Telemetry
from cpms.passwords import verify_password
from storage import Database
from storage import stations as store

OCPP_SUBPROTOCOL = "ocpp1.6"
STATION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
log = structlog.stdlib.get_logger("cpms.ocpp")


@dataclass(frozen=True)
class ListenerConfig:
    prefix: str = "/ws"
    auto_register: bool = False
    offline_after: float = 300.0
    max_frame: int = 65536
    rate: float = 20.0
    burst: int = 100


@dataclass(frozen=True)
class CentralSystem:
    """What the listener needs to reach stations."""

    db: Database
    registry: Registry
    supervisor: Supervisor
    bus: EventBus
    telemetry: Telemetry
    config: ListenerConfig
    #: bills card transactions (None: a central system without sessions, in tests)
    sessions: RfidSessions | None = None
    #: station → (stored hash, SHA-256 of the password it accepted): a reconnect storm must not
    #: cost one scrypt per charger; a changed stored hash invalidates the entry.
    verified: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    async def password_ok(self, station_id: str, password: str, stored: str) -> bool:
        digest = hashlib.sha256(password.encode()).digest()
        known = self.verified.get(station_id)
        if known is not None and known[0] == stored:
            return hmac.compare_digest(known[1], digest)
        if not await trio.to_thread.run_sync(verify_password, password, stored):
            return False
        self.verified[station_id] = (stored, digest)
        return True

    async def actor_for(self, station_id: str) -> ActorRef[StationMsg]:
        ref = self.registry.lookup(STATION, station_id)
        if ref is not None:
            return ref
        try:
            return await self.supervisor.start_child(
                charge_point_spec(
                    station_id,
                    db=self.db,
                    bus=self.bus,
                    offline_after=self.config.offline_after,
                    telemetry=self.telemetry,
                    registry=self.registry,
                    sessions=self.sessions,
                )
            )
        except ValueError:  # started by a concurrent connection a moment ago
            return self.registry.get(STATION, station_id)


class _Link:
    """A WebSocket as a ChargePointActor's ChargerLink."""

    def __init__(self, ws: WebSocketConnection, station: str, config: ListenerConfig) -> None:
        self.ws, self.station, self.config = ws, station, config
        self.bucket = _Bucket(config.rate, config.burst)
        self.released = trio.Event()
        #: a CALL of ours was sent and no answer-looking frame has come since
        self.asked = False

    async def receive(self) -> str | bytes | None:
        try:
            return await self.ws.get_message()
        except ConnectionClosed:
            return None

    def screen(self, text: str | bytes) -> Frame | Refusal:
        answer = (
            self.asked and _ANSWER.match(text[:16] if isinstance(text, str) else "") is not None
        )
        if answer:
            self.asked = False
        if not answer and not self.bucket.take():
            if self.bucket.excess > self.config.rate * 10:
                log.warning("charger flooding, closing", station=self.station)
                return Refusal(close=(1008, "message rate exceeded"))
            hint = unique_id_hint(text if isinstance(text, str) else "")
            reply = CallError(hint, "GenericError", "message rate exceeded")
            return Refusal(reply.encode())
        if len(text) > self.config.max_frame:
            log.warning("frame too large", station=self.station, size=len(text))
            hint = unique_id_hint(text[:200] if isinstance(text, str) else "")
            reply = CallError(hint, "FormationViolation", "frame too large")
            return Refusal(reply.encode())
        try:
            return parse_frame(text)
        except OcppError as error:
            log.info("bad frame", station=self.station, code=error.code, why=error.description)
            return Refusal(error.frame().encode())

    async def send(self, text: str) -> None:
        if text.startswith("[2,"):  # our CALLs are compact (cpms.ocpp.frames)
            self.asked = True
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise trio.BrokenResourceError("charger connection closed") from exc

    async def close(self, code: int, reason: str) -> None:
        await self.ws.aclose(code, reason)

    def release(self) -> None:
        self.released.set()


_ANSWER = re.compile(r"\s*\[\s*[34]\s*,")


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = trio.current_time()
        self.excess = 0

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.excess = 0
            return True
        self.excess += 1
        return False


def station_id_from_path(path: str, prefix: str) -> str | None:
    """The station id in ``<prefix>/<id>``, or None when the path is not an OCPP endpoint."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        prefix = ""
    head, _, station = path.split("?", 1)[0].rpartition("/")
    if head != prefix or not STATION_ID.fullmatch(station):
        return None
    return station


def basic_credentials(request: WebSocketRequest) -> tuple[str, str] | None:
    for name, value in request.headers:
        if name.lower() == b"authorization" and value[:6].lower() == b"basic ":
            try:
                user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user, password
    return None


async def _admit(request: WebSocketRequest, cs: CentralSystem) -> str | None:
    """The station id if the handshake may be accepted; otherwise rejects and returns None."""
    station = station_id_from_path(request.path, cs.config.prefix)
    if station is None:
        log.warning("ocpp handshake refused", path=request.path, reason="not an OCPP path")
        await request.reject(404)
        return None
    if OCPP_SUBPROTOCOL not in request.proposed_subprotocols:
        log.warning("ocpp handshake refused", station=station, reason="no ocpp1.6 subprotocol")
        await request.reject(400, body=b"subprotocol ocpp1.6 required")
        return None
    row = await store.get_station(cs.db, station)
    if row is None:
        if not cs.config.auto_register:
            log.warning("ocpp handshake refused", station=station, reason="unknown station")
            await request.reject(404, body=b"unknown station")
            return None
        await _auto_register(cs.db, station)
        return station
    if row["password_hash"]:
        given = basic_credentials(request)
        ok = (
            given is not None
            and given[0] == station
            and await cs.password_ok(station, given[1], row["password_hash"])
        )
        if not ok:
            log.warning("ocpp handshake refused", station=station, reason="bad credentials")
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="cpms"')])
            return None
    return station


async def _auto_register(db: Database, station: str) -> None:
    """Development and simulation: an unknown station is provisioned on first contact with two
    configured Type2 22 kW connectors. How many it really has is unknown until it reports, so it
    may use up to ten; and it accepts any id tag (a simulated fleet's drivers are made up)."""
    specs = [store.ConnectorSpec(n, "Type2", Decimal("22")) for n in (1, 2)]
    with contextlib.suppress(Conflict):  # a concurrent connection may have registered it
        await store.create_station(
            db, station, connectors_count=10, connectors=specs, accept_unknown_tags=True
        )
        log.info("station auto-registered", station=station)


async def _serve_connection(request: WebSocketRequest, cs: CentralSystem) -> None:
    station = await _admit(request, cs)
    if station is None:
        return
    actor = await cs.actor_for(station)
    ws = await request.accept(subprotocol=OCPP_SUBPROTOCOL)
    link = _Link(ws, station, cs.config)
    log.info("charger connected", station=station, remote=str(ws.remote))
    try:
        await actor.tell(Attach(link))
        await link.released.wait()  # the actor reads the connection until it lets it go
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(1),
            contextlib.suppress(ActorUnavailable),
        ):
            await actor.tell(Detach(link))
        log.info("charger disconnected", station=station)


async def serve_ocpp(
    cs: CentralSystem,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for chargers until ``shutdown_trigger`` returns (or cancellation).

    Reports the bound port with ``task_status.started(port)``.
    """

    async def handler(request: WebSocketRequest) -> None:
        await _serve_connection(request, cs)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler,
                host,
                port,
                ssl_context,
                max_message_size=cs.config.max_frame * 4,
                task_status=task_status,
            )
        )
        scheme = "wss" if ssl_context else "ws"
        log.info("ocpp listening", url=f"{scheme}://{host}:{server.port}{cs.config.prefix}/{{id}}")
        task_status.started(server.port)
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
