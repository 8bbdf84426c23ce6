from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.runtime._address import LOCAL_NODE, Address
from actors.runtime._mailbox import ActorRef
from actors.runtime.errors import ActorUnavailable


class Registry:
    """Finds actors by kind and id.

    Entries are :class:`ActorRef` objects, not mailboxes, so an entry may equally be a reference
    to an actor on another node (its address carries that node's name); callers never know the
    difference. Supervisors register and unregister their children; nothing registers at import.

    An actor in this process may also show a view of itself: a function answering its current
    state, read without a message. Asking costs two passes of the scheduler, each behind
    whatever else is ready; a state read on every request (a station's, at every start) needn't.
    """

    def __init__(self, node: str = LOCAL_NODE) -> None:
        self.node = node
        self._refs: dict[tuple[str, str], ActorRef[Any]] = {}
        self._views: dict[tuple[str, str], Callable[[], Any]] = {}

    def register(self, ref: ActorRef[Any]) -> None:
        """Add ``ref``; an address can be held by one actor at a time.

        Raises:
            ValueError: the kind and id are already registered.
        """
        key = (ref.address.kind, ref.address.id)
        if key in self._refs:
            raise ValueError(f"{ref.address} is already registered")
        self._refs[key] = ref

    def unregister(self, address: Address) -> None:
        self._refs.pop((address.kind, address.id), None)

    def show(self, address: Address, view: Callable[[], Any]) -> None:
        """Let others read ``view()``: the actor at ``address`` is running and answers it from
        its own state (never awaiting, so what it answers is whole)."""
        self._views[(address.kind, address.id)] = view

    def hide(self, address: Address, view: Callable[[], Any]) -> None:
        """Withdraw ``view`` (if it is still the one shown for ``address``)."""
        if self._views.get((address.kind, address.id)) is view:
            del self._views[(address.kind, address.id)]

    def view(self, kind: str, id: str) -> Callable[[], Any] | None:
        return self._views.get((kind, id))

    def lookup(self, kind: str, id: str) -> ActorRef[Any] | None:
        return self._refs.get((kind, id))

    def get(self, kind: str, id: str) -> ActorRef[Any]:
        """Like :meth:`lookup`, but a missing actor is an :class:`ActorUnavailable`."""
        ref = self._refs.get((kind, id))
        if ref is None:
            raise ActorUnavailable(Address(kind, id, self.node), "not running")
        return ref

    def ids(self, kind: str) -> list[str]:
        """The ids of the actors of ``kind`` registered now."""
        return [id for k, id in self._refs if k == kind]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return len(self._refs)
        return sum(1 for k, _ in self._refs if k == kind)

    def kinds(self) -> dict[str, int]:
        """How many actors of each kind are registered (for /health)."""
        counts: dict[str, int] = {}
        for kind, _ in self._refs:
            counts[kind] = counts.get(kind, 0) + 1
        return counts
