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

And the process's resources close at shutdown through ``close_within``, each with a time limit:
whatever else hangs, one part cannot hold the shutdown for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchboard")

CLOSE_WITHIN_S = 30.0
"""How long one resource may take to close at shutdown. The slowest, the call log, bounds its
own: at most 10 s for the write in progress and 10 s for the last flush, then it spools what it
could not store (~7 s with a hung database, measured)."""


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


async def close_within(what: str, close: Callable[[], Awaitable[object]],
                       timeout_s: float = CLOSE_WITHIN_S) -> None:
    """Await ``close()`` for at most ``timeout_s``; past it, log ``what`` did not close and go
    on (the process is ending). Other errors are raised as they are."""
    try:
        async with asyncio.timeout(timeout_s):
            await close()
    except TimeoutError:
        log.error("shutdown: %s did not close within %g s; going on without it", what,
                  timeout_s)
