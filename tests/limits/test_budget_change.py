"""A key or team given a budget or another budget period keeps what it spent: its counters of
the current periods are raised to what the spend ledger and its other counters prove was
spent (``carried``): in Redis at the change (``carry_key_spend``, ``carry_team_spend``), in
the in-process limiter by each process when it builds the key's caller anew (``LocalCarry``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.limits import Bucket, LocalLimiter
from app.limits import carry as carry_module
from app.limits.carry import LocalCarry, carried, carry_key_spend, carry_team_spend
from app.limits.model import period_name
from tests.limits.test_budget import counter, log_calls

NOW = datetime.now(UTC)
DAY, MONTH = period_name("day", NOW), period_name("month", NOW)
EARLIER = NOW - timedelta(days=40)  # in no current period but total


@pytest.mark.parametrize(("counted", "logged", "expected"), [
    ([0, 0, 0], [100, 300, 500], [100, 300, 500]),
    ([700, 0, 0], [100, 300, 500], [700, 700, 700]),  # a day budget's counter, ahead of the log
    ([0, 400, 0], [100, 300, 900], [100, 400, 900]),
    ([0, 0, 0], [0, 0, 0], [0, 0, 0]),
], ids=["ledger", "day-counter-ahead", "month-counter-ahead", "nothing"])
def test_a_period_carries_the_most_any_shorter_one_proves(counted: list[int], logged: list[int],
                                                          expected: list[int]) -> None:
    """Per period the larger of its counter and its ledger sum, and never less than a shorter
    period's (a day lies within its month, a month within all time)."""
    assert carried(counted, logged) == expected


async def test_a_key_given_a_budget_gets_its_spend_counted(
        engine: AsyncEngine, redis: aioredis.Redis, prefix: str) -> None:
    """A key with no budget (no counters) in team t, its budget set: its counters under t's
    tag are raised to the ledger's sums, all its teams' calls together; a day budget's counter
    ahead of the ledger carries into the month and total when its period changes."""
    await log_calls(engine, ("k", "t", "0.30", NOW), ("k", "u", "0.10", NOW),
                    ("k", "t", "0.20", EARLIER), ("j", "t", "5.00", NOW))
    await carry_key_spend(engine, redis, prefix=prefix, key_id="k", old_team="t", new_team="t")
    assert [await redis.get(counter(prefix, "t", "key", "k", period))
            for period in (DAY, MONTH, "total")] == [b"400000000", b"400000000", b"600000000"]
    await redis.set(counter(prefix, "t", "key", "k", DAY), 900_000_000)  # settled, not yet logged
    await carry_key_spend(engine, redis, prefix=prefix, key_id="k", old_team="t", new_team="t")
    assert [await redis.get(counter(prefix, "t", "key", "k", period))
            for period in (DAY, MONTH, "total")] == [b"900000000", b"900000000", b"900000000"]


async def test_a_team_given_a_budget_gets_its_keys_spend_counted(
        engine: AsyncEngine, redis: aioredis.Redis, prefix: str) -> None:
    """The team's counters are raised to what its calls spent, whichever key made them; its
    keys' counters are left alone."""
    await log_calls(engine, ("a", "t", "0.30", NOW), ("b", "t", "0.25", NOW),
                    ("a", "u", "7.00", NOW), (None, "t", "0.05", EARLIER))
    await carry_team_spend(engine, redis, prefix=prefix, team_id="t")
    assert [await redis.get(counter(prefix, "t", "team", "t", period))
            for period in (DAY, MONTH, "total")] == [b"550000000", b"550000000", b"600000000"]
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*:key:*")] == []


def bucket(scope: str, id: str, budget_usd: float | None = 1.0) -> Bucket:
    return Bucket("key" if scope == "key" else "team", id, None, None, budget_usd)


async def test_the_in_process_limiter_carries_what_was_missed_once(engine: AsyncEngine) -> None:
    """Only a noted key or team is carried (from the ledger and its shorter periods' counters),
    once; a bucket without a budget carries nothing."""
    await log_calls(engine, ("k", "t", "0.30", NOW), ("j", "t", "0.20", NOW))
    limiter = LocalLimiter()
    limiter.settle([Bucket("key", "k", None, None, 1.0, "day")], 0, 0, 0.50)  # not logged
    carry = LocalCarry(engine, limiter)
    key, team, other = bucket("key", "k"), bucket("team", "t"), bucket("key", "j")
    await carry.ready([key, team, other])
    assert [limiter.spent_usd(b) for b in (key, team, other)] == [0, 0, 0]
    carry.missed("k", "t")
    await carry.ready([key, bucket("team", "t", None), other])
    assert limiter.counted("key", "k", [DAY, MONTH, "total"]) == [500_000_000] * 3
    assert [limiter.spent_usd(b) for b in (team, other)] == [0, 0]
    await carry.ready([team])
    assert limiter.spent_usd(team) == pytest.approx(0.50)
    await log_calls(engine, ("k", "t", "1.00", NOW))  # another process's: the next reconcile's
    await carry.ready([key, team])
    assert [limiter.spent_usd(b) for b in (key, team)] == [pytest.approx(0.5)] * 2


async def test_concurrent_callers_share_one_carry(engine: AsyncEngine) -> None:
    """Calls that wait for the same key's carry all return with its spend counted."""
    await log_calls(engine, ("k", None, "0.30", NOW))
    limiter = LocalLimiter()
    carry = LocalCarry(engine, limiter)
    carry.missed("k", None)
    await asyncio.gather(*(carry.ready([bucket("key", "k")]) for _ in range(5)))
    assert limiter.spent_usd(bucket("key", "k")) == pytest.approx(0.30)


async def test_a_carry_the_database_fails_is_logged_and_tried_again(
        engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    """The call goes on without its spend (the reconcile will count it); the note stays, so the
    next caller built with the budget tries again."""
    unreachable = make_engine("postgresql://postgres@127.0.0.1:9/nothing")
    limiter = LocalLimiter()
    try:
        carry = LocalCarry(unreachable, limiter)
        carry.missed("k", None)
        with caplog.at_level(logging.WARNING, logger="switchboard.limits"):
            await carry.ready([bucket("key", "k")])
        assert "could not carry the spend of key k" in caplog.text
    finally:
        await unreachable.dispose()
    carry._engine = engine  # the database back (a private field, set by this test only)
    await log_calls(engine, ("k", None, "0.30", NOW))
    await carry.ready([bucket("key", "k")])
    assert limiter.spent_usd(bucket("key", "k")) == pytest.approx(0.30)


async def test_past_its_bound_every_budget_carries(engine: AsyncEngine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Notes are bounded: past ``MAX_MISSED`` every caller with a budget carries (never one
    missed)."""
    monkeypatch.setattr(carry_module, "MAX_MISSED", 2)
    await log_calls(engine, ("never-noted", None, "0.30", NOW))
    limiter = LocalLimiter()
    carry = LocalCarry(engine, limiter)
    for key_id in ("a", "b", "c"):
        carry.missed(key_id, None)
    await carry.ready([bucket("key", "never-noted")])
    assert limiter.spent_usd(bucket("key", "never-noted")) == pytest.approx(0.30)
