"""The sub-calls of one call, sent concurrently: an embedding request split into batches (Bedrock
Titan's one text a call, Vertex's ``gemini-embedding-*`` one instance a call, TEI's client batch
size).

``in_order`` runs them in one ``asyncio.TaskGroup``: the results come back in the items' order,
and the first failure cancels every sub-call not yet answered (waiting for a slot or in flight)
and is raised once they have all stopped. A plain ``asyncio.gather`` raises the first failure
and leaves the others running: against a throttling upstream each retry attempt then added a
full new set of calls to those still going (Vertex: 900 calls for 300 inputs, 281 of them after
the client had its 429).

A failure after some sub-calls were answered leaves those billed upstream: ``in_order``'s
``usage`` (and ``billed`` for sequential batches) puts their usage on the raised error
(``GatewayError.billed``), which the gateway accounts for the call. Sub-calls cancelled in flight
may be billed too, unknowably: they count nothing, and the usage is marked estimated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from app import errors
from app.usage import Usage

Item = TypeVar("Item")
Answer = TypeVar("Answer")


def billed(exc: errors.GatewayError, usage: Usage) -> None:
    """Add ``usage`` (sub-calls answered before ``exc``) to what ``exc`` says was billed."""
    before = exc.billed
    if before is None:
        exc.billed = usage
        return
    exc.billed = Usage(prompt_tokens=before.prompt_tokens + usage.prompt_tokens,
                       estimated=before.estimated or usage.estimated)


def sum_usage(parts: Iterable[Usage]) -> Usage:
    """The prompt tokens of ``parts`` summed, estimated if any part is."""
    total = Usage()
    for part in parts:
        total.prompt_tokens += part.prompt_tokens
        total.estimated = total.estimated or part.estimated
    return total


async def in_order(step: Callable[[Item], Awaitable[Answer]], items: Sequence[Item], *,
                   slots: asyncio.Semaphore | None = None,
                   usage: Callable[[Item, Answer], Usage] | None = None) -> list[Answer]:
    """``step(item)`` for every item, concurrently, at most as many at once as ``slots`` has
    (unbounded without it); the answers in order. The first failure cancels the rest and is
    raised after they have stopped: a ``GatewayError`` as itself (with ``usage`` of each item
    answered before it, summed, as its ``billed``: estimated where a sub-call was cancelled
    in flight), anything else (a bug) in the ``ExceptionGroup`` the task group raises."""
    stopped = False
    begun = 0  # steps started (answered, failed or cancelled in flight)

    async def one(item: Item) -> Answer:
        nonlocal stopped, begun
        if slots is None:
            begun += 1
            return await step(item)
        async with slots:
            # A failed step frees its slot before the task group hears of the failure: the
            # waiter handed that slot would send one more call after the failure.
            if stopped:
                raise asyncio.CancelledError
            begun += 1
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
        first = failed.exceptions[0]
        assert isinstance(first, errors.GatewayError)
        if usage is not None:
            answered = [(item, task.result()) for item, task in zip(items, tasks, strict=True)
                        if task.done() and not task.cancelled() and task.exception() is None]
            if answered:
                total = sum_usage(usage(item, answer) for item, answer in answered)
                total.estimated = total.estimated or begun > len(answered) + 1
                billed(first, total)
        raise first from None
    return [task.result() for task in tasks]
