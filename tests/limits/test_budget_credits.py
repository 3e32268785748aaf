"""Admission credits of callers with a budget (``app.limits.model``, "Credits and budgets"):
a credit admits no call while this process holds spend of its budgets, material to them, that
Redis has not counted yet."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from app.limits import Bucket, RedisLimiter
from tests.limits.test_redis import month, tallying, until

COST = 0.00017  # gpt-4o on the simulator: a $0.0005 budget allows 3 calls


async def sequential(limiter: RedisLimiter, buckets: Sequence[Bucket], calls: int,
                     cost: float) -> int:
    """Make ``calls`` calls one after the other, each settled as it ends; how many were
    admitted."""
    admitted = 0
    for _ in range(calls):
        decision = await limiter.admit(buckets, 0)
        if decision.admitted:
            admitted += 1
            limiter.settle(buckets, 0, 0, cost, slot=decision.slot)
    return admitted


async def test_a_sequential_caller_with_only_a_budget_stops_at_it(redis: aioredis.Redis,
                                                                  prefix: str) -> None:
    """A key with a budget and no RPM gets a credit of 32 calls; each of its calls costs more
    than 1/256 of the budget, so none is admitted from the credit before Redis has counted the
    spend before it: 3 calls of $0.00017 in a $0.0005 budget, then refusals."""
    key = (Bucket("key", "k", None, None, 0.0005),)
    async with tallying(prefix) as (limiter, _, clock):
        assert await sequential(limiter, key, 30, COST) == 3
        await until(lambda: redis.get(f"{prefix}:spend-nano:{{k}}:key:k:{month(clock)}"),
                    b"510000")


async def test_a_sequential_caller_of_a_team_with_only_a_budget_stops_at_it(
        redis: aioredis.Redis, prefix: str) -> None:
    """The same for a team's budget, its key without limits of its own."""
    key = (Bucket("key", "k", None, None, None, team="t"), Bucket("team", "t", None, None, 0.0005))
    async with tallying(prefix) as (limiter, _, clock):
        assert await sequential(limiter, key, 30, COST) == 3
        await until(lambda: redis.get(f"{prefix}:spend-nano:{{t}}:team:t:{month(clock)}"),
                    b"510000")


async def test_a_caller_whose_calls_are_small_against_its_budget_keeps_its_credit(
        redis: aioredis.Redis, prefix: str) -> None:
    """$0.001 calls against a $100 budget (its tallies may hold $0.39): every call after the
    first is admitted from the credit, and nothing goes to Redis until it ends."""
    key = (Bucket("key", "k", None, None, 100.0),)
    async with tallying(prefix) as (limiter, client, clock):
        assert await sequential(limiter, key, 20, 0.001) == 20
        assert client.round_trips == [1]
        await limiter.flush()
        assert await redis.get(f"{prefix}:spend-nano:{{k}}:key:k:{month(clock)}") == b"20000000"


async def test_material_spend_pauses_the_credit_until_redis_has_counted_it(
        redis: aioredis.Redis, prefix: str) -> None:
    """A credited call costing more than 1/256 of the budget goes to Redis at once and pauses
    the credit: the next call asks Redis (for no new credit), after the settle; once the settle
    is answered the credit admits again. The spend was under half the budget all along."""
    key = (Bucket("key", "k", None, None, 10.0),)  # tallies may hold $0.039
    async with tallying(prefix) as (limiter, client, clock):
        first = await limiter.admit(key, 0)  # from Redis, with a credit
        credited = await limiter.admit(key, 0)
        assert credited.slot != first.slot and client.round_trips == [1]
        limiter.settle(key, 0, 0, 1.0, slot=credited.slot)
        assert client.round_trips == [1, 1]  # the settle, at once
        assert (await limiter.admit(key, 0)).admitted
        assert client.round_trips == [1, 1, 1]  # asked Redis, which had counted the $1
        assert (await limiter.admit(key, 0)).slot == credited.slot  # the credit again
        assert client.round_trips == [1, 1, 1]
        assert await redis.get(f"{prefix}:spend-nano:{{k}}:key:k:{month(clock)}") == b"1000000000"


async def test_another_keys_material_spend_pauses_the_teams_credits(prefix: str) -> None:
    """Key b's call, admitted by Redis, costs more than 1/256 of the team's budget: key a's
    credit admits nothing until that spend is counted, and its next call asks Redis."""
    team = Bucket("team", "t", None, None, 2.56)  # tallies may hold $0.01 of it
    a = (Bucket("key", "a", None, None, None, team="t"), team)
    b = (Bucket("key", "b", 10, None, None, team="t"), team)  # 10 RPM: no credit
    async with tallying(prefix) as (limiter, client, _):
        await limiter.admit(a, 0)
        assert (await limiter.admit(a, 0)).admitted
        assert client.round_trips == [1]  # a's second call came from its credit
        decision = await limiter.admit(b, 0)
        client.round_trips.clear()
        limiter.settle(b, 0, 0, 0.02, slot=decision.slot)
        assert (await limiter.admit(a, 0)).admitted
        assert client.round_trips == [1, 1]  # b's settle at once, then a's admission


async def test_a_lowered_budget_counts_what_the_old_credits_tally_held(
        redis: aioredis.Redis, prefix: str) -> None:
    """A key's budget is lowered to between what Redis counted and what it spent (two calls
    still in its credit's tally): once its caller's old buckets are forgotten, the tally is
    settled ahead of the new buckets' first admission, which Redis refuses."""
    old = (Bucket("key", "k", None, None, 100.0),)  # its tallies may hold $0.39
    spend = f"{prefix}:spend-nano:{{k}}:key:k:"
    async with tallying(prefix) as (limiter, _, clock):
        spend += month(clock)
        assert await sequential(limiter, old, 3, 0.009) == 3
        await until(lambda: redis.get(spend), b"9000000")  # the first call's; two in the tally
        new = (Bucket("key", "k", None, None, 0.01),)  # the key's caller, built anew
        limiter.forget(old)
        refused = await limiter.admit(new, 0)
        assert (refused.admitted, refused.reason) == (False, "budget")
        assert await redis.get(spend) == b"27000000"
        assert limiter.admit_now(old, 0) is None  # the old credit was given back


async def test_a_credit_granted_to_a_forgotten_caller_is_given_back(prefix: str) -> None:
    """An admission asking for a credit when its caller's buckets are forgotten is answered,
    but the credit it was granted is given back at once: no tally of those buckets outlives
    the change (a caller with the same buckets, built anew, gets its own)."""
    key = (Bucket("key", "k", None, None, 100.0),)
    async with tallying(prefix) as (limiter, client, _):
        pending = asyncio.ensure_future(limiter.admit(key, 0))
        await asyncio.sleep(0)  # sent, asking for a credit
        assert client.round_trips == [1]
        limiter.forget(key)
        assert (await pending).admitted
        assert limiter.admit_now(key, 0) is None
        again = (Bucket("key", "k", None, None, 100.0),)
        await limiter.admit(again, 0)
        assert limiter.admit_now(again, 0) is not None


def test_a_team_change_forgets_its_callers_at_once_on_uvloop(prefix: str) -> None:
    """A team's change forgets every caller of its keys in one event-loop turn; on uvloop
    (what ``switchboard serve`` runs), whose ``call_soon`` handle has no ``when()``, the second
    ``forget`` of the turn raised, failing the admin PATCH with a 500 and killing the key-change
    subscriber of every other gateway. Both tallies are settled, in one batch."""
    uvloop = pytest.importorskip("uvloop")
    team = Bucket("team", "t", None, None, 100.0)
    a = (Bucket("key", "a", None, None, None, team="t"), team)
    b = (Bucket("key", "b", None, None, None, team="t"), team)

    async def run() -> None:
        async with tallying(prefix) as (limiter, _, clock):
            redis = aioredis.Redis(host="127.0.0.1", port=6379)
            try:
                assert await sequential(limiter, a, 2, 0.009) == 2
                assert await sequential(limiter, b, 2, 0.009) == 2
                limiter.forget(a)
                limiter.forget(b)
                limiter.forget(a)  # again in the same turn: nothing left, nothing raised
                await until(lambda: redis.get(f"{prefix}:spend-nano:{{t}}:team:t:{month(clock)}"),
                            b"36000000")
            finally:
                await redis.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
