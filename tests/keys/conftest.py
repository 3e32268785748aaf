"""Fixtures shared by the key tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import ApiKey, Team


@pytest.fixture
async def empty_keys_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated database with no keys or teams (SQLite file or Postgres)."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(ApiKey))
        await conn.execute(delete(Team))
    yield engine
    await engine.dispose()
