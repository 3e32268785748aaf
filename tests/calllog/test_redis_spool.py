"""The Redis stream spool: at-least-once delivery through a consumer group, against real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.calllog.record import CallRecord, Row
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import SpoolUnavailable
from app.usage import Usage
from tests.servers import free_port


def make_row(n: int) -> Row:
    record = CallRecord(
        id=f"req-{n}", endpoint="/v1/chat/completions", caller="key-1", public_model="chat"
    )
    record.usage = Usage(prompt_tokens=n, completion_tokens=2 * n)
    record.cost_usd = 0.001 * n
    return record.to_row()


@pytest.fixture
async def stream(client: aioredis.Redis) -> AsyncIterator[str]:
    name = f"test:spool:{uuid.uuid4().hex}"
    yield name
    await client.delete(name)


def spool(
    client: aioredis.Redis, *, stream: str, consumer: str = "w1", idle: float = 30.0
) -> RedisSpool:
    return RedisSpool(client, stream=stream, consumer=consumer, claim_idle_s=idle)


async def test_round_trip(client: aioredis.Redis, stream: str) -> None:
    """Rows put come back from take, in order, with stream ids as tokens."""
    s = spool(client, stream=stream)
    rows = [make_row(i) for i in range(5)]
    await s.put(rows)
    assert await s.pending_count() == 5  # never handed out yet
    taken = await s.take(10)
    assert [row for _, row in taken] == rows
    assert all("-" in token for token, _ in taken)
    assert await s.pending_count() == 5


async def test_take_respects_limit(client: aioredis.Redis, stream: str) -> None:
    """take(limit) returns at most limit rows; the rest follow on later takes."""
    s = spool(client, stream=stream)
    await s.put([make_row(i) for i in range(5)])
    first = await s.take(3)
    await s.ack([t for t, _ in first])
    second = await s.take(3)
    assert [r["id"] for _, r in first + second] == [f"req-{i}" for i in range(5)]


async def test_ack_deletes_entries(client: aioredis.Redis, stream: str) -> None:
    """Acknowledged rows leave the stream (XLEN drops) and are never taken again."""
    s = spool(client, stream=stream)
    await s.put([make_row(i) for i in range(4)])
    taken = await s.take(10)
    await s.ack([t for t, _ in taken[:3]])
    assert await client.xlen(stream) == 1
    assert await s.pending_count() == 1
    again = await s.take(10)
    assert [r["id"] for _, r in again] == ["req-3"]
    await s.ack([t for t, _ in again])
    assert await client.xlen(stream) == 0
    assert await s.take(10) == []
    assert await s.pending_count() == 0


async def test_unacked_rows_come_back_to_same_consumer(client: aioredis.Redis, stream: str) -> None:
    """A row taken but not acknowledged (failed store write) is taken again, before new rows."""
    s = spool(client, stream=stream)
    await s.put([make_row(1)])
    first = await s.take(10)
    await s.put([make_row(2)])
    second = await s.take(10)
    assert [r["id"] for _, r in second] == ["req-1", "req-2"]
    assert second[0][0] == first[0][0]


async def test_restarted_consumer_gets_its_pending_rows(
    client: aioredis.Redis, stream: str
) -> None:
    """A new spool object with the same consumer name gets the old one's pending rows at once."""
    await spool(client, stream=stream).put([make_row(1)])
    assert len(await spool(client, stream=stream).take(10)) == 1
    taken = await spool(client, stream=stream).take(10)
    assert [r["id"] for _, r in taken] == ["req-1"]


async def test_dead_consumer_rows_are_claimed_after_idle(
    client: aioredis.Redis, stream: str
) -> None:
    """Rows a dead consumer took but never acked go to another consumer after claim_idle_s."""
    dead = spool(client, stream=stream, consumer="dead", idle=0.2)
    await dead.put([make_row(i) for i in range(3)])
    assert len(await dead.take(10)) == 3  # then kill -9: never acked
    survivor = spool(client, stream=stream, consumer="survivor", idle=0.2)
    assert await survivor.take(10) == []  # not idle long enough yet
    await asyncio.sleep(0.3)
    claimed = await survivor.take(10)
    assert sorted(r["id"] for _, r in claimed) == ["req-0", "req-1", "req-2"]
    await survivor.ack([t for t, _ in claimed])
    assert await client.xlen(stream) == 0
    assert await survivor.pending_count() == 0


async def test_live_consumer_retaking_keeps_its_rows(client: aioredis.Redis, stream: str) -> None:
    """Retaking resets a row's idle time, so a live consumer retrying its batch is not robbed."""
    busy = spool(client, stream=stream, consumer="busy", idle=0.2)
    await busy.put([make_row(1)])
    await busy.take(10)
    await asyncio.sleep(0.3)
    assert len(await busy.take(10)) == 1
    assert await spool(client, stream=stream, consumer="other", idle=0.2).take(10) == []


async def test_entry_deleted_while_pending_is_skipped(client: aioredis.Redis, stream: str) -> None:
    """A pending entry whose data was deleted from the stream is dropped, not returned."""
    s = spool(client, stream=stream)
    await s.put([make_row(1), make_row(2)])
    taken = await s.take(10)
    await client.xdel(stream, taken[0][0])
    again = await s.take(10)
    assert [r["id"] for _, r in again] == ["req-2"]
    assert await s.pending_count() == 1


async def test_group_recreated_after_redis_lost_stream(client: aioredis.Redis, stream: str) -> None:
    """When the stream and its group vanish (Redis restarted empty), the spool recreates them."""
    s = spool(client, stream=stream)
    await s.put([make_row(1)])
    await client.delete(stream)
    assert await s.take(10) == []
    await s.put([make_row(2)])
    assert [r["id"] for _, r in await s.take(10)] == ["req-2"]


async def test_works_with_decoded_responses_and_resp3(stream: str) -> None:
    """A client with decode_responses and RESP3 round-trips rows the same way."""
    client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True, protocol=3)
    try:
        s = spool(client, stream=stream)
        await s.put([make_row(1)])
        taken = await s.take(10)
        assert [r["id"] for _, r in taken] == ["req-1"]
        await s.ack([t for t, _ in taken])
        assert await s.pending_count() == 0
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_unreachable_redis_raises_spool_unavailable() -> None:
    """Every method raises SpoolUnavailable when Redis cannot be reached."""
    client = aioredis.Redis(
        host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=1
    )
    try:
        s = spool(client, stream="test:spool:unreachable")
        with pytest.raises(SpoolUnavailable):
            await s.put([make_row(1)])
        with pytest.raises(SpoolUnavailable):
            await s.take(10)
        with pytest.raises(SpoolUnavailable):
            await s.ack(["1-0"])
        with pytest.raises(SpoolUnavailable):
            await s.pending_count()
        await s.aclose()
    finally:
        await client.aclose()
