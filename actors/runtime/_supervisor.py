from __future__ import annotations

import collections
import enum
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog
import trio

from actors.runtime._address import Address
from actors.runtime._mailbox import LocalRef, Mailbox
from actors.runtime._registry import Registry
from actors.runtime.errors import ActorCrashed, ChildRetired, SupervisorEscalation
from cpms.metrics import ACTOR_RESTARTS

M = TypeVar("M")
log = structlog.stdlib.get_logger("actors.supervisor")


class Restart(enum.StrEnum):
    """OTP restart types."""

    PERMANENT = "permanent"  #: always restarted, also after a normal exit
    TRANSIENT = "transient"  #: restarted only after a crash
    TEMPORARY = "temporary"  #: never restarted


class ActorBody(Protocol[M]):
    """An actor: ``async def run(mailbox, *, task_status)``; reports ready with ``started()``."""

    def __call__(
        self, mailbox: Mailbox[M], *, task_status: trio.TaskStatus[None]
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ChildSpec(Generic[M]):
    """How to run and restart one child."""

    address: Address
    run: ActorBody[M]
    restart: Restart = Restart.PERMANENT
    inbox: int = 100
    register: bool = True


@dataclass(frozen=True)
class Intensity:
    """At most ``restarts`` restarts of one child within ``period`` seconds. Each child has its
    own budget: a misbehaving child can't spend its siblings'.

    Past the budget, an ``escalate`` supervisor gives up (OTP: every child is cancelled and
    :class:`SupervisorEscalation` propagates); one that doesn't (a supervisor of one actor per
    charger or per session) retires that child alone and refuses to start it again for
    ``cooldown`` seconds (:meth:`Supervisor.retired_for`).

    Between restarts of one child it waits ``backoff_min`` doubling up to ``backoff_max``; the
    doubling resets once the child has stayed up for a whole ``period``.
    """

    restarts: int = 5
    period: float = 10.0
    backoff_min: float = 0.01
    backoff_max: float = 2.0
    escalate: bool = True
    cooldown: float = 60.0
    #: failures that are nobody's fault but a resource's being away (the database): a child
    #: failing so is restarted with backoff without spending its budget, so it waits for the
    #: resource instead of being retired or taking its supervisor down
    waits_for: tuple[type[Exception], ...] = ()


@dataclass(eq=False)
class _Child(Generic[M]):
    spec: ChildSpec[M]
    mailbox: Mailbox[M]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    restarts: int = 0
    #: when its recent restarts happened (made at its first restart)
    restart_times: collections.deque[float] | None = None

    @property
    def ref(self) -> LocalRef[M]:
        return LocalRef(self.spec.address, self.mailbox)


class _FirstStart:
    """Passes the first ``started()`` through to ``start_child``; later restarts report nowhere."""

    def __init__(self, outer: trio.TaskStatus[LocalRef[Any]], ref: LocalRef[Any]) -> None:
        self._outer: trio.TaskStatus[LocalRef[Any]] | None = outer
        self._ref = ref
        self.called = False

    def started(self, value: None = None) -> None:
        self.called = True
        if self._outer is not None:
            outer, self._outer = self._outer, None
            outer.started(self._ref)


class Supervisor:
    """One-for-one supervisor of dynamic children (one per charger, one per session, ...).

    Children run in the supervisor's nursery; a crash of one never touches its siblings. The
    supervisor itself is started with ``await nursery.start(run_supervisor, ...)``.
    """

    def __init__(
        self, name: str, nursery: trio.Nursery, registry: Registry, intensity: Intensity
    ) -> None:
        self.name = name
        self.registry = registry
        self.intensity = intensity
        self._nursery = nursery
        self._children: dict[Address, _Child[Any]] = {}
        #: children retired past their restart budget → when they may start again
        self._retired: dict[Address, float] = {}
        self.total_restarts = 0

    async def start_child(self, spec: ChildSpec[M]) -> LocalRef[M]:
        """Start ``spec`` and return its reference once it reported ready.

        Raises:
            ValueError: a child with this address already runs.
            ChildRetired: the child was retired past its restart budget and its cooldown runs.
            Exception: whatever the child raised before it was ready (it is not restarted).
        """
        child = self._add(spec)
        try:
            ref: LocalRef[M] = await self._nursery.start(self._supervise, child)
        except BaseException:
            self._forget(child)
            raise
        return ref

    def start_child_soon(self, spec: ChildSpec[M]) -> LocalRef[M]:
        """Start ``spec`` and return its reference at once: what is sent to it meanwhile waits in
        its mailbox. Waiting for a child to be ready costs two passes of the scheduler, each
        behind whatever else is ready; a child made per request (a session) and asked at once
        needn't. A failure before it is ready is logged and not restarted, and what waits is
        answered as for a stopped actor (:class:`ActorUnavailable`).

        Raises:
            ValueError: a child with this address already runs.
            ChildRetired: the child was retired past its restart budget and its cooldown runs.
        """
        child = self._add(spec)
        self._nursery.start_soon(self._supervise_soon, child)
        return child.ref

    def _add(self, spec: ChildSpec[M]) -> _Child[M]:
        if spec.address in self._children:
            raise ValueError(f"{spec.address} is already running under {self.name}")
        wait = self.retired_for(spec.address)
        if wait:
            raise ChildRetired(spec.address, wait)
        child: _Child[M] = _Child(spec, Mailbox(spec.address, spec.inbox))
        self._children[spec.address] = child
        if spec.register:
            self.registry.register(child.ref)
        return child

    async def _supervise_soon(self, child: _Child[Any]) -> None:
        try:
            await self._supervise(child, task_status=trio.TASK_STATUS_IGNORED)
        except SupervisorEscalation:
            raise  # the supervisor gives up, as for any child
        except Exception as exc:  # a failure before it was ready (see _run_once)
            log.error("actor failed to start", actor=str(child.spec.address), exc_info=exc)

    def terminate_child(self, address: Address) -> bool:
        """Stop a child for good (no restart); queued requests get ``ActorUnavailable``."""
        child = self._children.get(address)
        if child is None:
            return False
        child.scope.cancel()
        self._forget(child)
        return True

    def retired_for(self, address: Address) -> float:
        """Seconds until a child retired past its restart budget may start again (0: it may)."""
        until = self._retired.get(address)
        if until is None:
            return 0.0
        left = until - trio.current_time()
        if left <= 0:
            del self._retired[address]
            return 0.0
        return left

    def child(self, address: Address) -> LocalRef[Any] | None:
        child = self._children.get(address)
        return None if child is None else child.ref

    @property
    def children(self) -> list[Address]:
        return list(self._children)

    def _forget(self, child: _Child[Any]) -> None:
        if self._children.get(child.spec.address) is child:
            del self._children[child.spec.address]
            if child.spec.register:
                self.registry.unregister(child.spec.address)
        child.mailbox.close()

    async def _supervise(
        self, child: _Child[Any], *, task_status: trio.TaskStatus[LocalRef[Any]]
    ) -> None:
        status = _FirstStart(task_status, child.ref)
        spec = child.spec
        backoff = self.intensity.backoff_min
        try:
            with child.scope:
                while True:
                    began = trio.current_time()
                    crash = await self._run_once(child, status)
                    if spec.restart is Restart.TEMPORARY or (
                        spec.restart is Restart.TRANSIENT and crash is None
                    ):
                        return
                    waiting = _caused_only_by(crash, self.intensity.waits_for)
                    if not waiting and not self._count_restart(child, crash):
                        return
                    if trio.current_time() - began >= self.intensity.period:
                        backoff = self.intensity.backoff_min
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, self.intensity.backoff_max)
                    child.restarts += 1
                    ACTOR_RESTARTS.inc()
                    log.info("actor restarting", actor=str(spec.address), restarts=child.restarts)
        finally:
            self._forget(child)

    async def _run_once(self, child: _Child[Any], status: _FirstStart) -> Exception | None:
        """Run the child once; returns its crash, or None for a normal exit."""
        spec = child.spec
        try:
            await spec.run(child.mailbox, task_status=status)
        except Exception as exc:  # the one broad catch: a supervisor's whole job
            if not status.called:
                raise  # failed before ready: start_child reports it, no restart
            log.error(
                "actor crashed",
                actor=str(spec.address),
                supervisor=self.name,
                restart=spec.restart.value,
                exc_info=exc,
            )
            child.mailbox.fail_in_flight(ActorCrashed(spec.address, exc))
            return exc
        if not status.called:
            raise RuntimeError(f"{spec.address} returned before it was ready")
        return None

    def _count_restart(self, child: _Child[Any], crash: Exception | None) -> bool:
        """Count one restart of ``child`` against its own budget; False when it is retired.

        Raises:
            SupervisorEscalation: past the budget, in a supervisor that escalates.
        """
        now, address = trio.current_time(), child.spec.address
        if child.restart_times is None:
            child.restart_times = collections.deque()
        times = child.restart_times
        times.append(now)
        while times and now - times[0] > self.intensity.period:
            times.popleft()
        self.total_restarts += 1
        if len(times) <= self.intensity.restarts:
            return True
        if not self.intensity.escalate:
            log.error(
                "actor retired: restart intensity exceeded",
                supervisor=self.name,
                actor=str(address),
                restarts=len(times),
                period=self.intensity.period,
                cooldown=self.intensity.cooldown,
            )
            self._retired[address] = now + self.intensity.cooldown
            if len(self._retired) > 10_000:  # bounded: forget the expired ones
                self._retired = {a: t for a, t in self._retired.items() if t > now}
            return False
        log.critical(
            "supervisor giving up: restart intensity exceeded",
            supervisor=self.name,
            actor=str(address),
            restarts=len(times),
            period=self.intensity.period,
        )
        raise SupervisorEscalation(
            f"supervisor {self.name}: {address} restarted more than {self.intensity.restarts} "
            f"times in {self.intensity.period:g} s"
        ) from crash


def _caused_only_by(crash: Exception | None, kinds: tuple[type[Exception], ...]) -> bool:
    """Whether ``crash`` is one of ``kinds`` (or a group of nothing else: an actor with tasks
    of its own fails with one)."""
    if crash is None or not kinds:
        return False
    if isinstance(crash, BaseExceptionGroup):
        matched, rest = crash.split(kinds)
        return matched is not None and rest is None
    return isinstance(crash, kinds)


async def run_supervisor(
    name: str,
    registry: Registry,
    intensity: Intensity | None = None,
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a supervisor until cancelled; report it with ``task_status.started(supervisor)``.

    Raises:
        SupervisorEscalation: a child restarted more often than ``intensity`` allows; every
            child has been cancelled by then.
    """
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(name, nursery, registry, intensity or Intensity())
        task_status.started(supervisor)
        await trio.sleep_forever()
