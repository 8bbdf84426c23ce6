"""Admission control in reconnect storms (issue 21): while the door is saturated an idle charger's
boot is answered Pending with a random interval and its next boot is accepted; a charger with a
transaction open is let in at once, and its queued StopTransaction settles the session exactly;
the turnstile serves a bounded number of handshakes at once, and silent clients hold none."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from pydantic import ValidationError
from trio_websocket import open_websocket_url

from actors.charge_point import listener
from actors.charge_point.admission import BACKLOG_FRESH_S, Admission, accept_queue
from actors.charge_point.gate import Gate, Turn, serve_gated
from cpms.metrics import STATIONS_CONNECTED
from cpms.ocpp.upgrade import Upgrade
from cpms.ocpp.websocket import ServerWebSocket
from cpms.settings import Settings
from storage import Database
from tests.ocpp_client import connect
from tests.ocpp_server import PASSWORD, provision, start_server
from tests.test_charging import open_rig
from tests.test_ocpp_central import masked_text_frame

BOOT = {"chargePointVendor": "ACME", "chargePointModel": "Fast-120"}


def test_the_accept_queue_is_read_from_the_kernel() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        assert accept_queue(server) == 0
        clients = [socket.create_connection(server.getsockname()) for _ in range(5)]
        try:
            assert accept_queue(server) == 5
            accepted, _ = server.accept()
            accepted.close()
            assert accept_queue(server) == 4
        finally:
            for client in clients:
                client.close()


def test_pending_intervals_are_spread_and_the_next_boot_is_accepted() -> None:
    storm = Admission(queue_limit=100, pending_min=5, pending_max=30, backlog=lambda: 101)
    intervals = [storm.interval(f"CP-{n}", in_transaction=False) for n in range(200)]
    assert all(isinstance(i, int) and 5 <= i <= 30 for i in intervals)
    assert len(set(intervals)) > 10  # the herd is spread, not sent back in step
    assert [storm.interval(f"CP-{n}", in_transaction=False) for n in range(200)] == [None] * 200
    assert storm.interval("CP-0", in_transaction=False) is not None  # deferred again, once
    assert storm.interval("CP-TX", in_transaction=True) is None  # a session first
    calm = Admission(queue_limit=100, backlog=lambda: 60)
    calm.connecting = 40
    assert not calm.saturated() and calm.interval("CP-1", in_transaction=False) is None
    calm.connecting = 41
    assert calm.saturated()


def test_the_accept_queues_are_read_once_per_reading_time() -> None:
    """A storm brings thousands of boots a second: each reads the accept queues (a system call
    per listener) at most once per ``BACKLOG_FRESH_S``; what is connecting counts at once."""
    now, reads, queue = [0.0], [], [50]

    def backlog() -> int:
        reads.append(now[0])
        return queue[0]

    door = Admission(queue_limit=100, backlog=backlog, clock=lambda: now[0])
    door.connecting = 40
    assert not door.saturated()
    queue[0] = 70  # the queue grew: not seen within the reading's time...
    now[0] += BACKLOG_FRESH_S / 2
    assert not door.saturated()
    door.connecting = 51  # ...but the handshakes under way are
    assert door.saturated()
    door.connecting = 40
    now[0] += BACKLOG_FRESH_S
    assert door.saturated()  # read again: 40 + 70
    assert reads == pytest.approx([0.0, BACKLOG_FRESH_S * 1.5])


def test_the_pending_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ocpp_pending_min"):
        Settings(data_dir=tmp_path, ocpp_pending_min=40, ocpp_pending_max=10)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ocpp_pending_min=0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ocpp_admit_queue=0)


async def test_a_storm_defers_idle_chargers_and_lets_an_open_session_settle(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    pressure = 0  # connections the kernel holds in the OCPP port's accept queue, as the door sees
    monkeypatch.setattr(listener, "accept_queue", lambda _sock: pressure)
    rig = await open_rig(
        db, dsn, tmp_path, nursery, ocpp_admit_queue=50, ocpp_pending_min=5, ocpp_pending_max=30
    )
    client, me = await rig.client("300")
    async with rig.charger("CP-1", connectors=1, time_scale=60) as cp:
        await cp.wait_booted()
        session = await rig.started(me)
        await rig.until_status(session, me, "charging")
        with trio.fail_after(20):
            while (tx := cp.connectors[1].tx) is None or cp.connectors[1].energy < (  # noqa: ASYNC110
                tx.meter_start + 300
            ):
                await trio.sleep(0.05)
        cp.go_offline()  # the node restarts, the network blinks: everyone comes back at once
        with trio.fail_after(10):
            while cp.connected:  # noqa: ASYNC110
                await trio.sleep(0.05)
        pressure = 10_000

        async with connect(rig.endpoints.ocpp_url, "CP-2", PASSWORD) as idle:
            first = await idle.call("BootNotification", BOOT)
            assert first["status"] == "Pending" and 5 <= first["interval"] <= 30
            assert first["currentTime"]
            again = await idle.call("BootNotification", BOOT)  # its next boot: in
            assert again["status"] == "Accepted" and again["interval"] == 60

        await trio.sleep(0.3)  # meter values pile up in the charger's queue
        await cp.unplug(1)  # the driver leaves while the charger is away
        assert [item.action for item in cp._outbox][-1] == "StopTransaction"
        meter_stop = cp.connectors[1].register
        boots = cp.stats.sent["BootNotification"]
        cp.go_online()
        with trio.fail_after(20):
            while not (cp.connected and not cp._outbox):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert cp.stats.sent["BootNotification"] == boots + 1  # let in at its first boot
        assert cp.boot_status == "Accepted"
        view = await rig.until_status(session, me, "settled", timeout=20)
    row = await db.fetchrow("SELECT * FROM charging_sessions WHERE id = $1::uuid", session)
    assert row is not None and row["meter_stop_wh"] == meter_stop
    energy = (Decimal(meter_stop) - Decimal(row["meter_start_wh"])) / 1000
    cost = (energy * 15 + 10).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert Decimal(str(view["final_cost"])) == cost == row["final_cost"]
    balance = await db.fetchval("SELECT balance FROM clients WHERE id = $1", client)
    total = await db.fetchval("SELECT sum(amount) FROM ledger_entries WHERE client_id = $1", client)
    assert balance == total == Decimal("300") - cost
    assert await db.fetchval("SELECT count(*) FROM holds WHERE status = 'held'") == 0
    assert cp.stats.errors == {}


async def test_the_turnstile_bounds_handshakes_in_flight(nursery: trio.Nursery) -> None:
    admission = Admission()
    gate = Gate(admission, limit=2)
    inside, most, let_go = 0, 0, trio.Event()

    async def handler(ws: ServerWebSocket, request: Upgrade, turn: Turn) -> bool:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await let_go.wait()
        inside -= 1
        await ws.accept(None)
        turn.end()
        return False  # not handed on: the door closes it

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(partial(serve_gated, handler, listeners, gate, max_message_size=1024))
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]  # send nothing
    opened = 0

    async def client() -> None:
        nonlocal opened
        async with open_websocket_url(f"ws://127.0.0.1:{port}/x"):
            opened += 1

    async with trio.open_nursery() as clients:
        for _ in range(5):
            clients.start_soon(client)
        with trio.fail_after(10):
            while admission.connecting < 8:  # noqa: ASYNC110 - counted as they arrive
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert (inside, admission.connecting) == (2, 8)  # silent ones wait too, holding no turn
        let_go.set()
    assert (most, opened) == (2, 5)
    await trio.testing.wait_all_tasks_blocked()
    assert admission.connecting == 3  # the silent ones, until their handshake times out
    for stream in silent:
        await stream.aclose()


UPGRADE = (
    b"GET /x HTTP/1.1\r\nHost: door\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _upgraded(port: int) -> trio.socket.SocketType:
    client = trio.socket.socket()
    await client.connect(("127.0.0.1", port))
    await client.send(UPGRADE)
    return client


async def _answer(client: trio.socket.SocketType) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer and (data := await client.recv(4096)):
        answer += data
    return answer


async def _switch(ws: ServerWebSocket, request: Upgrade, turn: Turn) -> bool:
    await ws.accept(None)
    turn.end()
    return False  # not handed on: the door closes it


async def test_a_queue_of_connections_is_served_whole_and_the_door_closes_behind() -> None:
    """The door takes the kernel's queue of connections a batch at a time, straight from the
    socket: every one queued before it opened gets its handshake; cancelled, it closes the
    listening socket."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=512)
    port = listeners[0].socket.getsockname()[1]
    clients = [await _upgraded(port) for _ in range(150)]  # over two batches, all queued
    assert accept_queue(listeners[0].socket) == 150
    gate = Gate(Admission(), limit=8)
    async with trio.open_nursery() as door:
        await door.start(partial(serve_gated, _switch, listeners, gate, max_message_size=1024))
        with trio.fail_after(30):
            for client in clients:
                assert (await _answer(client)).startswith(b"HTTP/1.1 101 ")
                client.close()
        door.cancel_scope.cancel()
    with pytest.raises(ConnectionRefusedError):
        await (await _upgraded(port)).recv(1)


async def test_the_door_waits_out_a_shortage_and_passes_over_a_connection_lost_in_the_queue(
    monkeypatch: pytest.MonkeyPatch, mock_clock: trio.testing.MockClock
) -> None:
    """accept(2) out of descriptors (EMFILE): the door waits a moment and tries again; a
    connection reset while queued (ECONNABORTED): the next one is taken; anything else (a
    closed socket: EBADF) is a bug and raised, not retried forever."""
    mock_clock.autojump_threshold = 0.05
    real_accept = socket.socket.accept
    failures = [OSError(errno.EMFILE, "Too many open files"), OSError(errno.ECONNABORTED, "")]
    calls: list[float] = []

    def accept(sock: socket.socket) -> tuple[socket.socket, object]:
        calls.append(trio.current_time())
        if failures:
            raise failures.pop(0)
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as door:
            gate = Gate(Admission(), 4)
            await door.start(partial(serve_gated, _switch, listeners, gate, max_message_size=64))
            client = await _upgraded(port)
            with trio.fail_after(30):
                assert (await _answer(client)).startswith(b"HTTP/1.1 101 ")
            client.close()
            assert calls[1] - calls[0] >= 0.1  # a wait after EMFILE...
            assert calls[2] - calls[1] < 0.1  # ...none after ECONNABORTED
            failures.append(OSError(errno.EBADF, "Bad file descriptor"))
            with contextlib.suppress(OSError):  # reset if the door is gone first
                await _upgraded(port)
            await trio.sleep_forever()
    bad, rest = raised.value.split(lambda e: isinstance(e, OSError) and e.errno == errno.EBADF)
    assert bad is not None and rest is None


async def test_silent_connections_do_not_shut_the_door(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    rig = await open_rig(db, dsn, tmp_path, nursery, ocpp_handshakes=1)
    port = int(rig.endpoints.ocpp_url.rsplit(":", 1)[1].split("/")[0])
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    with trio.fail_after(10):  # not the 60 s the silent ones may take to time out
        async with connect(rig.endpoints.ocpp_url, "CP-1", PASSWORD) as charger:
            assert (await charger.call("BootNotification", BOOT))["status"] == "Accepted"
    for stream in silent:
        await stream.aclose()


def _tasks_named(suffix: str) -> int:
    """Tasks of this run whose function's name ends with ``suffix``."""
    found, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            found += task.name.endswith(suffix)
            nurseries.extend(task.child_nurseries)
    return found


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _booted(port: int, path: str) -> trio.socket.SocketType:
    """A charger on a plain socket, upgraded and booted (Accepted)."""
    client = trio.socket.socket()
    await client.connect(("127.0.0.1", port))
    await client.send(
        UPGRADE.replace(b"GET /x", b"GET " + path.encode()).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        )
    )
    boot = json.dumps([2, "b1", "BootNotification", BOOT], separators=(",", ":"))
    await client.send(masked_text_frame(boot.encode()))
    heard = b""
    while b"Accepted" not in heard:
        data = await client.recv(4096)
        assert data, heard
        heard += data
    assert heard.startswith(b"HTTP/1.1 101 "), heard
    return client


async def test_a_fleet_dropped_at_once_leaves_no_task_or_socket_behind(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A connection's task ends once its station's actor has it: 10,000 chargers connected hold
    no 10,000 tasks waiting for their end, and when they all drop at once only their actors wake
    (each then closes its socket), not a task per connection after them (issue 21's drop
    stall). The sockets are all closed and the gauge of connected stations falls back; each
    actor, waiting for its mail where its connection ended, takes the charger's next one."""
    chargers = 30
    for n in range(chargers):
        await provision(db, f"CP-{n}", password=None)
    endpoints, shutdown = await start_server(nursery, dsn, tmp_path)
    url = urlsplit(endpoints.ocpp_url)
    assert url.port is not None
    connected = STATIONS_CONNECTED._value.get()
    before = _open_descriptors()
    with trio.fail_after(20):
        fleet = [await _booted(url.port, f"{url.path}/CP-{n}") for n in range(chargers)]
    assert _tasks_named("serve_gated.<locals>.connection") == 0
    assert _open_descriptors() == before + 2 * chargers  # each end of each connection
    assert STATIONS_CONNECTED._value.get() == connected + chargers
    for client in fleet:
        client.close()  # gone without a word: EOF, as when a network drops
    with trio.fail_after(10):
        while _open_descriptors() > before:  # noqa: ASYNC110 - the actors close them
            await trio.sleep(0.02)
    assert STATIONS_CONNECTED._value.get() == connected
    with trio.fail_after(20):
        fleet = [await _booted(url.port, f"{url.path}/CP-{n}") for n in range(chargers)]
    assert STATIONS_CONNECTED._value.get() == connected + chargers
    for client in fleet:
        client.close()
    shutdown.set()
