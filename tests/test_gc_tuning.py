"""The collector runs on purpose: live objects are frozen on a tick, and collected fully after
growth."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from cpms.kernel.gc_tuning import SAFETY_THRESHOLD, STATS, run_gc_maintenance, tune_gc


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


async def test_what_lives_is_frozen_every_tick_without_collecting(gc_state: None) -> None:
    tune_gc(True)
    frozen = gc.get_freeze_count()
    collections = STATS.collections
    kept = [[n] for n in range(5000)]
    until = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_gc_maintenance(until, every=0.01, growth=100))
        for _ in range(100):
            await trio.sleep(0.01)
            if gc.get_freeze_count() >= frozen + len(kept):
                break
        until.set()
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert STATS.collections == collections  # freezing walks nothing


async def test_growth_brings_a_full_collection_that_frees_frozen_cycles(gc_state: None) -> None:
    tune_gc(True)
    node = Node()
    gc.freeze()
    garbage = weakref.ref(node)
    del node
    gc.collect()
    assert garbage() is not None  # frozen: the collector does not see it
    until = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_gc_maintenance(until, every=0.01, growth=0.01))
        await trio.sleep(0.05)
        assert garbage() is not None  # no growth yet: nothing walked
        kept = [[n] for n in range(sys.getallocatedblocks() // 50)]  # 2 % more blocks
        for _ in range(100):
            await trio.sleep(0.01)
            if garbage() is None:
                break
        until.set()
    assert garbage() is None
    assert gc.get_freeze_count() >= len(kept)  # what survived is frozen again


async def test_a_full_collection_that_finds_no_cycles_waits_longer_for_the_next(
    gc_state: None, autojump_clock: trio.testing.MockClock
) -> None:
    tune_gc(True)
    until = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_gc_maintenance(until, every=0.01, growth=0.01))
        await trio.sleep(0.03)
        assert STATS.growth == 0.01
        full = STATS.full_collections
        kept = [[n] for n in range(sys.getallocatedblocks() // 50)]  # 2 % more, no cycles
        for _ in range(100):
            await trio.sleep(0.01)
            if STATS.full_collections > full:
                break
        assert STATS.growth == 0.02  # twice the growth before the next
        cycles = [Node() for _ in range(sys.getallocatedblocks() // 20)]
        del cycles  # garbage only the collector finds: back to the first growth
        more = [[n] for n in range(sys.getallocatedblocks() // 20)]
        for _ in range(200):
            await trio.sleep(0.01)
            if STATS.growth == 0.01:
                break
        until.set()
    assert STATS.growth == 0.01 and kept and more
