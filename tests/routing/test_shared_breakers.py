"""Circuit breakers shared through Redis (``app.routing.shared``): routers of separate
"processes" (one ``Router`` and ``SharedBreakers`` each) on one real Redis server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from app.config import BreakerConfig, GatewayConfig, parse_config
from app.providers.base import Target
from app.routing.breaker import Breaker
from app.routing.router import CLAIM_WAIT_S, Router
from app.routing.shared import SharedBreakers
from tests.calllog.servers import PrivateRedis

TARGET = Target(provider="gpu", model="llama")
SETTINGS = BreakerConfig(failures=2, cooldown_s=0.3, max_cooldown_s=10)
GPU = "http://gpu:8000"


def gateway_config(where: str = GPU, settings: BreakerConfig = SETTINGS) -> GatewayConfig:
    """A config whose provider ``gpu`` points to ``where``, with the breakers' ``settings``."""
    return parse_config({
        "providers": {"gpu": {"type": "openai", "base_url": where, "api_key": "sk-gpu"}},
        "models": {"chat": {"targets": [{"provider": "gpu", "model": "llama"}]}},
        "breaker": settings.model_dump()}, {})


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = PrivateRedis()
    server.start()
    yield server.url
    server.stop()


@asynccontextmanager
async def process(url: str, *, where: str = GPU, settings: BreakerConfig = SETTINGS,
                  listen: bool = True) -> AsyncIterator[Router]:
    """One gateway process's router, its ``gpu`` pointing to ``where``, sharing its breakers
    through Redis (``listen=False``: with no subscriber, the test hands it the others' messages
    when it chooses)."""
    client = aioredis.from_url(url)
    router = Router(gateway_config(where, settings), backends={}, recorder=None)
    shared = SharedBreakers(client, router, max_cooldown_s=lambda: SETTINGS.max_cooldown_s)
    router.shared = shared
    if listen:
        shared.start()
    try:
        if listen:
            await asyncio.wait_for(shared.subscribed.wait(), 5)
        yield router
    finally:
        await shared.aclose()
        await client.aclose()


def breaker(router: Router) -> Breaker:
    """The router's breaker of ``TARGET`` for a call on the config serving now."""
    return router.breaker(TARGET, router.serving)


def shared(router: Router) -> SharedBreakers:
    assert router.shared is not None
    return router.shared


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "the shared state never arrived"
        await asyncio.sleep(0.01)


async def published(url: str, *, cooldown_s: float) -> bytes | str:
    """The target's entry in the hash once it is open for ``cooldown_s`` (what was published)."""
    client = aioredis.from_url(url)
    field = json.dumps(["gpu", "llama", GPU], separators=(",", ":"))
    deadline = time.monotonic() + 5
    try:
        while True:
            raw = await client.hget("switchboard:breakers", field)
            if raw is not None and json.loads(raw)["cooldown_s"] == pytest.approx(cooldown_s):
                return raw
            assert time.monotonic() < deadline, "the opening was never published"
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


async def fail(router: Router, times: int) -> None:
    for _ in range(times):
        router.judge(TARGET, breaker(router), failed=True)


@pytest.fixture(autouse=True)
async def _empty(redis_url: str) -> AsyncIterator[None]:
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    yield
    await client.aclose()


async def test_a_breaker_opened_by_one_process_opens_in_the_others(redis_url: str) -> None:
    async with process(redis_url) as a, process(redis_url) as b:
        assert not breaker(b).blocked()
        await fail(a, 2)
        assert breaker(a).state == "open"
        await eventually(lambda: breaker(b).state == "open")
        assert breaker(b).blocked()
        assert breaker(b).consecutive == 0  # each process counts its own failures
        assert 0 < breaker(b).cooldown_s <= SETTINGS.cooldown_s


async def test_one_process_probes_for_all_and_its_verdict_reaches_the_others(
        redis_url: str) -> None:
    async with process(redis_url) as a, process(redis_url) as b:
        await fail(a, 2)
        await eventually(lambda: breaker(b).state == "open")
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert await a.admit(TARGET, breaker(a))  # takes the fleet's probe
        assert breaker(a).state == "half_open"
        assert not await b.admit(TARGET, breaker(b))  # a probes it: b keeps it open
        assert breaker(b).state == "open"
        a.judge(TARGET, breaker(a), failed=False)
        await eventually(lambda: breaker(b).state == "closed")
        assert not breaker(b).blocked()


async def test_a_failed_probe_reopens_it_everywhere_for_twice_as_long(redis_url: str) -> None:
    async with process(redis_url) as a, process(redis_url) as b:
        await fail(a, 2)
        await eventually(lambda: breaker(b).state == "open")
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert await a.admit(TARGET, breaker(a))
        a.judge(TARGET, breaker(a), failed=True)
        assert breaker(a).cooldown_s == pytest.approx(0.6)
        await eventually(lambda: breaker(b).cooldown_s == pytest.approx(0.6))
        assert breaker(b).state == "open" and breaker(b).blocked()


async def test_a_process_started_later_reads_the_open_breakers(redis_url: str) -> None:
    async with process(redis_url) as a:
        await fail(a, 2)
        await asyncio.sleep(0.1)  # the write is sent in the background
        async with process(redis_url) as late:
            assert late.breakers[("gpu", "llama")].state == "open"
            assert breaker(late).blocked()


async def test_stale_entries_are_ignored_and_deleted(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    field = json.dumps(["gpu", "llama", GPU], separators=(",", ":"))
    await client.hset("switchboard:breakers", field, json.dumps(
        {"target": field, "state": "open", "origin": "gone", "cooldown_s": 300,
         "opened_at": time.time() - 3 * SETTINGS.max_cooldown_s}))
    async with process(redis_url) as late:
        assert ("gpu", "llama") not in late.breakers
    assert await client.hlen("switchboard:breakers") == 0
    await client.aclose()


async def test_the_same_name_pointing_elsewhere_is_another_target(redis_url: str) -> None:
    async with process(redis_url) as a, process(redis_url, where="http://other:8000") as b, \
            process(redis_url) as c:
        await fail(a, 2)
        await eventually(lambda: breaker(c).state == "open")
        assert breaker(b).state == "closed"


async def test_a_call_on_a_providers_old_location_reports_under_it(redis_url: str) -> None:
    """After a reload pointed ``gpu`` elsewhere, calls still running on its old location that
    fail open that location's breaker for the fleet: a process that has not reloaded yet adopts
    it; one that has, and this one, keep the new location closed (it was published under the
    new location and opened it everywhere)."""
    old, new = gateway_config(GPU), gateway_config("http://gpu-fixed:8000")
    async with process(redis_url) as a, process(redis_url, listen=False) as b, \
            process(redis_url, listen=False) as c:
        a.swap(new)
        b.swap(new)
        for _ in range(2):  # calls on the old config
            a.judge(TARGET, a.breaker(TARGET, old), failed=True)
        entry = await published(redis_url, cooldown_s=0.3)  # under the old location
        for late in (b, c):
            shared(late).apply(entry)
        assert breaker(c).state == "open"  # c still points there
        assert breaker(b).state == "closed" and breaker(a).state == "closed"
        assert b.breakers[("gpu", "llama")].location == "http://gpu-fixed:8000"


async def test_malformed_messages_are_ignored(redis_url: str) -> None:
    async with process(redis_url) as a:
        client = aioredis.from_url(redis_url)
        for junk in (b"not json", b"{}", b'{"target": "[1]", "state": "open"}',
                     b'{"target": "[\\"gpu\\", \\"llama\\", \\"http://gpu:8000\\"]", '
                     b'"state": "open", "opened_at": "soon", "cooldown_s": 1}'):
            await client.publish("switchboard:breakers:changed", junk)
        await client.aclose()
        await fail(a, 1)  # the subscriber is still alive and the breaker untouched
        await asyncio.sleep(0.1)
        assert breaker(a).state == "closed" and breaker(a).consecutive == 1


async def test_without_redis_each_process_probes_on_its_own() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    router = Router(gateway_config(), backends={}, recorder=None)
    router.shared = SharedBreakers(client, router, max_cooldown_s=lambda: 10.0)
    await fail(router, 2)
    await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
    assert await router.admit(TARGET, breaker(router))  # the claim failed: probe anyway
    assert breaker(router).state == "half_open"
    await router.shared.aclose()
    await client.aclose()


async def test_a_probe_that_ends_without_a_verdict_gives_the_fleets_probe_back(
        redis_url: str) -> None:
    """A probe whose client left (no verdict) releases its claim at once: the next call, in this
    process or another, probes the target then, not a cooldown later (this process's own next
    call failed to claim it and reopened the breaker for a whole cooldown)."""
    slow = BreakerConfig(failures=2, cooldown_s=30, max_cooldown_s=60)  # claims held 30 s
    async with process(redis_url, settings=slow) as a:
        gpu = breaker(a)
        for _ in range(2):
            a.judge(TARGET, gpu, failed=True)
        gpu.clock = lambda: time.monotonic() + 31  # the cooldown is over
        assert await a.admit(TARGET, gpu)  # takes the fleet's probe
        client = aioredis.from_url(redis_url)
        try:
            assert await client.keys("*:probe:*")
            a.judge(TARGET, gpu, failed=None)  # its client left
            deadline = time.monotonic() + 5
            while await client.keys("*:probe:*"):
                assert time.monotonic() < deadline, "the probe's claim was never given back"
                await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        assert await a.admit(TARGET, gpu)  # probes again at once
        assert gpu.state == "half_open"


async def test_a_failed_probes_verdict_arriving_while_another_process_claims_stands(
        redis_url: str) -> None:
    """A process that loses the fleet's probe claim keeps the prober's verdict that arrived
    while Redis answered: its doubled cooldown (the loser reopened the target for the old
    cooldown from then, probed it early, and its failure set the fleet's cooldown to twice the
    old one: 5, 10, 10, 20 s)."""
    async with process(redis_url) as a, process(redis_url, listen=False) as b:
        await fail(a, 2)
        shared(b).apply(await published(redis_url, cooldown_s=0.3))  # b hears of the opening
        assert breaker(b).state == "open"
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert await a.admit(TARGET, breaker(a))  # a takes the fleet's probe
        a.judge(TARGET, breaker(a), failed=True)  # which fails: open for twice as long
        verdict = await published(redis_url, cooldown_s=0.6)
        asking = asyncio.create_task(b.admit(TARGET, breaker(b)))
        await asyncio.sleep(0)  # b turned half-open and waits for Redis's answer to its claim
        assert breaker(b).state == "half_open"
        shared(b).apply(verdict)  # a's verdict arrives meanwhile
        assert not await asking
        assert breaker(b).state == "open" and breaker(b).blocked()
        assert breaker(b).cooldown_s == pytest.approx(0.6)
        assert breaker(b).opened_at == pytest.approx(breaker(a).opened_at, abs=0.05)


async def test_a_successful_probes_verdict_arriving_while_another_process_claims_stands(
        redis_url: str) -> None:
    """A process that loses the fleet's probe claim while the prober's success arrives keeps
    the target closed (it reopened it for a cooldown)."""
    async with process(redis_url) as a, process(redis_url, listen=False) as b:
        await fail(a, 2)
        shared(b).apply(await published(redis_url, cooldown_s=0.3))
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert await a.admit(TARGET, breaker(a))  # a holds the claim until its verdict
        asking = asyncio.create_task(b.admit(TARGET, breaker(b)))
        await asyncio.sleep(0)  # b waits for Redis's answer to its claim
        assert breaker(b).state == "half_open"
        # a's probe succeeded: what it publishes (sent before its claim is deleted)
        shared(b).apply(json.dumps({"target": shared(a).field(("gpu", "llama", GPU)),
                                   "state": "closed", "origin": shared(a).origin}))
        assert await asking  # closed: the call may try it
        assert breaker(b).state == "closed" and not breaker(b).blocked()


async def test_a_call_cancelled_while_claiming_the_probe_leaves_it_to_the_next(
        redis_url: str) -> None:
    """A call cancelled (its client left) while Redis answers its probe claim takes no probe
    and gives the claim back: the next call probes the target (the breaker stayed half-open
    with a probe in flight, and every call skipped the target until another process's verdict,
    with one process never)."""
    client = aioredis.from_url(redis_url)
    async with process(redis_url) as a:
        await fail(a, 2)
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        await client.client_pause(5000, all=False)  # claims wait
        try:
            asking = asyncio.create_task(a.admit(TARGET, breaker(a)))
            deadline = time.monotonic() + 5
            while not any(c["flags"] == "b" for c in await client.client_list()):
                assert time.monotonic() < deadline, "the claim never reached Redis"
                await asyncio.sleep(0.01)
            assert breaker(a).state == "half_open"  # and its claim waits for Redis's answer
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
        finally:
            await client.client_unpause()
        assert not breaker(a).blocked()
        deadline = time.monotonic() + 5
        while await client.keys("*:probe:*"):
            assert time.monotonic() < deadline, "the claim was never given back"
            await asyncio.sleep(0.01)
        assert await a.admit(TARGET, breaker(a))  # the next call probes it
        assert breaker(a).state == "half_open" and breaker(a).probing
    await client.aclose()


SLOW = BreakerConfig(failures=2, cooldown_s=30, max_cooldown_s=60)
"""Settings whose openings outlast a test."""


async def test_a_provider_pointed_back_where_it_was_starts_closed_for_the_whole_fleet(
        redis_url: str) -> None:
    """A reload that points ``gpu`` elsewhere and back gives its target a fresh breaker, and
    supersedes the fleet's opening of it in Redis: a process that resubscribes, or starts, finds
    it closed too (they adopted the stale opening left in the hash, and skipped a target the
    rest of the fleet used). An opening after the reload is shared as before."""
    here, elsewhere = gateway_config(GPU, SLOW), gateway_config("http://gpu-b:8000", SLOW)
    client = aioredis.from_url(redis_url)
    try:
        async with process(redis_url, settings=SLOW) as a, \
                process(redis_url, settings=SLOW) as b:
            await fail(a, 2)
            await published(redis_url, cooldown_s=30)
            await eventually(lambda: breaker(b).state == "open")
            for router in (a, b):  # both reload, one after the other
                router.swap(elsewhere)
                router.swap(here)
                assert breaker(router).state == "closed"
            deadline = time.monotonic() + 5
            while await client.hlen("switchboard:breakers"):
                assert time.monotonic() < deadline, "the stale opening stayed in Redis"
                await asyncio.sleep(0.01)
            await shared(b).load()  # as after losing Redis and subscribing again
            assert breaker(b).state == "closed"
            async with process(redis_url, settings=SLOW) as late:
                assert breaker(late).state == "closed"
            await fail(a, 2)  # the target fails again, after the reload
            await published(redis_url, cooldown_s=30)
            await eventually(lambda: breaker(b).state == "open")
            async with process(redis_url, settings=SLOW) as late:
                assert breaker(late).state == "open"
    finally:
        await client.aclose()


async def test_an_opening_from_before_a_reload_pointed_the_provider_back_is_not_adopted(
        redis_url: str) -> None:
    """A process that pointed ``gpu`` elsewhere and back ignores an opening of its target dated
    before that reload, however it hears of it (an entry another process read from Redis
    before it was cleared, or one left there while Redis was unreachable)."""
    here, elsewhere = gateway_config(GPU, SLOW), gateway_config("http://gpu-b:8000", SLOW)
    async with process(redis_url, settings=SLOW) as a, \
            process(redis_url, settings=SLOW, listen=False) as b:
        await fail(a, 2)
        entry = await published(redis_url, cooldown_s=30)
        b.swap(elsewhere)
        b.swap(here)
        shared(b).apply(entry)
        assert breaker(b).state == "closed"
        assert breaker(a).state == "open"  # a did not reload: its own view stands


async def test_a_late_success_from_before_the_opening_closes_it_nowhere(redis_url: str) -> None:
    """A call admitted before ``a`` opened the breaker (a stream accepted before the target
    failed) that ends well afterwards neither closes it on ``a`` nor publishes a closing (it
    closed the breaker on every process)."""
    async with process(redis_url, settings=SLOW) as a, process(redis_url, settings=SLOW) as b:
        since = breaker(a).changes
        await fail(a, 2)
        await eventually(lambda: breaker(b).state == "open")
        a.judge(TARGET, breaker(a), failed=False, since=since)
        assert breaker(a).state == "open" and breaker(a).blocked()
        await asyncio.sleep(0.2)  # a closing would have reached b by now
        assert breaker(b).state == "open" and breaker(b).blocked()


async def test_the_fleets_probe_claim_lasts_as_long_as_the_probe_may_run(
        redis_url: str) -> None:
    """The probe claim is held for the probing call's remaining deadline, not a cooldown: a
    black-holed target's probe that outlasts the cooldown still keeps every other process from
    sending its own (each sent one, a cooldown apart); its verdict gives the claim back."""
    async with process(redis_url) as a, process(redis_url) as b:
        await fail(a, 2)
        await eventually(lambda: breaker(b).state == "open")
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert await a.admit(TARGET, breaker(a), within=30)  # a probes, for up to 30 s
        for _ in range(2):  # b asks after each of its cooldowns: a still probes
            assert not await b.admit(TARGET, breaker(b), within=30)
            assert breaker(b).blocked()
            await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        assert not await b.admit(TARGET, breaker(b), within=30)
        a.judge(TARGET, breaker(a), failed=True)  # the probe fails: open for 0.6 s everywhere
        await eventually(lambda: breaker(b).cooldown_s == pytest.approx(0.6))
        client = aioredis.from_url(redis_url)
        try:
            deadline = time.monotonic() + 5
            while await client.keys("*:probe:*"):
                assert time.monotonic() < deadline, "the failed probe's claim was kept"
                await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        await asyncio.sleep(0.65)
        assert await b.admit(TARGET, breaker(b), within=30)  # b probes after the cooldown


async def test_a_probe_claim_redis_does_not_answer_is_bounded(redis_url: str) -> None:
    """With Redis hung (writes paused), a call whose deadline leaves no time for the claim
    takes no probe and leaves it to the next call; one with time probes after
    ``CLAIM_WAIT_S``, as with Redis down (both waited for Redis's answer, 5 s and more, past
    the call's deadline)."""
    client = aioredis.from_url(redis_url)
    async with process(redis_url) as a:
        await fail(a, 2)
        await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
        await client.client_pause(60_000, all=False)  # claims wait
        try:
            short = a.admit(TARGET, breaker(a), within=2 * CLAIM_WAIT_S - 0.5)
            assert not await asyncio.wait_for(short, 10)
            assert breaker(a).state == "half_open" and not breaker(a).blocked()
            assert not await a.admit(TARGET, breaker(a), within=0)  # no time left at all
            assert not breaker(a).blocked()
            assert await asyncio.wait_for(a.admit(TARGET, breaker(a), within=30), 10)
            assert breaker(a).state == "half_open" and breaker(a).probing
        finally:
            await client.client_unpause()
            await client.aclose()


async def test_a_killed_probers_claim_lapses_within_a_cooldown(redis_url: str) -> None:
    """A prober that dies mid-probe stops renewing its claim: the next process probes a
    cooldown later, not when the dead call's deadline would have passed (it was held for the
    whole deadline at once: up to ``retries.deadline_s``, 300 s, with no probe anywhere)."""
    client = aioredis.from_url(redis_url)
    try:
        async with process(redis_url) as b:
            async with process(redis_url) as a:
                await fail(a, 2)
                await eventually(lambda: breaker(b).state == "open")
                await asyncio.sleep(SETTINGS.cooldown_s + 0.05)
                assert await a.admit(TARGET, breaker(a), within=60)  # a probes, for up to 60 s
                await asyncio.sleep(3 * SETTINGS.cooldown_s)  # renewed while a lives
                assert await client.keys("*:probe:*")
                assert not await b.admit(TARGET, breaker(b), within=60)
            # a is gone without a verdict or a release, as a SIGKILLed process would be
            deadline = time.monotonic() + 5
            while await client.keys("*:probe:*"):
                assert time.monotonic() < deadline, "a dead prober's claim was kept"
                await asyncio.sleep(0.01)
            await asyncio.sleep(SETTINGS.cooldown_s + 0.05)  # b's own cooldown from its refusal
            assert await b.admit(TARGET, breaker(b), within=60)
    finally:
        await client.aclose()
