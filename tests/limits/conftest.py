"""Fixtures for the limiter tests: the shared Redis with a fresh key prefix per test, and
private Redis servers a test may stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from app.limits import RedisLimiter
from app.limits.resp import RespClient
from tests.calllog.servers import PrivateRedis


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis on 127.0.0.1:6379."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    yield client
    await client.aclose()


@pytest.fixture
async def resp() -> AsyncIterator[RespClient]:
    """The limiter's own client (``app.limits.resp``) of the shared Redis."""
    client = RespClient.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    name = f"sbtest-{uuid.uuid4().hex[:10]}"
    yield name
    keys = [k async for k in redis.scan_iter(match=f"{name}:*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private redis-server this test may stop."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@dataclass
class Silent:
    """A TCP server that accepts connections and never answers (a hung Redis)."""

    port: int
    connections: list[asyncio.StreamWriter] = field(default_factory=list)


@pytest.fixture
async def silent(unused_tcp_port: int) -> AsyncIterator[Silent]:
    server_side = Silent(unused_tcp_port)

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_side.connections.append(writer)
        await reader.read(-1)

    server = await asyncio.start_server(swallow, "127.0.0.1", unused_tcp_port)
    yield server_side
    server.close()
    for writer in server_side.connections:
        writer.close()
        await writer.wait_closed()
    await server.wait_closed()


async def heard(limiter: RedisLimiter, since: float) -> None:
    """Wait until ``limiter`` has taken in budget news after ``since`` (its own clock; reads
    the limiter's private ``_news_at``)."""
    for _ in range(500):
        if limiter._news_at > since:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no budget news reached the limiter")
