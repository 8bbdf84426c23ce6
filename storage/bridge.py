"""The one place asyncio lives: an asyncio loop in a dedicated thread, driven from trio.

asyncpg is an asyncio library. Rather than mixing loops, storage owns one
asyncio event loop in one thread, and trio code awaits coroutine functions on it through
:meth:`AsyncioBridge.run`. Calls cross with ``loop.call_soon_threadsafe``; results come back
with ``TrioToken.run_sync_soon``. When the trio caller is cancelled, the asyncio task is
cancelled too and the caller waits, shielded, until that task has really finished unwinding,
so a transaction is never left half-done behind a caller that has moved on.

Only plain data should cross: arguments in, dicts/tuples/Decimals out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Generic, ParamSpec, TypeVar

import outcome
import trio

from storage.errors import StorageUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class AsyncioBridge:
    """Runs coroutine functions on the storage thread's asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on the asyncio loop and return its result.

        Raises:
            StorageUnavailable: the loop is stopped or the task was cancelled from its side.
            Exception: whatever ``fn`` raised, as itself.
        """
        return await self._cross(None, partial(fn, *args, **kwargs))

    async def run_answering(
        self, answer: Callable[[T], None], fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """:meth:`run`, and ``answer(result)`` is called on the trio thread as soon as the result
        arrives there, before the caller is resumed: a caller that only passes the result on
        (an actor answering the tasks that asked it) saves them a pass of the scheduler. An
        exception ``answer`` raises is raised to the caller instead of the result.
        """
        return await self._cross(answer, partial(fn, *args))

    async def _cross(self, answer: Callable[[T], None] | None, fn: Callable[[], Awaitable[T]]) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []
        task_box: list[asyncio.Future[None]] = []

        def deliver(result: outcome.Outcome[T]) -> None:
            if answer is not None and isinstance(result, outcome.Value):
                try:
                    answer(result.value)
                except Exception as error:  # noqa: BLE001 - raised to the caller, not to trio
                    result = outcome.Error(error)
            box.append(result)
            done.set()

        def hand_over(result: outcome.Outcome[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # trio side gone: nobody waits
                token.run_sync_soon(deliver, result)

        async def call() -> None:
            # The result is handed over from the task's last step rather than from a done
            # callback, which asyncio would run one turn of its loop later.
            result: outcome.Outcome[T]
            try:
                result = outcome.Value(await fn())
            except asyncio.CancelledError:
                result = outcome.Error(StorageUnavailable("storage operation was cancelled"))
            except Exception as error:  # noqa: BLE001 - raised on the trio side as itself
                result = outcome.Error(error)
            hand_over(result)

        def unstarted(task: asyncio.Future[None]) -> None:
            if task.cancelled():  # cancelled before its first step: call() never ran
                hand_over(outcome.Error(StorageUnavailable("storage operation was cancelled")))

        def start() -> None:
            task = self._loop.create_task(call())
            task_box.append(task)
            task.add_done_callback(unstarted)

        def cancel() -> None:
            if task_box:
                task_box[0].cancel()

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # loop closed
            raise StorageUnavailable("storage loop is not running") from None
        try:
            await done.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                self._loop.call_soon_threadsafe(cancel)
                await done.wait()
            raise
        return box[0].unwrap()


class Feed(Generic[T]):
    """Items pushed on the storage loop (an asyncio library's callbacks, such as asyncpg's
    notification listeners) into a trio channel, in order. :meth:`push` and :meth:`close` may be
    called from any thread; once the trio side has gone they do nothing."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._send, self.receive = trio.open_memory_channel[T](math.inf)

    def push(self, item: T) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._put, item)

    def close(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send.close)

    def _put(self, item: T) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(item)


def _loop_thread(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@asynccontextmanager
async def open_bridge(name: str = "cpms-storage") -> AsyncIterator[AsyncioBridge]:
    """Start the storage thread and its asyncio loop; stop and join them on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=_loop_thread, args=(loop, ready), name=name, daemon=True)
    thread.start()
    await trio.to_thread.run_sync(ready.wait)
    try:
        yield AsyncioBridge(loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
