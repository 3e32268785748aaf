"""The spend ledger (``spend_days``): the database adds each stored call row's cost to its key's
and team's UTC day, once however often a batch is replayed; the migration fills it from the rows
already stored; pruned rows stay counted. The budget reconcile reads it (tests/limits)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord, Row
from app.calllog.seams import CallStore
from app.calllog.sqlite import SqliteStore
from app.db.migrate import alembic_config, prune
from app.db.models import SpendDay
from app.limits.budget import fold_ledger, log_spend
from tests.limits.test_budget import store_limited

MIDNIGHT = datetime(2026, 12, 6, tzinfo=UTC).timestamp()


def store_of(engine: AsyncEngine) -> CallStore:
    return PostgresStore(engine) if engine.dialect.name == "postgresql" else SqliteStore(engine)


def row(id: str, key: str | None, team: str | None, cost: float | None, at: float, *,
        shadow_of: str | None = None) -> Row:
    return CallRecord(id=id, endpoint="/v1/chat/completions", caller="key" if key else "master",
                      created_at=at, status="ok", http_status=200, key_id=key, team_id=team,
                      cost_usd=cost, shadow_of=shadow_of).to_row()


def expected(rows: list[Row]) -> dict[tuple[date, str, str], float]:
    """The ledger the rows should make, summed here."""
    out: dict[tuple[date, str, str], float] = defaultdict(float)
    for r in rows:
        if r["cost_usd"] is not None and (r["key_id"] or r["team_id"]) \
                and r["shadow_of"] is None:
            day = datetime.fromtimestamp(r["created_at"], UTC).date()
            out[(day, r["key_id"] or "", r["team_id"] or "")] += r["cost_usd"]
    return dict(out)


async def ledger(engine: AsyncEngine) -> dict[tuple[date, str, str], float]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(SpendDay.__table__))).all()
    return {(r.day, r.key_id, r.team_id): float(r.cost_usd) for r in rows}


def assert_ledger(got: dict[tuple[date, str, str], float],
                  want: dict[tuple[date, str, str], float]) -> None:
    assert sorted(got) == sorted(want)
    for day in want:
        assert got[day] == pytest.approx(want[day], abs=1e-9), day


async def test_each_stored_row_is_counted_once(engine: AsyncEngine) -> None:
    """Keyed rows with a cost are added to their (UTC day, key, team); the master key's and
    costless rows are not; a replayed or partly stored batch adds only the rows it inserts (on
    Postgres the replay goes through the staging table's INSERT, not COPY)."""
    rows = [row(f"r{i}", f"k{i % 3}", "t1" if i % 3 else None, 0.001 * (i + 1),
                MIDNIGHT - 1.5 + i * 0.5) for i in range(8)]  # both sides of midnight
    rows += [row("master", None, None, 5.0, MIDNIGHT), row("free", "k1", "t1", None, MIDNIGHT),
             row("teamonly", None, "t2", 0.25, MIDNIGHT + 60)]
    store = store_of(engine)
    assert await store.write(rows[:4]) == 4
    assert await store.write(rows) == len(rows) - 4
    assert await store.write(rows) == 0
    assert await store.write(rows[2:6]) == 0
    want = expected(rows)
    assert {day for day, _, _ in want} == {date(2026, 12, 5), date(2026, 12, 6)}
    assert_ledger(await ledger(engine), want)


async def test_shadow_copies_are_charged_to_no_key_or_team(engine: AsyncEngine) -> None:
    """A shadow copy's row keeps its original's key and team, but the ledger (which budgets
    read) does not count its cost: the gateway made the copy, not the caller."""
    rows = [row("orig", "k1", "t1", 0.25, MIDNIGHT),
            row("copy", "k1", "t1", 4.0, MIDNIGHT + 1, shadow_of="orig"),
            row("teamcopy", None, "t2", 8.0, MIDNIGHT + 2, shadow_of="other")]
    await store_of(engine).write(rows)
    assert_ledger(await ledger(engine), {(date(2026, 12, 6), "k1", "t1"): 0.25})


async def test_the_day_is_utc_whatever_the_session_time_zone(migrated_pg: str) -> None:
    """A Postgres session in UTC+14 writing a row at 23:30 UTC counts it on the UTC day."""
    conn = await asyncpg.connect(migrated_pg.replace("postgresql+asyncpg", "postgresql"),
                                 server_settings={"timezone": "Pacific/Kiritimati"})
    try:
        at = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
        await conn.copy_records_to_table(
            "calls", columns=["id", "created_at", "caller", "key_id", "team_id", "endpoint",
                              "attempts", "status", "http_status", "stream",
                              "tokens_estimated", "cost_usd"],
            records=[("late", at, "key", "k9", None, "chat", "[]", "ok", 200, False, False,
                      0.5)])
        got = await conn.fetch("SELECT day, key_id, team_id, cost_usd FROM spend_days")
    finally:
        await conn.close()
    assert [tuple(r) for r in got] == [(date(2026, 12, 5), "k9", "", 0.5)]


async def test_pruned_rows_stay_counted(engine: AsyncEngine) -> None:
    """``switchboard db prune`` removes old rows, not their spend: a ``total`` budget keeps it."""
    url = engine.url.render_as_string(hide_password=False)
    old = datetime(2019, 3, 15, tzinfo=UTC).timestamp()
    rows = [row("old", "k1", "t1", 0.75, old), row("new", "k1", "t1", 0.25, MIDNIGHT)]
    await store_of(engine).write(rows)
    assert await prune(url, older_than=timedelta(days=90),
                       now=datetime(2026, 12, 7, tzinfo=UTC)) != []
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM calls"))).scalar_one() == 1
    assert_ledger(await ledger(engine), expected(rows))


def _migrate(connection: Connection, config: Config, direction: str, revision: str) -> None:
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_the_migration_fills_the_ledger_and_its_downgrade_removes_it(
        engine: AsyncEngine) -> None:
    """Upgrading to 0014 sums the rows already stored; rows written afterwards are added by the
    trigger; downgrading drops table and trigger, and rows can still be written."""
    url = engine.url.render_as_string(hide_password=False)
    config = alembic_config(url)
    before = [row("a", "k1", "t1", 0.5, MIDNIGHT), row("b", "k1", "t1", 0.25, MIDNIGHT + 1),
              row("c", None, None, 9.0, MIDNIGHT)]
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0013")
    await store_of(engine).write(before)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    assert_ledger(await ledger(engine), expected(before))
    after = [row("d", "k2", None, 0.125, MIDNIGHT)]
    await store_of(engine).write(after)
    assert_ledger(await ledger(engine), expected(before + after))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0013")
    assert await store_of(engine).write([row("e", "k2", None, 1.0, MIDNIGHT)]) == 1
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    assert_ledger(await ledger(engine), expected(
        [*before, *after, row("e", "k2", None, 1.0, MIDNIGHT)]))


async def test_concurrent_writers_of_the_same_keys_lose_nothing(pg_engine: AsyncEngine) -> None:
    """Eight batches in flight at once, each naming the same 20 keys in its own order (as
    replicas' writers do): none deadlocks or fails, and the ledger holds every row's cost."""
    batches = []
    for b in range(8):
        keys = list(range(20))
        random.Random(b).shuffle(keys)
        batches.append([row(f"w{b}-{i}", f"k{k}", f"t{k % 3}", 0.001 * (b + 1), MIDNIGHT + i)
                        for i, k in enumerate(keys * 5)])
    stores = [PostgresStore(pg_engine) for _ in batches]
    written = await asyncio.gather(*(s.write(rows) for s, rows in zip(stores, batches,
                                                                       strict=True)))
    assert written == [100] * 8
    assert_ledger(await ledger(pg_engine), expected([r for rows in batches for r in rows]))


async def test_folding_closed_months_keeps_every_sum(engine: AsyncEngine) -> None:
    """The days of closed months fold into one row per month, key and team; the day's, the
    month's and the total sums a reconcile reads stay the same; folding again changes nothing;
    a day written into a closed month later is folded by the next fold."""
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)

    def at(month: int, day: int) -> float:
        return datetime(2026, month, day, 8, tzinfo=UTC).timestamp()

    rows = [row("a", "k1", "t1", 0.5, at(10, 3)), row("b", "k1", "t1", 0.25, at(10, 20)),
            row("c", "k1", "t1", 0.125, at(11, 2)), row("d", "k1", "t1", 1.0, at(11, 30)),
            row("e", "k2", None, 2.0, at(11, 15)), row("f", "k1", "t1", 4.0, at(12, 1)),
            row("g", "k1", "t1", 8.0, at(12, 6)), row("h", None, "t2", 16.0, at(11, 1))]
    await store_limited(engine, {"k1": "t1", "k2": None}, {"t2"})
    await store_of(engine).write(rows)
    before = set(await log_spend(engine, now=now))
    assert {(s.scope, s.id, s.period, s.nano_usd) for s in before if s.id == "k1"} == {
        ("key", "k1", "day", 8_000_000_000), ("key", "k1", "month", 12_000_000_000),
        ("key", "k1", "total", 13_875_000_000)}
    await fold_ledger(engine, now=now)
    assert_ledger(await ledger(engine), {
        (date(2026, 10, 1), "k1", "t1"): 0.75, (date(2026, 11, 1), "k1", "t1"): 1.125,
        (date(2026, 11, 1), "k2", ""): 2.0, (date(2026, 11, 1), "", "t2"): 16.0,
        (date(2026, 12, 1), "k1", "t1"): 4.0, (date(2026, 12, 6), "k1", "t1"): 8.0})
    assert set(await log_spend(engine, now=now)) == before
    await fold_ledger(engine, now=now)
    assert set(await log_spend(engine, now=now)) == before
    await store_of(engine).write([row("late", "k1", "t1", 0.0625, at(11, 20))])
    await fold_ledger(engine, now=now)
    got = await ledger(engine)
    assert got[(date(2026, 11, 1), "k1", "t1")] == pytest.approx(1.1875, abs=1e-9)
    assert len(got) == 6


async def test_the_shadow_migration_down_and_up(engine: AsyncEngine) -> None:
    """0017's downgrade brings back the triggers that charged shadow copies to their key and
    team; its upgrade stops that again, and leaves the copies already counted as they are."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0016")
    await store_of(engine).write([row("a", "k1", "t1", 0.5, MIDNIGHT),
                                  row("a-copy", "k1", "t1", 2.0, MIDNIGHT, shadow_of="a")])
    counted = {(date(2026, 12, 6), "k1", "t1"): 2.5}
    assert_ledger(await ledger(engine), counted)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    await store_of(engine).write([row("b", "k1", "t1", 0.25, MIDNIGHT),
                                  row("b-copy", "k1", "t1", 4.0, MIDNIGHT, shadow_of="b")])
    assert_ledger(await ledger(engine), {(date(2026, 12, 6), "k1", "t1"): 2.75})
    async with engine.connect() as connection:
        hours = (await connection.execute(text(
            "SELECT key_id, requests FROM call_hours ORDER BY key_id"))).all()
    assert [tuple(h) for h in hours] == [("", 1), ("k1", 3)]  # a, a-copy, b; b-copy
