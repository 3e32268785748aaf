"""Fixtures shared by the call-log tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from app.db.migrate import upgrade
from tests.calllog.servers import PrivatePostgres, PrivateRedis


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis on 127.0.0.1:6379 (tests use their own key prefixes)."""
    redis = aioredis.Redis(host="127.0.0.1", port=6379)
    yield redis
    await redis.aclose()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    """A private, migrated Postgres this module may stop and start (never the shared one)."""
    server = PrivatePostgres()
    server.start()
    asyncio.run(upgrade(server.url))
    yield server
    server.destroy()


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    """A private Redis this test may stop and start."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
