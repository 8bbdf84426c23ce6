"""Errors of the actor runtime.

    ActorError
    ├── ActorCrashed        the actor failed while holding your request; ``__cause__`` is why
    ├── AskTimeout          no answer within the ask timeout
    ├── ActorUnavailable    the actor is gone (stopped for good) or was never there
    ├── MailboxFull         ``tell_nowait`` into a full inbox
    └── ChildRetired        a child crashed past its restart budget and may not start yet
    SupervisorEscalation    a supervisor gave up past its restart intensity (loud, propagates)

An exception *raised by the actor on purpose* as the answer to an ask (a domain refusal such as
``InsufficientBalance``) reaches the caller as itself, not boxed: only crashes are boxed.
"""

from __future__ import annotations

from actors.runtime._address import Address


class ActorError(Exception):
    """Base of runtime failures seen by a caller."""

    def __init__(self, address: Address, message: str) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address


class ActorCrashed(ActorError):
    """The actor crashed while it held the request; the original error is ``__cause__``."""

    def __init__(self, address: Address, cause: BaseException) -> None:
        super().__init__(address, f"crashed with {type(cause).__name__}: {cause}")
        self.cause = cause
        self.__cause__ = cause


class AskTimeout(ActorError):
    """The actor did not answer in time (it may still act on the request later)."""


class ActorUnavailable(ActorError):
    """Nobody is behind the address any more."""


class MailboxFull(ActorError):
    """The inbox is at capacity and the sender chose not to wait."""


class SupervisorEscalation(Exception):
    """A supervisor exceeded its restart intensity and gave up; the cause is ``__cause__``."""


class ChildRetired(ActorError):
    """The child crashed more often than its supervisor's intensity allows and was retired;
    it may be started again in ``retry_after`` seconds."""

    def __init__(self, address: Address, retry_after: float) -> None:
        super().__init__(address, f"retired after repeated crashes; retry in {retry_after:.0f} s")
        self.retry_after = retry_after
