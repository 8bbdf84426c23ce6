"""The OCPP WebSocket listener: ``ws://host:port/<prefix>/<station_id>``, subprotocol ``ocpp1.6``.

For now it performs and checks the handshake (path, station id, subprotocol) and closes accepted
connections with 1013 "try again later"; the central system behind it comes with the OCPP issue.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import structlog
import trio
from trio_websocket import WebSocketRequest, serve_websocket

OCPP_SUBPROTOCOL = "ocpp1.6"
STATION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
log = structlog.stdlib.get_logger("cpms.ocpp")


def station_id_from_path(path: str, prefix: str) -> str | None:
    """The station id in ``<prefix>/<id>``, or None when the path is not an OCPP endpoint."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        prefix = ""
    head, _, station = path.split("?", 1)[0].rpartition("/")
    if head != prefix or not STATION_ID.fullmatch(station):
        return None
    return station


async def _handle(request: WebSocketRequest, prefix: str) -> None:
    station = station_id_from_path(request.path, prefix)
    if station is None:
        log.warning("ocpp handshake refused", path=request.path, reason="not an OCPP path")
        await request.reject(404)
        return
    if OCPP_SUBPROTOCOL not in request.proposed_subprotocols:
        log.warning("ocpp handshake refused", station=station, reason="no ocpp1.6 subprotocol")
        await request.reject(400, body=b"subprotocol ocpp1.6 required")
        return
    ws = await request.accept(subprotocol=OCPP_SUBPROTOCOL)
    log.info("ocpp connection", station=station)
    await ws.aclose(code=1013, reason="central system not ready")


async def serve_ocpp(
    host: str,
    port: int,
    *,
    prefix: str = "/ws",
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for chargers until ``shutdown_trigger`` returns (or cancellation).

    Reports the bound port with ``task_status.started(port)``.
    """

    async def handler(request: WebSocketRequest) -> None:
        await _handle(request, prefix)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, host, port, None)
        bound = server.port
        log.info("ocpp listening", url=f"ws://{host}:{bound}{prefix}/{{station_id}}")
        task_status.started(bound)
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        nursery.cancel_scope.cancel()
