"""The call stores: batches written once whatever the replays, every column round-tripped,
partitions made on demand, and ``StoreUnavailable`` when the database cannot take a batch."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.calllog.postgres import PostgresStore
from app.calllog.record import Row
from app.calllog.seams import CallStore, StoreNotReady, StoreUnavailable
from app.calllog.sqlite import SqliteStore
from app.db.engine import make_engine
from app.db.models import Call
from tests.db.rows import batch, epoch, error_row, full_row
from tests.servers import free_port


@pytest.fixture
def store(engine: AsyncEngine) -> CallStore:
    """The backend's store on that engine."""
    if engine.dialect.name == "postgresql":
        return PostgresStore(engine)
    return SqliteStore(engine)


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(Call))).scalar_one())


async def stored(engine: AsyncEngine, request_id: str) -> Call:
    """The stored row, read through the ORM model (as the admin API reads it)."""
    async with AsyncSession(engine) as session:
        return (await session.scalars(select(Call).where(Call.id == request_id))).one()


def as_epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def assert_round_trip(call: Call, row: Row) -> None:
    """Every column read back through the model equals the row the gateway produced."""
    times = {"created_at", "finished_at"}
    for name, expected in row.items():
        actual = getattr(call, name)
        if name in times:
            assert as_epoch(actual) == pytest.approx(expected, abs=1e-6), name
        elif name == "cost_usd" and expected is not None:
            assert float(actual) == pytest.approx(expected, abs=1e-10), name
        else:
            assert actual == expected, name


async def test_batch_is_written_once_however_often_it_is_replayed(
        store: CallStore, engine: AsyncEngine) -> None:
    """Writing N rows stores N; writing them again stores none and duplicates nothing."""
    rows = batch(50)
    assert await store.write(rows) == 50
    assert await store.write(rows) == 0
    assert await store.write(rows[10:20]) == 0
    assert await count(engine) == 50


async def test_partly_stored_batch_adds_only_the_missing_rows(
        store: CallStore, engine: AsyncEngine) -> None:
    """A replayed batch overlapping stored rows inserts exactly the new ones."""
    rows = batch(40)
    assert await store.write(rows[:25]) == 25
    assert await store.write(rows) == 15
    assert await count(engine) == 40


async def test_duplicates_within_a_batch_are_stored_once(
        store: CallStore, engine: AsyncEngine) -> None:
    """The same row twice in one batch is stored once."""
    rows = batch(5)
    assert await store.write([*rows, rows[0], rows[3]]) == 5
    assert await count(engine) == 5


async def test_empty_batch_writes_nothing(store: CallStore) -> None:
    """An empty batch is a no-op returning 0."""
    assert await store.write([]) == 0


async def test_every_column_round_trips(store: CallStore, engine: AsyncEngine) -> None:
    """A full row (bodies included) and an error row read back equal, column by column."""
    rows = [full_row("full-1"), error_row("error-1")]
    assert await store.write(rows) == 2
    for row in rows:
        assert_round_trip(await stored(engine, row["id"]), row)


async def test_hostile_values_are_stored_cleaned(store: CallStore, engine: AsyncEngine) -> None:
    """Values the database would refuse (NULs, surrogates, overlong text, huge integers, a
    non-finite cost) are cleaned instead of blocking the batch (a NUL becomes U+FFFD)."""
    row = full_row("x" * 300)
    row.update(caller="key\x00zero", error_message="bad \ud800 surrogate and \x00 NUL",
               prompt_tokens=2**40, cost_usd=math.inf,
               tags={"k\x00": "v\x00", "big": str(2**70)},
               request_body={"n": 2**70, "s": "\x00\ud800"})
    assert await store.write([row, full_row("ok-1")]) == 2
    call = await stored(engine, "x" * 128)
    assert call.caller == "key\ufffdzero"  # a NUL shown, not dropped
    assert call.error_message == "bad ? surrogate and \ufffd NUL"
    assert call.prompt_tokens == 2**31 - 1
    assert call.cost_usd is None
    assert call.tags == {"k\ufffd": "v\ufffd", "big": str(2**70)}
    assert call.request_body == {"n": 2**70, "s": "\ufffd?"}


@pytest.fixture(params=["postgres", "sqlite"])
def unmigrated_url(request: pytest.FixtureRequest) -> str:
    """The URL of a database of each backend without the schema."""
    result: str = request.getfixturevalue("fresh_pg" if request.param == "postgres"
                                          else "sqlite_url")
    return result


async def test_unmigrated_database_raises_store_unavailable(unmigrated_url: str) -> None:
    """Writing to a database without the schema raises StoreUnavailable, naming the cause; on
    Postgres, StoreNotReady saying what to run (a database dropped and recreated under a
    running gateway reads as ``unmigrated`` on /readyz, not ``write_failed``)."""
    engine = make_engine(unmigrated_url)
    postgres = engine.dialect.name == "postgresql"
    store: CallStore = PostgresStore(engine) if postgres else SqliteStore(engine)
    try:
        with pytest.raises(StoreUnavailable, match="calls") as caught:
            await store.write(batch(3))
        if postgres:
            assert isinstance(caught.value, StoreNotReady)
            assert "run `switchboard db upgrade`" in str(caught.value)
    finally:
        await engine.dispose()


async def test_unreachable_postgres_raises_store_unavailable_without_password() -> None:
    """A closed port gives StoreUnavailable at once, with the password masked."""
    engine = make_engine(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/calls")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await PostgresStore(engine).write(batch(3))
    finally:
        await engine.dispose()
    assert "postgres:***@127.0.0.1" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_postgres_store_recovers_after_its_connections_are_killed(
        pg_engine: AsyncEngine) -> None:
    """After Postgres drops the store's connections (a restart), the next write succeeds."""
    store = PostgresStore(pg_engine)
    assert await store.write(batch(10, prefix="before")) == 10
    async with pg_engine.connect() as connection:
        database = (await connection.execute(text("SELECT current_database()"))).scalar_one()
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1", database)
    finally:
        await admin.close()
    assert await store.write(batch(10, prefix="after")) == 10
    assert await count(pg_engine) == 20


async def test_rows_in_a_month_without_partition_get_one(pg_engine: AsyncEngine) -> None:
    """Rows dated in a month with no partition yet create it and are stored."""
    store = PostgresStore(pg_engine)
    rows = batch(3, prefix="old", created_at=epoch(2019, 3)) + batch(2, prefix="new")
    assert await store.write(rows) == 5
    async with pg_engine.connect() as connection:
        partitions = set((await connection.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'calls'::regclass"))).scalars())
        in_2019 = (await connection.execute(text("SELECT count(*) FROM calls_2019_03"))).scalar()
    assert "calls_2019_03" in partitions
    assert in_2019 == 3


def test_stores_refuse_the_other_backends_engine(pg_engine: AsyncEngine,
                                                 sqlite_engine: AsyncEngine) -> None:
    """Each store checks it was given an engine of its own backend."""
    with pytest.raises(ValueError, match="Postgres"):
        PostgresStore(sqlite_engine)
    with pytest.raises(ValueError, match="SQLite"):
        SqliteStore(pg_engine)
