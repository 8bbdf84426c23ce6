"""The charge point's link state as a pure state machine (no I/O).

A station is online exactly while frames keep arriving: the first frame after silence brings it
online, and ``offline_after`` seconds without one take it offline. The ChargePointActor feeds
events in and performs the effects that come out.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Link(enum.StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


class Effect(enum.StrEnum):
    PERSIST_ONLINE = "persist_online"  #: stations.is_online = true
    PERSIST_OFFLINE = "persist_offline"  #: stations.is_online = false
    PUBLISH = "publish"  #: a station_status_update on the event bus


@dataclass(frozen=True, slots=True)
class FrameArrived:
    at: float


@dataclass(frozen=True, slots=True)
class SilenceElapsed:
    at: float


Event = FrameArrived | SilenceElapsed


@dataclass(frozen=True, slots=True)
class LinkState:
    link: Link = Link.OFFLINE
    last_seen: float = -math.inf

    def deadline(self, offline_after: float) -> float:
        """When silence turns this station offline (never, while offline)."""
        return self.last_seen + offline_after if self.link is Link.ONLINE else math.inf


@dataclass(frozen=True, slots=True)
class Transition:
    state: LinkState
    effects: tuple[Effect, ...]


class InvalidTransition(Exception):
    """An event that can't happen in this state (a bug in the caller)."""


TABLE: dict[tuple[Link, type[Event]], tuple[Link, tuple[Effect, ...]]] = {
    (Link.OFFLINE, FrameArrived): (Link.ONLINE, (Effect.PERSIST_ONLINE, Effect.PUBLISH)),
    (Link.ONLINE, FrameArrived): (Link.ONLINE, ()),
    (Link.ONLINE, SilenceElapsed): (Link.OFFLINE, (Effect.PERSIST_OFFLINE, Effect.PUBLISH)),
}


def transition(state: LinkState, event: Event, offline_after: float) -> Transition:
    """The next state and the effects to perform.

    Raises:
        InvalidTransition: silence while offline, or silence reported before the deadline.
    """
    entry = TABLE.get((state.link, type(event)))
    if entry is None:
        raise InvalidTransition(f"{type(event).__name__} while {state.link}")
    if isinstance(event, SilenceElapsed) and event.at < state.deadline(offline_after):
        raise InvalidTransition("silence reported before the deadline")
    link, effects = entry
    last_seen = event.at if isinstance(event, FrameArrived) else state.last_seen
    return Transition(LinkState(link, last_seen), effects)
