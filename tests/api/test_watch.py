"""The disconnect watch: which cancellations of the serving task are the client's leaving."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from app.api.watch import WATCH_AFTER_S, Watch


class Channel:
    """The server's side of a request's ASGI ``receive``: messages put into it, in order."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()

    async def receive(self) -> Message:
        return await self.messages.get()

    def disconnect(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


async def _serve(watch_of: list[Watch], channel: Channel, *, work_s: float) -> str:
    """A task serving a call that takes ``work_s``: how it ended."""
    watch = Watch(channel.receive)
    watch_of.append(watch)
    try:
        await asyncio.sleep(work_s)
    except asyncio.CancelledError:
        if not watch.caught():
            raise
        return "gone"
    finally:
        watch.stop()
    return "answered"


async def test_a_disconnect_cancels_the_serving_task() -> None:
    """The client leaves mid-call: the task's wait is cancelled, and caught as the client's."""
    channel, watches = Channel(), list[Watch]()
    channel.disconnect()  # before the watch starts: seen when it does
    started = asyncio.get_running_loop().time()
    assert await _serve(watches, channel, work_s=60) == "gone"
    assert asyncio.get_running_loop().time() - started < 5
    assert watches[0].gone


async def test_a_quick_call_starts_no_watcher() -> None:
    """A call done before ``WATCH_AFTER_S`` costs a timer, never a task."""
    channel, watches = Channel(), list[Watch]()
    assert await _serve(watches, channel, work_s=0) == "answered"
    assert watches[0].watcher is None
    await asyncio.sleep(WATCH_AFTER_S * 2)
    assert watches[0].watcher is None  # the timer was cancelled


async def test_messages_other_than_the_disconnect_are_not_a_leaving() -> None:
    """A stray message (a late body chunk) does not cancel the call; the disconnect after it
    does."""
    channel, watches = Channel(), list[Watch]()
    channel.messages.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    task = asyncio.ensure_future(_serve(watches, channel, work_s=60))
    await asyncio.sleep(WATCH_AFTER_S * 3)
    assert not task.done()
    channel.disconnect()
    assert await task == "gone"


async def test_a_shutdown_is_not_taken_for_the_client() -> None:
    """A cancellation from elsewhere (a shutdown) goes through, the client still connected."""
    channel, watches = Channel(), list[Watch]()
    task = asyncio.ensure_future(_serve(watches, channel, work_s=60))
    await asyncio.sleep(WATCH_AFTER_S * 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watches[0].gone


async def test_a_shutdown_as_the_client_leaves_still_goes_through() -> None:
    """Cancelled by a shutdown and by the watch at once: the shutdown's cancellation is kept."""
    channel, watches = Channel(), list[Watch]()
    task = asyncio.ensure_future(_serve(watches, channel, work_s=60))

    async def shut_down_then_disconnect() -> Message:
        task.cancel()  # the shutdown, in the same turn of the loop as the disconnect
        return {"type": "http.disconnect"}

    await asyncio.sleep(0)
    watches[0].receive = shut_down_then_disconnect
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watches[0].gone
