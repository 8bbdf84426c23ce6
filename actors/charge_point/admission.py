"""Admission control for reconnect storms (OCPP 1.6 §4.2).

When a node restarts, or the network in front of it blinks, every charger comes back at once and
each one's retry timer makes it worse: connections pile up in the listen backlog, handshakes time
out and are tried again, and the chargers already online wait behind all of it. While the door is
*saturated* — connections waiting in the kernel's accept queue plus handshakes in progress over
``queue_limit`` — a BootNotification is answered ``Pending`` with a random ``interval`` between
``pending_min`` and ``pending_max`` seconds: the charger keeps its connection, sends nothing else
meanwhile (§4.2), and boots again when its interval is up, so the herd spreads itself over the
interval instead of arriving at once. Two kinds of boot are always accepted: a station's next
boot after it was told Pending (nobody is deferred twice in a row), and a station with a
transaction open (its session has to settle: its queued StopTransaction and meter values matter
more than anyone's first status).
"""

from __future__ import annotations

import math
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cpms.metrics import OCPP_ADMISSION

#: ``tcpi_unacked`` in Linux's ``struct tcp_info`` (after 8 one-byte fields and 4 u32s): for a
#: listening socket, the connections waiting in its accept queue
_TCPI_UNACKED, _AT = struct.Struct("I"), 24
_TCP_INFO = getattr(socket, "TCP_INFO", None)
#: how long a reading of the accept queues stands: a system call per listener, where a storm
#: brings thousands of boots a second and the queues change over milliseconds, not microseconds
BACKLOG_FRESH_S = 0.01
#: the counters, looked up once (a boot each; ``labels()`` takes a lock and a lookup)
_AFTER_PENDING, _ACCEPTED, _PENDING = (
    OCPP_ADMISSION.labels(outcome) for outcome in ("accepted_after_pending", "accepted", "pending")
)


def accept_queue(sock: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue (0 where the kernel doesn't
    tell)."""
    if _TCP_INFO is None:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return 0
    return int(_TCPI_UNACKED.unpack_from(info, _AT)[0]) if len(info) >= _AT + 4 else 0


@dataclass
class Admission:
    queue_limit: int = 3000
    pending_min: float = 5.0
    pending_max: float = 20.0
    #: connections waiting in the listeners' accept queues (set by the listener once it listens)
    backlog: Callable[[], int] = lambda: 0
    #: handshakes accepted and not yet handed to their station's actor
    connecting: int = 0
    #: stations told Pending, whose next boot is accepted
    deferred: set[str] = field(default_factory=set)
    clock: Callable[[], float] = time.monotonic
    _waiting: int = field(default=0, repr=False)
    _read_at: float = field(default=-math.inf, repr=False)

    def saturated(self) -> bool:
        if self.connecting > self.queue_limit:  # no system call while it is plain
            return True
        now = self.clock()
        if now - self._read_at >= BACKLOG_FRESH_S:
            self._waiting, self._read_at = self.backlog(), now
        return self.connecting + self._waiting > self.queue_limit

    def interval(self, station_id: str, *, in_transaction: bool) -> int | None:
        """None: accept this boot; otherwise the ``interval`` to answer Pending with."""
        if station_id in self.deferred:
            self.deferred.discard(station_id)
            _AFTER_PENDING.inc()
            return None
        if in_transaction or not self.saturated():
            _ACCEPTED.inc()
            return None
        self.deferred.add(station_id)
        _PENDING.inc()
        low = max(1, math.ceil(self.pending_min))
        return random.randint(low, max(low, math.floor(self.pending_max)))
