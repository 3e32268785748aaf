"""RedisLimiter when Redis is stopped, silent or restarted (the budget reconcile woken when it is
back; the 503 saying when to retry); script reloads; batching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from app import errors
from app.api.incoming import Incoming
from app.calllog import LogSink
from app.config import embedded_config
from app.gateway import Gateway
from app.limits import Bucket, RedisLimiter
from app.limits.budget import next_reconcile
from app.limits.redis import DOWN_FOR_S
from app.limits.resp import RespClient
from app.pipeline import Caller
from app.pricing import PriceBook
from app.schemas import ChatRequest
from app.stages.admit import Admit
from tests.calllog.servers import PrivateRedis
from tests.limits.conftest import Silent
from tests.servers import free_port

LIMITED = [Bucket("key", "k", 100, 10_000, None)]
BUDGETED = [Bucket("key", "k", 100, None, 5.0)]
NO_HANG_S = 5.0
"""A bound far above any timeout used here: an admission past it hung."""


def client_of(url: str) -> RespClient:
    """The limiter's own client, failing fast."""
    return RespClient.from_url(url, connect_timeout_s=0.05, reply_timeout_s=0.05)


def limiter(redis: RespClient, *, fail_open: bool = True,
            budget_fail_open: bool = False) -> RedisLimiter:
    return RedisLimiter(redis, timeout_s=0.02, fail_open=fail_open,
                        budget_fail_open=budget_fail_open, prefix="outage")


@pytest.fixture
async def private(private_redis: PrivateRedis) -> AsyncIterator[RespClient]:
    client = client_of(private_redis.url)
    yield client
    await client.aclose()


async def timed_admit(lim: RedisLimiter, buckets: list[Bucket]) -> tuple[bool, str]:
    started = time.monotonic()
    decision = await lim.admit(buckets, 10)
    assert time.monotonic() - started < NO_HANG_S
    return decision.admitted, decision.reason


async def test_stopped_redis_fail_open_and_closed(private_redis: PrivateRedis,
                                                  private: RespClient) -> None:
    """Redis stopped: fail-open admits as unavailable, fail-closed and budgets refuse."""
    open_, closed = limiter(private), limiter(private, fail_open=False)
    await open_.start()
    assert await timed_admit(open_, LIMITED) == (True, "ok")
    private_redis.stop()
    assert await timed_admit(open_, LIMITED) == (True, "unavailable")
    assert await timed_admit(closed, LIMITED) == (False, "unavailable")
    assert await timed_admit(open_, BUDGETED) == (False, "unavailable")
    budget_open = limiter(private, budget_fail_open=True)
    assert await timed_admit(budget_open, BUDGETED) == (True, "unavailable")
    open_.settle(LIMITED, 10, 5, 0.1)  # dropped quietly
    await open_.flush()


async def test_admissions_resume_after_restart(private_redis: PrivateRedis,
                                               private: RespClient) -> None:
    """After Redis comes back (empty, no scripts loaded) admissions are decided again."""
    lim = limiter(private, fail_open=False)
    await lim.start()
    private_redis.stop()
    assert await timed_admit(lim, LIMITED) == (False, "unavailable")
    # Not asked again for DOWN_FOR_S after a failure: decided at once meanwhile.
    assert await timed_admit(lim, LIMITED) == (False, "unavailable")
    private_redis.start()
    deadline = time.monotonic() + DOWN_FOR_S + NO_HANG_S
    while await timed_admit(lim, LIMITED) != (True, "ok"):
        assert time.monotonic() < deadline, "admissions never resumed"
        await asyncio.sleep(0.05)


async def test_silent_redis_times_out(silent: Silent) -> None:
    """A Redis that accepts and never answers costs one timeout, not a hang."""
    client = RespClient.from_url(f"redis://127.0.0.1:{silent.port}/0", reply_timeout_s=30)
    try:
        assert await timed_admit(limiter(client), LIMITED) == (True, "unavailable")
        assert await timed_admit(limiter(client, fail_open=False), LIMITED) == \
            (False, "unavailable")
        # One wait, then decided at once for DOWN_FOR_S: an outage costs one timeout a second.
        slow = RedisLimiter(client, timeout_s=0.3, fail_open=True, budget_fail_open=False,
                            prefix="outage")
        started = time.monotonic()
        assert (await slow.admit(LIMITED, 10)).reason == "unavailable"
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        for _ in range(20):
            assert (await slow.admit(LIMITED, 10)).reason == "unavailable"
        assert time.monotonic() - started < 0.3
    finally:
        await client.aclose()


async def test_noscript_loads_and_retries(private: RespClient) -> None:
    """A Redis that lost its scripts (SCRIPT FLUSH, failover) gets them again, same call."""
    lim = limiter(private)
    await lim.start()
    assert await private.execute([("SCRIPT", "FLUSH")]) == ["OK"]
    decisions = await asyncio.gather(*(lim.admit(LIMITED, 10) for _ in range(3)))
    assert [d.reason for d in decisions] == ["ok"] * 3


async def test_settles_sent_on_their_own_load_lost_scripts_and_land(private: RespClient) -> None:
    """Settles with no admission to ride on, sent to a Redis that lost its scripts, load them
    and land: the spend is counted, and the next admission sees it."""
    lim = limiter(private)
    await lim.start()
    budget = [Bucket("key", "alone", None, None, 1.0)]
    assert (await lim.admit(budget, 0)).admitted
    assert await private.execute([("SCRIPT", "FLUSH")]) == ["OK"]
    lim.settle(budget, 0, 0, 0.75)
    lim.settle(budget, 0, 0, 0.25)
    await lim.flush()  # sends them on their own, and waits for the reload and the retry
    spent = await private.execute([("GET", "outage:spend-nano:{alone}:key:alone:month:"
                                    + datetime.now(UTC).strftime("%Y-%m"))])
    assert spent == [b"1000000000"]
    assert (await lim.admit(budget, 0)).reason == "budget"


async def test_one_tick_one_round_trip(private_redis: PrivateRedis) -> None:
    """Fifty admissions issued in one tick share one connection's single pipeline."""
    client = client_of(private_redis.url)
    watcher = aioredis.from_url(private_redis.url)
    try:
        lim = RedisLimiter(client, timeout_s=0.5, fail_open=False, budget_fail_open=False,
                           prefix="batch")
        buckets = [Bucket("key", f"k{i}", 10, None, None) for i in range(50)]
        before = int((await watcher.info("stats"))["total_connections_received"])
        decisions = await asyncio.gather(*(lim.admit([b], 0) for b in buckets))
        after = int((await watcher.info("stats"))["total_connections_received"])
        assert all(d.reason == "ok" for d in decisions)
        assert after - before == 1
    finally:
        await client.aclose()
        await watcher.aclose()


async def test_settles_ride_along_with_the_next_admission(private: RespClient) -> None:
    """A settle queued before an admission goes in the admission's round trip, ahead of it:
    the spend it carries is counted by the time that admission is decided."""
    lim = limiter(private)
    await lim.start()
    budget = [Bucket("key", "ride", None, None, 1.0)]
    assert (await lim.admit(budget, 0)).admitted
    lim.settle(budget, 0, 0, 1.0)  # spends the whole budget
    decision = await lim.admit(budget, 0)  # sent before SETTLE_DELAY_S is up
    assert (decision.admitted, decision.reason) == (False, "budget")


async def test_a_restart_wakes_the_reconcile_through_the_news_subscription(
        private_redis: PrivateRedis, private: RespClient) -> None:
    """Redis restarted (empty): once the budget news subscription is back, ``reconnected`` is
    set, for the budget reconcile to rebuild the spend counters at once; the first
    subscription does not set it."""
    news = aioredis.from_url(private_redis.url, socket_connect_timeout=0.5)
    lim = RedisLimiter(private, timeout_s=0.5, fail_open=False, budget_fail_open=False,
                       prefix="outage", credits=True, news=news)
    try:
        await lim.start()
        await asyncio.wait_for(lim.hearing.wait(), NO_HANG_S)
        assert not lim.reconnected.is_set()
        private_redis.stop()
        private_redis.start()
        await asyncio.wait_for(lim.reconnected.wait(), NO_HANG_S)
        await asyncio.wait_for(lim.hearing.wait(), NO_HANG_S)
    finally:
        await lim.aclose()
        await news.aclose()


async def test_an_admission_answered_after_a_failure_wakes_the_reconcile(
        private_redis: PrivateRedis, private: RespClient) -> None:
    """Without a news subscription too: an admission answered after one that failed sets
    ``reconnected``."""
    lim = limiter(private, fail_open=False)
    await lim.start()
    assert await timed_admit(lim, LIMITED) == (True, "ok")
    assert not lim.reconnected.is_set()
    private_redis.stop()
    assert await timed_admit(lim, LIMITED) == (False, "unavailable")
    private_redis.start()
    deadline = time.monotonic() + DOWN_FOR_S + NO_HANG_S
    while await timed_admit(lim, LIMITED) != (True, "ok"):
        assert time.monotonic() < deadline, "admissions never resumed"
        await asyncio.sleep(0.05)
    assert lim.reconnected.is_set()


async def test_next_reconcile_is_due_at_the_interval_or_when_woken() -> None:
    """``next_reconcile`` returns after the interval, or at once when woken (and clears the
    event, so the next waits for the interval again)."""
    wake = asyncio.Event()
    started = time.monotonic()
    await next_reconcile(0.05, wake)
    assert time.monotonic() - started >= 0.05
    wake.set()
    started = time.monotonic()
    await next_reconcile(60, wake)
    assert time.monotonic() - started < NO_HANG_S and not wake.is_set()
    waiting = asyncio.ensure_future(next_reconcile(60, wake))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    wake.set()
    await asyncio.wait_for(waiting, NO_HANG_S)


async def test_limiter_unavailable_carries_retry_after() -> None:
    """Redis down and rate limits fail-closed: the 503 ``limiter_unavailable`` says when to
    retry (the limiter asks Redis again after ``DOWN_FOR_S``), as the ``overloaded`` 503
    does."""
    client = client_of(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        admit = Admit(limiter(client, fail_open=False), output_reservation=100)
        call = Gateway(config=embedded_config({}), providers={}, prices=PriceBook({}),
                       sink=LogSink()).open(Incoming(path="/v1/chat/completions", headers={},
                                                     receive=_disconnected))
        call.request = ChatRequest.model_validate(
            {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]})
        call.caller = Caller("key", key_id="k", buckets=tuple(LIMITED))
        with pytest.raises(errors.GatewayError) as caught:
            await admit.on_request(call)
        assert (caught.value.status_code, caught.value.code) == (503, "limiter_unavailable")
        assert (b"retry-after", b"1") in call.headers
    finally:
        await client.aclose()


async def _disconnected() -> dict[str, object]:
    return {"type": "http.disconnect"}
