"""Background loops that end when they are cancelled, on Python 3.11 too.

On Python 3.11, ``asyncio.wait_for`` can swallow a cancellation that arrives just as the
operation it awaits completes: it returns the result, and the task carries on (CPython
gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``). redis-py sends every command
through ``wait_for`` when its connection has a socket timeout, as the gateway's do. So a
``task.cancel()`` aimed at a loop that talks to Redis is sometimes lost: the loop goes on, and
whatever awaits it waits for ever. That was ``switchboard serve`` on a port already taken: the
lifespan's shutdown cancelled the circuit-breaker subscriber a millisecond after starting it,
and the process hung in "Waiting for application shutdown", deaf to SIGTERM.

A lost cancellation still shows in ``Task.cancelling()``. Every background loop calls
``pause`` between rounds (or ``stop_if_cancelled`` where it does not sleep), which honours it.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and an await swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """``asyncio.sleep(seconds)`` in a background loop: first honours a swallowed cancellation
    (``stop_if_cancelled``), which the sleep alone would not see."""
    stop_if_cancelled()
    await asyncio.sleep(seconds)
