"""A key or team given a budget, or another budget period, after it spent in that period: the
key's next call is decided with that spend counted. With Redis the directory's change (the
admin API's and the CLI's) raises the counters before it is published; without, the process
that builds the key's caller anew carries its own counters first, however it heard of the
change (SQLite and Postgres, real Redis)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.keys import KeyCreate, KeyDirectory, KeyStore, KeyUpdate, TeamCreate, TeamUpdate
from app.limits import LocalLimiter
from app.limits.model import Period, period_name
from app.limits.redis import PREFIX, spend_key
from app.stages.authenticate import Authenticate
from tests.limits.test_budget import log_calls

REDIS_DB = 6
ids: list[str] = []
"""The keys and teams the tests made (their counters in Redis are deleted after each test)."""


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis's database 6 (the directory writes under the gateway's own
    prefix there); the counters of the tests' keys and teams are deleted afterwards."""
    client = aioredis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    yield client
    for id in ids:
        found = [k async for k in client.scan_iter(match=f"{PREFIX}:spend-nano:{{{id}}}:*")]
        if found:
            await client.delete(*found)
    ids.clear()
    await client.aclose()


async def key_of(store: KeyStore, **fields: Any) -> tuple[str, str]:
    record, key = await store.create_key(KeyCreate(name=f"k-{uuid.uuid4().hex[:8]}", **fields))
    ids.append(record.id)
    return record.id, key


async def team_of(store: KeyStore) -> str:
    team = (await store.create_team(TeamCreate(name=f"t-{uuid.uuid4().hex[:8]}"))).id
    ids.append(team)
    return team


def counter(tag: str, scope: str, id: str, period: Period) -> str:
    return spend_key(PREFIX, tag=tag, scope=scope, id=id,
                     period=period_name(period, datetime.now(UTC)))


async def test_a_budget_set_through_the_directory_raises_the_counters_in_redis(
        empty_keys_engine: AsyncEngine, redis: aioredis.Redis) -> None:
    """A key and a team with no limits, given budgets, get their counters raised to what the
    ledger has; so does a key whose budget period changes, budget or not (the counter a later
    budget reads). A budget only raised, lowered or cleared, an RPM, or a key's RPM given a
    budget of the period its calls were settled in, raises nothing (the counter was kept: a
    raise would count twice what a credit's tally settles after it)."""
    store = KeyStore(empty_keys_engine)
    team = await team_of(store)
    key, _ = await key_of(store, team_id=team)
    other, _ = await key_of(store, budget_usd=5.0)
    rated, _ = await key_of(store, rpm=100)
    now = datetime.now(UTC)
    await log_calls(empty_keys_engine, (key, team, "0.30", now), (other, None, "0.20", now),
                    (rated, None, "0.10", now))
    directory = KeyDirectory(store, redis)
    await directory.update_key(key, KeyUpdate(budget_usd=0.1))
    await directory.update_team(team, TeamUpdate(budget_usd=0.1))
    assert await redis.get(counter(team, "key", key, "month")) == b"300000000"
    assert await redis.get(counter(team, "team", team, "month")) == b"300000000"
    for change in (KeyUpdate(budget_usd=1.0), KeyUpdate(rpm=10), KeyUpdate(budget_usd=None)):
        await directory.update_key(other, change)
    await directory.update_key(rated, KeyUpdate(budget_usd=0.05))
    assert [k async for k in redis.scan_iter(match=f"{PREFIX}:spend-nano:{{{other}}}:*")] == []
    assert [k async for k in redis.scan_iter(match=f"{PREFIX}:spend-nano:{{{rated}}}:*")] == []
    await directory.update_key(other, KeyUpdate(budget_period="day"))  # an RPM only: kept now
    assert await redis.get(counter(other, "key", other, "day")) == b"200000000"


async def test_a_carry_that_fails_is_logged_and_the_change_made(
        empty_keys_engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    """Redis down: the budget is set and the answer is the changed key; the warning says the
    reconcile will count the spend."""
    store = KeyStore(empty_keys_engine)
    key, _ = await key_of(store)
    down = aioredis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger="switchboard.keys"):
            record = await KeyDirectory(store, down).update_key(key, KeyUpdate(budget_usd=1))
    finally:
        await down.aclose()
    assert record.budget_usd == 1
    assert f"could not carry the spend of key {key}" in caplog.text
    assert "reconcile" in caplog.text


def in_process(store: KeyStore) -> tuple[KeyDirectory, LocalLimiter, Authenticate]:
    """A gateway's key directory, in-process limiter and authenticate stage, without Redis."""
    directory = KeyDirectory(store, None)
    limiter = LocalLimiter()
    return directory, limiter, Authenticate(None, directory, limiter=limiter)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def refused(authenticate: Authenticate, limiter: LocalLimiter, key: str) -> str | None:
    """The scope whose budget refuses the key's next call (``None``: admitted)."""
    decision = await limiter.admit((await authenticate.identify(bearer(key))).buckets, 0)
    assert decision.admitted or decision.reason == "budget"
    return decision.scope


@pytest.mark.parametrize("steps", [
    [{"budget_usd": 0.1}],
    [{"rpm": 100}, {"budget_usd": 0.1}],  # the rpm's bucket settled only from then on
], ids=["budget", "rpm-then-budget"])
async def test_without_redis_a_key_given_a_budget_counts_its_spend(
        empty_keys_engine: AsyncEngine, steps: list[dict[str, Any]]) -> None:
    """A key with no limits, used in this process, spent $0.30; given a $0.10 budget (in one
    change or after another), its next call is refused."""
    store = KeyStore(empty_keys_engine)
    key_id, key = await key_of(store)
    directory, limiter, authenticate = in_process(store)
    assert await refused(authenticate, limiter, key) is None
    await log_calls(empty_keys_engine, (key_id, None, "0.30", datetime.now(UTC)))
    for step in steps:
        await directory.update_key(key_id, KeyUpdate(**step))
        await authenticate.identify(bearer(key))
    assert await refused(authenticate, limiter, key) == "key"


async def test_without_redis_a_day_budget_made_a_month_one_counts_todays_spend(
        empty_keys_engine: AsyncEngine) -> None:
    """Spend this process counted under the day budget (not yet in the ledger) counts under the
    month budget that replaces it."""
    store = KeyStore(empty_keys_engine)
    key_id, key = await key_of(store, budget_usd=100.0, budget_period="day")
    directory, limiter, authenticate = in_process(store)
    caller = await authenticate.identify(bearer(key))
    assert (await limiter.admit(caller.buckets, 0)).admitted
    limiter.settle(caller.buckets, 0, 0, 0.30)
    await directory.update_key(key_id, KeyUpdate(budget_usd=0.1, budget_period="month"))
    assert await refused(authenticate, limiter, key) == "key"


async def test_without_redis_a_team_given_a_budget_counts_its_keys_spend(
        empty_keys_engine: AsyncEngine) -> None:
    """Key a of a team with no budget spent $0.30; the team is given $0.10: the next call of
    key b, never used in this process before, is refused by the team."""
    store = KeyStore(empty_keys_engine)
    team = await team_of(store)
    a_id, a = await key_of(store, team_id=team)
    _, b = await key_of(store, team_id=team)
    directory, limiter, authenticate = in_process(store)
    assert await refused(authenticate, limiter, a) is None
    await log_calls(empty_keys_engine, (a_id, team, "0.30", datetime.now(UTC)))
    await directory.update_team(team, TeamUpdate(budget_usd=0.1))
    assert await refused(authenticate, limiter, b) == "team"


async def test_without_redis_a_change_read_from_the_key_change_log_counts_the_spend(
        empty_keys_engine: AsyncEngine) -> None:
    """A budget set by another process (the CLI, without Redis) reaches this one at its next
    refresh; the key's next call there is refused."""
    store = KeyStore(empty_keys_engine)
    key_id, key = await key_of(store)
    directory, limiter, authenticate = in_process(store)
    assert await refused(authenticate, limiter, key) is None
    await log_calls(empty_keys_engine, (key_id, None, "0.30", datetime.now(UTC)))
    await KeyDirectory(store, None).update_key(key_id, KeyUpdate(budget_usd=0.1))
    assert await refused(authenticate, limiter, key) is None  # not heard of yet
    await directory.refresh()
    assert await refused(authenticate, limiter, key) == "key"


async def test_without_redis_concurrent_first_calls_after_a_change_share_its_carry(
        empty_keys_engine: AsyncEngine) -> None:
    """Calls of a changed key arriving together all wait for its spend and get one caller,
    whose next call is refused."""
    store = KeyStore(empty_keys_engine)
    key_id, key = await key_of(store)
    directory, limiter, authenticate = in_process(store)
    await authenticate.identify(bearer(key))
    await log_calls(empty_keys_engine, (key_id, None, "0.30", datetime.now(UTC)))
    await directory.update_key(key_id, KeyUpdate(budget_usd=0.1))
    callers = await asyncio.gather(*(authenticate.identify(bearer(key)) for _ in range(5)))
    assert all(caller is callers[0] for caller in callers)
    assert limiter.spent_usd(callers[0].buckets[0]) == pytest.approx(0.30)
