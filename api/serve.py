"""Running the facade on hypercorn under trio."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio import serve
from quart_trio import QuartTrio

from api.live_socket import MAX_MESSAGE


class StormConfig(Config):
    """hypercorn's settings, with ``TCP_USER_TIMEOUT`` on the listening sockets (the accepted
    ones inherit it): a peer that takes no data for that long is cut off by the kernel. hypercorn
    writes to a socket shielded from cancellation, so without it an app socket whose phone
    stopped reading would hold its connection (and the task writing to it) for as long as the
    phone answers the kernel's probes."""

    user_timeout_s: float = 30.0

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                milliseconds = int(self.user_timeout_s * 1000)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
        return sockets


async def serve_api(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    graceful_timeout: float = 5.0,
    stall_timeout: float = 30.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns and in-flight requests finish.

    Reports the base URL (``http://host:port``) with ``task_status.started``.
    """
    config = StormConfig()
    config.user_timeout_s = stall_timeout
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = 30
    config.websocket_max_message_size = MAX_MESSAGE  # the app socket's (api.live_socket)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
        )
        task_status.started(binds[0])
