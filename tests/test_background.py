"""Background loops end when cancelled (``app.background``), though an await swallowed the
cancellation, as Python 3.11's ``asyncio.wait_for`` does inside redis-py (CPython gh-86296)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
import redis.asyncio as aioredis

from app.background import close_within, pause, stop_if_cancelled
from app.pubsub import follow

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _swallow_one_cancel(started: asyncio.Event) -> None:
    """What ``wait_for`` does on 3.11 when the operation completes as the cancel arrives: the
    cancellation is caught and dropped; only ``Task.cancelling()`` remembers it."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(10)


async def test_a_plain_sleep_after_a_swallowed_cancel_goes_on() -> None:
    """The premise: once swallowed, nothing later in the task sees the cancellation."""
    started = asyncio.Event()

    async def loop() -> str:
        await _swallow_one_cancel(started)
        await asyncio.sleep(0.01)
        return "went on"

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    assert await task == "went on"


async def test_pause_honours_a_swallowed_cancel() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        await _swallow_one_cancel(started)
        await pause(10)

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)  # not the 10 s pause
    assert task.cancelled()


async def test_stop_if_cancelled_is_silent_in_a_task_nobody_cancelled() -> None:
    async def work() -> int:
        stop_if_cancelled()
        await pause(0)
        stop_if_cancelled()
        return 1

    assert await asyncio.create_task(work()) == 1
    stop_if_cancelled()  # the test's own task


async def test_a_redis_subscriber_stops_though_a_cancel_was_swallowed() -> None:
    """``app.pubsub.follow`` on the shared Redis, cancelled while its subscribe callback swallows
    the cancellation (as redis-py's ``wait_for`` did to the circuit-breaker subscriber when
    ``switchboard serve`` shut down a millisecond after starting): it ends instead of
    listening for ever. tests/replicas/test_shutdown.py has that ``serve``."""
    client = aioredis.Redis.from_url(REDIS_URL)
    started = asyncio.Event()

    async def on_subscribed(lost: bool) -> None:
        await _swallow_one_cancel(started)

    task = asyncio.create_task(follow(client, "switchboard-test-background", what="a test",
                                      on_message=lambda data: None,
                                      on_subscribed=on_subscribed,
                                      subscribed=asyncio.Event()))
    try:
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
        await client.aclose()


async def test_close_within_gives_up_on_a_close_that_hangs_and_names_it(
        caplog: pytest.LogCaptureFixture) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    await asyncio.wait_for(close_within("the stuck part", hangs, timeout_s=0.05), 5)
    assert "shutdown: the stuck part did not close within 0.05 s" in caplog.text


async def test_close_within_awaits_a_close_and_raises_its_errors() -> None:
    closed: list[str] = []

    async def closes() -> None:
        await asyncio.sleep(0.01)
        closed.append("yes")

    async def fails() -> None:
        raise ValueError("broken")

    await close_within("a part", closes, timeout_s=5)
    assert closed == ["yes"]
    with pytest.raises(ValueError, match="broken"):
        await close_within("a part", fails, timeout_s=5)


async def test_a_redis_subscriber_outlives_a_failing_handler() -> None:
    """A message whose handler raises (a defect of the handler's) is logged, and the next one
    is handled: one bad message no longer ends the subscription (a team change's failure in
    the key directory's handler left a gateway deaf to every later key change)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    channel = f"switchboard-test-handler-{uuid.uuid4().hex}"
    subscribed, seen = asyncio.Event(), asyncio.Queue[bytes]()

    def on_message(data: bytes) -> None:
        if data == b"bad":
            raise RuntimeError("a defect")
        seen.put_nowait(data)

    async def on_subscribed(lost: bool) -> None:
        return None

    task = asyncio.create_task(follow(client, channel, what="a test", on_message=on_message,
                                      on_subscribed=on_subscribed, subscribed=subscribed))
    try:
        await asyncio.wait_for(subscribed.wait(), 5)
        await client.publish(channel, "bad")
        await client.publish(channel, "good")
        assert await asyncio.wait_for(seen.get(), 5) == b"good"
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
