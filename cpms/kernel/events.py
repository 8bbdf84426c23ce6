"""The in-process event bus: status and balance events fanned out to subscribers.

Publishing never blocks: a subscriber that falls behind its bounded queue loses events (counted
in ``dropped``) rather than slowing a charger down. With Redis configured, a bridge republishes
these events to the other nodes (scale-out issue).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

Event = dict[str, Any]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()
        self.dropped = 0
        self.published = 0

    def publish(self, event: Event) -> None:
        self.published += 1
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._subscribers.discard(channel)

    @contextmanager
    def subscribe(self, capacity: int = 1000) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """Receive events published from now on, until the ``with`` block ends."""
        send, receive = trio.open_memory_channel[Event](capacity)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
