"""RedisLimiter against a real Redis: windows, all-or-nothing, settles, budgets, key layout."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import redis.asyncio as aioredis

from app.limits import Bucket, RedisLimiter, scripts
from app.limits.headers import go_duration
from app.limits.model import period_name
from app.limits.redis import CREDIT_S, RENEW_S, SETTLE_DELAY_S, news_channel
from app.limits.resp import Answer, RespClient
from tests.limits.clock import Clock
from tests.limits.conftest import heard
from tests.limits.text import text_headers

T = 0.5  # seconds: generous, the shared Redis is on loopback


def limiter_on(redis: RespClient, prefix: str, clock: Clock | None = None,
               **options: bool) -> RedisLimiter:
    return RedisLimiter(redis, timeout_s=T, fail_open=options.get("fail_open", True),
                        budget_fail_open=options.get("budget_fail_open", False), prefix=prefix,
                        clock=clock)


async def test_burst_then_refused_on_the_servers_clock(resp: RespClient, prefix: str) -> None:
    """N admitted at once, the next refused with a Retry-After within the window (Redis TIME)."""
    limiter = limiter_on(resp, prefix)
    key = [Bucket("key", "k", 5, None, None)]
    decisions = await asyncio.gather(*(limiter.admit(key, 0) for _ in range(5)))
    assert all(d.admitted and d.reason == "ok" for d in decisions)
    assert sorted(d.remaining_requests or 0 for d in decisions) == [0, 1, 2, 3, 4]
    refused = await limiter.admit(key, 0)
    assert (refused.admitted, refused.reason, refused.scope) == (False, "rate_limit", "key")
    assert 0 < refused.retry_after_s <= 61
    assert text_headers(refused.headers())["x-ratelimit-remaining-requests"] == "0"


async def test_window_slides_with_the_clock(resp: RespClient, prefix: str) -> None:
    """A refused request fits once Retry-After has passed, and not a millisecond before."""
    clock = Clock()
    limiter = limiter_on(resp, prefix, clock)
    key = [Bucket("key", "k", 3, None, None)]
    for _ in range(3):
        assert (await limiter.admit(key, 0)).admitted
    clock.t += 10
    refused = await limiter.admit(key, 0)
    assert not refused.admitted and refused.retry_after_s == 50.75  # the slot began at t - 0.25
    clock.t += 50.749
    assert not (await limiter.admit(key, 0)).admitted
    clock.t += 0.001
    assert (await limiter.admit(key, 0)).admitted


async def test_never_more_than_n_in_any_window_across_limiters(prefix: str) -> None:
    """Four limiters on four clients hammering one key admit at most N in any 60 s."""
    clock, limit = Clock(), 20
    clients = [RespClient.from_url("redis://127.0.0.1:6379/0") for _ in range(4)]
    limiters = [limiter_on(c, prefix, clock) for c in clients]
    key = [Bucket("key", "k", limit, None, None)]
    admitted: list[float] = []
    rng = random.Random(7)

    async def burst(limiter: RedisLimiter, count: int) -> None:
        at = clock.t
        decisions = await asyncio.gather(*(limiter.admit(key, 0) for _ in range(count)))
        admitted.extend(at for d in decisions if d.admitted)

    try:
        # Each round, every limiter sends a burst at once; the clock moves between rounds (a
        # test clock must not run backwards between scripts, as Redis TIME does not).
        for _ in range(300):
            await asyncio.gather(*(burst(limiter, rng.randint(0, 4)) for limiter in limiters))
            clock.t += rng.choice([0.0, 0.05, 0.3, 1.7, 4.0])
    finally:
        for c in clients:
            await c.aclose()
    admitted.sort()
    assert len(admitted) > 4 * limit  # the clock ran through several windows
    for start in admitted:
        assert sum(start <= a < start + 60 for a in admitted) <= limit


async def test_all_or_nothing_across_key_and_team(resp: RespClient, prefix: str) -> None:
    """A spent team refuses its other key's request, and that key's bucket is not charged."""
    limiter = limiter_on(resp, prefix, Clock())
    team = Bucket("team", "t", 1, None, None)
    a = Bucket("key", "a", 3, None, None, team="t")
    b = Bucket("key", "b", 3, None, None, team="t")
    assert (await limiter.admit([a, team], 0)).admitted
    refused = await limiter.admit([b, team], 0)
    assert (refused.admitted, refused.scope) == (False, "team")
    assert (await limiter.admit([b], 0)).remaining_requests == 2


async def test_a_refusal_counts_only_what_was_charged(resp: RespClient, prefix: str) -> None:
    """A call the token window refuses is not counted in the request window that had room
    (nothing was charged): its headers say what the next call finds, as the next call's do."""
    limiter = limiter_on(resp, prefix, Clock())
    key = [Bucket("key", "k", 100, 60, None)]
    assert (await limiter.admit(key, 50)).remaining_requests == 99
    refused = await limiter.admit(key, 20)
    assert (refused.admitted, refused.reason) == (False, "rate_limit")
    assert text_headers(refused.headers())["x-ratelimit-remaining-requests"] == "99"
    assert text_headers(refused.headers())["x-ratelimit-remaining-tokens"] == "10"
    after = await limiter.admit(key, 10)
    assert (after.remaining_requests, after.remaining_tokens) == (98, 0)


async def test_tpm_and_settle_gives_tokens_back(resp: RespClient, prefix: str) -> None:
    """Tokens are charged by estimate; a settle returns what the call did not use."""
    clock = Clock()
    limiter = limiter_on(resp, prefix, clock)
    key = [Bucket("key", "k", None, 1000, None)]
    first = await limiter.admit(key, 900)
    assert first.admitted and first.remaining_tokens == 100 and first.limit_requests is None
    assert not (await limiter.admit(key, 200)).admitted
    clock.t += 3
    limiter.settle(key, 900, 150, 0.0, elapsed_s=3)
    await limiter.flush()
    again = await limiter.admit(key, 200)
    assert again.admitted and again.remaining_tokens == 650
    limiter.settle(key, 200, 500, 0.0)  # used more than reserved: the excess is charged
    await limiter.flush()
    assert (await limiter.admit(key, 0)).remaining_tokens == 350


async def test_a_settle_whose_clock_lands_in_the_next_second_still_gives_back(
        resp: RespClient, prefix: str) -> None:
    """The gateway's elapsed time and Redis's clock disagree by milliseconds: a settle that
    points at the second after its admission's still finds the tokens to give back."""
    clock = Clock()
    limiter = limiter_on(resp, prefix, clock)
    key = [Bucket("key", "k", None, 1000, None)]
    assert (await limiter.admit(key, 900)).admitted
    clock.t += 3
    limiter.settle(key, 900, 150, 0.0, elapsed_s=2)  # "admitted" a second later than it was
    await limiter.flush()
    assert (await limiter.admit(key, 0)).remaining_tokens == 850


async def test_budget_refuses_after_spend(resp: RespClient, prefix: str) -> None:
    """Spend settled up to a team's budget refuses its keys with reason budget."""
    limiter = limiter_on(resp, prefix, Clock())
    team = Bucket("team", "t", None, None, 0.5, "day")
    key = Bucket("key", "k", 100, None, None, team="t")
    assert (await limiter.admit([key, team], 10)).admitted
    limiter.settle([key, team], 10, 10, 0.3)
    limiter.settle([key, team], 10, 10, 0.2)
    await limiter.flush()
    refused = await limiter.admit([key, team], 10)
    assert (refused.admitted, refused.reason, refused.scope) == (False, "budget", "team")
    assert text_headers(refused.headers())["x-should-retry"] == "false"
    assert 0 < refused.retry_after_s <= 86_400


async def test_a_budget_of_tiny_calls_lasts_to_its_amount(resp: RespClient,
                                                          prefix: str) -> None:
    """Spend counts in nano-dollars: a $0.000002 budget of $0.00000014 embeddings admits 15
    calls, the one that reaches it included (with each call rounded up to a micro-dollar it
    admitted 2, and refused at 14% of the budget), and a budget keeps its last $0.0000001."""
    limiter = limiter_on(resp, prefix, Clock())
    for id, budget, cost, calls in (("tiny", 0.000002, 0.00000014, 15),
                                    ("near", 0.0002671, 0.000267, 2)):
        key = [Bucket("key", id, None, None, budget, "total")]
        admitted = 0
        while (await limiter.admit(key, 0)).admitted and admitted < 100:
            admitted += 1
            limiter.settle(key, 0, 0, cost)
            await limiter.flush()
        assert admitted == calls


async def test_keys_share_the_teams_hash_tag(redis: aioredis.Redis, resp: RespClient,
                                             prefix: str) -> None:
    """Every key one admission writes carries the team's hash tag; spend is nano-dollars."""
    limiter = limiter_on(resp, prefix, Clock())
    buckets = [Bucket("key", "k", 5, 500, 1.0, team="t"), Bucket("team", "t", 9, None, 2.0)]
    await limiter.admit(buckets, 10)
    limiter.settle(buckets, 10, 10, 0.25)
    await limiter.flush()
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")])
    assert keys == sorted([
        f"{prefix}:rl:{{t}}:key:k:req", f"{prefix}:rl:{{t}}:key:k:tok",
        f"{prefix}:rl:{{t}}:team:t:req", f"{prefix}:spend-nano:{{t}}:key:k:month:2025-06",
        f"{prefix}:spend-nano:{{t}}:team:t:month:2025-06"])
    assert await redis.get(f"{prefix}:spend-nano:{{t}}:team:t:month:2025-06") == b"250000000"
    assert 0 < await redis.pttl(f"{prefix}:rl:{{t}}:key:k:req") <= 62_000


async def test_no_buckets_touches_nothing(redis: aioredis.Redis, resp: RespClient,
                                          prefix: str) -> None:
    """An admission with no buckets writes nothing."""
    limiter = limiter_on(resp, prefix)
    assert (await limiter.admit([], 100)).admitted
    limiter.settle([], 100, 10, 1.0)
    await limiter.flush()
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*")] == []


async def test_settle_without_elapsed_takes_from_the_oldest_slots(redis: aioredis.Redis,
                                                                  resp: RespClient,
                                                                  prefix: str) -> None:
    """With no elapsed time, tokens given back come out of the oldest slots, never below 0."""
    clock = Clock()
    limiter = limiter_on(resp, prefix, clock)
    key = [Bucket("model", "k:gpt-4o", None, 1000, None)]
    await limiter.admit(key, 300)
    clock.t += 20
    await limiter.admit(key, 300)
    limiter.settle(key, 300, 0, 0.0)
    limiter.settle(key, 300, 0, 0.0)
    limiter.settle(key, 300, 0, 0.0)  # more than the window holds: the rest is dropped
    await limiter.flush()
    slots = await redis.hgetall(f"{prefix}:rl:{{k}}:model:k:gpt-4o:tok")
    assert sorted(int(v) for v in slots.values()) == [0, 0]
    assert (await limiter.admit(key, 1000)).admitted


class CountingClient(RespClient):
    """The limiter's client, counting the round trips it is asked to send (each is one
    write; everything else is the real client on the shared Redis)."""

    def __init__(self) -> None:
        super().__init__(RespClient.from_url("redis://127.0.0.1:6379/0").address)
        self.round_trips: list[int] = []

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        self.round_trips.append(count)
        super().send_then(payload, count, answer)


async def test_one_admission_round_trip_in_flight_the_rest_batched_behind_it(
        prefix: str) -> None:
    """An admission with nothing in flight goes at once, alone; the ones that arrive while it
    is out go together in the next round trip, which also takes the settles queued so far."""
    client = CountingClient()
    try:
        limiter = limiter_on(client, prefix)
        key = (Bucket("key", "k", 1000, 100_000, None),)
        await limiter.admit(key, 10)  # connects and warms up
        client.round_trips.clear()
        limiter.settle(key, 10, 4, 0.0, elapsed_s=0.01)
        decisions = await asyncio.gather(*(limiter.admit(key, 10) for _ in range(9)))
        assert all(d.admitted for d in decisions)
        # the first admission (with the settle riding along), then the other eight together
        assert client.round_trips == [2, 8]
        await asyncio.sleep(0.05)  # the settle's own timer finds nothing left to send
        assert client.round_trips == [2, 8]
        assert sorted(d.remaining_requests or 0 for d in decisions) == list(range(990, 999))
    finally:
        await client.aclose()


# ---- admission credits (app.limits.model): a few requests charged ahead, admitted locally


def credited(redis: RespClient, prefix: str, clock: Clock) -> RedisLimiter:
    return RedisLimiter(redis, timeout_s=T, fail_open=True, budget_fail_open=False,
                        prefix=prefix, clock=clock, credits=True)


async def test_a_credit_is_charged_ahead_then_admits_without_asking_redis(
        redis: aioredis.Redis, prefix: str) -> None:
    clock, client = Clock(), CountingClient()
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 2560, None, None),)  # a credit may hold 2560/256 = 10
        first = await limiter.admit(key, 0)
        second = int(clock.t)
        assert first.admitted and first.slot == second and client.round_trips == [1]
        # the call in its own second, the credit CREDIT_S on: counted from now to then + 61
        assert await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req") == {
            str(second).encode(): b"1", str(second + CREDIT_S).encode(): b"10"}
        clock.t += CREDIT_S / 2
        local = [await limiter.admit(key, 0) for _ in range(10)]
        assert client.round_trips == [1]  # all ten from the credit
        assert all(d.admitted and d.slot == second + CREDIT_S for d in local)
        assert {d.remaining_requests for d in local} == {first.remaining_requests} == {2549}
        # one decision shared by the credit's calls; its headers' resets age with the clock
        assert text_headers(local[0].headers())["x-ratelimit-reset-requests"] == \
            go_duration((first.reset_requests_s or 0) - CREDIT_S / 2).decode()
        # the call that left 2 (a quarter) queued the next credit's renewal; spent, the next
        # call asks Redis (for no credit: the renewal is asking), the renewal riding along
        assert (await limiter.admit(key, 0)).admitted
        assert client.round_trips == [1, 2]
    finally:
        await client.aclose()


async def test_no_credit_under_256_a_minute_nor_past_an_eighth_of_the_limit(
        redis: aioredis.Redis, prefix: str) -> None:
    clock, client = Clock(), CountingClient()
    try:
        limiter = credited(client, prefix, clock)
        small = (Bucket("key", "small", 255, None, None),)
        for _ in range(3):
            assert (await limiter.admit(small, 0)).admitted
        assert client.round_trips == [1, 1, 1]  # each call asks Redis, as without credits
        big = (Bucket("key", "big", 2560, None, None),)
        other = limiter_on(client, prefix, clock)  # another process, without credits
        for _ in range(310):
            assert (await other.admit(big, 0)).admitted
        client.round_trips.clear()
        assert (await limiter.admit(big, 0)).admitted  # 311 + a credit of 10 > 2560 / 8
        assert (await limiter.admit(big, 0)).admitted
        assert client.round_trips == [1, 1]
        assert len(await redis.hgetall(f"{prefix}:rl:{{big}}:key:big:req")) == 1  # no credit
    finally:
        await client.aclose()


class RecordingClient(CountingClient):
    """Also keeps every payload it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        self.payloads.append(payload)
        super().send_then(payload, count, answer)


async def test_concurrent_first_calls_ask_for_one_credit(
        redis: aioredis.Redis, prefix: str) -> None:
    """Five calls of one caller at once: one of them asks for a credit, the others go to Redis
    without asking (each asking would replace, and give back, the credit before it)."""
    clock, client = Clock(), RecordingClient()
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 2560, None, None),)  # a credit may hold 10
        assert all(d.admitted for d in await asyncio.gather(
            *(limiter.admit(key, 0) for _ in range(5))))
        await limiter.flush()  # gives the one credit back
        release = scripts.sha1(scripts.RELEASE).encode()
        assert sum(p.count(release) for p in client.payloads) == 1
        window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
        assert window == {str(int(clock.t)).encode(): b"5",
                          str(int(clock.t) + CREDIT_S).encode(): b"0"}
    finally:
        await client.aclose()


async def test_what_a_credit_did_not_use_goes_back_when_it_ends(
        redis: aioredis.Redis, resp: RespClient, prefix: str) -> None:
    clock = Clock()
    limiter = credited(resp, prefix, clock)
    key = (Bucket("key", "k", 2560, None, None),)
    await limiter.admit(key, 0)
    slot = str(int(clock.t) + CREDIT_S).encode()
    for _ in range(3):
        await limiter.admit(key, 0)
    clock.t += CREDIT_S - 1  # the credit's last second: no longer used
    await limiter.admit(key, 0)  # gives back 7 (riding along) and gets a new credit of 10
    window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
    assert window[slot] == b"3" and window[str(int(clock.t) + CREDIT_S).encode()] == b"10"
    await limiter.flush()  # a closing gateway gives back every credit
    window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
    assert window[slot] == b"3" and window[str(int(clock.t) + CREDIT_S).encode()] == b"0"


async def test_a_credited_call_settles_its_tokens_in_the_credits_slot(
        redis: aioredis.Redis, resp: RespClient, prefix: str) -> None:
    clock = Clock()
    limiter = credited(resp, prefix, clock)
    key = (Bucket("key", "k", None, 256_000, None),)  # 256,000 / (256 * 100): a credit of 10
    await limiter.admit(key, 100)
    credit = await limiter.admit(key, 100)  # from the credit: 1,000 tokens in its slot
    assert credit.slot == int(clock.t) + CREDIT_S
    limiter.settle(key, 100, 40, 0.0, elapsed_s=0.5, slot=credit.slot)
    await limiter.flush()  # the settle gives 60 back to that slot, the credit's return 900
    window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:tok")
    assert window[str(credit.slot).encode()] == b"40"  # what the credited call really used


async def test_a_credits_calls_settle_as_one_tally_when_it_ends(
        redis: aioredis.Redis, prefix: str) -> None:
    """The calls a credit admits add their spend and token corrections to its tally, which
    goes to Redis as one settle when the credit ends; nothing is sent per call meanwhile."""
    key = (Bucket("key", "k", 2560, 256_000, 100.0),)  # credits of 10; tallies hold $0.39
    spend, tokens = f"{prefix}:spend-nano:{{k}}:key:k:", f"{prefix}:rl:{{k}}:key:k:tok"
    async with tallying(prefix) as (limiter, client, clock):
        spend += month(clock)
        await limiter.admit(key, 100)  # from Redis, with a credit of 10 x 100 tokens
        calls = [await limiter.admit(key, 100) for _ in range(3)]
        slot = calls[0].slot
        assert slot == int(clock.t) + CREDIT_S and client.round_trips == [1]
        for used, decision in zip((40, 70, 90), calls, strict=True):
            limiter.settle(key, 100, used, 0.01, elapsed_s=0.5, slot=decision.slot)
        await asyncio.sleep(4 * SETTLE_DELAY_S)
        assert client.round_trips == [1]  # held: no settle went on its own
        assert await redis.get(spend) is None
        await limiter.flush()  # the credit ends: its tally, then its return
        assert client.round_trips == [1, 2]
        assert await redis.get(spend) == b"30000000"  # 3 x $0.01
        # the slot keeps what the three calls used (200 tokens), the rest came back
        assert (await redis.hgetall(tokens))[str(slot).encode()] == b"200"


async def test_tallies_hold_at_most_a_256th_of_a_budget_together(redis: aioredis.Redis,
                                                                 prefix: str) -> None:
    """The tallies of one process hold at most 1/256 of each budget between them (here the
    credits of two keys of one team): the call that takes a budget's held spend past that
    settles every tally holding some of it. A call that used more tokens than its estimate
    settles on its own, at once (a TPM window never counts less than was used)."""
    team = Bucket("team", "t", 2560, None, 2.56)  # tallies may hold $0.01 of it (10,000,000 nano)
    a = (Bucket("key", "a", 2560, 256_000, 100.0, team="t"), team)
    b = (Bucket("key", "b", 2560, 256_000, 100.0, team="t"), team)
    spend = {name: f"{prefix}:spend-nano:{{t}}:{name}:" for name in ("team:t", "key:a", "key:b")}
    async with tallying(prefix) as (limiter, _, clock):
        spend = {name: counter + month(clock) for name, counter in spend.items()}
        calls = {}
        for key in (a, b):
            await limiter.admit(key, 10)  # charges 10 tokens to this second, and a credit
            calls[key] = await limiter.admit(key, 10)
            assert calls[key].slot == int(clock.t) + CREDIT_S
        limiter.settle(a, 10, 10, 0.004, slot=calls[a].slot)
        limiter.settle(b, 10, 8, 0.004, slot=calls[b].slot)  # $0.008 of the team's: held
        await asyncio.sleep(4 * SETTLE_DELAY_S)
        assert [await redis.get(counter) for counter in spend.values()] == [None] * 3
        limiter.settle(a, 10, 10, 0.004, slot=calls[a].slot)  # $0.012: both tallies settle
        await until(lambda: redis.mget(list(spend.values())), [b"12000000", b"8000000", b"4000000"])
        tokens = f"{prefix}:rl:{{t}}:key:a:tok"
        limiter.settle(a, 10, 25, 0.0, slot=calls[a].slot)  # 15 over its estimate
        await until(lambda: redis.hget(tokens, str(int(clock.t))), b"25")


async def test_budget_news_settles_the_tallies(redis: aioredis.Redis, prefix: str) -> None:
    """Budget news ends the credits of callers with a budget, and with them their tallies:
    once a counter reaches half its budget, every process's held spend is in it."""
    key = (Bucket("key", "k", 2560, None, 10.0),)  # its tallies hold up to $0.039
    spend = f"{prefix}:spend-nano:{{k}}:key:k:"
    async with tallying(prefix) as (limiter, _, clock):
        spend += month(clock)
        await limiter.admit(key, 0)
        for _ in range(3):
            limiter.settle(key, 0, 0, 0.01, slot=(await limiter.admit(key, 0)).slot)
        await asyncio.sleep(4 * SETTLE_DELAY_S)
        assert await redis.get(spend) is None
        at = clock.t
        clock.t += 0.001
        await redis.publish(news_channel(prefix), "half")
        await heard(limiter, at)
        await until(lambda: redis.get(spend), b"30000000")


async def test_a_call_whose_credit_ended_settles_on_its_own(redis: aioredis.Redis,
                                                            prefix: str) -> None:
    """A call still running when its credit ended is not added to a tally that was settled
    already: its settle goes alone, as any call's."""
    key = (Bucket("key", "k", 2560, None, 100.0),)
    spend = f"{prefix}:spend-nano:{{k}}:key:k:"
    async with tallying(prefix) as (limiter, _, clock):
        spend += month(clock)
        await limiter.admit(key, 0)
        running = await limiter.admit(key, 0)
        assert running.slot == int(clock.t) + CREDIT_S  # from the credit
        await limiter.flush()  # the credit ends meanwhile
        limiter.settle(key, 0, 0, 0.02, slot=running.slot)
        await until(lambda: redis.get(spend), b"20000000")


@contextlib.asynccontextmanager
async def tallying(prefix: str) -> AsyncIterator[tuple[RedisLimiter, CountingClient, Clock]]:
    """A limiter granting credits to callers with a budget (it follows the budget news), its
    round trips counted from after it started."""
    clock, client = Clock(), CountingClient()
    news = aioredis.Redis(host="127.0.0.1", port=6379)
    limiter = await started(following(client, news, prefix, clock), clock)
    client.round_trips.clear()  # loading the scripts
    try:
        yield limiter, client, clock
    finally:
        await limiter.aclose()
        await client.aclose()
        await news.aclose()


def month(clock: Clock) -> str:
    """The name of the spend counters' month at ``clock`` (``period_name``)."""
    return period_name("month", datetime.fromtimestamp(clock.t, UTC))


async def until(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Wait (up to 2 s) for ``read()`` to return ``expected``."""
    for _ in range(200):
        if await read() == expected:
            return
        await asyncio.sleep(0.01)
    assert await read() == expected


async def window_becomes(redis: aioredis.Redis, key: str, expected: dict[int, int]) -> None:
    """Wait (up to 2 s) for the window ``key`` to hold ``expected`` (slot -> count): the
    renewals, and the returns they cause, go with the settles, within a few SETTLE_DELAY_S."""
    want = {str(slot).encode(): str(count).encode() for slot, count in expected.items()}
    for _ in range(200):
        if await redis.hgetall(key) == want:
            return
        await asyncio.sleep(0.01)
    assert await redis.hgetall(key) == want


async def test_a_credit_used_in_its_last_seconds_gets_the_next_without_waiting(
        redis: aioredis.Redis, prefix: str) -> None:
    """A call admitted from a credit in its last RENEW_S seconds asks for the next credit with
    the settles (charging nothing itself); the answer replaces the credit, whose unused part
    goes back, and the caller's later calls never wait for Redis."""
    clock, client = Clock(), CountingClient()
    window = f"{prefix}:rl:{{k}}:key:k:req"
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 2560, None, None),)  # credits of 10
        start = int(clock.t)
        assert (await limiter.admit(key, 0)).admitted
        first = start + CREDIT_S
        clock.t += CREDIT_S - 1 - RENEW_S + 0.5  # the credit's last RENEW_S seconds
        renewing = await limiter.admit(key, 0)
        assert renewing.admitted and renewing.slot == first
        assert client.round_trips == [1]  # no admission round trip: the renewal waits
        second = int(clock.t) + CREDIT_S
        # the renewal's credit of 10; the old credit's 9 unused went back
        await window_becomes(redis, window, {start: 1, first: 1, second: 10})
        assert len(client.round_trips) == 3  # then the renewal, then the old credit's return
        clock.t += RENEW_S  # past the old credit's end
        later = await limiter.admit(key, 0)
        assert later.admitted and later.slot == second and len(client.round_trips) == 3
    finally:
        await client.aclose()


async def test_a_credit_down_to_a_quarter_gets_the_next_without_waiting(
        redis: aioredis.Redis, prefix: str) -> None:
    """A busy caller spends its credit before it ends: the call that leaves a quarter of it
    asks for the next one, and the caller never waits for Redis again."""
    clock, client = Clock(), CountingClient()
    window = f"{prefix}:rl:{{k}}:key:k:req"
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 4096, None, None),)  # credits of 16
        start = int(clock.t)
        assert (await limiter.admit(key, 0)).admitted
        clock.t += 1
        for _ in range(11):  # 5 left: no renewal yet
            assert (await limiter.admit(key, 0)).admitted
        await asyncio.sleep(0.1)
        assert client.round_trips == [1]
        assert (await limiter.admit(key, 0)).admitted  # 4 left: the renewal
        # the old credit's 4 unused went back, the new one is charged
        await window_becomes(redis, window, {start: 1, start + CREDIT_S: 12,
                                             start + 1 + CREDIT_S: 16})
        for _ in range(16):
            assert (await limiter.admit(key, 0)).admitted
        assert len(client.round_trips) == 3  # the renewal, the return: no admission waited
    finally:
        await client.aclose()


async def test_a_refused_renewal_leaves_the_credit_it_would_have_replaced(
        redis: aioredis.Redis, prefix: str) -> None:
    clock, client = Clock(), CountingClient()
    window = f"{prefix}:rl:{{k}}:key:k:req"
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 2560, None, None),)
        start = int(clock.t)
        assert (await limiter.admit(key, 0)).admitted  # 1, and a credit of 10
        other = limiter_on(client, prefix, clock)  # another process, without credits
        for _ in range(310):  # 321 in the window: past an eighth, so no credit now
            assert (await other.admit(key, 0)).admitted
        client.round_trips.clear()
        clock.t += CREDIT_S - 1 - RENEW_S + 0.5
        assert (await limiter.admit(key, 0)).admitted  # asks for the next credit: refused
        await asyncio.sleep(0.1)
        assert client.round_trips == [1]  # the renewal, with the settles' timer
        client.round_trips.clear()
        for _ in range(8):  # the rest of the credit
            assert (await limiter.admit(key, 0)).admitted
        assert client.round_trips == []
        await limiter.flush()  # the renewal answered (flush waits for it); the credit's 1 back
        # the renewal charged nothing and got no credit
        assert await redis.hgetall(window) == {str(start).encode(): b"311",
                                               str(start + CREDIT_S).encode(): b"9"}
    finally:
        await client.aclose()


async def test_a_renewal_granted_after_a_flush_is_given_back(
        redis: aioredis.Redis, resp: RespClient, prefix: str) -> None:
    """``flush`` (a closing gateway) gives back every credit, and the one a renewal on its way
    brings too."""
    clock = Clock()
    limiter = credited(resp, prefix, clock)
    key = (Bucket("key", "k", 2560, None, None),)
    start = int(clock.t)
    await limiter.admit(key, 0)
    clock.t += CREDIT_S - 1 - RENEW_S + 0.5
    await limiter.admit(key, 0)  # the renewal is queued
    await limiter.flush()  # sends it with the credit's return; its credit goes back too
    window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
    assert window == {str(start).encode(): b"1", str(start + CREDIT_S).encode(): b"1",
                      str(int(clock.t) + CREDIT_S).encode(): b"0"}


async def test_a_caller_with_a_budget_gets_no_credit_unless_following_the_news(
        prefix: str) -> None:
    """A credit's calls skip the spend check: a process that does not follow the budget news
    (none given, or not subscribed yet) asks Redis for every call of a caller with a budget."""
    clock, client = Clock(), CountingClient()
    try:
        limiter = credited(client, prefix, clock)
        key = (Bucket("key", "k", 100_000, None, 1000.0),)
        for _ in range(3):
            assert (await limiter.admit(key, 0)).admitted
        assert client.round_trips == [1, 1, 1]
    finally:
        await client.aclose()


def following(redis: RespClient, news: aioredis.Redis, prefix: str,
              clock: Clock) -> RedisLimiter:
    return RedisLimiter(redis, timeout_s=T, fail_open=True, budget_fail_open=False,
                        prefix=prefix, clock=clock, credits=True, news=news)


async def started(limiter: RedisLimiter, clock: Clock) -> RedisLimiter:
    await limiter.start()
    await asyncio.wait_for(limiter.hearing.wait(), 5)
    clock.t += 0.001  # news came at subscribing: credits asked for from now on are kept
    return limiter


async def test_budget_credits_end_everywhere_when_spend_reaches_half_the_budget(
        redis: aioredis.Redis, prefix: str) -> None:
    """Two processes hold credits for a caller with a $10 budget; the settle that takes its
    spend to $5 publishes news, both give their credits back, and no process gets another."""
    clock = Clock()
    clients = [CountingClient(), CountingClient()]
    news = [aioredis.Redis(host="127.0.0.1", port=6379) for _ in clients]
    limiters = [following(c, n, prefix, clock) for c, n in zip(clients, news, strict=True)]
    key = (Bucket("key", "k", 2560, None, 10.0),)
    try:
        for limiter in limiters:
            await started(limiter, clock)
        for c in clients:
            c.round_trips.clear()  # loading the scripts
        for limiter in limiters:
            for _ in range(4):  # one from Redis, with a credit of 10; three from the credit
                assert (await limiter.admit(key, 0)).admitted
        assert [c.round_trips for c in clients] == [[1], [1]]
        limiters[0].settle(key, 0, 0, 4.99)  # past 1/256 of the budget: it goes at once
        await limiters[0].flush()  # $4.99: still under half, no news
        for limiter in limiters:
            assert (await limiter.admit(key, 0)).admitted
        # 0's flush gave its credit back, so 0 asked Redis (and got a new credit: spend is
        # under half); 1 admitted from its credit
        assert [c.round_trips for c in clients] == [[1, 1, 1, 1], [1]]
        at = clock.t
        clock.t += 0.001
        limiters[1].settle(key, 0, 0, 0.01)  # $5.00: half the budget
        await limiters[1].flush()
        for limiter in limiters:
            await heard(limiter, at)
        for c in clients:
            c.round_trips.clear()
        for limiter in limiters:
            for _ in range(3):
                assert (await limiter.admit(key, 0)).admitted
        # every call asks Redis; 0's first takes along the return of its second credit
        assert [c.round_trips for c in clients] == [[2, 1, 1], [1, 1, 1]]
        window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
        assert sum(map(int, window.values())) == 4 + 4 + 1 + 1 + 6  # the credits came back
    finally:
        for limiter in limiters:
            await limiter.aclose()
        for c in clients:
            await c.aclose()
        for n in news:
            await n.aclose()


class HeldClient(CountingClient):
    """Holds back the answers of its round trips while ``hold`` is set (``release`` hands
    them over)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.held: list[Callable[[], None]] = []

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        if not self.hold:
            return super().send_then(payload, count, answer)
        return super().send_then(payload, count, lambda result: self.held.append(
            lambda: answer(result)))


async def test_a_budget_credit_granted_before_news_that_arrives_first_is_given_back(
        redis: aioredis.Redis, prefix: str) -> None:
    """Redis granted a credit, then the budget news left on another connection and arrived
    before the grant: the credit is given back at once, and the next call asks Redis."""
    clock, client = Clock(), HeldClient()
    news = aioredis.Redis(host="127.0.0.1", port=6379)
    limiter = following(client, news, prefix, clock)
    key = (Bucket("key", "k", 2560, None, 10.0),)
    try:
        await started(limiter, clock)
        client.round_trips.clear()  # loading the scripts
        client.hold = True
        admission = asyncio.ensure_future(limiter.admit(key, 0))
        for _ in range(500):
            if client.held:
                break
            await asyncio.sleep(0.01)
        assert client.held  # Redis answered: the credit of 10 is charged in its slot
        at = clock.t
        clock.t += 0.001
        await redis.publish(f"{prefix}:limits:budget-news", "half")
        await heard(limiter, at)
        clock.t += 0.001
        client.hold = False
        client.held.pop()()
        assert (await admission).admitted
        assert (await limiter.admit(key, 0)).admitted
        assert client.round_trips == [1, 2]  # asked Redis again, the credit's return with it
        assert (await limiter.admit(key, 0)).admitted  # from a new credit, asked after the news
        assert client.round_trips == [1, 2]
        window = await redis.hgetall(f"{prefix}:rl:{{k}}:key:k:req")
        # the new credit; the first came back
        assert window[str(int(at) + CREDIT_S).encode()] == b"10"
    finally:
        await limiter.aclose()
        await client.aclose()
        await news.aclose()


async def test_credits_never_admit_more_than_n_in_any_window(prefix: str) -> None:
    """Three processes with credits and one without, hammering one key with bursts while the
    clock runs: never more than N in any 60 s."""
    clock, limit = Clock(), 2560
    clients = [RespClient.from_url("redis://127.0.0.1:6379/0") for _ in range(4)]
    limiters = [credited(c, prefix, clock) for c in clients[:3]] + [
        limiter_on(clients[3], prefix, clock)]
    key = (Bucket("key", "k", limit, None, None),)
    admitted: list[float] = []
    from_credits = 0
    rng = random.Random(11)

    async def burst(limiter: RedisLimiter, count: int) -> None:
        nonlocal from_credits
        at = clock.t
        for _ in range(count):  # one at a time: each may come from the credit
            decision = await limiter.admit(key, 0)
            if decision.admitted:
                admitted.append(at)
                from_credits += (decision.slot or 0) > at

    try:
        for _ in range(400):
            await asyncio.gather(*(burst(limiter, rng.randint(0, 12)) for limiter in limiters))
            clock.t += rng.choice([0.0, 0.2, 0.9, 3.0, 9.5, CREDIT_S - 0.5])
            if rng.random() < 0.05:
                await rng.choice(limiters).flush()
    finally:
        for c in clients:
            await c.aclose()
    admitted.sort()
    assert len(admitted) > 3 * limit  # the clock ran through several windows
    assert from_credits > 200  # credits while the window was low, Redis for every call past it
    busiest = max(bisect.bisect_left(admitted, start + 60) - i
                  for i, start in enumerate(admitted))
    assert busiest <= limit


async def test_a_refusal_reports_the_uncharged_windows_reset(resp: RespClient,
                                                             prefix: str) -> None:
    """A window with room, in a call another window refused, reports its reset as it stands:
    when its last charge leaves (0 when it holds none), not a full minute as if charged (it was
    not); as the local limiter does."""
    clock = Clock()
    limiter = limiter_on(resp, prefix, clock)
    key = [Bucket("key", "k", 2, 1000, None)]
    assert (await limiter.admit(key, 9)).admitted
    clock.t += 5
    assert (await limiter.admit(key, 9)).admitted
    clock.t += 5
    refused = await limiter.admit(key, 9)
    assert (refused.admitted, refused.remaining_tokens) == (False, 982)
    assert refused.reset_requests_s == refused.reset_tokens_s == 55.75
    team = Bucket("team", "t", None, 10, None)
    assert (await limiter.admit([Bucket("key", "a", 5, None, None, team="t"), team], 10)).admitted
    by_tokens = await limiter.admit([Bucket("key", "b", 5, None, None, team="t"), team], 5)
    assert (by_tokens.admitted, by_tokens.remaining_requests) == (False, 5)
    assert by_tokens.reset_requests_s == 0.0  # b's window holds nothing
