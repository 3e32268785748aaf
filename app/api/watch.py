"""Noticing a client's disconnect while its call runs, for answers and streams alike.

A ``Watch`` is armed by the task serving a call, once its body has been read. If the client
disconnects, the watch cancels that task: whatever it awaits (the gateway's attempts, the
upstream request, a stream's next chunk or a write to the client) ends at once, and the
gateway records the call as cancelled (499) with the attempt that was running. The task catches
that cancellation (``caught``) and answers nobody.

A non-streamed answer is watched from ``answer`` in ``app.api.v1``; a stream from ``stream``
there, through its wait for the first item, and on by ``SSEResponse`` (``app.api.sse``) until
its last frame: one watch per call, never a task per chunk.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

WATCH_AFTER_S = 0.05
"""A call still running after this long starts watching for the client's disconnect. Quicker
calls never start a watcher: a task per request cost ~11 us, a timer ~2 us (measured on the
development machine); a disconnect earlier than this is still seen when the watcher starts,
since the server keeps reporting it."""


class Watch:
    """Cancels the task that made it when the client disconnects, from ``WATCH_AFTER_S`` after
    it was made until ``stop`` (or ``caught``)."""

    __slots__ = ("gone", "receive", "task", "timer", "watcher")

    def __init__(self, receive: Receive) -> None:
        """``receive``: the request's ASGI channel, its body already read whole (so the next
        message can only be the disconnect)."""
        task = asyncio.current_task()
        assert task is not None, "a watch is made by the task serving the call"
        self.receive = receive
        self.task = task
        self.gone = False
        """The client disconnected, and the task was cancelled for it."""
        self.watcher: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.task.cancel()

    def stop(self) -> None:
        """Watch no more (the answer is complete, or the call failed)."""
        self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    def caught(self) -> bool:
        """Called by the task on a ``CancelledError``: stop watching; whether the cancellation
        was this watch's alone (the client left: the task goes on to answer nobody). False when
        anything else cancelled it too (a shutdown): the task must let it through."""
        self.stop()
        return self.gone and self.task.uncancel() == 0
