"""A cheap OCPP-J load generator: thousands of chargers on plain sockets and one epoll loop.

The benchmarks share this machine's two cores with the server, so the load must cost as little as
possible and add as little delay of its own to the round trips it measures: no trio, no
WebSocket library, just enough RFC 6455 (one handshake, unfragmented text frames out, masked with
a zero key that leaves the payload as is, unmasked frames in).

It runs as its own process, driven by JSON lines on standard input, one answer line each:

    {"connect": ["BENCH-", 1, 10000], "parallel": 200}   → connected, failures, seconds
    {"drive": 3000, "seconds": 20}                        → messages, rate, p50/p95/p99/max ms
    {"heartbeat_all": true}                               → alive
    {"cpu": true}                                         → cpu_seconds (this process)

:class:`GeneratorProcess` starts and asks it from a trio benchmark.
"""

from __future__ import annotations

import base64
import errno
import gc
import heapq
import json
import os
import random
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

NOW = "2026-11-22T10:00:00Z"
SLOW_S = 0.010  # a round trip counted in a phase's slow_by_second
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


class Closed(Exception):
    """The server closed a connection or answered out of turn."""


@dataclass
class _Conn:
    station: str
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    handshaken: bool = False
    next_id: int = 1
    waiting: str | None = None  # unique id of the CALL in flight
    sent_at: float = 0.0
    due: bool = False  # its next message is due but a CALL is still in flight
    energy: int = 0
    statuses: int = 0  # the next connector to report after boot (bench/storm_load.py); 0: none

    def call(self, action: str, payload: dict[str, Any]) -> None:
        unique_id = str(self.next_id)
        self.next_id += 1
        self.send_text(json.dumps([2, unique_id, action, payload]))
        self.waiting, self.sent_at = unique_id, time.perf_counter()

    def send_text(self, text: str) -> None:
        """One text frame (a few hundred bytes: never a partial send), masked with a zero key
        that leaves the payload as it is."""
        data = text.encode()
        size = len(data)
        if size < 126:
            head = bytes((0x81, 0x80 | size))
        else:
            head = bytes((0x81, 0xFE)) + size.to_bytes(2, "big")
        self.sock.send(head + b"\0\0\0\0" + data)

    def upgrade(
        self, host: str, path: str, subprotocol: str | None = None, password: str | None = None
    ) -> None:
        """Send the WebSocket handshake (with ``password``: HTTP Basic as the station)."""
        key = base64.b64encode(os.urandom(16)).decode()
        asked = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        if password is not None:
            basic = base64.b64encode(f"{self.station}:{password}".encode()).decode()
            asked += f"Authorization: Basic {basic}\r\n"
        self.sock.send(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{asked}\r\n"
            ).encode()
        )
        self.handshaken = True

    def upgraded(self) -> bool:
        """The handshake's 101 has come (the buffer keeps what followed it); False while it is
        still coming.

        Raises:
            Closed: another answer.
        """
        head, sep, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        if not sep:
            return False
        if not head.startswith(b"HTTP/1.1 101"):
            raise Closed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        self.buffer = bytearray(rest)
        return True

    def frames(self) -> list[str]:
        """Complete text frames in the buffer (consumed)."""
        out = []
        buf = self.buffer
        while len(buf) >= 2:
            opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, start = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + size:
                break
            if opcode == 0x8:
                raise Closed(f"{self.station}: close frame")
            if opcode == 0x1:
                out.append(buf[start : start + size].decode())
            del buf[: start + size]
        return out

    def reply(self, text: str) -> float:
        """Match a CALLRESULT to the CALL in flight; returns the round trip in seconds."""
        frame = json.loads(text)
        if frame[0] != 3 or frame[1] != self.waiting:
            raise Closed(f"{self.station}: unexpected {text[:200]}")
        self.waiting = None
        return time.perf_counter() - self.sent_at


class Generator:
    def __init__(
        self, host: str, port: int, prefix: str = "/ws", password: str | None = None
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix.rstrip("/")
        self.password = password  # every station's, when they have one
        self.epoll = select.epoll()
        self.conns: dict[int, _Conn] = {}  # connected and booted, by file descriptor
        self.in_flight = 0

    # -- connecting ------------------------------------------------------------------------

    def connect(self, names: list[str], parallel: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.open_many(
            names, self.port, parallel, self._send_handshake, self._opened, self.conns, timeout
        )

    def open_many(
        self,
        names: list[str],
        port: int,
        parallel: int,
        handshake: Callable[[_Conn], None],
        opened: Callable[[_Conn], bool],
        into: dict[int, _Conn],
        timeout: float = 60.0,
        other: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Open a connection for each name to ``port``, ``parallel`` at a time: ``handshake``
        once writable, then ``opened`` on each read until it says done; done ones go ``into``.
        Events of other descriptors (connected before) go to ``other`` meanwhile."""
        began = time.perf_counter()
        pending = list(reversed(names))
        opening: dict[int, tuple[_Conn, float]] = {}
        failures = 0

        def fail(fd: int) -> None:
            nonlocal failures
            conn, _ = opening.pop(fd)
            self.epoll.unregister(fd)
            conn.sock.close()
            failures += 1

        while pending or opening:
            while pending and len(opening) < parallel:
                name = pending.pop()
                sock = socket.socket()
                sock.setblocking(False)
                code = sock.connect_ex((self.host, port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    failures += 1
                    continue
                opening[sock.fileno()] = (_Conn(name, sock), time.monotonic())
                self.epoll.register(sock.fileno(), _OUT)
            for fd, events in self.epoll.poll(0.5):
                if fd not in opening:
                    if other is not None:
                        other(fd)
                    continue
                conn, _ = opening[fd]
                try:
                    if events & _OUT and not conn.handshaken:
                        handshake(conn)
                        self.epoll.modify(fd, _IN)
                    elif events & _IN and self._read(conn) and opened(conn):
                        del opening[fd]
                        into[fd] = conn
                except (OSError, Closed):
                    fail(fd)
            stale = time.monotonic() - timeout
            for fd in [fd for fd, (_, at) in opening.items() if at < stale]:
                fail(fd)
        return {
            "connected": len(into),
            "failures": failures,
            "seconds": round(time.perf_counter() - began, 1),
        }

    def _send_handshake(self, conn: _Conn) -> None:
        where = f"{self.host}:{self.port}"
        conn.upgrade(where, f"{self.prefix}/{conn.station}", "ocpp1.6", self.password)

    def _opened(self, conn: _Conn) -> bool:
        """Advance a new connection: 101 → BootNotification → Accepted. True once booted."""
        if conn.next_id == 1:
            if not conn.upgraded():
                return False
            conn.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "raw"})
        for text in conn.frames():
            conn.reply(text)
        return conn.waiting is None

    @staticmethod
    def _read(conn: _Conn) -> bool:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return False
        if not data:
            raise Closed(f"{conn.station}: connection closed")
        conn.buffer += data
        return True

    # -- load ------------------------------------------------------------------------------

    def drive(self, rate: float, seconds: float) -> dict[str, Any]:
        """Each charger sends a Heartbeat or a MeterValues every len(conns)/rate seconds (from a
        random offset within the first period); the achieved rate is counted after it."""
        period = len(self.conns) / rate
        began = time.perf_counter()
        steady_from, deadline = began + period, began + period + seconds
        rtts: list[float] = []
        slow: dict[int, list[float]] = {}  # second of the run → round trips over SLOW_S
        steady = 0

        def answered(rtt: float) -> None:
            nonlocal steady
            rtts.append(rtt)
            if rtt > SLOW_S:
                slow.setdefault(int(time.perf_counter() - began), []).append(rtt)
            if steady_from <= time.perf_counter() <= deadline:
                steady += 1

        errors = self.pace(rate, seconds, self._load_call, answered)
        rtts.sort()

        def pct(p: float) -> float:
            return round(rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1000, 2) if rtts else 0.0

        return {
            "target_rate": rate,
            "messages": len(rtts),
            "achieved_rate": round(steady / seconds),
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "errors": errors,
            # when the slow round trips came: spread out (queueing) or in bursts (a stall)
            "slow_by_second": {
                second: [len(times), round(max(times) * 1000, 1)]
                for second, times in sorted(slow.items())
            },
        }

    def pace(
        self,
        rate: float,
        seconds: float,
        call: Callable[[_Conn], None],
        answered: Callable[[float], None],
        *,
        other: Callable[[int], None] | None = None,
        linger: float = 0.0,
    ) -> int:
        """Each charger makes ``call`` every len(conns)/rate seconds for ``seconds`` (from a
        random offset within the first period; one CALL in flight each, a call due meanwhile
        waits for the answer); ``answered(round trip)`` for each answer. Events of descriptors
        that are no charger's go to ``other``, read ``linger`` seconds past the last call.
        Returns how many chargers failed."""
        period = len(self.conns) / rate
        began = time.perf_counter()
        deadline = began + period + seconds
        end = deadline + linger
        due = [(began + random.random() * period, fd) for fd in self.conns]
        heapq.heapify(due)
        errors = 0
        self.in_flight = 0
        while (due or self.in_flight or linger) and not (linger and time.perf_counter() >= end):
            now = time.perf_counter()
            while due and due[0][0] <= now:
                at, fd = heapq.heappop(due)
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if at + period < deadline:
                    heapq.heappush(due, (at + period, fd))
                if conn.waiting:
                    conn.due = True
                else:
                    self.in_flight += 1
                    call(conn)
            timeout = max(0.0, due[0][0] - time.perf_counter()) if due else 0.2
            for fd, _events in self.epoll.poll(min(timeout, 0.05) if other else timeout):
                conn = self.conns.get(fd)
                if conn is None:
                    if other is not None:
                        other(fd)
                    continue
                try:
                    if not self._read(conn):
                        continue
                    for text in conn.frames():
                        answered(conn.reply(text))
                        self.in_flight -= 1
                    if conn.due and conn.waiting is None:
                        conn.due = False
                        self.in_flight += 1
                        call(conn)
                except (OSError, Closed, ValueError):
                    errors += 1
                    self.in_flight -= conn.waiting is not None
                    self._drop(fd)
        return errors

    def _load_call(self, conn: _Conn) -> None:
        conn.energy += random.randint(10, 60)
        if random.random() < 0.5:
            conn.call("Heartbeat", {})
            return
        conn.call(
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": NOW,
                        "sampledValue": [
                            {"value": str(conn.energy), "unit": "Wh"},
                            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            },
        )

    def heartbeat_all(self, timeout: float = 60.0) -> int:
        """One Heartbeat from every connection; how many answered."""
        for fd, conn in list(self.conns.items()):
            try:
                conn.call("Heartbeat", {})
            except OSError:
                self._drop(fd)
        alive, asked = 0, len(self.conns)
        deadline = time.monotonic() + timeout
        while alive < asked and time.monotonic() < deadline:
            for fd, _events in self.epoll.poll(0.5):
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                try:
                    if self._read(conn):
                        for text in conn.frames():
                            conn.reply(text)
                            alive += 1
                except (OSError, Closed, ValueError):
                    asked -= 1
                    self._drop(fd)
        return alive

    def _drop(self, fd: int) -> None:
        conn = self.conns.pop(fd)
        self.epoll.unregister(fd)
        conn.sock.close()


class GeneratorProcess:
    """A generator in a child process, asked from trio (see the module docstring)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._lines = _lines(process)

    @classmethod
    async def start(cls, host: str, port: int, prefix: str = "/ws") -> GeneratorProcess:
        return await cls.start_command([sys.executable, __file__, host, str(port), prefix])

    @classmethod
    async def start_command(cls, argv: list[str]) -> GeneratorProcess:
        """Another program answering the same way (``bench/app_ws.py``'s load)."""
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        return cls(process)

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")
        answer: dict[str, Any] = json.loads(await self._lines.__anext__())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    async def aclose(self) -> None:
        self.process.kill()
        await self.process.wait()


async def _lines(process: trio.Process) -> AsyncIterator[bytes]:
    assert process.stdout is not None
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await process.stdout.receive_some(65536)
            if not data:
                raise RuntimeError(f"load generator exited ({await process.wait()})")
            buffer += data
        line, _, buffer = buffer.partition(b"\n")
        yield line


def serve(generator: Generator) -> None:
    """Answer JSON-line commands on standard input (see the module docstring)."""
    for line in sys.stdin:
        command = json.loads(line)
        if "connect" in command:
            prefix, first, count = command["connect"]
            names = [f"{prefix}{n:05d}" for n in range(first, first + count)]
            answer: dict[str, Any] = generator.connect(names, command.get("parallel", 200))
        elif "drive" in command:
            answer = generator.drive(command["drive"], command["seconds"])
        elif "heartbeat_all" in command:
            answer = {"alive": generator.heartbeat_all()}
        elif "cpu" in command:
            times = os.times()
            answer = {"cpu_seconds": times.user + times.system}
        else:
            answer = {"error": f"unknown command {command}"}
        print(json.dumps(answer), flush=True)


def main() -> int:
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # Nothing here builds reference cycles; a collection would only add pauses to the timings.
    gc.disable()
    serve(Generator(host, port, prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
