from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

import outcome
import trio

from actors.runtime._address import Address
from actors.runtime.errors import ActorUnavailable, AskTimeout, MailboxFull
from cpms.kernel.messages import Request

R = TypeVar("R")
M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)


class Reply(Generic[R]):
    """A one-shot answer slot: set once (a value or an error), awaited once."""

    __slots__ = ("_event", "_outcome")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._outcome: outcome.Outcome[R] | None = None

    @property
    def done(self) -> bool:
        return self._outcome is not None

    def send(self, value: R) -> None:
        self._set(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._set(outcome.Error(error))

    def _set(self, result: outcome.Outcome[R]) -> None:
        if self._outcome is not None:
            raise RuntimeError("reply already sent")
        self._outcome = result
        self._event.set()

    async def receive(self) -> R:
        await self._event.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()


@dataclass(slots=True, eq=False)
class Envelope(Generic[M]):
    """A message in an inbox, with the reply slot when it came by ``ask``."""

    message: M
    reply: Reply[Any] | None = None

    def respond(self, value: object) -> None:
        """Answer an ``ask``; a ``tell`` has nobody waiting and the value is dropped."""
        if self.reply is not None and not self.reply.done:
            self.reply.send(value)

    def fail(self, error: BaseException) -> None:
        """Answer an ``ask`` with an error the caller will see raised as itself."""
        if self.reply is not None and not self.reply.done:
            self.reply.fail(error)

    @property
    def answered(self) -> bool:
        return self.reply is None or self.reply.done


@dataclass(eq=False)
class Mailbox(Generic[M]):
    """A bounded inbox. Outlives restarts of its actor, so queued messages wait for the next
    incarnation; envelopes handed out and not yet answered are tracked so a crash can answer them.
    """

    address: Address
    capacity: int = 100
    _send: trio.MemorySendChannel[Envelope[M]] = field(init=False)
    _recv: trio.MemoryReceiveChannel[Envelope[M]] = field(init=False)
    _in_flight: list[Envelope[M]] = field(init=False, default_factory=list)
    #: cancelled by a delivery while the actor is inside :meth:`until_mail`
    _interrupt: trio.CancelScope | None = field(init=False, default=None)
    #: the actor waiting in :meth:`idle`, woken by a delivery
    _idle: trio.lowlevel.Task | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[Envelope[M]](self.capacity)

    # -- the actor's side -------------------------------------------------------------------

    async def receive(self) -> Envelope[M]:
        """Next envelope; raises :class:`trio.EndOfChannel` once the mailbox is closed."""
        return self._track(await self._recv.receive())

    def receive_nowait(self) -> Envelope[M]:
        """Next envelope if one is queued; raises :class:`trio.WouldBlock` otherwise."""
        return self._track(self._recv.receive_nowait())

    @contextmanager
    def until_mail(self) -> Iterator[trio.CancelScope]:
        """A scope the next delivery cancels (at once when mail is queued or the mailbox is
        closed). An actor that owns a second source (a connection) waits on it inside, in its
        own task, with no task in between to hand it over, and does its work shielded; when the
        scope ends it takes its mail. What it waits on must be safe to cancel (a memory
        channel's receive is). A scope is not made per message: it lasts until mail comes.
        """
        with trio.CancelScope() as scope:
            stats = self._recv.statistics()
            if stats.current_buffer_used or not stats.open_send_channels:
                scope.cancel()
            self._interrupt = scope
            try:
                yield scope
            finally:
                self._interrupt = None

    async def idle(self) -> None:
        """Inside :meth:`until_mail`, with nothing else to wait on (the connection ended): wait
        for the next delivery (or the mailbox's end), which wakes this task rather than cancel
        the scope. With 9,000 chargers dropped at once, leaving the scope to wait on the
        channel instead cost each about 5 µs more in the turn that read their EOFs; with them
        back, a cancellation (trio's ``Cancelled`` raised through the actor's frames) cost about
        4 µs more per Attach than this wake-up (``bench/drop.py``)."""
        assert self._interrupt is not None, "idle() waits inside until_mail()"
        self._idle = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._idle = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def __aiter__(self) -> Mailbox[M]:
        return self

    async def __anext__(self) -> Envelope[M]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _track(self, envelope: Envelope[M]) -> Envelope[M]:
        if envelope.reply is not None:
            self._in_flight = [e for e in self._in_flight if not e.answered]
            self._in_flight.append(envelope)
        return envelope

    def fail_in_flight(self, error: BaseException) -> int:
        """Answer every handed-out, unanswered ask with ``error``; returns how many."""
        failed = 0
        for envelope in self._in_flight:
            if not envelope.answered:
                envelope.fail(error)
                failed += 1
        self._in_flight.clear()
        return failed

    # -- the senders' side ------------------------------------------------------------------

    async def deliver(self, envelope: Envelope[M]) -> None:
        try:
            await self._send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.address, "stopped") from None
        self._wake()

    def deliver_nowait(self, envelope: Envelope[M]) -> None:
        try:
            self._send.send_nowait(envelope)
        except trio.WouldBlock:
            raise MailboxFull(self.address, f"inbox full ({self.capacity})") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.address, "stopped") from None
        self._wake()

    def _wake(self) -> None:
        if self._idle is not None:
            trio.lowlevel.reschedule(self._idle)
            self._idle = None
        elif self._interrupt is not None:
            self._interrupt.cancel()

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def close(self) -> None:
        """Stop accepting mail and answer everything still queued with ``ActorUnavailable``."""
        self._send.close()
        self._wake()
        gone = ActorUnavailable(self.address, "stopped")
        self.fail_in_flight(gone)
        while True:
            try:
                self._recv.receive_nowait().fail(gone)
            except (trio.WouldBlock, trio.EndOfChannel):
                break


class ActorRef(Protocol[M_contra]):
    """How callers reach an actor, wherever it runs."""

    @property
    def address(self) -> Address: ...

    async def tell(self, message: M_contra) -> None: ...

    async def ask(self, message: Request[R], *, timeout: float = ...) -> R: ...

    def request(self, message: Request[R]) -> Reply[R]: ...


@dataclass(frozen=True, slots=True)
class LocalRef(Generic[M]):
    """A reference to an actor in this process: delivery is a put into its mailbox."""

    address: Address
    mailbox: Mailbox[M]

    async def tell(self, message: M) -> None:
        """Queue ``message``; waits while the inbox is full (backpressure).

        With room in the inbox this returns without a checkpoint (yielding to the scheduler on
        every message costs as much as a small message's work); the caller's own next wait is
        the checkpoint.
        """
        try:
            self.mailbox.deliver_nowait(Envelope(message))
        except MailboxFull:
            await self.mailbox.deliver(Envelope(message))

    def tell_nowait(self, message: M) -> None:
        """Queue ``message`` or raise :class:`MailboxFull` at once."""
        self.mailbox.deliver_nowait(Envelope(message))

    def request(self, message: Request[R]) -> Reply[R]:
        """Send ``message`` now and return where its answer will come: an ``ask`` whose
        waiting (``await reply.receive()``, with the caller's own timeout) is left to a task
        the caller starts after it has sent, rather than one that starts by sending.

        Raises:
            MailboxFull: the inbox is full.
            ActorUnavailable: the actor is stopped.
        """
        reply: Reply[R] = Reply()
        self.mailbox.deliver_nowait(Envelope(cast(M, message), reply))
        return reply

    async def ask(self, message: Request[R], *, timeout: float = 5.0) -> R:
        """Send ``message`` and wait for its answer.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds (queueing included).
            ActorCrashed: the actor failed while holding the request.
            ActorUnavailable: the actor is stopped.
            Exception: whatever the actor answered with on purpose (a domain refusal).
        """
        reply: Reply[R] = Reply()
        with trio.move_on_after(timeout):
            await self.mailbox.deliver(Envelope(cast(M, message), reply))
            return await reply.receive()
        raise AskTimeout(
            self.address, f"no answer to {type(message).__name__} within {timeout:g} s"
        )
