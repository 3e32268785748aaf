"""The sub-calls of one call, sent concurrently: an embedding request split into batches (Bedrock
Titan's one text a call, Vertex's ``gemini-embedding-*`` one instance a call, TEI's client batch
size).

``in_order`` runs them in one ``asyncio.TaskGroup``: the results come back in the items' order,
and the first failure cancels every sub-call not yet answered (waiting for a slot or in flight)
and is raised once they have all stopped. A plain ``asyncio.gather`` raises the first failure
and leaves the others running: against a throttling upstream each retry attempt then added a
full new set of calls to those still going (Vertex: 900 calls for 300 inputs, 281 of them after
the client had its 429).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from app import errors

Item = TypeVar("Item")
Answer = TypeVar("Answer")


async def in_order(step: Callable[[Item], Awaitable[Answer]], items: Sequence[Item], *,
                   slots: asyncio.Semaphore | None = None) -> list[Answer]:
    """``step(item)`` for every item, concurrently, at most as many at once as ``slots`` has
    (unbounded without it); the answers in order. The first failure cancels the rest and is
    raised after they have stopped: a ``GatewayError`` as itself, anything else (a bug) in the
    ``ExceptionGroup`` the task group raises."""
    stopped = False

    async def one(item: Item) -> Answer:
        nonlocal stopped
        if slots is None:
            return await step(item)
        async with slots:
            # A failed step frees its slot before the task group hears of the failure: the
            # waiter handed that slot would send one more call after the failure.
            if stopped:
                raise asyncio.CancelledError
            try:
                return await step(item)
            except BaseException:
                stopped = True
                raise

    if len(items) == 1:
        return [await one(items[0])]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except* errors.GatewayError as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
