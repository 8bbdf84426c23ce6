"""Trio's autojump clock against a real database: the clock stands still while any task waits
for the database (real time, on the bridge's thread), so it jumps only when every task waits on
a virtual timer. Without this, one slow answer on a busy machine let the clock jump tick after
tick, past a deadline the test was waiting for (a failure seen in CI, once in many runs)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio.testing

from storage import Database


def hold_while_the_database_answers(
    db: Database, clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge, threshold = db.bridge, clock.autojump_threshold
    busy = 0

    def held(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal busy
            busy += 1
            clock.autojump_threshold = math.inf
            try:
                return await call(*args, **kwargs)
            finally:
                busy -= 1
                if busy == 0:
                    clock.autojump_threshold = threshold

        return run

    monkeypatch.setattr(bridge, "run", held(bridge.run))
    monkeypatch.setattr(bridge, "run_answering", held(bridge.run_answering))
