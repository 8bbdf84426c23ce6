"""The collector runs on purpose: after growth (survivors frozen) and on a refresh timer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio

from cpms.gc_tuning import SAFETY_THRESHOLD, STATS, run_gc_maintenance, tune_gc


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def gc_state() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


async def test_tuning_freezes_and_turns_the_automatic_collector_down(gc_state: None) -> None:
    tune_gc(True)
    assert gc.get_threshold()[0] == SAFETY_THRESHOLD
    assert gc.get_freeze_count() > 0
    assert STATS.callback in gc.callbacks


async def test_growth_is_collected_and_survivors_frozen(gc_state: None) -> None:
    tune_gc(True)
    frozen = gc.get_freeze_count()
    garbage = weakref.ref(Node())
    kept = [[n] for n in range(5000)]
    until = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_gc_maintenance(until, check_every=0.01, burst=1000, refresh=3600)
        )
        for _ in range(100):
            await trio.sleep(0.01)
            if gc.get_freeze_count() >= frozen + len(kept):
                break
        until.set()
    assert garbage() is None
    assert gc.get_freeze_count() >= frozen + len(kept)


async def test_refresh_frees_cycles_among_frozen_objects(gc_state: None) -> None:
    tune_gc(True)
    node = Node()
    gc.freeze()
    garbage = weakref.ref(node)
    del node
    gc.collect()
    assert garbage() is not None  # frozen: the collector does not see it
    until = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_gc_maintenance(until, check_every=0.01, burst=10**9, refresh=0.02)
        )
        for _ in range(100):
            await trio.sleep(0.01)
            if garbage() is None:
                break
        until.set()
    assert garbage() is None
    assert gc.get_freeze_count() > 0  # what survived is frozen again
