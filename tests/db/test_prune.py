"""Retention: whole monthly partitions dropped on Postgres, older rows deleted on SQLite."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.postgres import PostgresStore
from app.calllog.sqlite import SqliteStore
from app.db.migrate import SchemaNotReady, prune
from app.db.models import Call
from tests.db.rows import batch, epoch


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(Call))).scalar_one())


async def partitions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set((await connection.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'calls'::regclass"))).scalars())


async def test_prune_drops_old_partitions_and_keeps_recent_rows(
        migrated_pg: str, pg_engine: AsyncEngine) -> None:
    """Partitions whose month is wholly older than the cut-off go; recent rows stay."""
    store = PostgresStore(pg_engine)
    await store.write(batch(3, prefix="mar", created_at=epoch(2019, 3)))
    await store.write(batch(4, prefix="apr", created_at=epoch(2019, 4)))
    await store.write(batch(5, prefix="now", created_at=time.time()))
    assert await prune(migrated_pg, older_than=timedelta(days=90)) == [
        "calls_2019_03", "calls_2019_04"]
    assert await count(pg_engine) == 5
    assert not {"calls_2019_03", "calls_2019_04"} & await partitions(pg_engine)
    assert await prune(migrated_pg, older_than=timedelta(days=90)) == []


async def test_prune_keeps_the_partition_straddling_the_cutoff(
        migrated_pg: str, pg_engine: AsyncEngine) -> None:
    """A month only partly older than the cut-off is kept whole."""
    store = PostgresStore(pg_engine)
    await store.write(batch(2, prefix="apr", created_at=epoch(2019, 4, 2)))
    await store.write(batch(2, prefix="may", created_at=epoch(2019, 5, 2)))
    now = datetime(2019, 5, 20, tzinfo=UTC)
    assert await prune(migrated_pg, older_than=timedelta(days=10), now=now) == ["calls_2019_04"]
    assert await count(pg_engine) == 2


async def test_prune_dry_run_removes_nothing(migrated_pg: str, pg_engine: AsyncEngine) -> None:
    """A dry run names the partitions it would drop and drops none."""
    await PostgresStore(pg_engine).write(batch(2, created_at=epoch(2019, 3)))
    assert await prune(migrated_pg, older_than=timedelta(days=90), dry_run=True) == [
        "calls_2019_03"]
    assert "calls_2019_03" in await partitions(pg_engine)
    assert await count(pg_engine) == 2


async def test_sqlite_prune_deletes_older_rows(migrated_sqlite: str,
                                              sqlite_engine: AsyncEngine) -> None:
    """On SQLite the rows older than the cut-off are deleted, the others kept."""
    store = SqliteStore(sqlite_engine)
    await store.write(batch(3, prefix="old", created_at=epoch(2019, 3)))
    await store.write(batch(4, prefix="new", created_at=time.time() - 3600))
    assert await prune(migrated_sqlite, older_than=timedelta(days=1), dry_run=True) == [
        "calls (3 rows)"]
    assert await count(sqlite_engine) == 7
    assert await prune(migrated_sqlite, older_than=timedelta(days=1)) == ["calls (3 rows)"]
    assert await count(sqlite_engine) == 4
    assert await prune(migrated_sqlite, older_than=timedelta(days=1)) == []


async def test_prune_refuses_an_unmigrated_database(fresh_pg: str) -> None:
    """Pruning a database without the schema says to run the upgrade first."""
    with pytest.raises(SchemaNotReady, match="switchboard db upgrade"):
        await prune(fresh_pg, older_than=timedelta(days=90))
