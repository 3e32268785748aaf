"""A key or team change builds its callers anew (``app.stages.authenticate``): the limiter
forgets their old buckets at once, so spend held in a credit's tally counts against a budget
that was just lowered (real Postgres, real Redis)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from app.keys import KeyCreate, KeyDirectory, KeyStore, KeyUpdate, TeamCreate, TeamUpdate
from app.limits.model import period_name
from app.limits.redis import spend_key
from app.stages.authenticate import Authenticate
from tests.keys import test_directory
from tests.keys.test_directory import Database
from tests.limits import conftest as limits
from tests.limits.test_budget_credits import sequential
from tests.limits.test_redis import tallying, until

database, store = test_directory.database, test_directory.store
"""A migrated Postgres database of the test's own, and the key store on it."""
redis, prefix = limits.redis, limits.prefix
"""A fresh key prefix on the shared Redis (the limiter's keys)."""

COST = 0.009  # a $100 budget's credit tallies many such calls ($0.39)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_lowered_key_budget_refuses_the_next_call(store: KeyStore, prefix: str) -> None:
    """Three calls of a $100-a-day key, two of them in its credit's tally; its budget is cut to
    $0.01 (more than Redis counted, less than it spent): its next call is refused."""
    record, key = await store.create_key(KeyCreate(name="k", budget_usd=100,
                                                   budget_period="day"))
    directory = KeyDirectory(store, None)
    async with tallying(prefix) as (limiter, _, _clock):
        authenticate = Authenticate(None, directory, limiter=limiter)
        caller = await authenticate.identify(bearer(key))
        assert await sequential(limiter, caller.buckets, 3, COST) == 3
        await store.update_key(record.id, KeyUpdate(budget_usd=0.01))
        await directory.changed(key_id=record.id)
        caller = await authenticate.identify(bearer(key))
        refused = await limiter.admit(caller.buckets, 0)
        assert (refused.admitted, refused.reason, refused.scope) == (False, "budget", "key")


async def test_a_change_settles_a_tally_that_sees_no_further_call(
        store: KeyStore, redis: aioredis.Redis, prefix: str) -> None:
    """Gateway process a holds two calls of a key in its credit's tally; the key's budget is
    cut, and a learns of the change but sees no further call of the key: it settles the tally
    then, so that the key's next call, on process b, is refused."""
    record, key = await store.create_key(KeyCreate(name="k", budget_usd=100,
                                                   budget_period="day"))
    a, b = KeyDirectory(store, None), KeyDirectory(store, None)
    async with tallying(prefix) as (limiter_a, _, clock), \
            tallying(prefix) as (limiter_b, _, _clock):
        spend = spend_key(prefix, tag=record.id, scope="key", id=record.id,
                          period=period_name("day", datetime.fromtimestamp(clock.t, UTC)))
        on_a = Authenticate(None, a, limiter=limiter_a)
        assert await sequential(limiter_a, (await on_a.identify(bearer(key))).buckets, 3,
                                COST) == 3
        await until(lambda: redis.get(spend), b"9000000")  # two calls in a's tally
        await store.update_key(record.id, KeyUpdate(budget_usd=0.01))
        await a.changed(key_id=record.id)  # and b: the change message
        await b.changed(key_id=record.id)
        await until(lambda: redis.get(spend), b"27000000")
        caller = await Authenticate(None, b, limiter=limiter_b).identify(bearer(key))
        refused = await limiter_b.admit(caller.buckets, 0)
        assert (refused.admitted, refused.reason) == (False, "budget")


async def test_a_lowered_team_budget_refuses_its_keys_next_calls(store: KeyStore,
                                                                  prefix: str) -> None:
    """The same for a team's budget, spent by two of its keys, each with a credit."""
    team = await store.create_team(TeamCreate(name="t", budget_usd=100, budget_period="day"))
    keys = [(await store.create_key(KeyCreate(name=n, team_id=team.id)))[1] for n in "ab"]
    directory = KeyDirectory(store, None)
    async with tallying(prefix) as (limiter, _, _clock):
        authenticate = Authenticate(None, directory, limiter=limiter)
        for key in keys:
            caller = await authenticate.identify(bearer(key))
            assert await sequential(limiter, caller.buckets, 3, COST) == 3
        await store.update_team(team.id, TeamUpdate(budget_usd=0.03))  # $0.054 spent
        await directory.changed(team_id=team.id)
        for key in keys:
            caller = await authenticate.identify(bearer(key))
            refused = await limiter.admit(caller.buckets, 0)
            assert (refused.admitted, refused.reason, refused.scope) == (False, "budget", "team")


async def test_a_caller_built_from_an_entry_read_before_a_change_is_forgotten_too(
        store: KeyStore, database: Database, prefix: str) -> None:
    """A lookup in flight when its key changes returns the old entry uncached; the caller
    built from it is forgotten (its credit given back) once the key's next call finds the new
    entry."""
    record, key = await store.create_key(KeyCreate(name="k", budget_usd=100))
    directory = KeyDirectory(store, None)
    async with tallying(prefix) as (limiter, _, _clock):
        authenticate = Authenticate(None, directory, limiter=limiter)
        locker = await asyncpg.connect(database.url)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            pending = asyncio.create_task(authenticate.identify(bearer(key)))
            await asyncio.sleep(0)  # its lookup has begun and waits on the lock
            await directory.changed(key_id=record.id)
            await transaction.rollback()
            stale = await pending
        finally:
            await locker.close()
        await limiter.admit(stale.buckets, 0)  # gets a credit
        assert limiter.admit_now(stale.buckets, 0) is not None
        fresh = await authenticate.identify(bearer(key))
        assert fresh.buckets is not stale.buckets
        assert limiter.admit_now(stale.buckets, 0) is None


async def test_an_unchanged_key_keeps_its_caller_and_credit(store: KeyStore,
                                                            prefix: str) -> None:
    """Another key's change leaves this key's caller, and its credit, as they are."""
    _, key = await store.create_key(KeyCreate(name="k", budget_usd=100))
    other, _ = await store.create_key(KeyCreate(name="other"))
    directory = KeyDirectory(store, None)
    async with tallying(prefix) as (limiter, _, _clock):
        authenticate = Authenticate(None, directory, limiter=limiter)
        caller = await authenticate.identify(bearer(key))
        await limiter.admit(caller.buckets, 0)
        await directory.changed(key_id=other.id)
        assert await authenticate.identify(bearer(key)) is caller
        assert limiter.admit_now(caller.buckets, 0) is not None

