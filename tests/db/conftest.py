"""Fixtures for the call log's database: fresh Postgres databases and SQLite files, migrated or not.

Each Postgres database is created for one test (``switchboard_test_db_<random>``) and dropped
after it, so tests never see each other's rows or partitions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.migrate import upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def admin_sql(sql: str) -> None:
    """Run one statement on the server's maintenance database."""
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    """The URL of a new, empty Postgres database (dropped after the test)."""
    name = f"switchboard_test_db_{uuid.uuid4().hex[:12]}"
    await admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def migrated_pg(fresh_pg: str) -> str:
    """The URL of a new Postgres database with the current schema."""
    await upgrade(fresh_pg)
    return fresh_pg


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
async def migrated_sqlite(sqlite_url: str) -> str:
    """The URL of a SQLite file with the current schema."""
    await upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
async def pg_engine(migrated_pg: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated Postgres database."""
    engine = make_engine(migrated_pg)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(migrated_sqlite: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated SQLite file."""
    engine = make_engine(migrated_sqlite)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """An engine on a migrated database of each backend."""
    result: AsyncEngine = request.getfixturevalue(
        "pg_engine" if request.param == "postgres" else "sqlite_engine")
    return result
