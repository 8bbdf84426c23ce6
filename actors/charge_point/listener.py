"""The OCPP WebSocket listener: ``ws://host:port/<prefix>/<station_id>``, subprotocol ``ocpp1.6``.

Per connection: check the path and the subprotocol, authenticate the station (HTTP Basic with
its own password, security profile 1; TLS when configured, profile 2), find or start its
ChargePointActor and attach the connection to it: the actor reads it from then on (each frame
screened, parsed and checked by :mod:`cpms.ocpp.endpoint`) until it lets it go, which closes it
(:mod:`actors.charge_point.link`); the connection's task ends once the actor has it. Treatment
of abuse at the door:

* a handshake without ``ocpp1.6`` → HTTP 400; an unknown station → 404 (unless auto-registration
  is on); a wrong or missing password → 401; too many wrong ones lately (:class:`LoginThrottle`)
  → 429; a station whose actor is retired after repeated crashes → 503. Each is logged.
* a message over the WebSocket limit (4 × ``max_frame``) → the connection is closed with 1009;
  a text frame that is not UTF-8 → closed with 1007 (:mod:`cpms.ocpp.websocket`). Frames
  over ``max_frame`` and floods are the endpoint's to refuse.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import cast

import structlog
import trio

from actors.charge_point.actor import charge_point_spec
from actors.charge_point.admission import Admission, accept_queue
from actors.charge_point.context import StationContext
from actors.charge_point.gate import Gate, Turn, serve_gated
from actors.charge_point.link import Closer, WebSocketLink
from actors.charge_point.messages import STATION, Attach, Door, StationMsg, shown_door
from actors.charge_point.passwords import StationPasswords, Throttled
from actors.charge_point.telemetry import Telemetry
from actors.runtime import ActorRef, ActorUnavailable, ChildRetired, Registry, Supervisor
from actors.session.messages import RfidSessions
from cpms.kernel.events import EventBus
from cpms.ocpp.endpoint import EndpointConfig
from cpms.ocpp.upgrade import Upgrade
from cpms.ocpp.websocket import ServerWebSocket
from storage import Database
from storage import stations as store
from storage.errors import StorageUnavailable

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
    backlog: int = 4096
    #: WebSocket handshakes served at once (the others wait their turn; actors.charge_point.gate)
    handshakes: int = 32

    @property
    def endpoint(self) -> EndpointConfig:
        return EndpointConfig(max_frame=self.max_frame, rate=self.rate, burst=self.burst)


@dataclass(frozen=True)
class CentralSystem:
    """What the listener needs to reach stations."""

    db: Database
    registry: Registry
    supervisor: Supervisor
    bus: EventBus
    telemetry: Telemetry
    config: ListenerConfig
    #: the door's password checks, and the verifiers they leave
    passwords: StationPasswords
    #: bills card transactions (None: a central system without sessions, in tests)
    sessions: RfidSessions | None = None
    admission: Admission = field(default_factory=Admission)

    async def actor_for(
        self, station_id: str, context: StationContext | None = None
    ) -> ActorRef[StationMsg]:
        """The station's actor, started if need be (``context``: the station as just read)."""
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
                    endpoint=self.config.endpoint,
                    registry=self.registry,
                    sessions=self.sessions,
                    admission=self.admission,
                    context=context,
                )
            )
        except ValueError:  # started by a concurrent connection a moment ago
            return self.registry.get(STATION, station_id)


def station_id_from_path(path: str, prefix: str) -> str | None:
    """The station id in ``<prefix>/<id>``, or None when the path is not an OCPP endpoint."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        prefix = ""
    head, _, station = path.split("?", 1)[0].rpartition("/")
    if head != prefix or not STATION_ID.fullmatch(station):
        return None
    return station


def basic_credentials(request: Upgrade) -> tuple[str, str] | None:
    value = request.header(b"authorization")
    if value is None or value[:6].lower() != b"basic ":
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def _admit(
    ws: ServerWebSocket, request: Upgrade, cs: CentralSystem
) -> tuple[str, StationContext | None] | None:
    """The station id if the handshake may be accepted (with the station as read when it was
    registered on the spot); otherwise rejects and returns None."""
    station = station_id_from_path(request.target, cs.config.prefix)
    if station is None:
        log.warning("ocpp handshake refused", path=request.target, reason="not an OCPP path")
        await ws.reject(404)
        return None
    if OCPP_SUBPROTOCOL not in request.subprotocols:
        log.warning("ocpp handshake refused", station=station, reason="no ocpp1.6 subprotocol")
        await ws.reject(400, body=b"subprotocol ocpp1.6 required")
        return None
    door = shown_door(cs.registry, station)  # a known station's, from its actor
    context = None
    if door is None:
        if cs.config.auto_register:  # made on the spot, or found as it is (one round trip)
            context = await _auto_register(cs, station)
            if context is not None:
                door = Door(context.password_hash, context.password_verifier)
        elif (row := await store.get_station(cs.db, station)) is not None:
            door = Door(row["password_hash"], row["password_verifier"])
        if door is None:
            log.warning("ocpp handshake refused", station=station, reason="unknown station")
            await ws.reject(404, body=b"unknown station")
            return None
    if door.password_hash:
        given = basic_credentials(request)
        try:
            ok = (
                given is not None
                and given[0] == station
                and await cs.passwords.check(
                    station, given[1], door.password_hash, door.verifier, ws.remote
                )
            )
        except Throttled as throttled:
            log.warning("ocpp handshake refused", station=station, reason="login throttled")
            retry = str(max(1, round(throttled.retry_after))).encode()
            await ws.reject(429, headers=[(b"Retry-After", retry)])
            return None
        if not ok:
            log.warning("ocpp handshake refused", station=station, reason="bad credentials")
            await ws.reject(401, headers=[(b"WWW-Authenticate", b'Basic realm="cpms"')])
            return None
    return station, context


async def _auto_register(cs: CentralSystem, station: str) -> StationContext | None:
    """Development and simulation: an unknown station is provisioned on first contact with two
    configured Type2 22 kW connectors. How many it really has is unknown until it reports, so it
    may use up to ten; and it accepts any id tag (a simulated fleet's drivers are made up). One
    round trip, and the station as stored (made now, or found: an operator's, say, whose
    password the door then asks for) goes to its actor, which need not read it again. None:
    deleted by an operator that same moment."""
    specs = [store.ConnectorSpec(n, "Type2", Decimal("22")) for n in (1, 2)]
    stored = await store.register_first_contact(
        cs.db, station, connectors_count=10, connectors=specs, accept_unknown_tags=True
    )
    if stored is None:
        return None
    row, connectors, made = stored
    if made:
        log.info("station auto-registered", station=station)
    return StationContext.from_rows(cs.db, row, connectors, cs.telemetry)


async def _serve_connection(
    ws: ServerWebSocket, request: Upgrade, cs: CentralSystem, turn: Turn, closer: Closer
) -> bool:
    """Admit the connection and hand it to its station's actor: True once it has it (and with
    it the connection, to close)."""
    try:
        try:
            admitted = await _admit(ws, request, cs)
            if admitted is None:
                return False
            station, context = admitted
            actor = await cs.actor_for(station, context)
        except (ChildRetired, StorageUnavailable) as error:
            # a station's actor retired after repeated crashes, or the database away: the
            # charger retries later, by its own timer and the Retry-After we give it
            retry_after = error.retry_after if isinstance(error, ChildRetired) else 10.0
            log.warning("ocpp handshake refused", path=request.target, reason=str(error))
            retry = str(max(1, round(retry_after))).encode()
            await ws.reject(503, headers=[(b"Retry-After", retry)])
            return False
        await ws.accept(OCPP_SUBPROTOCOL)
    finally:
        turn.end()  # the next handshake's turn
    link = WebSocketLink(ws, station, closer)
    try:
        await actor.tell(Attach(link))  # the actor reads the connection until it lets it go
    except ActorUnavailable:  # it stopped since it was found: the charger connects again
        link.release()
    except BaseException:  # the server stops meanwhile: nobody has the connection
        link.release()
        raise
    return True


async def _listen(
    host: str, port: int, ssl_context: ssl.SSLContext | None, backlog: int
) -> list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]:
    """The listeners, with a backlog sized for reconnect storms (trio's default follows the
    kernel's somaxconn too, but says so nowhere we control)."""
    if ssl_context is None:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    return await trio.open_ssl_over_tcp_listeners(port, ssl_context, host=host, backlog=backlog)


def _socket_of(
    listener: trio.SocketListener | trio.SSLListener[trio.SocketStream],
) -> socket.socket:
    if isinstance(listener, trio.SSLListener):
        listener = cast(trio.SocketListener, listener.transport_listener)
    return cast(socket.socket, listener.socket)


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

    closer = Closer()

    async def handler(ws: ServerWebSocket, request: Upgrade, turn: Turn) -> bool:
        return await _serve_connection(ws, request, cs, turn, closer)

    listeners = await _listen(host, port, ssl_context, cs.config.backlog)
    sockets = [_socket_of(listener) for listener in listeners]
    cs.admission.backlog = lambda: sum(accept_queue(s) for s in sockets)
    gate = Gate(cs.admission, cs.config.handshakes)
    bound = sockets[0].getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cs.passwords.keep)
        await nursery.start(closer.run, nursery)
        await nursery.start(
            partial(serve_gated, handler, listeners, gate, max_message_size=cs.config.max_frame * 4)
        )
        scheme = "wss" if ssl_context else "ws"
        log.info("ocpp listening", url=f"{scheme}://{host}:{bound}{cs.config.prefix}/{{id}}")
        task_status.started(bound)
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
