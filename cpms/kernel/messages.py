"""Typed requests: a message answered with an ``R`` says so in its type.

A request is plain data, so the layers that define requests (storage's ledger operations, the
domain actors' messages) need nothing of the actor runtime that delivers them; the runtime's
``ask`` returns the ``R`` of the request it was given.
"""

from __future__ import annotations

from typing import Generic, TypeVar

R = TypeVar("R")


class Request(Generic[R]):
    """Base of messages answered with an ``R``; ``ask`` returns that type.

    Subclass it with ``@dataclass(frozen=True, slots=True)``.
    """

    __slots__ = ()
