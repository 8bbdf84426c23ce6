"""What the benchmarks share: a ``cpms serve`` of their own on a temporary data directory, and
how they hand their result over."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

STARTUP_LIMIT_S = 300  # 19,000 stations' actors are made at start-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    pid: int
    http_url: str
    ocpp_port: int
    started_s: float  # from launch to the first healthy answer


@asynccontextmanager
async def serving(data: Path, log: Path | None = None, **settings: str) -> AsyncIterator[Served]:
    """``cpms serve`` on ``data`` with ``settings`` (``CPMS_`` names, none from this process's
    environment), once ``/health`` answers; terminated on exit. Its output goes to ``log``
    when given (else to this process's)."""
    http, ocpp = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CPMS_")},
        "CPMS_DATA_DIR": str(data),
        "CPMS_HTTP_PORT": str(http),
        "CPMS_OCPP_PORT": str(ocpp),
        "CPMS_LOG_LEVEL": os.environ.get("BENCH_SERVER_LOG", "WARNING"),
        **settings,
    }
    began = time.perf_counter()
    output = None if log is None else log.open("ab")
    server = await trio.lowlevel.open_process(
        [sys.executable, "-m", "cpms", "serve"], env=env, stdout=output, stderr=output
    )
    try:
        url = f"http://127.0.0.1:{http}"
        async with httpx.AsyncClient(base_url=url) as client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"cpms serve exited ({server.returncode}) before it was up")
                if time.perf_counter() - began > STARTUP_LIMIT_S:
                    raise RuntimeError(f"cpms serve not up after {STARTUP_LIMIT_S} s")
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.5)
        yield Served(server.pid, url, ocpp, round(time.perf_counter() - began, 1))
    finally:
        server.terminate()
        with trio.move_on_after(60):
            await server.wait()
        if output is not None:
            output.close()


class HttpClosed(Exception):
    """The server closed the connection."""


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client for the driver's POSTs, one per probe: a start is
    timed from the moment its request is written to the socket (a general-purpose client spends
    part of a millisecond of its own before that, and its scheduling tail is the bench's, not
    the server's). Like any client it opens a new connection, before a request and outside the
    timing, when the server has said it closes the last one (hypercorn does after 1,000 requests)
    or when it has been idle for nearly the server's keep-alive timeout."""

    IDLE_S = 4.0  # hypercorn closes a keep-alive connection after 5 s of silence

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()
        self.idle_since = 0.0

    def request(
        self,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any] | bytes,
        method: str = "POST",
    ) -> bytes:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + data

    async def ready(self) -> trio.SocketStream:
        """An open connection to send on."""
        if self.stream is not None and time.perf_counter() - self.idle_since > self.IDLE_S:
            await self.aclose()
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        return self.stream

    async def response(self, stream: trio.SocketStream) -> tuple[int, Any]:
        """The next response's status and JSON body (the server always sends a length)."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill(stream)
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        fields = {
            name.strip(): value.strip()
            for name, _, value in (line.lower().partition(":") for line in head[1:])
        }
        length = int(fields["content-length"])
        while len(self.buffer) < end + length:
            await self._fill(stream)
        body = bytes(self.buffer[end : end + length])
        del self.buffer[: end + length]
        self.idle_since = time.perf_counter()
        if fields.get("connection") == "close":
            await self.aclose()
        return int(head[0].split()[1]), json.loads(body)

    async def post(
        self, path: str, headers: dict[str, str], body: dict[str, Any] | bytes
    ) -> tuple[int, Any]:
        stream = await self.ready()
        await stream.send_all(self.request(path, headers, body))
        return await self.response(stream)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        stream = await self.ready()
        await stream.send_all(self.request(path, headers, b"", method="GET"))
        return await self.response(stream)

    async def _fill(self, stream: trio.SocketStream) -> None:
        data = await stream.receive_some(65536)
        if not data:
            raise HttpClosed("HTTP connection closed")
        self.buffer += data

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream = None
        self.buffer.clear()


class Steal:
    """The share of this virtual machine's CPU time its host took for others ("steal", from
    ``/proc/stat``) while a phase ran: with two cores, a few percent of it moves the tail of a
    latency more than most changes of code. 0 where the kernel does not tell."""

    def __init__(self) -> None:
        self._before = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return 0, 0
        ticks = [int(f) for f in fields]
        return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])

    def percent(self) -> float:
        steal, total = self._read()
        elapsed = total - self._before[1]
        return round(100 * (steal - self._before[0]) / elapsed, 1) if elapsed else 0.0


def report(result: dict[str, Any], path: Path | None) -> None:
    """Print the result, and write it to ``path`` when one was given (``--json``)."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        path.write_text(text)
