"""Fixtures shared by the call-log tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis on 127.0.0.1:6379 (tests use their own key prefixes)."""
    redis = aioredis.Redis(host="127.0.0.1", port=6379)
    yield redis
    await redis.aclose()
