"""The actor runtime: mailboxes, ask/tell, and the supervisor's restart policy (autojump clock)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing

from actors.runtime import (
    ActorCrashed,
    ActorUnavailable,
    Address,
    AskTimeout,
    ChildRetired,
    ChildSpec,
    Envelope,
    Intensity,
    Mailbox,
    MailboxFull,
    Registry,
    Request,
    Restart,
    Supervisor,
    SupervisorEscalation,
    run_supervisor,
)
from cpms.kernel.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Add(Request[int]):
    n: int


@dataclass(frozen=True, slots=True)
class Boom(Request[None]):
    pass


@dataclass(frozen=True, slots=True)
class Refuse(Request[None]):
    pass


@dataclass(frozen=True, slots=True)
class Hang(Request[None]):
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Msg = Add | Boom | Refuse | Hang | Stop


@dataclass
class Life:
    """What the test actor's incarnations did."""

    starts: list[float] = field(default_factory=list)
    stops: int = 0


async def counter(mailbox: Mailbox[Msg], *, life: Life, task_status: trio.TaskStatus[None]) -> None:
    life.starts.append(trio.current_time())
    total = 0
    task_status.started()
    try:
        async for envelope in mailbox:
            match envelope.message:
                case Add(n):
                    total += n
                    envelope.respond(total)
                case Boom():
                    raise RuntimeError("boom")
                case Refuse():
                    envelope.fail(InvalidRequest("refused on purpose"))
                case Stop():
                    return
                case Hang():
                    await trio.sleep_forever()
    finally:
        life.stops += 1


def spec(
    name: str, life: Life, restart: Restart = Restart.PERMANENT, inbox: int = 10
) -> ChildSpec[Msg]:
    return ChildSpec(Address("test", name), partial(counter, life=life), restart, inbox)


async def start_sup(
    nursery: trio.Nursery, intensity: Intensity | None = None
) -> tuple[Supervisor, Registry]:
    registry = Registry()
    sup: Supervisor = await nursery.start(
        run_supervisor, "t", registry, intensity or Intensity(restarts=3, period=5.0)
    )
    return sup, registry


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def test_ask_tell_and_registry(nursery: trio.Nursery) -> None:
    sup, registry = await start_sup(nursery)
    ref = await sup.start_child(spec("a", Life()))
    assert await ref.ask(Add(2)) == 2
    await ref.tell(Add(3))
    assert await ref.ask(Add(0)) == 5
    assert registry.lookup("test", "a") is not None
    assert registry.kinds() == {"test": 1}
    with pytest.raises(ValueError, match="already running"):
        await sup.start_child(spec("a", Life()))


async def test_a_refusal_reaches_the_caller_as_itself(nursery: trio.Nursery) -> None:
    sup, _ = await start_sup(nursery)
    ref = await sup.start_child(spec("a", Life()))
    with pytest.raises(InvalidRequest, match="refused on purpose"):
        await ref.ask(Refuse())
    assert await ref.ask(Add(1)) == 1  # still the same incarnation


async def test_ask_times_out(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    sup, _ = await start_sup(nursery)
    ref = await sup.start_child(spec("a", Life()))
    began = trio.current_time()
    with pytest.raises(AskTimeout):
        await ref.ask(Hang(), timeout=2.5)
    assert trio.current_time() - began == pytest.approx(2.5)


async def test_crash_is_boxed_with_its_cause_and_the_actor_restarts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    life = Life()
    sup, _ = await start_sup(nursery)
    ref = await sup.start_child(spec("a", life))
    await ref.ask(Add(5))
    with pytest.raises(ActorCrashed) as info:
        await ref.ask(Boom())
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.address == Address("test", "a")
    # The same reference reaches the new incarnation; its state started afresh.
    assert await ref.ask(Add(1)) == 1
    assert len(life.starts) == 2 and sup.total_restarts == 1


async def test_queued_messages_survive_a_restart(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    sup, _ = await start_sup(nursery)
    ref = await sup.start_child(spec("a", Life()))
    results: list[object] = []

    async def ask(msg: Add | Boom) -> None:
        try:
            results.append(await ref.ask(msg))
        except ActorCrashed:
            results.append("crashed")

    async with trio.open_nursery() as callers:
        callers.start_soon(ask, Boom())
        await trio.testing.wait_all_tasks_blocked()
        callers.start_soon(ask, Add(7))
    assert results == ["crashed", 7]


@pytest.mark.parametrize(
    ("restart", "after_crash", "after_exit"),
    [
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, True, False),
        (Restart.TEMPORARY, False, False),
    ],
)
async def test_restart_types(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    restart: Restart,
    after_crash: bool,
    after_exit: bool,
) -> None:
    sup, registry = await start_sup(nursery)
    crashing = Life()
    ref = await sup.start_child(spec("crash", crashing, restart))
    with pytest.raises(ActorCrashed):
        await ref.ask(Boom())
    await trio.sleep(1)
    assert (len(crashing.starts) == 2) is after_crash
    assert (registry.lookup("test", "crash") is not None) is after_crash

    exiting = Life()
    ref = await sup.start_child(spec("exit", exiting, restart))
    await ref.tell(Stop())
    await trio.sleep(1)
    assert (len(exiting.starts) == 2) is after_exit
    if not after_exit:
        with pytest.raises(ActorUnavailable):
            await ref.ask(Add(1))


async def test_backoff_doubles_between_restarts(autojump_clock: trio.testing.MockClock) -> None:
    life = Life()
    intensity = Intensity(restarts=10, period=100.0, backoff_min=0.5, backoff_max=2.0)
    async with trio.open_nursery() as nursery:
        sup, _ = await start_sup(nursery, intensity)
        ref = await sup.start_child(spec("a", life))
        for _ in range(4):
            with pytest.raises(ActorCrashed):
                await ref.ask(Boom())
        await ref.ask(Add(1))
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 3) for a, b in zip(life.starts, life.starts[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("soon", [False, True], ids=["started", "started-soon"])
async def test_exceeding_intensity_escalates_and_stops_everyone(
    autojump_clock: trio.testing.MockClock, soon: bool
) -> None:
    bystander = Life()
    with pytest.RaisesGroup(pytest.RaisesExc(SupervisorEscalation), flatten_subgroups=True) as info:
        async with trio.open_nursery() as nursery:
            sup, _ = await start_sup(nursery, Intensity(restarts=3, period=5.0))
            await sup.start_child(spec("bystander", bystander))
            if soon:
                ref = sup.start_child_soon(spec("a", Life()))
            else:
                ref = await sup.start_child(spec("a", Life()))
            for _ in range(10):  # the last asks find the supervisor gone
                with contextlib.suppress(ActorCrashed, ActorUnavailable):
                    await ref.ask(Boom())
            await trio.sleep(3600)  # (a clock that jumps: no escalation fails, not hangs)
    matched, _rest = info.value.split(SupervisorEscalation)
    assert matched is not None
    escalation = leaves(matched)[0]
    assert isinstance(escalation.__cause__, RuntimeError)
    assert bystander.stops == 1  # the sibling was cancelled when the supervisor gave up


async def test_each_child_has_its_own_restart_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    sup, _ = await start_sup(nursery, Intensity(restarts=3, period=5.0))
    refs = [await sup.start_child(spec(name, Life())) for name in ("a", "b", "c")]
    for _ in range(3):  # nine crashes within the period, three per child: nobody is over
        for ref in refs:
            with pytest.raises(ActorCrashed):
                await ref.ask(Boom())
    assert [await ref.ask(Add(1)) for ref in refs] == [1, 1, 1]


async def test_a_child_past_its_budget_is_retired_for_a_cooldown_and_nobody_else_is_touched(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    intensity = Intensity(restarts=3, period=5.0, escalate=False, cooldown=60.0)
    sup, registry = await start_sup(nursery, intensity)
    bystander_life = Life()
    bystander = await sup.start_child(spec("bystander", bystander_life))
    crasher_life = Life()
    crasher = await sup.start_child(spec("crasher", crasher_life))
    for _ in range(4):
        with pytest.raises(ActorCrashed):
            await crasher.ask(Boom())
    await trio.testing.wait_all_tasks_blocked()
    assert len(crasher_life.starts) == 4  # three restarts, then retired
    assert registry.lookup("test", "crasher") is None
    with pytest.raises(ActorUnavailable):
        await crasher.ask(Add(1))
    assert 59 < sup.retired_for(crasher.address) <= 60
    with pytest.raises(ChildRetired) as refused:
        await sup.start_child(spec("crasher", Life()))
    assert refused.value.retry_after > 59
    with pytest.raises(ChildRetired):
        sup.start_child_soon(spec("crasher", Life()))
    assert await bystander.ask(Add(5)) == 5 and bystander_life.stops == 0
    await trio.sleep(61)
    assert sup.retired_for(crasher.address) == 0
    again = await sup.start_child(spec("crasher", Life()))  # the cooldown is over
    assert await again.ask(Add(2)) == 2


async def test_a_child_failing_for_an_awaited_resource_waits_instead_of_spending_its_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    class Away(Exception):
        pass

    intensity = Intensity(restarts=2, period=60.0, escalate=False, waits_for=(Away,))
    sup, registry = await start_sup(nursery, intensity)
    attempts = 0

    async def needs_resource(mailbox: Mailbox[Msg], *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1:  # the resource is away for ten restarts, alone or in a group
            if attempts <= 6:
                raise Away()
            if attempts <= 11:
                raise ExceptionGroup("tasks", [Away()])
        task_status.started()
        async for envelope in mailbox:
            if isinstance(envelope.message, Boom):
                raise RuntimeError("boom")
            envelope.respond(0)

    ref = await sup.start_child(ChildSpec(Address("test", "r"), needs_resource))
    with pytest.raises(ActorCrashed):
        await ref.ask(Boom())  # counted: one of two
    await trio.sleep(60)
    assert attempts == 12 and registry.lookup("test", "r") is not None
    assert await ref.ask(Add(1)) == 0  # up again, never retired


async def test_a_crash_never_touches_siblings(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    sup, _ = await start_sup(nursery)
    sibling_life = Life()
    sibling = await sup.start_child(spec("sibling", sibling_life))
    crasher = await sup.start_child(spec("crasher", Life()))
    await sibling.ask(Add(10))
    for _ in range(3):
        with pytest.raises(ActorCrashed):
            await crasher.ask(Boom())
        await trio.sleep(1)
    assert await sibling.ask(Add(1)) == 11
    assert len(sibling_life.starts) == 1 and sibling_life.stops == 0


async def test_cancellation_shuts_everything_down() -> None:
    lives = [Life() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        sup, registry = await start_sup(nursery)
        refs = [await sup.start_child(spec(str(i), life)) for i, life in enumerate(lives)]
        assert registry.count("test") == 5
        nursery.cancel_scope.cancel()
    assert [life.stops for life in lives] == [1] * 5
    assert registry.count() == 0
    with pytest.raises(ActorUnavailable):
        await refs[0].ask(Add(1))


async def test_terminate_child_answers_queued_asks(nursery: trio.Nursery) -> None:
    sup, registry = await start_sup(nursery)
    life = Life()
    ref = await sup.start_child(spec("a", life))
    assert sup.terminate_child(ref.address)
    await trio.testing.wait_all_tasks_blocked()
    assert life.stops == 1 and registry.lookup("test", "a") is None
    with pytest.raises(ActorUnavailable):
        await ref.tell(Add(1))
    assert not sup.terminate_child(ref.address)


async def test_start_failure_is_reported_and_not_restarted(nursery: trio.Nursery) -> None:
    sup, registry = await start_sup(nursery)
    attempts = 0

    async def broken(mailbox: Mailbox[Msg], *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("can't open the thing I need")

    with pytest.raises(OSError, match="can't open"):
        await sup.start_child(ChildSpec(Address("test", "broken"), broken))
    await trio.testing.wait_all_tasks_blocked()
    assert attempts == 1 and registry.lookup("test", "broken") is None


async def test_a_child_started_soon_takes_what_was_sent_before_it_ran(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    sup, registry = await start_sup(nursery)
    life = Life()
    ref = sup.start_child_soon(spec("a", life))
    assert not life.starts and registry.lookup("test", "a") == ref  # not running yet
    assert await ref.ask(Add(2)) == 2  # waited in its mailbox
    with pytest.raises(ValueError, match="already running"):
        sup.start_child_soon(spec("a", Life()))
    with pytest.raises(ActorCrashed):  # ready by now: a crash restarts it as usual
        await ref.ask(Boom())
    assert await ref.ask(Add(1)) == 1 and len(life.starts) == 2

    async def broken(mailbox: Mailbox[Msg], *, task_status: trio.TaskStatus[None]) -> None:
        raise OSError("can't open the thing I need")

    doomed = sup.start_child_soon(ChildSpec(Address("test", "broken"), broken))
    with pytest.raises(ActorUnavailable):  # answered, not left waiting; the supervisor goes on
        await doomed.ask(Add(1))
    await trio.testing.wait_all_tasks_blocked()
    assert registry.lookup("test", "broken") is None
    assert await ref.ask(Add(1)) == 2


async def test_bounded_inbox(nursery: trio.Nursery) -> None:
    sup, _ = await start_sup(nursery)
    ref = await sup.start_child(spec("a", Life(), inbox=2))
    await ref.tell(Hang())  # taken by the actor, which then blocks
    await trio.testing.wait_all_tasks_blocked()
    ref.tell_nowait(Hang())
    ref.tell_nowait(Hang())
    with pytest.raises(MailboxFull):
        ref.tell_nowait(Hang())
    assert ref.mailbox.queued == 2


async def test_until_mail_lets_mail_interrupt_a_wait_on_a_second_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[str] = Mailbox(Address("test", "two"), 4)
    send, receive = trio.open_memory_channel[str](4)
    await send.send("frame 1")
    await send.send("frame 2")
    with mailbox.until_mail():  # no mail: the other source is read, as often as it gives
        assert [await receive.receive(), await receive.receive()] == ["frame 1", "frame 2"]
    mailbox.deliver_nowait(Envelope("mail 1"))
    with mailbox.until_mail() as scope:  # mail already queued: it goes first
        await receive.receive()
    assert scope.cancelled_caught and mailbox.receive_nowait().message == "mail 1"

    async def mail_later() -> None:
        await trio.sleep(1)
        mailbox.deliver_nowait(Envelope("mail 2"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mail_later)
        with mailbox.until_mail() as scope:
            await receive.receive()
    assert scope.cancelled_caught and mailbox.receive_nowait().message == "mail 2"
    await send.send("frame 3")  # the interrupted receive lost nothing
    with mailbox.until_mail():
        assert await receive.receive() == "frame 3"
    mailbox.close()
    with mailbox.until_mail() as scope:  # closed: nothing more to wait for
        await receive.receive()
    assert scope.cancelled_caught
    with pytest.raises(trio.EndOfChannel):
        mailbox.receive_nowait()


async def test_idle_in_until_mail_is_woken_by_mail_or_the_end_and_cancelled_by_a_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The wait of an actor whose connection ended (issue 21): still in the scope, woken (not
    cancelled: a cancellation costs more, for each of thousands of chargers back at once) by
    its next mail; its own deadline still ends it, and the next delivery then cancels the scope
    as before."""
    mailbox: Mailbox[str] = Mailbox(Address("test", "idle"), 4)

    async def mail_later(message: str) -> None:
        await trio.sleep(1)
        mailbox.deliver_nowait(Envelope(message))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mail_later, "attach")
        with mailbox.until_mail() as scope:
            await mailbox.idle()
            assert trio.current_time() == 1
    assert not scope.cancel_called and mailbox.receive_nowait().message == "attach"
    with trio.move_on_after(5) as timer, mailbox.until_mail() as scope:
        await mailbox.idle()  # nothing comes: the deadline ends it
    assert timer.cancelled_caught and not scope.cancel_called
    with mailbox.until_mail() as scope:  # the deadline's abort left no idle waiter behind
        mailbox.deliver_nowait(Envelope("mail"))
        await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught and mailbox.receive_nowait().message == "mail"

    async def close_later() -> None:
        await trio.sleep(1)
        mailbox.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        with mailbox.until_mail():
            await mailbox.idle()
    with pytest.raises(trio.EndOfChannel):
        mailbox.receive_nowait()
    with pytest.raises(AssertionError, match="inside until_mail"):
        await mailbox.idle()
