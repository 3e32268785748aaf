"""A key moved into, out of or to another team keeps its spend: its counters carry its current
team's hash tag, and the reconcile and the move itself (``carry_key_spend``) raise them to the
key's whole spend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.keys.model import KeyUpdate, TeamCreate
from app.keys.store import KeyStore
from app.limits.budget import log_spend, reconcile
from app.limits.carry import carry_key_spend
from tests.limits.test_budget import budgeted_key, counter, log_calls

MONTH = f"month:{datetime.now(UTC):%Y-%m}"


async def moved(engine: AsyncEngine) -> tuple[str, str, str]:
    """A key with a budget, in team a, whose calls cost $0.30 in a and $0.20 since it moved to
    team b (the rows name the team of each call). Returns the key's, a's and b's ids."""
    key, a = await budgeted_key(engine, team_budget=100.0)
    assert a is not None
    store = KeyStore(engine)
    b = (await store.create_team(TeamCreate(name=f"b-{key[-8:]}", budget_usd=100.0))).id
    await store.update_key(key, KeyUpdate(team_id=b))
    now = datetime.now(UTC)
    await log_calls(engine, (key, a, "0.30", now - timedelta(minutes=2)),
                    (key, b, "0.20", now - timedelta(minutes=1)))
    return key, a, b


async def test_the_reconcile_raises_a_keys_counter_to_all_it_spent(
        engine: AsyncEngine, redis: aioredis.Redis, prefix: str) -> None:
    """The key's counter, under its current team's tag, is raised to $0.50 (not b's share,
    $0.20); each team's counter to what its calls spent."""
    key, a, b = await moved(engine)
    assert [(s.tag, s.nano_usd) for s in await log_spend(engine)
            if s.scope == "key" and s.id == key and s.period == "month"] == [(b, 500_000_000)]
    await reconcile(engine, redis, prefix=prefix)
    assert await redis.get(counter(prefix, b, "key", key, MONTH)) == b"500000000"
    assert await redis.get(counter(prefix, b, "team", b, MONTH)) == b"200000000"
    assert await redis.get(counter(prefix, a, "team", a, MONTH)) == b"300000000"


async def test_a_move_carries_the_keys_spend_to_its_new_tag(
        engine: AsyncEngine, redis: aioredis.Redis, prefix: str) -> None:
    """At the move, the counter under the new tag is raised to the old counter (Redis is ahead
    of the log: $0.70) or the ledger, whichever is more, and a longer period's to at least a
    shorter one's; into no team, its tag is the key."""
    key, a, b = await moved(engine)
    await redis.set(counter(prefix, a, "key", key, MONTH), 700_000_000)
    await redis.set(counter(prefix, a, "key", key, "total"), 400_000_000)  # behind the log
    await carry_key_spend(engine, redis, prefix=prefix, key_id=key, old_team=a, new_team=b)
    assert await redis.get(counter(prefix, b, "key", key, MONTH)) == b"700000000"
    assert await redis.get(counter(prefix, b, "key", key, "total")) == b"700000000"  # the month's
    await carry_key_spend(engine, redis, prefix=prefix, key_id=key, old_team=b, new_team=None)
    assert await redis.get(counter(prefix, key, "key", key, MONTH)) == b"700000000"
    await redis.delete(counter(prefix, a, "key", key, MONTH), counter(prefix, b, "key", key,
                                                                     MONTH))
    await carry_key_spend(engine, redis, prefix=prefix, key_id=key, old_team=None, new_team=a)
    assert await redis.get(counter(prefix, a, "key", key, MONTH)) == b"700000000"
