"""The load of ``bench/storm.py``: a herd of chargers on one epoll loop, behaving as real ones do
when they all come back at once.

Each charger of the herd opens a TCP connection, upgrades it, sends BootNotification and, once
Accepted, a StatusNotification for each of its ``connectors``; then it is done. A connection
refused, reset, answered with anything but 101 or silent for ``stale`` seconds is tried again
after a jittered ``retry`` (what a charger's own timer does); a ``Pending`` boot sends
BootNotification again on the same connection after the ``interval`` the server gave (OCPP 1.6
§4.2). Meanwhile the *steady* chargers, connected before and left alone,
send a Heartbeat each at ``steady_rate`` in all, and their round trips are measured: the herd's
effect on chargers already online.

JSON lines on standard input, one answer line each (besides those of ``load_generator``):

    {"steady": ["STEADY-", 1, 500]}                                 → connected, failures
    {"herd": ["BENCH-", 1, 10000], "parallel": 1000, "steady_rate": 100}
        → booted, seconds, pending_answers, retries, failed_for_good, steady p50/p99/max ms
    {"drop": true}                                                  → dropped (the herd's)
"""

from __future__ import annotations

import gc
import heapq
import itertools
import json
import random
import socket
import sys
import time
from typing import Any

from load_generator import _IN, _OUT, Closed, Generator, _Conn


class Herd(Generator):
    def __init__(
        self, host: str, port: int, prefix: str = "/ws", password: str | None = None
    ) -> None:
        super().__init__(host, port, prefix, password)
        self.steady: dict[int, _Conn] = {}

    def connect_steady(self, names: list[str]) -> dict[str, Any]:
        return self.open_many(
            names, self.port, 200, self._send_handshake, self._opened, self.steady
        )

    def drop(self) -> int:
        """Close every connection of the herd at once (the steady ones stay)."""
        dropped = len(self.conns)
        for fd in list(self.conns):
            self._drop(fd)
        return dropped

    def herd(
        self,
        names: list[str],
        parallel: int,
        steady_rate: float = 0.0,
        connectors: int = 2,
        *,
        hold: float = 0.0,
        retry: float = 2.0,
        stale: float = 30.0,
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        began = time.perf_counter()
        start = began + hold  # the herd's first connection: before it, only heartbeats
        waiting = list(reversed(names))  # not yet trying
        again: list[tuple[float, str]] = []  # (when, station): tries again after a failure
        opening: dict[int, tuple[_Conn, float]] = {}
        reboot: list[tuple[float, int, _Conn]] = []  # (when, n, charger): boots after Pending
        order = itertools.count()
        pending_answers = retries = 0
        pending_stations: set[str] = set()
        rtts: list[float] = []
        held: list[float] = []  # round trips of heartbeats sent before the herd started
        worst: dict[int, float] = {}  # the slowest round trip sent in each second of the phase
        steady_due: list[tuple[float, int]] = []
        period = len(self.steady) / steady_rate if steady_rate else 0.0
        if period:
            steady_due = [(began + random.random() * period, fd) for fd in self.steady]
            heapq.heapify(steady_due)

        def failed(fd: int) -> None:
            nonlocal retries
            conn, _ = opening.pop(fd)
            self.epoll.unregister(fd)
            conn.sock.close()
            retries += 1
            later = time.perf_counter() + retry * (0.5 + random.random())
            heapq.heappush(again, (later, conn.station))

        def advance(fd: int, conn: _Conn) -> None:
            nonlocal pending_answers
            if conn.next_id == 1:
                if not conn.upgraded():
                    return
                boot(conn)
                opening[fd] = (conn, time.perf_counter())
            for text in conn.frames():
                frame = json.loads(text)
                if frame[0] != 3 or frame[1] != conn.waiting:
                    raise Closed(f"{conn.station}: unexpected {text[:200]}")
                conn.waiting = None
                if conn.statuses:  # the answer to a StatusNotification
                    report(fd, conn)
                    return
                status, interval = frame[2]["status"], frame[2]["interval"]
                if status == "Accepted":
                    conn.statuses = connectors
                    report(fd, conn)
                    return
                if status != "Pending":
                    raise Closed(f"{conn.station}: boot {status}")
                pending_answers += 1
                pending_stations.add(conn.station)
                at = time.perf_counter() + interval
                heapq.heappush(reboot, (at, next(order), conn))
                opening[fd] = (conn, at)  # not stale while it waits its turn

        def report(fd: int, conn: _Conn) -> None:
            """After its boot: a StatusNotification per connector, one at a time, as chargers
            do; then it is done."""
            if conn.statuses > connectors:
                del opening[fd]
                self.conns[fd] = conn
                return
            payload = {"connectorId": conn.statuses, "errorCode": "NoError", "status": "Available"}
            conn.statuses += 1
            conn.call("StatusNotification", payload)

        def boot(conn: _Conn) -> None:
            conn.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "raw"})

        def steady_event(fd: int) -> None:
            conn = self.steady.get(fd)
            if conn is None or not self._read(conn):
                return
            for text in conn.frames():
                sent = conn.sent_at
                rtt = conn.reply(text)
                (held if sent < start else rtts).append(rtt)
                second = int(sent - began)
                worst[second] = max(worst.get(second, 0.0), rtt)

        while (waiting or again or opening) and time.perf_counter() - began < timeout:
            now = time.perf_counter()
            while steady_due and steady_due[0][0] <= now:
                at, fd = heapq.heappop(steady_due)
                heapq.heappush(steady_due, (at + period, fd))
                conn = self.steady[fd]
                if conn.waiting is None:
                    conn.call("Heartbeat", {})
            while reboot and reboot[0][0] <= now:
                conn = heapq.heappop(reboot)[2]
                fd = conn.sock.fileno()  # -1 once closed
                if fd in opening and opening[fd][0] is conn:
                    try:
                        boot(conn)
                    except OSError:
                        failed(fd)
            while again and again[0][0] <= now:
                waiting.append(heapq.heappop(again)[1])
            while waiting and len(opening) < parallel and now >= start:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((self.host, self.port))
                opening[sock.fileno()] = (_Conn(waiting.pop(), sock), now)
                self.epoll.register(sock.fileno(), _OUT)
            nexts = [h[0][0] for h in (steady_due, reboot, again) if h]
            wait = max(0.0, min(nexts) - time.perf_counter()) if nexts else 0.2
            for fd, events in self.epoll.poll(min(wait, 0.2)):
                if fd in self.steady:
                    steady_event(fd)
                    continue
                if fd not in opening:
                    continue
                conn, _ = opening[fd]
                try:
                    if events & _OUT and not conn.handshaken:
                        self._send_handshake(conn)
                        self.epoll.modify(fd, _IN)
                    elif events & _IN and self._read(conn):
                        advance(fd, conn)
                except (OSError, Closed, ValueError, KeyError):
                    failed(fd)
            stale_before = time.perf_counter() - stale
            for fd in [fd for fd, (_, at) in opening.items() if at < stale_before]:
                failed(fd)
        seconds = time.perf_counter() - start
        # the steady chargers' answers still in flight
        end = time.perf_counter() + 5
        while any(c.waiting for c in self.steady.values()) and time.perf_counter() < end:
            for fd, _ in self.epoll.poll(0.2):
                if fd in self.steady:
                    steady_event(fd)
        rtts.sort()
        held.sort()

        def pct(p: float, of: list[float] = rtts) -> float:
            return round(of[min(len(of) - 1, int(len(of) * p))] * 1000, 1) if of else 0.0

        return {
            "booted": len(self.conns),
            "seconds": round(seconds, 1),
            "pending_answers": pending_answers,
            "stations_told_pending": len(pending_stations),
            "retries": retries,
            "failed_for_good": len(waiting) + len(again) + len(opening),
            "steady_heartbeats": len(rtts),
            "steady_p50_ms": pct(0.5),
            "steady_p99_ms": pct(0.99),
            "steady_max_ms": pct(1.0),
            "held_heartbeats": len(held),
            "held_p99_ms": pct(0.99, held),
            "held_max_ms": pct(1.0, held),
            # when the steady chargers were slowed: [second of the phase, slowest ms] over 100 ms
            "steady_slow_seconds": [
                [second, round(rtt * 1000)] for second, rtt in sorted(worst.items()) if rtt > 0.1
            ],
        }


def serve(herd: Herd) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        if "herd" in command:
            prefix, first, count = command["herd"]
            names = [f"{prefix}{n:05d}" for n in range(first, first + count)]
            answer: dict[str, Any] = herd.herd(
                names,
                command.get("parallel", 1000),
                command.get("steady_rate", 0.0),
                command.get("connectors", 2),
                hold=command.get("hold", 0.0),
            )
        elif "steady" in command:
            prefix, first, count = command["steady"]
            answer = herd.connect_steady([f"{prefix}{n:05d}" for n in range(first, first + count)])
        elif "drop" in command:
            answer = {"dropped": herd.drop()}
        else:
            answer = {"error": f"unknown command {command}"}
        print(json.dumps(answer), flush=True)


def main() -> int:
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    password = sys.argv[4] if len(sys.argv) > 4 else None  # every station's
    gc.disable()
    serve(Herd(host, port, prefix, password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
