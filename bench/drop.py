"""A fleet dropped at once, as the station actors take it: the turn of the event loop in which
every charger's EOF is read, and what the actors' next connections cost.

No server and no database: ``--chargers`` station actors (the real loop, :mod:`actors.charge_point`)
each hold a real :class:`~cpms.ocpp.websocket.ServerWebSocket` on a TCP connection over
127.0.0.1 (upgraded, then attached), both ends in this process. Every client end is closed in one
go, before the loop gets a turn, so all the EOFs are there at its next look for input: the turn
that reads them is what chargers still online would wait out (``bench/storm.py``'s load
generator closes its connections one at a time, and a fast machine keeps up with it). Then each
actor is given a new connection, and the fleet is dropped again, ``--rounds`` times.

    python bench/drop.py                   # 9,000 chargers (both ends fit in 20,000 descriptors)
    python bench/drop.py --chargers 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import time
from decimal import Decimal
from typing import Any

import trio
import trio.testing

from actors.charge_point.actor import run_charge_point
from actors.charge_point.context import StationContext
from actors.charge_point.link import Closer, WebSocketLink
from actors.charge_point.messages import Attach
from actors.charge_point.telemetry import Telemetry
from actors.runtime import Address, Envelope, Mailbox
from cpms.kernel.events import EventBus
from cpms.metrics import STATIONS_CONNECTED
from cpms.ocpp.connector_state import ConnectorState
from cpms.ocpp.endpoint import EndpointConfig
from cpms.ocpp.websocket import ServerWebSocket

UPGRADE = (
    b"GET /ws/CP HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
)


class Turns(trio.abc.Instrument):
    """How long each turn of the loop ran (from its look for input to the next)."""

    def __init__(self) -> None:
        self.began: float | None = None
        self.turns: list[float] = []

    def after_io_wait(self, timeout: float) -> None:
        self.began = time.perf_counter()

    def before_io_wait(self, timeout: float) -> None:
        if self.began is not None:
            self.turns.append(time.perf_counter() - self.began)

    def take(self) -> list[float]:
        taken, self.turns, self.began = self.turns, [], None
        return taken


async def pairs(listener: socket.socket, count: int, closer: Closer) -> list[Any]:
    """``count`` upgraded connections: (client socket, the server's link)."""
    made = []
    for n in range(count):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.setblocking(False)
        client.sendall(UPGRADE)
        ws = ServerWebSocket(
            trio.SocketStream(trio.socket.from_stdlib_socket(server)), max_message=65536
        )
        request = await ws.upgrade_request()
        assert request is not None and "ocpp1.6" in request.subprotocols
        await ws.accept("ocpp1.6")
        assert client.recv(4096).startswith(b"HTTP/1.1 101 ")
        made.append((client, WebSocketLink(ws, f"CP-{n}", closer)))
    return made


def context(station: str, telemetry: Telemetry) -> StationContext:
    connector = ConnectorState("Available", "NoError", "CCS2", Decimal(50), configured=True)
    return StationContext(
        None,  # type: ignore[arg-type]  # an ended connection asks nothing of the database
        station,
        None,
        "Accepted",
        "active",
        False,
        1,
        {1: connector},
        telemetry,
    )


async def bench(chargers: int, rounds: int) -> dict[str, Any]:
    bus, telemetry, closer, turns = EventBus(), Telemetry(), Closer(), Turns()
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    mailboxes = [Mailbox[Any](Address("station", f"CP-{n}"), 64) for n in range(chargers)]
    result: dict[str, Any] = {"chargers": chargers, "rounds": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(closer.run, nursery)
        for n, mailbox in enumerate(mailboxes):
            station = f"CP-{n}"
            await nursery.start(
                lambda task_status, mailbox=mailbox, station=station: run_charge_point(
                    mailbox,
                    station_id=station,
                    db=None,  # type: ignore[arg-type]
                    bus=bus,
                    offline_after=300.0,
                    telemetry=telemetry,
                    endpoint=EndpointConfig(),
                    preloaded=[context(station, telemetry)],
                    task_status=task_status,
                )
            )
        baseline = STATIONS_CONNECTED._value.get()
        trio.lowlevel.add_instrument(turns)
        for _ in range(rounds):
            fleet = await pairs(listener, chargers, closer)
            turns.take()
            for mailbox, (_, link) in zip(mailboxes, fleet, strict=True):
                mailbox.deliver_nowait(Envelope(Attach(link)))
            await trio.testing.wait_all_tasks_blocked()
            attached = turns.take()
            began = time.perf_counter()
            for client, _ in fleet:
                client.close()
            closing_ms = (time.perf_counter() - began) * 1000
            while STATIONS_CONNECTED._value.get() > baseline:  # noqa: ASYNC110 - the closer
                await trio.sleep(0.001)
            dropped = turns.take()
            result["rounds"].append(
                {
                    "clients_closed_ms": round(closing_ms, 1),
                    "eof_turn_ms": round(dropped[0] * 1000, 1),
                    "eof_us_each": round(dropped[0] / chargers * 1e6, 2),
                    "drop_turns": len(dropped),
                    "drop_us_each": round(sum(dropped) / chargers * 1e6, 2),
                    "longest_later_turn_ms": round(max(dropped[1:], default=0) * 1000, 1),
                    "attach_us_each": round(sum(attached) / chargers * 1e6, 2),
                }
            )
        trio.lowlevel.remove_instrument(turns)
        nursery.cancel_scope.cancel()
    for key in ("eof_turn_ms", "eof_us_each", "drop_us_each", "attach_us_each"):
        result[f"median_{key}"] = statistics.median(r[key] for r in result["rounds"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=9000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if 2 * args.chargers + 100 > hard:
        parser.error(f"{args.chargers} chargers need {2 * args.chargers + 100} descriptors")
    print(json.dumps(trio.run(bench, args.chargers, args.rounds), indent=2))


if __name__ == "__main__":
    main()
