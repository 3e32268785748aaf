"""``fanout.in_order``: the sub-calls of one call, concurrently, in order, bounded, and stopped by
the first failure."""

from __future__ import annotations

import asyncio

import pytest

from app import errors
from app.providers.fanout import in_order


async def test_answers_in_order_at_most_slots_at_once() -> None:
    """Answers come back in the items' order, however they finish, and no more run at once
    than the semaphore has slots."""
    running: list[int] = []
    most = 0

    async def step(item: int) -> int:
        nonlocal most
        running.append(item)
        most = max(most, len(running))
        for _ in range(10 - item % 10):  # later items finish first
            await asyncio.sleep(0)
        running.remove(item)
        return item * 2

    assert await in_order(step, list(range(30)), slots=asyncio.Semaphore(4)) == \
        [i * 2 for i in range(30)]
    assert most == 4


async def test_first_failure_cancels_the_rest_and_is_raised_as_itself() -> None:
    """The first failure is raised as itself (not in an ExceptionGroup); every other sub-call,
    in flight or waiting for a slot, is cancelled before it returns and none starts later."""
    started: list[int] = []
    cancelled: list[int] = []
    hold = asyncio.Event()

    async def step(item: int) -> int:
        started.append(item)
        await asyncio.sleep(0)
        if item == 2:
            raise errors.UpstreamRateLimited("throttled")
        try:
            await hold.wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    with pytest.raises(errors.UpstreamRateLimited):
        await in_order(step, list(range(20)), slots=asyncio.Semaphore(4))
    assert sorted(started) == [0, 1, 2, 3]
    assert sorted(cancelled) == [0, 1, 3]
    hold.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(started) == [0, 1, 2, 3]


async def test_one_item_and_no_slots() -> None:
    """One item is awaited directly; without slots every item runs at once."""
    assert await in_order(lambda item: asyncio.sleep(0, item), ["a"]) == ["a"]
    running = 0
    most = 0

    async def step(item: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return item

    assert await in_order(step, list(range(12))) == list(range(12))
    assert most == 12
