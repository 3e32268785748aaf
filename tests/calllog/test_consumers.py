"""The Redis spool forgets the consumers of dead processes: idle ones with no pending entry go,
ones with pending entries stay until their entries are claimed, and no entry is ever lost."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.calllog.record import CallRecord, Row
from app.calllog.redis_spool import RedisSpool, text

GROUP = "writers"


def make_rows(prefix: str, count: int) -> list[Row]:
    return [CallRecord(id=f"{prefix}-{i}", endpoint="/v1/chat/completions",
                       caller="master").to_row() for i in range(count)]


@pytest.fixture
async def stream(client: aioredis.Redis) -> AsyncIterator[str]:
    name = f"test:h3:consumers:{uuid.uuid4().hex}"
    yield name
    await client.delete(name)


def spool(client: aioredis.Redis, stream: str, consumer: str, *, forget_idle_s: float = 0.0,
          claim_idle_s: float = 30.0, forget_every_s: float = 60.0) -> RedisSpool:
    return RedisSpool(client, stream=stream, group=GROUP, consumer=consumer,
                      claim_idle_s=claim_idle_s, forget_idle_s=forget_idle_s,
                      forget_every_s=forget_every_s)


async def consumers(client: aioredis.Redis, stream: str) -> dict[str, int]:
    """Consumer name -> pending entries."""
    return {text(c["name"]): int(c["pending"])
            for c in await client.xinfo_consumers(stream, GROUP)}


async def die_holding(client: aioredis.Redis, stream: str, consumer: str, rows: int) -> None:
    """A process that put ``rows`` rows, took them, and died before acknowledging them."""
    dead = spool(client, stream, consumer, forget_idle_s=3600)
    await dead.put(make_rows(consumer, rows))
    assert len(await dead.take(rows)) == rows


async def test_restarts_leave_one_consumer(client: aioredis.Redis, stream: str) -> None:
    """Processes that came and went (each its own host-pid consumer, everything acknowledged)
    are forgotten by the next one to take: one consumer remains, itself."""
    for pid in range(5):
        old = spool(client, stream, f"host-{pid}", forget_idle_s=3600)
        await old.put(make_rows(f"p{pid}", 2))
        taken = await old.take(10)
        await old.ack([token for token, _ in taken])
    assert len(await consumers(client, stream)) == 5
    new = spool(client, stream, "host-99")
    assert await new.take(10) == []
    assert await consumers(client, stream) == {"host-99": 0}


@pytest.mark.parametrize("pending", [1, 7])
async def test_consumer_with_pending_entries_stays_until_claimed(
        client: aioredis.Redis, stream: str, pending: int) -> None:
    """A dead consumer holding entries is kept, however idle, with its entries; once another
    consumer has claimed them, it is forgotten, and every row was delivered."""
    await die_holding(client, stream, "host-dead", pending)
    survivor = spool(client, stream, "host-live", claim_idle_s=3600)
    assert await survivor.take(100) == []
    assert await consumers(client, stream) == {"host-dead": pending, "host-live": 0}
    # Claimed once idle past claim_idle_s (0 here), then forgotten at the next clean-up.
    claimer = spool(client, stream, "host-live", claim_idle_s=0)
    taken = await claimer.take(100)
    assert sorted(row["id"] for _, row in taken) == [f"host-dead-{i}" for i in range(pending)]
    assert await claimer.forget_idle_consumers() == ["host-dead"]
    assert await consumers(client, stream) == {"host-live": pending}
    await claimer.ack([token for token, _ in taken])
    assert await claimer.pending_count() == 0


async def test_recently_active_consumers_stay(client: aioredis.Redis, stream: str) -> None:
    """A consumer idle for less than forget_idle_s is kept, pending entries or not."""
    other = spool(client, stream, "host-other", forget_idle_s=3600)
    await other.take(1)
    me = spool(client, stream, "host-me", forget_idle_s=3600)
    await me.take(1)
    assert await me.forget_idle_consumers() == []
    assert set(await consumers(client, stream)) == {"host-other", "host-me"}


async def test_never_forgets_itself(client: aioredis.Redis, stream: str) -> None:
    """The consumer doing the clean-up never deletes itself, even idle and empty."""
    me = spool(client, stream, "host-me")
    await me.take(1)
    assert await me.forget_idle_consumers() == []
    assert await consumers(client, stream) == {"host-me": 0}


async def test_clean_up_runs_at_start_then_every_interval(client: aioredis.Redis,
                                                           stream: str) -> None:
    """take cleans up at its first call, then not again before forget_every_s; a consumer that
    appears in between waits for the next clean-up."""
    me = spool(client, stream, "host-me", forget_every_s=3600)
    await spool(client, stream, "host-a", forget_idle_s=3600).take(1)
    await me.take(1)
    assert set(await consumers(client, stream)) == {"host-me"}
    await spool(client, stream, "host-b", forget_idle_s=3600).take(1)
    await me.take(1)
    assert set(await consumers(client, stream)) == {"host-me", "host-b"}
    assert await me.forget_idle_consumers() == ["host-b"]


async def test_a_live_consumer_forgotten_loses_nothing(client: aioredis.Redis,
                                                       stream: str) -> None:
    """A live consumer forgotten while idle (a database outage: it puts, never takes) reads
    again as if new: every row it put comes back to it."""
    live = spool(client, stream, "host-live", forget_idle_s=3600)
    await live.take(1)
    await live.put(make_rows("during-outage", 4))
    other = spool(client, stream, "host-other")
    taken_by_other = await other.take(2)  # takes two rows, forgets the idle, empty host-live
    assert "host-live" not in await consumers(client, stream)
    taken = await live.take(10)
    assert len(taken_by_other) + len(taken) == 4
    await other.ack([t for t, _ in taken_by_other])
    await live.ack([t for t, _ in taken])
    assert await live.pending_count() == 0
