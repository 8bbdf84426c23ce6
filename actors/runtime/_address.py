from __future__ import annotations

from dataclasses import dataclass

LOCAL_NODE = "local"


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """Where an actor lives: its kind (``"station"``, ``"session"``), its id, and its node.

    ``node`` is ``"local"`` in a single-node deployment; in a cluster it names the node that owns
    the actor, so the same address can be routed over Redis to another process.
    """

    kind: str
    id: str
    node: str = LOCAL_NODE

    def __str__(self) -> str:
        prefix = "" if self.node == LOCAL_NODE else f"{self.node}/"
        return f"{prefix}{self.kind}:{self.id}"
