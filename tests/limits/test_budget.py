"""Reconcile: spend counters raised to the call log's sums, idempotently, never lowered."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.models import ApiKey, Call, Team
from app.keys.model import KeyCreate, TeamCreate
from app.keys.store import KeyStore
from app.limits import Bucket, LocalLimiter, RedisLimiter
from app.limits.budget import reconcile, reconcile_in_turn, reconcile_local, turn_key
from app.limits.redis import news_channel, spend_key
from app.limits.resp import RespClient
from tests.limits.conftest import heard

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


async def store_limited(engine: AsyncEngine, keys: dict[str, str | None],
                        teams: set[str]) -> None:
    """Store the keys (id: team id) and teams not stored yet, each with a budget (the keys and
    teams a reconcile keeps counters for: ``app.limits.budget._counted``)."""
    async with engine.begin() as conn:
        stored_teams = set((await conn.execute(select(Team.id))).scalars())
        stored_keys = set((await conn.execute(select(ApiKey.id))).scalars())
        now = datetime.now(UTC)
        new_teams = (teams | {t for t in keys.values() if t is not None}) - stored_teams
        if new_teams:
            await conn.execute(insert(Team), [
                {"id": id, "name": id, "budget_usd": Decimal(100), "budget_period": "month",
                 "metadata": {}, "created_at": now} for id in sorted(new_teams)])
        if keys.keys() - stored_keys:
            await conn.execute(insert(ApiKey), [
                {"id": id, "key_hash": uuid.uuid4().hex, "prefix": "sk-sb-x", "name": id,
                 "team_id": team, "budget_usd": Decimal(100), "budget_period": "month",
                 "metadata": {}, "admin": False, "created_at": now}
                for id, team in keys.items() if id not in stored_keys])


async def log_calls(engine: AsyncEngine, *rows: tuple[str | None, str | None, str, datetime],
                    ) -> None:
    """Write call rows (key id, team id, cost in USD, created at), storing the keys (in the
    team of their first row) and teams they name that are not stored yet, with budgets."""
    keys: dict[str, str | None] = {}
    for key, team, _, _ in rows:
        if key is not None:
            keys.setdefault(key, team)
    await store_limited(engine, keys, {team for _, team, _, _ in rows if team is not None})
    async with engine.begin() as conn:
        await conn.execute(insert(Call), [
            {"id": uuid.uuid4().hex, "created_at": at, "caller": "key", "key_id": key,
             "team_id": team, "endpoint": "chat", "attempts": [], "status": "ok",
             "http_status": 200, "stream": False, "tokens_estimated": False,
             "cost_usd": Decimal(cost)} for key, team, cost, at in rows])


def counter(prefix: str, tag: str, scope: str, id: str, period: str) -> str:
    return spend_key(prefix, tag=tag, scope=scope, id=id, period=period)


async def test_reconcile_raises_idempotently(engine: AsyncEngine, redis: aioredis.Redis,
                                             prefix: str) -> None:
    """Counters become the log's day, month and total sums; a second run changes nothing."""
    await log_calls(engine,
                    ("a", "t", "0.10", NOW - timedelta(hours=1)),
                    ("a", "t", "0.25", NOW - timedelta(days=3)),
                    ("b", "t", "1.00", NOW - timedelta(days=40)),
                    ("c", None, "0.000001", NOW - timedelta(minutes=5)),
                    (None, None, "9.00", NOW))  # the master key: no counter
    raised = await reconcile(engine, redis, prefix=prefix, now=NOW)
    expected = {
        counter(prefix, "t", "key", "a", "day:2025-06-15"): b"100000000",
        counter(prefix, "t", "key", "a", "month:2025-06"): b"350000000",
        counter(prefix, "t", "key", "a", "total"): b"350000000",
        counter(prefix, "t", "key", "b", "total"): b"1000000000",
        counter(prefix, "t", "team", "t", "day:2025-06-15"): b"100000000",
        counter(prefix, "t", "team", "t", "month:2025-06"): b"350000000",
        counter(prefix, "t", "team", "t", "total"): b"1350000000",
        counter(prefix, "c", "key", "c", "day:2025-06-15"): b"1000",
        counter(prefix, "c", "key", "c", "month:2025-06"): b"1000",
        counter(prefix, "c", "key", "c", "total"): b"1000",
    }
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")])
    assert keys == sorted(expected)
    assert {k: await redis.get(k) for k in keys} == expected
    assert raised == len(expected)
    assert await reconcile(engine, redis, prefix=prefix, now=NOW) == 0
    assert {k: await redis.get(k) for k in keys} == expected


async def test_only_stored_keys_and_teams_with_limits_keep_counters(
        engine: AsyncEngine, redis: aioredis.Redis, prefix: str) -> None:
    """A key or team without limits, a revoked key and a deleted one get no counter (a counter
    of all time has no TTL: one per key ever used stayed in Redis for good, and came back
    after being deleted); a team's counters still count its deleted keys' calls."""
    store = KeyStore(engine)
    plain_team = (await store.create_team(TeamCreate(name="plain"))).id
    plain, _ = await store.create_key(KeyCreate(name="plain", team_id=plain_team))
    revoked, _ = await store.create_key(KeyCreate(name="revoked", rpm=10))
    await store.revoke_key(revoked.id)
    limited, _ = await store.create_key(KeyCreate(name="limited", tpm=1000))
    async with engine.begin() as conn:
        await conn.execute(insert(Call), [
            {"id": uuid.uuid4().hex, "created_at": NOW, "caller": "key", "key_id": key,
             "team_id": team, "endpoint": "chat", "attempts": [], "status": "ok",
             "http_status": 200, "stream": False, "tokens_estimated": False,
             "cost_usd": Decimal("0.5")}
            for key, team in [(plain.id, plain_team), (revoked.id, None), (limited.id, None),
                              ("key_deleted", "team_budgeted")]])
    await store_limited(engine, {}, {"team_budgeted"})
    await reconcile(engine, redis, prefix=prefix, now=NOW)
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")])
    assert keys == sorted(
        counter(prefix, tag, scope, id, period)
        for tag, scope, id in [(limited.id, "key", limited.id),
                               ("team_budgeted", "team", "team_budgeted")]
        for period in ("day:2025-06-15", "month:2025-06", "total"))


async def test_reconcile_never_lowers(engine: AsyncEngine, redis: aioredis.Redis,
                                      prefix: str) -> None:
    """Spend Redis counted that the log has not seen yet stays; lower counters are raised."""
    await log_calls(engine, ("a", None, "0.50", NOW), ("b", None, "0.50", NOW))
    ahead = counter(prefix, "a", "key", "a", "month:2025-06")
    behind = counter(prefix, "b", "key", "b", "month:2025-06")
    await redis.set(ahead, 900_000_000)
    await redis.set(behind, 100_000_000)
    await reconcile(engine, redis, prefix=prefix, now=NOW)
    assert await redis.get(ahead) == b"900000000"
    assert await redis.get(behind) == b"500000000"


async def test_gateways_sharing_redis_reconcile_in_turn(engine: AsyncEngine,
                                                       redis: aioredis.Redis, prefix: str) -> None:
    """Of three gateways trying at once, one reconciles; its turn ends within the interval, so
    the next try (any gateway's) reconciles again; a reconcile that fails gives the turn back."""
    await log_calls(engine, ("a", None, "0.10", NOW))
    tries = await asyncio.gather(*(reconcile_in_turn(engine, redis, prefix=prefix,
                                                     interval_s=60, now=NOW) for _ in range(3)))
    assert sorted(tries, key=str) == [3, None, None]  # a's day, month and total counters
    assert 50_000 < await redis.pttl(turn_key(prefix)) <= 54_000
    await log_calls(engine, ("a", None, "0.20", NOW))
    assert await reconcile_in_turn(engine, redis, prefix=prefix, interval_s=60, now=NOW) is None
    await redis.pexpire(turn_key(prefix), 1)  # as if 54 s had passed
    await asyncio.sleep(0.01)
    assert await reconcile_in_turn(engine, redis, prefix=prefix, interval_s=60, now=NOW) == 3
    assert await redis.get(counter(prefix, "a", "key", "a", "total")) == b"300000000"

    await redis.delete(turn_key(prefix))
    unreachable = make_engine("postgresql://postgres@127.0.0.1:9/nothing")
    try:
        with pytest.raises(OSError):
            await reconcile_in_turn(unreachable, redis, prefix=prefix, interval_s=60)
    finally:
        await unreachable.dispose()
    assert not await redis.exists(turn_key(prefix))


async def test_reconciled_spend_refuses_admission(engine: AsyncEngine, redis: aioredis.Redis,
                                                  resp: RespClient, prefix: str) -> None:
    """A budget the log proves spent (Redis lost its counters) refuses after a reconcile."""
    await log_calls(engine, ("k", "t", "2.00", datetime.now(UTC)))
    limiter = RedisLimiter(resp, timeout_s=0.5, fail_open=True, budget_fail_open=False,
                           prefix=prefix)
    buckets = [Bucket("key", "k", None, None, 10.0, team="t"), Bucket("team", "t", None, None, 2.0)]
    assert (await limiter.admit(buckets, 0)).admitted
    await reconcile(engine, redis, prefix=prefix)
    refused = await limiter.admit(buckets, 0)
    assert (refused.reason, refused.scope) == ("budget", "team")


@pytest.mark.parametrize("logged", ["6.00", "4.00"])
async def test_a_reconcile_that_raises_spend_to_half_the_budget_ends_the_budget_credits(
        engine: AsyncEngine, redis: aioredis.Redis, resp: RespClient, prefix: str,
        logged: str) -> None:
    """Redis lost a key's spend (it reads $0), so its calls got a credit. A reconcile that
    raises the counter to $6 of its $10 publishes news: the credit goes back, and the calls ask
    Redis again, which grants none past half the budget. Raised to $4, no news: the credit,
    granted on a counter under half the budget, still stands (it still is), and the key's next
    calls are admitted from it without asking Redis."""
    k, _ = await budgeted_key(engine)
    await log_calls(engine, (k, None, logged, datetime.now(UTC)))
    news = aioredis.Redis(host="127.0.0.1", port=6379)
    limiter = RedisLimiter(resp, timeout_s=0.5, fail_open=True, budget_fail_open=False,
                           prefix=prefix, credits=True, news=news)
    key = (Bucket("key", k, 2560, None, 10.0),)
    window = f"{prefix}:rl:{{{k}}}:key:{k}:req"
    listener = redis.pubsub()
    await listener.subscribe(news_channel(prefix))
    try:
        assert (await listener.get_message(timeout=5) or {}).get("type") == "subscribe"
        await limiter.start()
        await asyncio.wait_for(limiter.hearing.wait(), 5)
        assert (await limiter.admit(key, 0)).admitted  # and a credit of 10
        assert sum(map(int, (await redis.hgetall(window)).values())) == 11
        before = limiter._news_at  # the limiter's private clock of news (read only)
        assert await reconcile(engine, redis, prefix=prefix) > 0
        month = f"month:{datetime.now(UTC):%Y-%m}"
        assert await redis.get(counter(prefix, k, "key", k, month)) == \
            str(int(float(logged) * 1_000_000_000)).encode()
        heard_news = await listener.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert (heard_news is not None) == (logged == "6.00")
        if heard_news is not None:
            await heard(limiter, before)
        for _ in range(2):
            assert (await limiter.admit(key, 0)).admitted
        # $6: each call charged in Redis, the credit's 10 back, no new one; $4: from the credit
        assert sum(map(int, (await redis.hgetall(window)).values())) == \
            (3 if logged == "6.00" else 11)
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2
        await limiter.aclose()
        await news.aclose()


async def test_a_restarted_in_process_limiter_gets_its_spend_back(engine: AsyncEngine) -> None:
    """Without Redis, a new process's budgets start from the call log, not from zero; a key's
    spend under two teams adds up; counters ahead of the log stay; a second run changes
    nothing."""
    await log_calls(engine, ("k", "t", "1.50", datetime.now(UTC)),
                    ("k", "u", "0.25", datetime.now(UTC)),
                    ("j", None, "0.10", datetime.now(UTC)))
    limiter = LocalLimiter()
    key, team = Bucket("key", "k", None, None, 5.0), Bucket("team", "t", None, None, 1.5)
    ahead = Bucket("key", "j", None, None, 5.0)
    limiter.settle([ahead], 0, 0, 0.40)  # counted here, not yet in the log
    assert await reconcile_local(engine, limiter) > 0
    assert limiter.spent_usd(key) == pytest.approx(1.75)
    assert limiter.spent_usd(ahead) == pytest.approx(0.40)
    refused = await limiter.admit([key, team], 0)
    assert (refused.reason, refused.scope) == ("budget", "team")
    assert await reconcile_local(engine, limiter) == 0



async def budgeted_key(engine: AsyncEngine, *, key_budget: float | None = 10.0,
                       team_budget: float | None = None) -> tuple[str, str | None]:
    """A key (and, with ``team_budget``, its team) created in the key store, with budgets for
    the month: the counters a reconcile's news is about. Returns their ids."""
    store = KeyStore(engine)
    team = None
    if team_budget is not None:
        team = (await store.create_team(TeamCreate(name=f"t-{uuid.uuid4().hex[:8]}",
                                                   budget_usd=team_budget))).id
    key, _ = await store.create_key(KeyCreate(name=f"k-{uuid.uuid4().hex[:8]}", team_id=team,
                                              budget_usd=key_budget))
    return key.id, team


@pytest.mark.parametrize("cost", ["0.00000014", "0.0000001234", "0.00000855", "0.0123454"])
async def test_settled_spend_is_never_behind_the_log(engine: AsyncEngine, redis: aioredis.Redis,
                                                     resp: RespClient, prefix: str,
                                                     cost: str) -> None:
    """Calls settled through either limiter, then logged: a reconcile raises none of the
    counters the budgets read, and publishes no news, whatever the cost's fraction of a
    nano-dollar. (Settles rounded to the nearest fell behind the log's sums; with news for
    every raised counter, the day and total counters no budget reads among them, every
    reconcile ended every credit of the fleet.)"""
    key, team = await budgeted_key(engine, team_budget=10.0)
    assert team is not None
    now = datetime.now(UTC)
    await log_calls(engine, *[(key, team, cost, now)] * 50)
    buckets = [Bucket("key", key, None, None, 10.0, team=team),
               Bucket("team", team, None, None, 10.0)]
    limiter = RedisLimiter(resp, timeout_s=0.5, fail_open=True, budget_fail_open=False,
                           prefix=prefix)
    local = LocalLimiter()
    for _ in range(50):
        local.settle(buckets, 0, 0, float(cost))
        limiter.settle(buckets, 0, 0, float(cost))
    await limiter.flush()
    month = f"month:{now:%Y-%m}"
    read = [counter(prefix, team, "key", key, month), counter(prefix, team, "team", team, month)]
    settled = [await redis.get(name) for name in read]
    spent = [local.spent_usd(b) for b in buckets]
    exact = 50 * Decimal(cost)  # each call rounded up, by under a nano-dollar
    assert all(exact <= Decimal(str(usd)) < exact + Decimal("50e-9") for usd in spent)
    news = redis.pubsub()
    await news.subscribe(news_channel(prefix))
    try:
        assert (await news.get_message(timeout=5) or {}).get("type") == "subscribe"
        # the day and total counters are built (no budget reads them: no news for them)
        assert await reconcile(engine, redis, prefix=prefix) == 4
        assert [await redis.get(name) for name in read] == settled
        assert await news.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await news.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2
    await reconcile_local(engine, local)
    assert [local.spent_usd(b) for b in buckets] == spent


async def test_a_team_of_many_keys_is_raised_in_a_few_calls(engine: AsyncEngine,
                                                           redis: aioredis.Redis,
                                                           prefix: str) -> None:
    """A team's counters go together (one script call per 64, all in the team's hash tag): 30
    keys of one team (93 counters) and a key of no team are all raised, once."""
    await log_calls(engine, *[(f"k{i:02d}", "t", "0.01", NOW) for i in range(30)],
                    ("solo", None, "0.02", NOW - timedelta(days=40)))
    assert await reconcile(engine, redis, prefix=prefix, now=NOW) == 30 * 3 + 3 + 1
    for i in range(30):
        for period in ("day:2025-06-15", "month:2025-06", "total"):
            assert await redis.get(counter(prefix, "t", "key", f"k{i:02d}", period)) == b"10000000"
    assert await redis.get(counter(prefix, "t", "team", "t", "month:2025-06")) == b"300000000"
    assert await redis.get(counter(prefix, "solo", "key", "solo", "total")) == b"20000000"
    assert await redis.get(counter(prefix, "solo", "key", "solo", "month:2025-06")) is None
    await redis.set(counter(prefix, "t", "key", "k07", "total"), 5)  # behind the log again
    assert await reconcile(engine, redis, prefix=prefix, now=NOW) == 1
    assert await redis.get(counter(prefix, "t", "key", "k07", "total")) == b"10000000"
